"""configs/vit_example.yaml as shipped, and whole runs on models that are not plain CNNs:
class names from the model with targets: top3, a dict-returning model, a binary head."""

from __future__ import annotations

import functools
import json
import shutil

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget
from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform
from torch import nn

from conftest import IMAGES, REPO, write_config
from helpers import class_targets, library_map, refused
from explain.cli import main
from explain.config import load_config
from explain.models.heads import Classifier
from explain.images import find_images, prepare

timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")


@pytest.fixture(scope="module")
def vit_tree(tmp_path_factory):
    """The repository layout with a random-weight ViT-Tiny saved as models/vit_tiny_catdog.safetensors."""
    root = tmp_path_factory.mktemp("vit")
    (root / "configs").mkdir()
    shutil.copy(REPO / "configs" / "vit_example.yaml", root / "configs")
    shutil.copytree(IMAGES, root / "images")
    (root / "models").mkdir()
    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2).eval()
    safetensors_torch.save_file(net.state_dict(), root / "models" / "vit_tiny_catdog.safetensors")
    return root, net


def test_vit_example_runs_and_matches_the_library(vit_tree):
    root, net = vit_tree
    config = root / "configs" / "vit_example.yaml"
    assert main([str(config), "--quiet", "--set", "output.save_arrays=true",
                 "--set", "methods=[gradcam]", "--set", "channels.enabled=false",
                 "--set", "metrics=[]"]) == 0  # the default ROAD is tested in test_road.py
    run = root / "results" / "vit_example"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config"]["target_layers"] == ["blocks.11.norm1"]
    assert any("auto chose 'blocks.11.norm1'" in n for n in summary["notes"])
    assert [len(i["cams"]) for i in summary["images"]] == [2, 2, 2]
    # the run's map equals the library called with its own ViT reshape_transform
    cfg = load_config(config)
    refs, _ = find_images(cfg)
    x = prepare(refs[2], cfg.preprocess).tensor[None]
    model = Classifier(net)
    reshape = functools.partial(vit_reshape_transform, height=14, width=14)
    for cls, idx in (("cat", 0), ("dog", 1)):
        lib = library_map(GradCAM, model, net.blocks[11].norm1, x, class_targets(idx, 1),
                          reshape)[0]
        ours = np.load(run / "cams" / "gradcam" / f"both__{cls}.npy")
        assert ours.shape == (224, 224)
        assert np.abs(ours - lib).max() <= 1e-5


def test_vit_example_channel_views_see_192_channels(vit_tree):
    root, _ = vit_tree
    config = root / "configs" / "vit_example.yaml"
    assert main([str(config), "--quiet", "--set", "methods=[layercam]", "--set", "name=vitch",
                 "--set", "images=[../images/cat.jpg]",
                 "--set", "metrics=[]"]) == 0  # ROAD on a ViT is most of the run's time
    item = json.loads((root / "results" / "vitch" / "items" / "cat.json").read_text())
    record = item["entry"]["cams"][0]
    assert record["channels"]["channels"] == 192  # the ViT-Tiny width, seen as a 14x14 map


