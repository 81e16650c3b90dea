"""Newcomer 10: a PhD student's own small CNN (state_dict + mynet.py) on 64 x 64 grey
images, a labelled folder, hand-written Grad-CAM, and the notebook API."""

import numpy as np

from explain.api.display import grid_figure


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
    from PIL import Image
    rng = np.random.default_rng(0)
    for cls in ("benign", "malignant"):
        (folder / cls).mkdir(parents=True)
        for i in range(2):
            grey = rng.integers(60, 120, (side, side), dtype=np.uint8)
            Image.fromarray(grey, "L").convert(mode).save(folder / cls / f"{cls}_{i}.png")
    return folder


def _study(tmp_path, net, **fields):
    """A run of ``net`` (saved whole) on the scans; its config as a dict, its log lines."""
    import torch

    import explain
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
    from tests.helpers import tiny_net
    lines = _study(tmp_path, tiny_net())
    note = [line for line in lines if "enlarges the first image" in line]
    assert len(note) == 1, lines
    assert "benign_0.png (32 x 32), 7.0x to 224 x 224" in note[0]
    assert "preprocess.size: 32" in note[0]
    (tmp_path / "b").mkdir()
    quiet = _study(tmp_path / "b", tiny_net(), preprocess={"size": 32})
    assert not [line for line in quiet if "enlarges" in line], quiet
