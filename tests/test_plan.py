"""The run plan: values worked out once. The cost estimate counts the slots of ``targets: topK``
and the channels of token and channels-last layers (through their layouts); the first image is
decoded once in a run; the config the caller passed is never changed; only the engine (and the
hand-written reference) put hooks on a model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops.misc import Permute

from conftest import IMAGES, write_config
from explain import images as images_module
from explain.images import reading
from explain.writers import panels
from explain.config import load_config
from explain.runner import RunOptions, run

REPO = Path(__file__).resolve().parent.parent
PASSES = re.compile(r"estimate: scorecam runs one forward pass per channel \((\d+) in (\S+)\) "
                    r"for each image(?:, shared by its (\d+) classes)?: ([\d,]+) passes")


def tiny_cnn(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, classes)).eval()


def tiny_vit(classes: int = 3) -> nn.Module:
    """torchvision's VisionTransformer, tiny: a class token + 4x4 patch tokens of width 12."""
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=1,
                                                num_heads=2, hidden_dim=12, mlp_dim=16,
                                                num_classes=classes).eval()


def tiny_channels_last(classes: int = 3) -> nn.Module:
    """A layer whose output is (B, h, w, C): 8x8 positions of 3 channels."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 3, 4, stride=4), Permute([0, 2, 3, 1]), nn.LayerNorm(3),
                         Permute([0, 3, 1, 2]), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(3, classes)).eval()


def estimate(tmp_path: Path, net: nn.Module, layer: str, **fields) -> tuple[int, str, int, int]:
    """(channels, layers, classes sharing the passes, passes) of a run's ScoreCAM estimate."""
    torch.save(net, tmp_path / "m.pth")
    cfg = write_config(tmp_path, model={"file": str(tmp_path / "m.pth")},
                       classes={"cat": 0, "dog": 1, "other": 2}, target_layers=[layer],
                       methods=[{"name": "scorecam", "batch_size": 64}],
                       preprocess={"size": [32, 32]}, report={"enabled": False},
                       **fields)
    summary = run(load_config(cfg), RunOptions(progress=False, log=lambda _: None))
    found = [PASSES.search(n) for n in summary.notes]
    (match,) = [m for m in found if m]
    return int(match[1]), match[2], int(match[3] or 1), int(match[4].replace(",", ""))


def test_the_estimate_counts_every_slot_of_top_k(tmp_path):
    """3 images x 8 channels, shared by the 2 slots of top2 (explain.sharedpasses); it used
    to count one slot per image for topK."""
    channels, layer, shared, passes = estimate(tmp_path, tiny_cnn(), "2", targets="top2")
    assert (channels, layer, shared) == (8, "2", 2) and passes == 3 * 8


def test_the_estimate_counts_a_token_layers_channels_not_its_tokens(tmp_path):
    """A ViT block gives (B, 1 + 16 tokens, 12): 12 channels (it used to say 17)."""
    channels, layer, shared, passes = estimate(tmp_path, tiny_vit(),
                                               "encoder.layers.encoder_layer_0", targets=["cat"])
    assert (channels, layer, shared, passes) == (12, "encoder.layers.encoder_layer_0", 1, 3 * 12)


def test_the_estimate_counts_a_channels_last_layers_channels(tmp_path):
    """A LayerNorm over (B, 8, 8, 3) gives 3 channels (it used to say 8, a spatial size)."""
    channels, _, shared, passes = estimate(tmp_path, tiny_channels_last(), "2",
                                           targets=["cat", "dog"])
    assert (channels, shared, passes) == (3, 2, 3 * 3)


def test_the_first_image_is_decoded_once_and_the_config_is_not_changed(tmp_path, monkeypatch):
    """A run with auto layers and classes from the model: each image decoded once (preflight,
    batches and panels share the decode) and the caller's config left as it was."""
    decoded: list[str] = []
    real = reading.read_rgb

    def counting(path, *args, **kwargs):
        decoded.append(Path(path).name)
        return real(path, *args, **kwargs)

    for module in (images_module, reading, panels):  # every name a decode goes through
        monkeypatch.setattr(module, "read_rgb", counting)
    net = torchvision.models.resnet18(num_classes=3).eval()
    torch.save(net, tmp_path / "r.pth")
    path = write_config(tmp_path, model={"file": str(tmp_path / "r.pth")}, target_layers="auto",
                        preprocess={"size": 64}, workers=0, methods=["gradcam", "layercam"])
    cfg = load_config(path)
    before = cfg.model_dump()
    summary = run(cfg, RunOptions(progress=False, log=lambda _: None))
    assert sorted(decoded) == ["both.jpg", "cat.jpg", "dog.jpg"]
    assert cfg.model_dump() == before and cfg.target_layers == ["auto"]
    assert summary.config.target_layers == ["layer4"]  # what the run used
    assert (tmp_path / "results" / "exp" / "panels" / "cat.png").is_file()


