"""Guided backpropagation, Guided Grad-CAM and Deep Feature Factorization concepts: checked
against an independent guided-ReLU gradient, a planted left/right image, and the model left
untouched."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from explain import measures
from explain.config import Config
from explain.engine import BatchResult, CamEngine, EngineOptions, map_slots
from explain.models.heads import Classifier, Head, ScoreModel
from explain.images import ImageRef, Prepared
from explain.layers import find_layer
from explain.models.layouts import Layout
from explain.plan import RunPlan, layer_infos
from explain.outputs import RunFolder
from explain.results import ImageEntry, MapRecord, RunSummary
from explain.batches import BatchContext, ImageView
from explain.writers import RunContext
from explain.writers.concepts import (ConceptWriter, concept_colours, concept_figure,
                                      concept_head, concept_order, concept_overlay,
                                      concept_shares, factorize, legend_lines, on_device,
                                      panel_boxes, panel_scale, top_classes)
from explain.writers.guided import (GuidedWriter, display, guided_cam, guided_gradient,
                                    relu_note, relu_slots)

SIDE = 64
MEAN, STD = 0.45, 0.25


class TinyNet(nn.Module):
    """Conv + ReLU layers (one inplace ReLU, one ReLU object registered twice and run twice),
    global pool, Linear(16, 2)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        shared = nn.ReLU()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(8, 16, 3, padding=1, stride=2), shared,
                                      nn.Conv2d(16, 16, 3, padding=1))
        self.act = shared
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.act(self.features(x))).flatten(1))


BUILT: list[nn.Module] = []  # what tiny_net handed out, to inspect after a run


def tiny_net() -> nn.Module:
    """Builder for configs (model.builder: test_guided_concepts:tiny_net)."""
    BUILT.append(TinyNet().eval())
    return BUILT[-1]


class TokenNet(nn.Module):
    """A transformer-shaped stand-in: patch embedding to (B, 1 + h*w, C) tokens with a class
    token, a token-wise MLP, a Linear head on the class token."""

    def __init__(self, seed: int = 0, dim: int = 12):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Conv2d(3, dim, 8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.block = nn.Sequential(nn.Linear(dim, dim), nn.GELU())
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], 1)
        tokens = tokens + self.block(tokens)
        return self.head(tokens.mean(1))


# ---- an independent guided backprop ------------------------------------------------------------
class RefGuidedReLU(torch.autograd.Function):
    """ReLU forward; backward passes a gradient only where the input and the gradient are both
    positive (Springenberg et al.)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0) * (grad > 0)


class RefGuided(nn.Module):
    def forward(self, x):
        return RefGuidedReLU.apply(x)


def reference_guided(net: nn.Module, head: Head, x: torch.Tensor, category: int) -> np.ndarray:
    """d score[category] / d x through a copy of ``net`` whose ReLUs are RefGuided, (H, W, C)."""
    twin = copy.deepcopy(net)
    for parent in list(twin.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, nn.ReLU):
                parent._modules[name] = RefGuided()
    image = x.detach().clone()[None].requires_grad_(True)
    ScoreModel(Classifier(twin), head)(image)[0, category].backward()
    return image.grad[0].permute(1, 2, 0).numpy()


def plain_gradient(net: nn.Module, head: Head, x: torch.Tensor, category: int) -> np.ndarray:
    twin = copy.deepcopy(net)
    image = x.detach().clone()[None].requires_grad_(True)
    ScoreModel(Classifier(twin), head)(image)[0, category].backward()
    return image.grad[0].permute(1, 2, 0).numpy()


def module_state(net: nn.Module) -> list[tuple]:
    """Every registered module by path: its object, type, inplace flag, training flag."""
    return [(name, id(m), type(m), getattr(m, "inplace", None), m.training)
            for name, m in net.named_modules(remove_duplicate=False)]


# ---- pictures and a hand-built run ---------------------------------------------------------
def split_photo(side: int = SIDE) -> np.ndarray:
    """Left half red, right half blue (with a faint texture), float32 RGB in 0..1."""
    rng = np.random.default_rng(0)
    rgb = np.zeros((side, side, 3), np.float32)
    rgb[:, : side // 2] = (0.9, 0.1, 0.1)
    rgb[:, side // 2:] = (0.1, 0.15, 0.9)
    return np.clip(rgb + rng.normal(0, 0.02, rgb.shape), 0, 1).astype(np.float32)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((rgb - MEAN) / STD).permute(2, 0, 1).float()


def make_ctx(folder: Path, net: nn.Module, head: Head = Head(), **sections) -> RunContext:
    """A run's context for TinyNet at features.4, its plan made from a real preflight pass
    on the split photo."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = Config.model_validate({
        "model": {"builder": "explain.demo:catdog_efficientnet_lite0"},
        "classes": {"cat": 0, "dog": 1}, "images": ["x.png"], "target_layers": ["features.4"],
        "methods": ["gradcam", "layercam"], "output": {"save_arrays": True}, **sections})
    summary = RunSummary(name="t", config_file="", output_dir=str(folder), device="cpu",
                         config=cfg, versions={})
    model = Classifier(net)
    first = Prepared(ImageRef("split", Path("split.png"), False), to_tensor(split_photo()),
                     split_photo())
    watch = (("concepts.layer", find_layer(net, cfg.concepts.layer or "features.4")[1]),)
    with CamEngine(model, [net.features[4]], cfg.methods, torch.device("cpu"),
                   EngineOptions(layer_names=["features.4"], head=head,
                                 watch_layers=watch)) as engine:
        probe = engine.probe(first.tensor[None])
    plan = RunPlan(cfg=cfg, images=(first.ref,), notes=(), net=net, model=model, head=head,
                   device=torch.device("cpu"), layers=layer_infos(cfg, probe, net),
                   classes=MappingProxyType({0: "cat", 1: "dog"}), first=first, probe=probe)
    return RunContext(plan=plan, run=RunFolder(folder), summary=summary)


