"""Newcomer 23: a student's hand-written Grad-CAM / LayerCAM of the course's AlexNet (the
untrained stand-in), compared with --compare and compare.reference_dir."""
import cv2
import numpy as np

from test_newcomer20 import _compare_maps, _library_like, _without_relu


def _noisy_sums(n: int) -> list[np.ndarray]:
    """Layer-resolution Grad-CAM sums as rough as an untrained AlexNet's at features.10: cell
    to cell noise, half of the cells below 0 (positive islands a cell or two wide)."""
    sums = []
    for seed in range(n):
        raw = np.random.default_rng(seed).standard_normal((13, 13)).astype(np.float32)
        sums.append(raw - np.median(raw))
    return sums


def test_every_map_without_the_relu_is_named_on_a_noisy_layer(tmp_path):
    """A student's Grad-CAM without the ReLU on the weighted sum, on the stand-in AlexNet:
    '2 map(s) look like the weighted channel sum without its ReLU', then for the other 4 the
    advice of another bug (the inplace-ReLU trap, model.eval()). The resize blurs the ReLU's
    edge over most of a noisy map's positive part, so r >= 0.95 there failed."""
    size = (224, 224)
    pairs = [(f"c{i}", _library_like(raw, size), _without_relu(raw, size))
             for i, raw in enumerate(_noisy_sums(6))]
    line = _compare_maps(tmp_path, pairs)
    assert line.startswith("gradcam: differ")
    assert "6 map(s) look like the weighted channel sum without its ReLU" in line
    assert "clone" not in line and "model.eval" not in line


def test_a_relud_map_resized_bicubically_is_not_said_to_miss_the_relu():
    """The new check does not take a ReLU'd map resized with INTER_CUBIC (its ringing lifts
    the zeros to about 0.1 once min-max scaled) for one without the ReLU."""
    from explain.compare import _best_cut, without_relu
    size = (224, 224)
    for raw in _noisy_sums(4):
        library = _library_like(raw, size)
        relu = np.maximum(raw, 0) / raw.max()
        cubic = cv2.resize(relu, (224, 224), interpolation=cv2.INTER_CUBIC)
        cubic = (cubic - cubic.min()) / (cubic.max() - cubic.min())
        got = without_relu(library, cubic.astype(np.float32))
        assert got is None or got.startswith("r >= 0.95")  # the older check's own verdict
        assert _best_cut(library, cubic)[1] < 0.3


def _verdicts(tmp_path, maps: dict[str, list[tuple[str, np.ndarray, np.ndarray]]]) -> list[str]:
    """The verdict lines of reference files: method -> [(class, library map, reference)]."""
    from explain.compare import Comparison
    from explain.outputs import RunFolder
    refs = tmp_path / "refs"
    refs.mkdir()
    for method, pairs in maps.items():
        for cls, _, ref in pairs:
            np.save(refs / f"im__{cls}__{method}.npy", ref.astype(np.float32))
    (tmp_path / "run").mkdir()
    comparison = Comparison(RunFolder(tmp_path / "run"), 1e-4, refs)
    rows = []
    for method, pairs in maps.items():
        for cls, library, _ in pairs:
            ref = comparison.reference_for("im", cls, method, library.shape, {})
            rows.append(comparison.add("im", cls, method, library, ref))
    return comparison.finish(rows)["verdicts"]


def test_gradcam_differing_beside_an_agreeing_layercam_is_said_to_be_the_trap(tmp_path):
    """The student's forward hook kept the tensor it handed on (no clone): LayerCAM agreed,
    Grad-CAM differed at r 0.6 to 0.86, and the line listed a map of another layer, the trap
    and a model left in training mode alike, though an agreeing LayerCAM from the same hooks
    rules out the layer, the input and model.eval() (docs/compare.md: 'A student whose
    LayerCAM agrees and Grad-CAM differs with r 0.6 to 0.9 forgot the clone')."""
    size = (64, 64)
    sums = [np.abs(raw) + 0.1 for raw in _noisy_sums(4)]
    library = [_library_like(raw, size) for raw in sums]
    maps = {"gradcam": [("cat", library[0], library[2]), ("dog", library[1], library[3])],
            "layercam": [("cat", library[0], library[0]), ("dog", library[1], library[1])]}
    gradcam, layercam = _verdicts(tmp_path, maps)
    assert layercam.startswith("layercam: agree")
    assert gradcam.startswith("gradcam: differ")
    assert "while your LayerCAM maps agree" in gradcam and "return output.clone()" in gradcam
    assert "a map of another layer" not in gradcam and "call model.eval()" not in gradcam
    # alone, Grad-CAM's line keeps every cause
    (tmp_path / "alone").mkdir()
    line, = _verdicts(tmp_path / "alone", {"gradcam": maps["gradcam"]})
    assert "a map of another layer" in line and "call model.eval()" in line