def test_class_names_from_the_model_and_top3(tmp_path):
    """torchvision resnet18 (1000 outputs, random weights) from a state_dict: no classes in the
    config, targets: top3 explains each image's three most likely ImageNet classes by name."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=1000).eval()
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    cfg = write_config(tmp_path, classes={}, targets="top3",
                       model={"file": str(tmp_path / "r18.pth"),
                              "arch": "torchvision.models.resnet18"},
                       preprocess={"size": [64, 64]}, target_layers="auto",
                       images=[str(IMAGES / "cat.jpg")])
    assert main([str(cfg), "--quiet"]) == 0
    summary = json.loads((tmp_path / "results" / "exp" / "summary.json").read_text())
    image = summary["images"][0]
    x = prepare(find_images(load_config(cfg))[0][0], load_config(cfg).preprocess).tensor[None]
    logits = net(x)[0].detach()
    top = logits.argsort(descending=True)[:3].tolist()
    categories = torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"]
    expected = [categories[i].replace(" ", "_") for i in top]
    assert [r["class"] for r in image["cams"]] == expected
    assert image["predicted"] == expected[0]
    assert summary["config"]["target_layers"] == ["layer4"]
    assert any("1000 names from" in n for n in summary["notes"])
    assert len(image["probabilities"]) <= 8  # the top five and the explained ones, not 1000


def test_all_targets_with_1000_model_classes_is_refused(tmp_path, capsys):
    torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), tmp_path / "r.pth")
    cfg = write_config(tmp_path, classes={}, model={"file": str(tmp_path / "r.pth"),
                                                    "arch": "torchvision.models.resnet18"},
                       preprocess={"size": [64, 64]}, target_layers=["layer4"])
    refused(capsys, cfg, "--quiet", needles=["all 1000 classes", "top3"])
    assert not (tmp_path / "results").exists()


class DictNet(nn.Module):
    def __init__(self, outputs: int = 2):
        super().__init__()
        torch.manual_seed(5)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, outputs)

    def forward(self, x):
        f = self.features(x)
        return {"logits": self.fc(f.mean((2, 3))).squeeze(-1), "features": f}


def test_dict_model_needs_output_key(tmp_path, capsys):
    torch.save(DictNet(), tmp_path / "dict.pth")
    cfg = write_config(tmp_path, model={"file": str(tmp_path / "dict.pth"), "trust": True},
                       preprocess={"size": [32, 32]}, target_layers=["features.2"])
    refused(capsys, cfg, "--quiet", needles=[
        "forward returns a dict with keys 'logits': tensor (1, 2), 'features': tensor",
        "model.output: logits"])
    assert main([str(cfg), "--quiet", "--set", "model.output=logits"]) == 0


def test_binary_head_run(tmp_path):
    """One logit: classes name the negative (0) and positive (1) side; probabilities by sigmoid,
    maps equal the library's BinaryClassifierOutputTarget."""
    net = DictNet(outputs=1)
    torch.save(net, tmp_path / "bin.pth")
    cfg = write_config(tmp_path, classes={"no_cat": 0, "cat": 1},
                       model={"file": str(tmp_path / "bin.pth"), "trust": True,
                              "output": "logits", "head": "binary"},
                       preprocess={"size": [32, 32]}, target_layers=["features.2"],
                       output={"dir": str(tmp_path / "results"), "save_arrays": True},
                       images=[str(IMAGES / "cat.jpg")])
    assert main([str(cfg), "--quiet"]) == 0
    run = tmp_path / "results" / "exp"
    image = json.loads((run / "summary.json").read_text())["images"][0]
    x = prepare(find_images(load_config(cfg))[0][0], load_config(cfg).preprocess).tensor[None]
    z = float(net(x)["logits"].detach())
    p = 1 / (1 + np.exp(-z))
    assert image["probabilities"] == pytest.approx({"no_cat": 1 - p, "cat": p}, abs=1e-6)
    model = Classifier(net, "logits")
    for cls, idx in (("no_cat", 0), ("cat", 1)):
        lib = library_map(GradCAM, model, net.features[2], x, [BinaryClassifierOutputTarget(idx)])[0]
        assert np.abs(np.load(run / "cams" / "gradcam" / f"cat__{cls}.npy") - lib).max() <= 1e-5


def test_a_layer_the_class_score_never_reaches_is_named_before_the_run(vit_tree):
    """A ViT's final norm is read only through the class token: every gradient map there is
    blank. The run says so in a note naming the layer (it used to say only that the maps
    were identical for every class)."""
    root, _ = vit_tree
    config = root / "configs" / "vit_example.yaml"
    assert main([str(config), "--quiet", "--layer", "norm", "--set", "methods=[gradcam]",
                 "--set", "channels.enabled=false", "--set", "metrics=[]",
                 "--set", "images=[../images/cat.jpg]", "--set", "name=blind"]) == 0
    summary = json.loads((root / "results" / "blind" / "summary.json").read_text())
    notes = [n for n in summary["notes"] if n.startswith("target_layers[0] 'norm': ")]
    assert len(notes) == 1 and "gradient methods' maps at it are blank" in notes[0]
    assert all(c["peak_value"] == 0 for c in summary["images"][0]["cams"])
    # the usable layer gets no such note
    from explain.engine import _blind
    from explain.models.layouts import Layout
    acts = torch.rand(1, 4, 3, 3, requires_grad=True)
    other = torch.rand(1, 4, 3, 3, requires_grad=True)
    corner = torch.rand(1, 4, 3, 3, requires_grad=True)
    logits = acts.sum(dim=(2, 3)) + 0 * other.sum() + corner[:, :, 0, 0].sum()
    assert _blind(logits, [acts, other, corner], [Layout("nchw")] * 3,
                  ["reached", "blind", "one position"]) == ["blind", "one position"]