def make_batch(ctx: RunContext, photos: dict[str, np.ndarray]) -> BatchContext:
    """Both classes explained for every photo; CAMs are made-up smooth maps in 0..1."""
    x = torch.stack([to_tensor(p) for p in photos.values()])
    with torch.no_grad():
        logits = ctx.plan.model(x).numpy()
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    cams = {"gradcam": np.stack([xx, 1 - xx]), "layercam": np.stack([yy, (xx + yy) / 2])}
    maps = {m: np.repeat(c[None], len(photos), 0).astype(np.float32) for m, c in cams.items()}
    classes = np.tile([0, 1], (len(photos), 1))
    per_image = map_slots(classes, dict(ctx.classes), maps)
    result = BatchResult(logits, classes, maps, per_image=per_image)
    views = []
    for b, (name, rgb) in enumerate(photos.items()):
        entry = ImageEntry(id=name, path=f"{name}.png", input_size=[SIDE, SIDE],
                           probabilities={"cat": 0.5, "dog": 0.5}, predicted="cat")
        for one in per_image[b]:
            one.record = MapRecord(class_name=one.class_name, method=one.method,
                                   file=f"cams/{one.method}/{name}__{one.class_name}.png",
                                   **measures.map_stats(one.cam))
            entry.cams.append(one.record)
        views.append(ImageView(Prepared(ImageRef(name, Path(f"{name}.png"), False), x[b], rgb),
                               entry, b, per_image[b]))
    return BatchContext(x, result, views)


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


# ---- guided backprop -------------------------------------------------------------------------
@pytest.mark.parametrize("head, category", [(Head(), 0), (Head(), 1),
                                            (Head("multilabel", "probability"), 1),
                                            (Head("softmax", "probability"), 0)])
def test_guided_gradient_matches_an_independent_guided_relu(head, category):
    net = TinyNet().eval()
    x = to_tensor(split_photo())
    got = guided_gradient(ScoreModel(Classifier(net), head), x, category)
    want = reference_guided(net, head, x, category)
    assert got.shape == (SIDE, SIDE, 3) and got.dtype == np.float32
    assert np.abs(want).max() > 0
    assert np.allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    # and it is not the plain gradient: the guided ReLUs did something
    plain = plain_gradient(net, head, x, category)
    assert not np.allclose(got, plain, rtol=1e-3, atol=1e-3 * np.abs(plain).max())


