"""Untrusted model files, bad inputs (one line, exit 2, nothing half-done), reproducible runs."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torchvision
import yaml

from explain.cli import main
from explain.config import load_config
from explain.models.loading import load_model
from conftest import IMAGES, REPO, SMALL_SIZE, make_alexnet, make_small_alexnet, write_config
from helpers import refused


class MarkerPayload:
    """Unpickling this runs os.system('touch MARKER'): what a hostile .pth could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def course_cfg(tmp_path, **fields):
    base = dict(model={"file": "model.pth"}, target_layers=["features.10"], channels={"enabled": False})
    base.update(fields)
    return str(write_config(tmp_path, **base))


def test_malicious_pickle_is_refused_unless_trusted(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    torch.save({"weights": MarkerPayload(marker)}, tmp_path / "model.pth")
    cfg = course_cfg(tmp_path)
    err = refused(capsys, cfg, "--quiet", needles=["model.pth", "refused", "model.trust: true"])
    assert "system" in err  # names the global it wanted (posix.system / os.system)
    assert not marker.exists()
    assert not (tmp_path / "results").exists()
    # trusted: the payload runs (so it is the default that protects), then loading fails cleanly
    main([cfg, "--quiet", "--set", "model.trust=true"])
    capsys.readouterr()
    assert marker.exists()


def test_whole_pickled_alexnet_loads_without_trust(tmp_path):
    """The course's kind of file (a whole AlexNet saved with torch.save) loads with
    model.trust off, as the very network saved: its class, weights and outputs. (The course
    config's run on such a file is test_course_config.py's.)"""
    saved = make_alexnet(seed=3)
    torch.save(saved, tmp_path / "model.pth")
    cfg = load_config(course_cfg(tmp_path))
    assert cfg.model.trust is False
    net = load_model(cfg)
    assert type(net) is torchvision.models.AlexNet and not net.training
    ours, theirs = net.state_dict(), saved.state_dict()
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(net(x), saved(x))


def test_unknown_layer_suggests_model_names(tmp_path, capsys):
    torch.save(make_small_alexnet(), tmp_path / "model.pth")
    refused(capsys, course_cfg(tmp_path), "--quiet", "--layer", "feature.10",
            needles=["target_layers[0]", "no layer 'feature.10'", "did you mean 'features.10'"])
    assert not (tmp_path / "results").exists()


def test_layer_outside_forward_path(tmp_path, capsys):
    model = make_small_alexnet()
    model.unused = torch.nn.Conv2d(3, 3, 1)
    torch.save(model, tmp_path / "model.pth")
    refused(capsys, course_cfg(tmp_path), "--quiet", "--layer", "unused",
            needles=["target_layers[0]", "not used in the model's forward pass"])
    assert not (tmp_path / "results").exists()


def test_class_index_beyond_outputs(tmp_path, capsys):
    torch.save(make_small_alexnet(), tmp_path / "model.pth")
    refused(capsys, course_cfg(tmp_path, classes={"cat": 0, "dog": 5}), "--quiet",
            needles=["classes.dog", "index 5", "2 outputs"])
    assert not (tmp_path / "results").exists()


def test_state_dict_that_does_not_fit_names_the_key(tmp_path, capsys):
    torch.manual_seed(0)  # resnet18: a state_dict of 45 MB (AlexNet's is 230 MB, 1.5 s more)
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), tmp_path / "model.pth")
    arch = {"file": "model.pth", "arch": "torchvision.models.resnet18"}
    cfg = course_cfg(tmp_path, model={**arch, "arch_args": {"num_classes": 3}},
                     target_layers=["layer4"])
    refused(capsys, cfg, "--quiet", needles=["fc.weight", "(2, 512)", "(3, 512)"])
    ok = course_cfg(tmp_path, model={**arch, "arch_args": {"num_classes": 2}},
                    target_layers=["layer4"], images=[str(IMAGES / "cat.jpg")],
                    preprocess={"size": [64, 64]})
    assert main([ok, "--quiet"]) == 0


