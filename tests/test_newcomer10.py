"""Newcomer 10: a PhD student's own small CNN (state_dict + mynet.py) on 64 x 64 grey
images, a labelled folder, hand-written Grad-CAM, and the notebook API."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import explain
from explain.api.display import grid_figure
from explain.config.sections import ModelSpec, Preprocess
from tests.helpers import tiny_net


def test_show_titles_of_a_labelled_run_stay_in_their_cell():
    """Run.show's photo title in a labelled run ("malignant_0 (predicted malignant, label
    malignant)") ran over the next cell's title and off the figure's left edge."""
    photo = np.zeros((64, 64, 3), np.uint8)
    row = [("malignant_0 (predicted malignant, label malignant)", photo),
           ("gradcam · malignant (p 1.000)", photo), ("layercam · malignant (p 1.000)", photo)]
    fig = grid_figure([row, row])
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    width, height = fig.bbox.width, fig.bbox.height
    for r in range(2):
        boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes[3 * r:3 * r + 3]]
        for box in boxes:
            assert box.x0 >= 0 and box.x1 <= width and box.y1 <= height, box
        for left, right in zip(boxes, boxes[1:]):
            assert left.x1 <= right.x0, (left, right)


def _scans(folder, side=32, mode="L"):
    """A labelled tree of small grey scans, two per class, saved as 1-channel PNGs."""
    rng = np.random.default_rng(0)
    for cls in ("benign", "malignant"):
        (folder / cls).mkdir(parents=True)
        for i in range(2):
            grey = rng.integers(60, 120, (side, side), dtype=np.uint8)
            Image.fromarray(grey, "L").convert(mode).save(folder / cls / f"{cls}_{i}.png")
    return folder


def _study(tmp_path, net, **fields):
    """A run of ``net`` (saved whole) on the scans; its config as a dict, its log lines."""
    torch.save(net, tmp_path / "net.pth")
    data = _scans(tmp_path / "data")
    config = {"name": "scans", "model": {"file": str(tmp_path / "net.pth")},
              "classes": {"benign": 0, "malignant": 1}, "images": [{"labelled": str(data)}],
              "target_layers": ["auto"], "methods": ["gradcam"], "metrics": [], **fields}
    lines: list[str] = []
    explain.run(config, out=tmp_path / "results", progress=False, log=lines.append)
    return lines


def test_small_scans_enlarged_by_the_default_size_are_said(tmp_path):
    """64 x 64 scans fed at the default preprocess.size 224 (3.5x larger) took a student's
    network from 100% to 67% accuracy without a word; the note names the size to set."""
    lines = _study(tmp_path, tiny_net())
    note = [line for line in lines if "enlarges the first image" in line]
    assert len(note) == 1, lines
    assert "benign_0.png (32 x 32), 7.0x to 224 x 224" in note[0]
    assert "preprocess.size: 32" in note[0]
    (tmp_path / "b").mkdir()
    quiet = _study(tmp_path / "b", tiny_net(), preprocess={"size": 32})
    assert not [line for line in quiet if "enlarges" in line], quiet


def _grey_net():
    """A network for grey scans: Conv2d(1, ...) first, only torch classes (loads untrusted)."""
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2)).eval()


def test_a_grey_network_is_told_to_set_in_channels(tmp_path):
    """A Conv2d(1, ...) network fed RGB said 'check preprocess.size and the model's input
    size', which is not what is wrong; the line now names model.in_channels."""
    with pytest.raises(explain.ExplainError) as info:
        _study(tmp_path, _grey_net(), preprocess={"size": 32})
    message = str(info.value)
    assert "to have 1 channels, but got 3" in message
    assert "set model.in_channels: 1" in message and "preprocess.size" not in message