def test_guided_pass_leaves_the_model_as_it_was():
    net = TinyNet().train()  # training flags must come back too (the library calls eval())
    net.features[1].register_forward_hook(lambda *a: None)
    before = module_state(net)
    slots = [(id(p), n, id(m)) for p, n, m in relu_slots(net)]
    assert len(slots) == 3  # the inplace one, the shared one in both of its places
    scorer = ScoreModel(Classifier(net), Head())
    x = to_tensor(split_photo())
    guided_gradient(scorer, x, 1)
    assert module_state(net) == before
    assert [(id(p), n, id(m)) for p, n, m in relu_slots(net)] == slots
    assert net.features[1].inplace is True and len(net.features[1]._forward_hooks) == 1
    assert all(p.grad is None and p.requires_grad for p in net.parameters())
    # still the same function afterwards (no guided module left behind)
    with torch.no_grad():
        assert torch.equal(net.eval()(x[None]), TinyNet().eval()(x[None]))


@pytest.mark.parametrize("bad", ["input", "category"])
def test_guided_pass_restores_the_model_when_it_fails(bad):
    net = TinyNet().eval()
    before = module_state(net)
    scorer = ScoreModel(Classifier(net), Head())
    x = to_tensor(split_photo())
    with pytest.raises((RuntimeError, IndexError)):
        guided_gradient(scorer, torch.zeros(4, SIDE, SIDE) if bad == "input" else x,
                        5 if bad == "category" else 0)
    assert module_state(net) == before
    assert all(p.grad is None and p.requires_grad for p in net.parameters())


def test_existing_parameter_gradients_are_kept():
    net = TinyNet().eval()
    for p in net.parameters():
        p.grad = torch.full_like(p, 7.0)
    guided_gradient(ScoreModel(Classifier(net), Head()), to_tensor(split_photo()), 0)
    assert all(torch.all(p.grad == 7.0) for p in net.parameters())


def test_guided_cam_is_the_pixelwise_product():
    rng = np.random.default_rng(1)
    guided = rng.normal(size=(5, 6, 3)).astype(np.float32)
    cam = rng.uniform(size=(5, 6)).astype(np.float32)
    out = guided_cam(guided, cam)
    for c in range(3):
        assert np.allclose(out[..., c], guided[..., c] * cam)
    with pytest.raises(ValueError, match="differ in size"):
        guided_cam(guided, cam[:4])


def test_relu_note_names_what_is_not_guided():
    assert relu_note(TinyNet()) is None
    note = relu_note(TokenNet())
    assert "no nn.ReLU" in note and "GELU x1" in note and "plain input gradients" in note
    mixed = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(), nn.SiLU(), nn.ReLU6())
    assert "1 nn.ReLU module(s) guided" in relu_note(mixed) and "SiLU x1" in relu_note(mixed)


def test_guided_writer_writes_what_it_computes(tmp_path):
    net = TinyNet().eval()
    ctx = make_ctx(tmp_path / "run", net, guided={"enabled": True})
    photos = {"split": split_photo(), "flip": split_photo()[:, ::-1].copy()}
    batch = make_batch(ctx, photos)
    before = module_state(net)
    writer = GuidedWriter()
    writer.start(ctx)
    writer.write(ctx, batch)
    assert module_state(net) == before and all(p.grad is None for p in net.parameters())
    assert ctx.summary.notes == []  # every activation is an nn.ReLU
    root = ctx.run.root
    for b, image in enumerate(photos):
        for s, cls in enumerate(("cat", "dog")):
            guided = np.load(root / "guided" / f"{image}__{cls}.npy")
            assert np.allclose(guided, reference_guided(net, Head(), batch.x[b], s),
                               rtol=1e-4, atol=1e-6 * np.abs(guided).max())
            assert np.array_equal(read_rgb(root / "guided" / f"{image}__{cls}.png"),
                                  display(guided))
            for m in ctx.methods:
                product = np.load(root / "guided_cam" / m / f"{image}__{cls}.npy")
                cam = batch.result.maps[m][b, s]
                assert np.allclose(product, guided * cam[..., None])
                png = read_rgb(root / "guided_cam" / m / f"{image}__{cls}.png")
                assert np.array_equal(png, display(product))
                record = batch.images[b].entry.record(cls, m)
                if "guided_file" in MapRecord.model_fields:
                    assert record.guided_file == f"guided_cam/{m}/{image}__{cls}.png"