def test_file_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "model.pth").write_text("hello")
    refused(capsys, course_cfg(tmp_path), "--quiet",
            needles=["model.pth", "not a PyTorch model file"])


def test_tuple_output_gets_a_hint(tmp_path, capsys):
    cfg = course_cfg(tmp_path, model={"builder": "test_reliability:tuple_model", "trust": True},
                     target_layers=["conv"])
    sys.path.insert(0, os.path.dirname(__file__))
    try:
        refused(capsys, cfg, "--quiet", needles=["forward returns a tuple", "logits"])
    finally:
        sys.path.pop(0)


def tuple_model():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 3)

        def forward(self, x):
            y = self.conv(x).mean(dim=(2, 3))
            return y, y
    return Net()


def test_missing_config_and_image(tmp_path, capsys):
    refused(capsys, str(tmp_path / "nope.yaml"), needles=["nope.yaml", "not found"])
    torch.save(make_small_alexnet(), tmp_path / "model.pth")
    refused(capsys, course_cfg(tmp_path, images=["missing.jpg"]), "--quiet",
            needles=["images[0]", "missing.jpg"])
    (tmp_path / "empty").mkdir()
    refused(capsys, course_cfg(tmp_path, images=["empty"]), "--quiet",
            needles=["images[0]", "no image files"])