def test_compare_md_names_the_full_backward_hook_error_and_its_fix():
    """The course template's hooks (register_full_backward_hook on features.10) stop the
    forward pass with 'Output 0 of BackwardHookFunction is a view and is being modified
    inplace'; docs/compare.md's trap spoke of forward hooks and clones only, so the student
    searched the error elsewhere. The page names the error and the fix."""
    from pathlib import Path
    text = " ".join((Path(__file__).parents[1] / "docs" / "compare.md").read_text().split())
    assert "`RuntimeError: Output 0 of BackwardHookFunction is a view and is being modified " \
           "inplace`" in text
    assert "if isinstance(m, nn.ReLU): m.inplace = False" in text


def test_maps_saved_at_the_photo_size_are_said_to_be_resized_twice(tmp_path):
    """The student's maps were upsampled to the photo's own size (cat.jpg: 300 x 451, to lay
    them over it): explain resized them to the input's 224 x 224, r 1.00 with max |diff| 6e-3,
    and the line blamed 'the weights or activations differ a little, as when a following
    ReLU(inplace=True) overwrites the kept output (the inplace-ReLU trap)'. A map the size of
    a photo is no layer's map: it was resized twice."""
    size = (224, 224)
    pairs = []
    for i, raw in enumerate(_noisy_sums(2)):
        m = np.maximum(raw, 0) / raw.max()
        photo = cv2.resize(m, (451, 300), interpolation=cv2.INTER_LINEAR)
        pairs.append((f"c{i}", _library_like(raw, size), photo / photo.max()))
    line, = _verdicts(tmp_path, {"gradcam": pairs})
    assert line.startswith("gradcam: differ")
    assert "your maps are of another image size (300x451 -> 224x224), so each was resized " \
           "twice" in line
    assert "inplace-ReLU trap" not in line
    # the layer's own 13 x 13 maps, resized here, still agree
    (tmp_path / "layer").mkdir()
    layer = [(f"c{i}", lib, np.maximum(raw, 0)) for i, ((_, lib, _), raw)
             in enumerate(zip(pairs, _noisy_sums(2)))]
    line, = _verdicts(tmp_path / "layer", {"gradcam": layer})
    assert line.startswith("gradcam: agree")


def test_layercam_differing_in_shape_is_not_blamed_on_the_inplace_trap(tmp_path):
    """A script without model.eval(): LayerCAM differed at r 0.83 to 0.86, and its line
    advised 'keep output, return output.clone() (the inplace-ReLU trap)', a bug LayerCAM
    cannot show (docs/compare.md: 'Only Grad-CAM ... shows the trap')."""
    size = (64, 64)
    library = [_library_like(np.abs(raw) + 0.1, size) for raw in _noisy_sums(4)]
    pairs = [("cat", library[0], library[2]), ("dog", library[1], library[3])]
    line, = _verdicts(tmp_path, {"layercam": pairs})
    assert line.startswith("layercam: differ") and "the maps differ in shape" in line
    assert "call model.eval()" in line and "return output.clone()" not in line
    assert "not the inplace-ReLU trap, which LayerCAM does not show" in line


def test_channels_md_says_the_csv_and_top_png_order_channels_differently():
    """both.jpg, class cat, Grad-CAM on the stand-in: channels.csv (and the notebook's
    'largest: [215, 170, ...]') begins with channel 215 (+5.1% of the map), top.png with
    channel 10 (-5.8%): the student's 'most important channel' depended on the file read.
    docs/channels.md said 'the channels with the largest contribution' of top.png and no
    order for the CSV."""
    from pathlib import Path
    from explain.channels.numbers import channel_stats, top_channels
    acts = np.ones((3, 2, 2), np.float32)
    grads = np.array([0.5, -2.0, 1.0], np.float32)[:, None, None] * np.ones((3, 2, 2))
    rows, _ = channel_stats("gradcam", acts, grads.astype(np.float32))
    assert [r["channel"] for r in rows] == [2, 0, 1]  # the CSV: share, largest first
    assert top_channels(np.array([0.5, -2.0, 1.0]), 3).tolist() == [1, 2, 0]  # top.png
    text = " ".join((Path(__file__).parents[1] / "docs" / "channels.md").read_text().split())
    assert "largest contribution in size, adding (red, share above 0) or taking away (blue, " \
           "below 0)" in text
    assert "per channel, largest share first (those that take away last" in text