def test_display_is_grey_where_the_gradient_is_zero():
    image = np.zeros((8, 8, 3), np.float32)
    image[2, 3] = (1.0, -1.0, 0.0)
    shown = display(image)
    assert shown.dtype == np.uint8 and shown.shape == (8, 8, 3)
    assert abs(int(shown[0, 0, 0]) - 127) <= 2  # the mean goes to grey
    assert shown[2, 3, 0] > 200 and shown[2, 3, 1] < 60


# ---- concepts: pure parts ----------------------------------------------------------------------
def test_shares_order_and_top_classes():
    maps = np.zeros((3, 4, 10), np.float32)
    maps[0, :, :2] = 1     # 20% of the pixels
    maps[1, :, 2:9] = 1    # 70%
    maps[2, :, 9:] = 1     # 10%
    shares = concept_shares(maps)
    assert np.allclose(shares, [0.2, 0.7, 0.1]) and shares.sum() == pytest.approx(1)
    assert list(concept_order(shares)) == [1, 0, 2]
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    assert top_classes(probs, {0: "a", 1: "b", 2: "c"}, 2) == [[("b", 0.6), ("c", 0.3)],
                                                               [("a", 0.5), ("c", 0.3)]]
    assert top_classes(probs, {0: "a", 2: "c"}, 5) == [[("c", 0.3), ("a", 0.1)],
                                                       [("a", 0.5), ("c", 0.3)]]
    assert legend_lines(np.array([0.7, 0.3]), None) == ["1. 70% of the image",
                                                        "2. 30% of the image"]


def test_concept_head_is_the_last_linear_reading_the_channels():
    net = TinyNet()
    assert concept_head(net, 16, 2) is net.fc
    net.decoy = nn.Linear(16, 5)  # registered after fc, but not the model's 2 outputs
    assert concept_head(net, 16, 2) is net.fc
    assert concept_head(net, 8, 2) is None
    tokens = TokenNet()
    assert concept_head(tokens, 12, 3) is tokens.head  # not the block's Linear(12, 12)
    wide = nn.Linear(4, 2).double()  # DFF hands over CPU float32 vectors
    out = on_device(wide)(torch.ones(3, 4))
    assert out.dtype == torch.float32 and torch.allclose(out, wide(torch.ones(3, 4).double()).float())


def test_overlay_colours_each_region_in_its_concepts_colour():
    maps = np.zeros((2, 6, 8), np.float32)
    maps[0, :, :4] = 1
    maps[1, :, 4:] = 1
    colours = concept_colours(2)
    overlay = concept_overlay(np.zeros((6, 8, 3), np.float32), maps, colours)
    for i, cols in enumerate((slice(0, 4), slice(4, 8))):
        want = 0.7 * 255 * colours[i]  # photo weight 0.3, a black photo here
        assert np.abs(overlay[:, cols].reshape(-1, 3) - want).max() <= 4