def test_bad_files_in_a_folder_are_skipped_and_listed(tmp_path, capsys):
    torch.save(make_small_alexnet(), tmp_path / "model.pth")
    pics = tmp_path / "pics"
    pics.mkdir()
    cv2.imwrite(str(pics / "good.jpg"), cv2.imread(str(IMAGES / "cat.jpg")))
    data = (IMAGES / "dog.jpg").read_bytes()
    (pics / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (pics / "garbage.png").write_bytes(b"not a png at all")
    (pics / "notes.txt").write_text("hi")
    assert main([course_cfg(tmp_path, images=["pics"]), "--quiet"]) == 0
    summary = yaml.safe_load((tmp_path / "results" / "exp" / "summary.json").read_text())
    assert [i["id"] for i in summary["images"]] == ["good"]
    assert sorted(os.path.basename(s["path"]) for s in summary["skipped_images"]) == ["garbage.png", "truncated.jpg"]
    assert [s["path"].rsplit("/", 1)[-1] for s in summary["skipped_files"]] == ["notes.txt"]


def test_odd_image_formats_work_and_exif_orientation_is_applied(tmp_path):
    from explain.images import ImageError, read_rgb
    from PIL import Image
    rgb = cv2.cvtColor(cv2.imread(str(IMAGES / "cat.jpg")), cv2.COLOR_BGR2RGB)
    gray = tmp_path / "gray.png"
    cv2.imwrite(str(gray), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    rgba = tmp_path / "rgba.png"
    cv2.imwrite(str(rgba), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA))
    deep = tmp_path / "deep.png"
    cv2.imwrite(str(deep), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    palette = tmp_path / "palette.png"
    Image.fromarray(rgb).convert("P").save(palette)
    for path in (gray, rgba, deep, palette):
        out = read_rgb(path, 10**8)
        assert out.shape == (300, 451, 3) and out.dtype == np.uint8, path
    assert np.array_equal(read_rgb(rgba, 10**8), rgb) and np.array_equal(read_rgb(deep, 10**8), rgb)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(rgb).save(rotated, exif=exif, quality=95)
    assert read_rgb(rotated, 10**8).shape == (451, 300, 3)
    with pytest.raises(ImageError, match="max_pixels"):
        read_rgb(rotated, 1000)


def test_two_runs_give_identical_bytes(tmp_path):
    torch.save(make_small_alexnet(), tmp_path / "model.pth")
    cfg = course_cfg(tmp_path, methods=["gradcam", "randomcam"], channels={"enabled": True},
                     preprocess={"size": [SMALL_SIZE, SMALL_SIZE]},
                     output={"dir": str(tmp_path / "results"), "save_arrays": True})
    # everything in the main thread, then with reader and writer threads: the same bytes
    assert main([cfg, "--quiet", "--workers", "0"]) == 0
    assert main([cfg, "--quiet", "--workers", "3"]) == 0
    first, second = tmp_path / "results" / "exp", tmp_path / "results" / "exp-2"

    def compared(root):
        return sorted(p.relative_to(root) for p in root.rglob("*")
                      if p.suffix in (".png", ".npy", ".csv") or p.parent.name == "items")
    files = compared(first)
    assert len(files) > 20 and any(p.parent.name == "items" for p in files)
    assert files == compared(second)
    for rel in files:  # summary.csv holds no timings, so it is compared too
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


def test_debug_shows_traceback_in_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "explain", str(tmp_path / "nope.yaml"), "--debug"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "explain", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("text,needles", [
    ("model: {file: model.pth}\nmethods: [gradcam\n", ["line ", "YAML syntax error"]),
    ("model: {file: model.pth}\nclasses: {cat: 0}\nimages: [x.jpg]\ntarget_layers: [a]\n"
     "methods: [gradcam]\nbatchsize: 4\n", ["unknown key 'batchsize'", "did you mean 'batch_size'"]),
    ("model: {file: model.pth}\nclasses: {cat: 0}\nimages: [x.jpg]\ntarget_layers: [a]\n"
     "methods: [gradcam]\nbatch_size: lots\n", ["batch_size:", "'lots'"]),
    ("model: {file: model.pth}\nclasses: {cat: 0}\nimages: [x.jpg]\ntarget_layers: [a]\n"
     "methods: [gradcam, gradcam+]\n", ["methods[1].name", "did you mean 'gradcamplusplus'", "layercam"]),
])
def test_config_problems_through_the_cli(tmp_path, capsys, text, needles):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    refused(capsys, str(path), "--quiet", needles=["exp.yaml", *needles])
    assert not (tmp_path / "results").exists()


def test_empty_glob(tmp_path, capsys):
    torch.save(make_small_alexnet(), tmp_path / "model.pth")
    refused(capsys, course_cfg(tmp_path, images=["pics/*.jpg"]), "--quiet",
            needles=["images[0]", "matches no file"])


def test_a_misspelt_image_or_folder_gets_the_closest_name_and_a_glob_the_folders_kinds(
        tmp_path, capsys):
    """'image not found' said nothing more: the closest name in the same folder is offered;
    a glob over one folder that matches nothing says which kinds of file it holds."""
    torch.save(make_small_alexnet(), tmp_path / "model.pth")
    (tmp_path / "photos").mkdir()
    for name in ("cat.jpg", "dog.jpg", "notes.txt"):
        (tmp_path / "photos" / name).write_bytes(b"x")
    err = refused(capsys, course_cfg(tmp_path, images=["photos/cta.jpg"]), "--quiet",
                  needles=["images[0]: image not found"])
    assert err.rstrip().endswith(f"did you mean {tmp_path / 'photos' / 'cat.jpg'}?"), err
    err = refused(capsys, course_cfg(tmp_path, images=["phtos/"]), "--quiet",
                  needles=["images[0]: image not found"])
    assert err.rstrip().endswith(f"did you mean {tmp_path / 'photos'}?"), err
    err = refused(capsys, course_cfg(tmp_path, images=["photos/zebra.jpg"]), "--quiet",
                  needles=["images[0]: image not found"])
    assert "did you mean" not in err  # nothing close
    err = refused(capsys, course_cfg(tmp_path, images=["photos/dog.png"]), "--quiet",
                  needles=["images[0]: image not found"])
    assert err.rstrip().endswith(f"did you mean {tmp_path / 'photos' / 'dog.jpg'}?"), err
    refused(capsys, course_cfg(tmp_path, images=["photos/*.jpeg"]), "--quiet",
            needles=["matches no file", f"({tmp_path / 'photos'} holds 2 .jpg, 1 .txt)"])
