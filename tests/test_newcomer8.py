"""A researcher's first study of a timm ViT and a ResNet over a small labelled folder: a model
with a fixed input size says what to check when an image of another shape reaches it, and
``Run.show`` marks an all-zero map as the report's card does."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import explain
from conftest import OMIT
from helpers import explain_error, tiny_config, tiny_net


class FixedSize(nn.Module):
    """A tiny classifier that, like a timm ViT, takes one input size only."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2:] == (32, 32), f"Input width ({x.shape[-1]}) doesn't match model (32)."
        return self.net(x)


def test_an_image_of_another_size_says_to_check_preprocess_size():
    square = np.full((32, 32, 3), 120, dtype=np.uint8)
    wide = np.full((32, 80, 3), 120, dtype=np.uint8)  # fed wider than 32: the model refuses
    text = explain_error(explain.cam, FixedSize(), [square, wide], "net.0", "gradcam",
                         classes=["cat", "dog"], preprocess={"size": 32})
    assert "forward pass failed on image1 (a 32x64 input)" in text
    assert "doesn't match model (32)" in text
    assert text.endswith("if the model takes one input size, check preprocess.size ([H, W] "
                         "feeds every image at that size)")


def _zero_dog_run(folder, **fields):
    """A run of a tiny net whose 'dog' weights are all negative: its GradCAM map of 'dog' at
    the ReLU is all zero (negative weights times activations >= 0, then the ReLU)."""
    net = tiny_net()
    with torch.no_grad():
        net[4].weight[1] = -1.0
    torch.save(net, folder / "net.pth")
    path = tiny_config(folder, {"file": str(folder / "net.pth")}, classes={"cat": 0, "dog": 1},
                       target_layers=["1"], methods=["gradcam"], metrics=[],
                       output={"dir": str(folder / "results"), "save_arrays": True}, **fields)
    return explain.run(path, progress=False, log=lambda line: None)


def test_show_marks_an_all_zero_map_as_the_card_does(tmp_path):
    run = _zero_dog_run(tmp_path)
    assert run.map("cat", "dog", "gradcam").max() == 0  # the premise: a blank map
    assert "all zero" in (run.folder / "report.html").read_text()  # the card says so
    titles = [ax.get_title() for ax in run.show("cat").axes]
    dog = [t for t in titles if t.startswith("gradcam · dog")]
    cat = [t for t in titles if t.startswith("gradcam · cat")]
    assert dog and dog[0].endswith("· all zero"), titles
    assert cat and "all zero" not in cat[0], titles


