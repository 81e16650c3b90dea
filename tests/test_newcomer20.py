"""Newcomer round 20: the course's AlexNet study, --compare against a student's own maps."""
import numpy as np
import cv2

from explain.compare import metrics
from explain.referencefiles import fit_reference


def _library_like(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The library's post-processing of a layer's map: ReLU, min-max (+1e-7), resize, again."""
    m = np.maximum(raw, 0)
    m = (m - m.min()) / (m.max() - m.min() + 1e-7)
    m = cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return (m - m.min()) / (m.max() - m.min() + 1e-7)


def test_a_raw_layer_map_with_tiny_values_agrees_as_the_docs_promise():
    """docs/compare.md: the layer's 13 x 13 map 'agrees however it was scaled'. A student's
    raw Grad-CAM of the untrained stand-in AlexNet (its largest value 3e-6, as the report's
    raw max said) was divided by (max - min + 1e-7) here: its maximum came out 0.97, 'differ'
    by 3.1e-2 with r = 1.00, and the note blamed the inplace-ReLU trap."""
    rng = np.random.default_rng(0)
    raw = np.maximum(rng.normal(size=(13, 13)), 0).astype(np.float32) * np.float32(3e-6)
    library = _library_like(raw, (224, 224))
    for scaled in (raw, raw / raw.max(), raw * 1000):
        got = fit_reference(scaled, (224, 224))
        assert float(got.max()) > 0.9999
        assert metrics(library, got)["max_abs"] <= 1e-4
    assert not fit_reference(np.zeros((13, 13), np.float32), (224, 224)).any()
    # a map at the input size whose values leave 0..1 (not yet scaled), tiny range too
    full = cv2.resize(raw, (224, 224), interpolation=cv2.INTER_LINEAR) - np.float32(1e-6)
    assert metrics(library, fit_reference(full, (224, 224)))["max_abs"] <= 1e-4


def _without_relu(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The common slip: the weighted channel sum min-max scaled without its ReLU."""
    m = (raw - raw.min()) / (raw.max() - raw.min() + 1e-7)
    m = cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return (m - m.min()) / (m.max() - m.min() + 1e-7)


def _compare_maps(tmp_path, pairs: list[tuple[str, np.ndarray, np.ndarray]]) -> str:
    """The verdict line of reference files ``pairs`` (class, library map, reference) of one
    image and method, as a run with compare.reference_dir says it."""
    from explain.compare import Comparison
    from explain.outputs import RunFolder
    refs = tmp_path / "refs"
    refs.mkdir()
    for cls, _, ref in pairs:
        np.save(refs / f"im__{cls}__gradcam.npy", ref.astype(np.float32))
    (tmp_path / "run").mkdir()
    comparison = Comparison(RunFolder(tmp_path / "run"), 1e-4, refs)
    rows = []
    for cls, library, _ in pairs:
        ref = comparison.reference_for("im", cls, "gradcam", library.shape, {})
        rows.append(comparison.add("im", cls, "gradcam", library, ref))
    return comparison.finish(rows)["verdicts"][0]


def test_a_reference_without_the_relu_is_said_to_miss_the_relu(tmp_path):
    """A student's Grad-CAM without the ReLU of the weighted sum got 'differ' with the
    inplace-ReLU trap's advice (a blank map from a hook, return output.clone(), a model in
    training mode): the absent class's library map is 0 everywhere (its sum is <= 0 there)
    and the student's is not, and elsewhere their maps match where the library's is above 0."""
    size = (64, 64)
    rng = np.random.default_rng(1)
    cat = cv2.GaussianBlur(rng.normal(size=(13, 13)), (5, 5), 1).astype(np.float32) + 0.05
    dog = -np.abs(rng.normal(size=(13, 13))).astype(np.float32) - 0.01  # blank after ReLU
    pairs = [(name, _library_like(raw, size), _without_relu(raw, size))
             for name, raw in (("cat", cat), ("dog", dog))]
    line = _compare_maps(tmp_path, pairs)
    assert "differ" in line
    assert "2 map(s) look like the weighted channel sum without its ReLU" in line
    assert "im / dog: the library's map is 0 everywhere" in line
    assert "clone" not in line and "model.eval" not in line
    # the ReLU'd maps of the trap (blank where the library's is not) keep the trap's advice
    trap = [("cat", _library_like(cat, size), np.zeros(size, np.float32)),
            ("dog", _library_like(dog, size), _library_like(dog, size))]
    (tmp_path / "t").mkdir()
    line = _compare_maps(tmp_path / "t", trap)
    assert "without its ReLU" not in line and "output.clone()" in line


def test_compare_md_says_the_input_tensor_has_no_batch_dimension():
    """docs/compare.md told a script to 'start from' explain.cam(...).input: a (3, H, W)
    tensor, which AlexNet takes as unbatched until its classifier fails with 'mat1 and mat2
    shapes cannot be multiplied (256x36 and 9216x4096)'. The page says to add the batch."""
    from pathlib import Path
    text = " ".join((Path(__file__).parents[1] / "docs" / "compare.md").read_text().split())
    assert "`explain.cam(model, image, layer).input` is that very tensor, (3, H, W): " \
           "`model(r.input[None])`" in text