def test_only_the_engine_and_the_reference_hook_a_model():
    hooks = re.compile(r"register_(forward|forward_pre|full_backward)_hook|\.register_hook\(")
    found = sorted(str(p.relative_to(REPO)) for p in (REPO / "explain").rglob("*.py")
                   if hooks.search(p.read_text(encoding="utf-8")))
    # models/keras.py wraps Keras layers as torch modules: hooks of its own wrapper, not a probe
    # explain/enginedata.py: ``watching``, the engine's one hook helper (the engine, the layer
    # survey, batching and the shared passes all hook through it)
    assert found == ["explain/enginedata.py", "explain/models/keras.py", "explain/reference.py"]


def test_a_config_cannot_be_changed_after_loading(tmp_path):
    cfg = load_config(write_config(tmp_path, model={"file": "m.pth"},
                                   target_layers=["features.10"]))
    with pytest.raises(Exception, match="frozen"):
        cfg.target_layers = ["features.0"]
    with pytest.raises(Exception, match="frozen"):
        cfg.output.colormap = "turbo"


def test_map_slots_are_made_once_with_their_records(tmp_path):
    """Every writer reads the same MapSlot objects: the record a slot carries is the one in
    the image's entry, and its map is the array the engine made for that class and method."""
    from explain.writers import Writer
    from explain.writers.lineup import default_writers as real_defaults
    seen = []

    class Spy(Writer):
        def write(self, ctx, batch):
            seen.append(batch)

    import explain.runner as runner_module
    original = runner_module.default_writers
    runner_module.default_writers = lambda cfg: real_defaults(cfg) + [Spy()]
    try:
        path = write_config(tmp_path, methods=["gradcam", "layercam"], targets=["dog", "cat"],
                            model={"builder": "torchvision.models.alexnet",
                                   "builder_args": {"num_classes": 2}},
                            target_layers=["features.10"], preprocess={"size": 64},
                            images=[str(IMAGES / "cat.jpg")])
        run(load_config(path), RunOptions(progress=False, log=lambda _: None))
    finally:
        runner_module.default_writers = original
    (batch,) = seen
    view = batch.images[0]
    assert [(m.class_name, m.method, m.slot) for m in view.maps] == [
        ("dog", "gradcam", 0), ("dog", "layercam", 0), ("cat", "gradcam", 1), ("cat", "layercam", 1)]
    for one in view.maps:
        assert one.record is view.entry.record(one.class_name, one.method)
        assert one.cam is not None and (one.cam == batch.result.maps[one.method][0, one.slot]).all()


def test_an_unlabelled_image_explains_its_prediction_in_the_label_slot(tmp_path):
    """targets [label, predicted] over a labelled tree and a plain photo: the photo's label
    slot is its prediction (one record), with a note; labelled images keep their label."""
    import shutil
    for cls in ("cat", "dog"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        shutil.copy(IMAGES / f"{cls}.jpg", tmp_path / "data" / cls / f"{cls}.jpg")
    path = write_config(tmp_path, model={"builder": "torchvision.models.alexnet",
                                         "builder_args": {"num_classes": 2}},
                        target_layers=["features.10"], preprocess={"size": 64},
                        targets=["label", "predicted"], report={"enabled": False},
                        images=[{"labelled": str(tmp_path / "data")}, str(IMAGES / "both.jpg")])
    summary = run(load_config(path), RunOptions(progress=False, log=lambda _: None))
    entries = {e.id: e for e in summary.images}
    both = entries["both"]
    assert both.label is None and [r.class_name for r in both.cams] == [both.predicted]
    for cls in ("cat", "dog"):
        explained = [r.class_name for r in entries[cls].cams]
        assert explained[0] == cls and set(explained) == {cls, entries[cls].predicted}
    assert any("1 image(s) without a label (e.g. both.jpg)" in n for n in summary.notes)