def test_the_default_metrics_note_counts_maps_up_to_when_label_and_prediction_may_merge(
        tmp_path):
    """targets [label, predicted] count 2 maps per image before the model has predicted: a run
    said 'off by default for runs over 64 maps (this one 80)' and then '60 maps in 6.6s'."""
    from PIL import Image
    for cls in ("cat", "dog"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        Image.new("RGB", (32, 32), (90, 60, 30)).save(tmp_path / "data" / cls / "a.png")
    torch.save(tiny_net(), tmp_path / "net.pth")
    path = tiny_config(tmp_path, {"file": str(tmp_path / "net.pth")},
                       classes={"cat": 0, "dog": 1}, images=[{"labelled": "data"}],
                       targets=["label", "predicted"], target_layers=["1"],
                       methods=["gradcam"], metrics=OMIT, output={"dir": str(tmp_path / "results")})
    run = explain.run(path, progress=False, log=lambda line: None)
    maps = sum(len(entry.cams) for entry in run.images)
    assert maps == 3  # one image's label is its prediction: one map, not two
    note = next(n for n in run.summary.notes if n.startswith("metrics: "))
    assert "(runs of up to 64 maps; this one up to 4)" in note, note


def test_the_notebook_methods_table_shows_shares_in_percent_as_the_report(tmp_path):
    """The report said 'pointing game 50.0%' where the notebook's table said '0.500'."""
    import re
    torch.save(tiny_net(), tmp_path / "net.pth")
    path = tiny_config(tmp_path, {"file": str(tmp_path / "net.pth")}, classes={"cat": 0, "dog": 1},
                       target_layers=["1"], methods=["gradcam"], metrics=[],
                       annotations={"boxes": {"cat": {"cat": [0, 0, 150, 150]}}},
                       output={"dir": str(tmp_path / "results")})
    run = explain.run(path, progress=False, log=lambda line: None)
    table = run._repr_html_().split("<h4>Methods</h4>")[1].split("</table>")[0]
    header = re.findall(r"<th>(.*?)</th>", table)
    cells = re.findall(r"<td>(.*?)</td>", table)
    shown = dict(zip(header, cells))
    for label in ("pointing game", "energy in box"):
        value = run.trust().lines[0].localisation[
            {"pointing game": "pointing_hit", "energy in box": "energy_in_box"}[label]].mean
        assert shown[label].split(" ")[0] == f"{100 * value:.1f}%", shown
    assert not shown["box IoU"].endswith("%"), shown  # an IoU is no share


def test_no_conclusion_yet_says_what_to_measure_on_more_photos(tmp_path):
    """'explain at least 5 different photos for one' read as a sentence cut short; it says
    what the 5 photos need: a metric, faithfulness or boxes."""
    torch.save(tiny_net(), tmp_path / "net.pth")
    path = tiny_config(tmp_path, {"file": str(tmp_path / "net.pth")}, classes={"cat": 0, "dog": 1},
                       target_layers=["1"], methods=["gradcam"], metrics=[],
                       annotations={"boxes": {"cat": {"cat": [0, 0, 150, 150]}}},
                       output={"dir": str(tmp_path / "results")})
    conclusion = explain.run(path, progress=False, log=lambda line: None).trust().conclusion
    assert conclusion.startswith("no conclusion yet: 1 image(s), no metric measured on at least 5")
    assert conclusion.endswith("explain at least 5 images, each with a faithfulness "
                               "metric (metrics:) or a box (annotations:)")


def test_the_report_says_how_to_turn_faithfulness_on(tmp_path):
    """A run without metrics: the Run section said 'off (metrics: in the config)' where the
    config had no metrics line (the default leaves it off above 64 maps)."""
    from explain.writers.report import environment
    text = environment().globals["metrics_off"]
    assert text == ("off: <code>metrics: [road_combined]</code> turns it on (a config without a "
                    "<code>metrics:</code> line has it for runs of up to 64 maps only)")
    path = tiny_config(tmp_path, {"file": "m.pth"}, classes={"a": 0, "b": 1}, metrics=[],
                       output={"dir": str(tmp_path / "out")})
    torch.save(tiny_net(), tmp_path / "m.pth")
    done = explain.run(path, progress=False, log=lambda line: None)
    page = (done.folder / "report.html").read_text()
    row = page[page.index("<th>faithfulness</th>"):]
    assert row[:row.index("</tr>")].endswith(text + "</td>")
    assert 'href="#skipped"' not in page  # nothing skipped: no menu entry to an empty section


def test_a_random_logit_pass_on_blank_maps_says_it_says_little(tmp_path):
    """GradCAM of 'dog' is all zero on this net: the random-logit check compared each 'cat'
    map with it and passed, '0.00 with a random class's map', as if the method followed the
    class. The line now says how many random-class maps were blank."""
    run = _zero_dog_run(tmp_path, sanity={"enabled": True, "layers": 1, "images": 1})
    checked = run.summary.sanity.methods[0]
    pairs = [(m.class_name, m.random_class) for m in run.summary.sanity.maps]
    assert checked.logit_blank == sum(other == "dog" for _, other in pairs) >= 1, pairs
    _, text = run.summary.sanity.verdicts()["gradcam"]
    assert text.endswith(f"({checked.logit_blank} of {len(pairs)} random-class map(s) all blank: "
                         f"a blank map is unlike any map, so this says little)"), text
    # the report's sanity table says it beside its 'pass' too (it showed 'pass, 0' alone)
    page = " ".join((run.folder / "report.html").read_text().split())
    assert (f"{checked.logit_blank} of {len(pairs)} random-class map(s) were blank (one value: "
            f"a class the model rejects): a blank map is unlike any map, so the random-logit "
            f"pass says little.") in page


def test_a_run_s_failed_forward_pass_names_the_config(tmp_path):
    """A timm ViT takes one input size: a square first photo passes the checks, a wide one
    fails in its batch, and the line names the config file as a planning error does."""
    timm = __import__("pytest").importorskip("timm")
    from PIL import Image
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2,
                            img_size=32, patch_size=8, depth=1, embed_dim=24, num_heads=2)
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (32, 32), (90, 60, 30)).save(tmp_path / "pics" / "a.png")
    Image.new("RGB", (64, 32), (30, 60, 90)).save(tmp_path / "pics" / "b.png")
    path = tiny_config(tmp_path, {"file": "vit.pth", "arch": "timm:vit_tiny_patch16_224",
                                  "arch_args": {"num_classes": 2, "img_size": 32,
                                                "patch_size": 8, "depth": 1,
                                                "embed_dim": 24, "num_heads": 2}},
                       classes={"cat": 0, "dog": 1}, images=["pics"], target_layers="auto",
                       preprocess={"size": 32, "multiple_of": 8}, methods=["gradcam"],
                       metrics=[], output={"dir": str(tmp_path / "results")})
    line = explain_error(explain.run, path, progress=False, log=lambda line: None)
    assert line.startswith(f"{path}: model: the forward pass failed on b (a 32x64 input)"), line