def test_a_grey_network_runs_on_the_grey_of_its_scans(tmp_path):
    """With model.in_channels: 1 (and mean/std given once, for the one grey channel) the run's
    probabilities are the network's own on the normalised grey scan."""
    net = _grey_net()
    _study(tmp_path, net, preprocess={"size": 32, "mean": [0.5], "std": [0.25]},
           model={"file": str(tmp_path / "net.pth"), "in_channels": 1})
    summary = json.loads((tmp_path / "results" / "scans" / "summary.json").read_text())
    entry = next(e for e in summary["images"] if e["id"] == "malignant_1")
    grey = np.asarray(Image.open(tmp_path / "data" / "malignant" / "malignant_1.png"),
                      dtype=np.float32) / 255
    with torch.no_grad():
        own = torch.softmax(net(torch.from_numpy((grey - 0.5) / 0.25)[None, None]), 1)[0]
    assert entry["probabilities"]["malignant"] == pytest.approx(float(own[1]), abs=1e-5)
    assert summary["config"]["model"]["in_channels"] == 1
    assert summary["config"]["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    page = (tmp_path / "results" / "scans" / "report.html").read_text()
    assert "net.pth (given 1 grey channel: 0.299 R + 0.587 G + 0.114 B, as Pillow" in page


def test_mean_and_std_take_one_value_or_three():
    """'mean: [0.5]' for a grey network said 'preprocess.mean[1]: required key is missing'
    twice (and std twice): one value now stands for all three, and another count is one line
    that says what to write. An RGB network's model section dumps as before (no new key)."""
    assert Preprocess(mean=[0.5], std=[0.25]).mean == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError) as info:
        Preprocess(mean=[0.5, 0.5])
    assert "three values (R, G, B), or one for all three" in str(info.value)
    assert "in_channels" not in ModelSpec(file="net.pth").model_dump()


def test_in_channels_is_a_whole_number_one_or_three():
    """``in_channels: true`` and ``1.0`` passed as 1 (a Literal compares with ==): a shared
    config's typo ran a grey network's mean on an RGB one. They are one line now."""
    assert ModelSpec(file="net.pth", in_channels=1).in_channels == 1
    for value, shown in ((True, "true"), (1.0, "1.0"), (3.0, "3.0")):
        with pytest.raises(ValueError) as info:
            ModelSpec(file="net.pth", in_channels=value)
        assert f"1 (a grey network) or 3 (RGB), a whole number; got {shown}" in str(info.value)


def test_one_value_that_is_no_number_is_one_problem():
    """``mean: [true]`` was three problems (mean[0], [1], [2]: the value repeated, then
    refused thrice); one line now, as YAML spells it."""
    for value, shown in (([True], "true"), (["a"], "'a'"), ([[0.5]], "[0.5]")):
        with pytest.raises(ValueError) as info:
            Preprocess(mean=value)
        text = str(info.value)
        assert text.count("numbers: three (R, G, B), or one for all three; got " + shown) == 1
        assert "mean.1" not in text and "mean[1]" not in text, text


def test_explain_layers_says_a_grey_network_gets_one_channel(tmp_path, capsys):
    """'explain layers' printed 'input (1, 3, 32, 32)' above a first conv that takes 1 channel
    (model.in_channels: 1): the line now says how the network is given it."""
    import yaml

    from tests.helpers import cli
    torch.save(_grey_net(), tmp_path / "net.pth")
    _scans(tmp_path / "data")
    config = {"model": {"file": "net.pth", "in_channels": 1},
              "classes": {"benign": 0, "malignant": 1}, "images": ["data/benign"],
              "preprocess": {"size": 32, "mean": [0.5], "std": [0.25]}}
    (tmp_path / "grey.yaml").write_text(yaml.safe_dump(config))
    code, err, out = cli(capsys, "layers", tmp_path / "grey.yaml")
    assert code == 0, err
    assert out.splitlines()[0] == ("grey.yaml: 5 modules, input (1, 3, 32, 32) (benign_0.png, "
                                   "given to the network as 1 grey channel)")