# ---- concepts: the library's DFF on a planted image ---------------------------------------------
def halves(maps: np.ndarray, margin: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Per concept, the share of the left and of the right half (away from the seam and the
    border) where it is the highest map."""
    winner = maps.argmax(0)
    side = maps.shape[2]
    left = winner[margin:-margin, margin:side // 2 - margin]
    right = winner[margin:-margin, side // 2 + margin:-margin]
    k = len(maps)
    return (np.bincount(left.ravel(), minlength=k) / left.size,
            np.bincount(right.ravel(), minlength=k) / right.size)


def test_two_concepts_split_a_left_right_image():
    net = TinyNet().eval()
    x = to_tensor(split_photo())[None]
    maps, scores = factorize(Classifier(net), net.features[4], x, 2, layout=Layout("nchw"),
                             head=net.fc)
    assert maps.shape == (2, SIDE, SIDE) and scores.shape == (2, 2)
    left, right = halves(maps)
    a, b = left.argmax(), right.argmax()
    assert a != b and left[a] >= 0.95 and right[b] >= 0.95
    again, _ = factorize(Classifier(net), net.features[4], x, 2, layout=Layout("nchw"),
                         head=net.fc)
    assert np.array_equal(maps, again)  # NMF is seeded: deterministic
    assert not net.features[4]._forward_hooks  # the library's hooks were released


def test_factorize_through_a_token_layout():
    net = TokenNet().eval()
    x = to_tensor(split_photo())[None]
    layout = Layout("tokens", 1, (SIDE // 8, SIDE // 8))
    maps, scores = factorize(Classifier(net), net.block, x, 2, layout=layout, head=net.head)
    assert maps.shape == (2, SIDE, SIDE) and scores.shape == (2, 3)
    left, right = halves(maps, margin=8)
    assert left.argmax() != right.argmax() and left.max() >= 0.9 and right.max() >= 0.9


def test_concept_writer_files(tmp_path):
    net = TinyNet().eval()
    photos = {"split": split_photo(), "flip": split_photo()[:, ::-1].copy()}
    outs = []
    for run in ("a", "b"):
        ctx = make_ctx(tmp_path / run, net, concepts={"enabled": True, "n_components": 2,
                                                      "top_k": 2})
        writer = ConceptWriter()
        writer.start(ctx)
        writer.write(ctx, make_batch(ctx, photos))
        outs.append(ctx.run.root / "concepts")
        assert ctx.summary.notes == []  # fc labels the concepts
    for image, flipped in (("split", False), ("flip", True)):
        data = json.loads((outs[0] / f"{image}.json").read_text())
        assert data["labelled"] and data["n_components"] == 2 and data["layer"] == "features.4"
        shares = [c["share"] for c in data["concepts"]]
        assert sum(shares) == pytest.approx(1, abs=1e-5) and shares == sorted(shares)[::-1]
        for c in data["concepts"]:
            probs = [k["probability"] for k in c["classes"]]
            assert {k["class"] for k in c["classes"]} == {"cat", "dog"}
            assert sum(probs) == pytest.approx(1, abs=1e-5) and probs == sorted(probs)[::-1]
        maps = np.load(outs[0] / f"{image}.npy")
        assert np.allclose(concept_shares(maps), shares, atol=1e-6)
        left, right = halves(maps)
        assert left.argmax() != right.argmax() and min(left.max(), right.max()) >= 0.95
        # the figure shows exactly the library's overlay of these maps
        figure = read_rgb(outs[0] / f"{image}.png")
        x0, y0, x1, y1 = panel_boxes((SIDE, SIDE))[1]
        s = panel_scale((SIDE, SIDE))
        overlay = concept_overlay(photos[image], maps, concept_colours(2))
        assert np.array_equal(figure[y0:y1:s, x0:x1:s], overlay)
        # and the same run twice gives the same bytes
        for name in (f"{image}.json", f"{image}.png", f"{image}.npy"):
            assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()


def test_unlabelled_concepts_without_a_matching_linear(tmp_path):
    net = TinyNet().eval()
    ctx = make_ctx(tmp_path / "run", net, concepts={"enabled": True, "n_components": 3,
                                                    "layer": "features.0"})  # 8 channels:
    writer = ConceptWriter()  # no Linear(8, 2)
    writer.start(ctx)
    writer.write(ctx, make_batch(ctx, {"split": split_photo()}))
    data = json.loads((ctx.run.root / "concepts" / "split.json").read_text())
    assert data["labelled"] is False and "classes" not in data["concepts"][0]
    assert len(data["concepts"]) == 3
    assert any("no nn.Linear(8, 2)" in n for n in ctx.summary.notes)


def test_figure_layout_fits_the_legend():
    from explain.render import Text, draw_text, text_width
    from explain.writers.concepts import GAP, LINE, MARGIN, SWATCH, TEXT_SIZE
    photo = np.zeros((20, 30, 3), np.uint8)
    lines = [f"{i + 1}. 50% of the image: a very long class name 0.99, another long one 0.01"
             for i in range(4)]
    fig = concept_figure(photo, photo, lines, concept_colours(4), "title")
    x0, y0, x1, y1 = panel_boxes((20, 30))[1]
    assert fig.shape[0] >= y1 + 4 * 20 and fig.shape[1] >= x1
    # each legend swatch is drawn in its concept's colour
    for i, colour in enumerate(concept_colours(4)):
        y = y1 + 10 + i * 22 + 10
        assert np.abs(fig[y, 15].astype(int) - np.round(255 * colour)).max() <= 1
    # the title and every legend line read back as the shared text path draws them, whole:
    # the picture is wide enough for the longest line
    assert fig.shape[1] >= MARGIN + SWATCH + 8 + text_width(lines[0], TEXT_SIZE) + MARGIN
    white = np.full_like(fig, 255)
    title = draw_text(white[:y0], [Text("title", MARGIN, MARGIN + 2, TEXT_SIZE)])
    assert np.array_equal(fig[:y0], title)
    left = MARGIN + SWATCH + 1  # right of the swatches: only the legend's text
    legend = draw_text(white[y1:, left:], [Text(line, 7, GAP + i * LINE + 2, TEXT_SIZE)
                                           for i, line in enumerate(lines)])
    assert np.array_equal(fig[y1:, left:], legend)
    assert (legend != 255).any(axis=-1)[:, -MARGIN:].sum() == 0  # no line runs off the edge
    swapped = draw_text(white[y1:, left:], [Text(line, 7, GAP + i * LINE + 2, TEXT_SIZE)
                                            for i, line in enumerate(lines[::-1])])
    assert not np.array_equal(fig[y1:, left:], swapped)  # each line in its own place


# ---- the real command line ---------------------------------------------------------------------
def test_cli_run_writes_guided_and_concepts(tmp_path):
    import yaml
    from explain.cli import main
    from explain.config import load_config
    from explain.images import prepare
    photos = {"split": split_photo(), "flip": split_photo()[:, ::-1].copy()}
    for name, rgb in photos.items():
        cv2.imwrite(str(tmp_path / f"{name}.png"), cv2.cvtColor(np.uint8(rgb * 255),
                                                                cv2.COLOR_RGB2BGR))
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"builder": "test_guided_concepts:tiny_net", "trust": True},
        "classes": {"cat": 0, "dog": 1}, "images": ["split.png", "flip.png"],
        "preprocess": {"size": SIDE, "mean": [MEAN] * 3, "std": [STD] * 3},
        "target_layers": ["features.4"], "methods": ["gradcam", "layercam"],
        "guided": {"enabled": True}, "concepts": {"enabled": True, "n_components": 2},
        "metrics": [], "output": {"dir": "results", "save_arrays": True}}))
    BUILT.clear()
    assert main([str(config), "--quiet"]) == 0
    net = BUILT[-1]  # the run's network: its own modules again, inplace flags and all

    def state(n: nn.Module) -> list[tuple]:
        return [row[:1] + row[2:] for row in module_state(n)]

    assert state(net) == state(TinyNet().eval()) and net.features[3] is net.act
    assert all(p.grad is None for p in net.parameters())
    run = tmp_path / "results" / "exp"
    summary = json.loads((run / "summary.json").read_text())
    assert not any(n.startswith(("guided", "concepts")) for n in summary["notes"])
    report = (run / "report.html").read_text()  # the report shows both, from files that exist
    for image in photos:
        assert f'src="concepts/{image}.png"' in report
        for m in ("gradcam", "layercam"):
            assert f'src="guided_cam/{m}/{image}__dog.png"' in report
    cfg = load_config(config)
    for image in photos:
        x = prepare(ImageRef(image, tmp_path / f"{image}.png", False), cfg.preprocess).tensor
        for c, cls in enumerate(("cat", "dog")):
            guided = np.load(run / "guided" / f"{image}__{cls}.npy")
            want = reference_guided(TinyNet().eval(), Head(), x, c)
            assert np.allclose(guided, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
            for m in ("gradcam", "layercam"):
                cam = np.load(run / "cams" / m / f"{image}__{cls}.npy")
                assert np.allclose(np.load(run / "guided_cam" / m / f"{image}__{cls}.npy"),
                                   guided * cam[..., None])
        data = json.loads((run / "concepts" / f"{image}.json").read_text())
        assert data["labelled"] and sum(c["share"] for c in data["concepts"]) == \
            pytest.approx(1, abs=1e-5)
        left, right = halves(np.load(run / "concepts" / f"{image}.npy"))
        assert left.argmax() != right.argmax() and min(left.max(), right.max()) >= 0.95
        assert read_rgb(run / "concepts" / f"{image}.png").shape[1] > 2 * SIDE
        entry = json.loads((run / "items" / f"{image}.json").read_text())["entry"]
        if "guided" in ImageEntry.model_fields:  # once results.py has the fields
            assert entry["guided"] == {c: f"guided/{image}__{c}.png" for c in ("cat", "dog")}
            assert entry["concepts"] == f"concepts/{image}.json"
            assert {r["guided_file"] for r in entry["cams"]} == {
                f"guided_cam/{m}/{image}__{c}.png" for m in ("gradcam", "layercam")
                for c in ("cat", "dog")}
