"""Review day 29: findings in the commits after ce8100a."""
import cv2
import numpy as np


def _library_like(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The library's post-processing of a layer's map: ReLU, min-max (+1e-7), resize, again."""
    m = np.maximum(raw, 0)
    m = (m - m.min()) / (m.max() - m.min() + 1e-7)
    m = cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return (m - m.min()) / (m.max() - m.min() + 1e-7)


def _aligned_corners(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``m`` resized bilinearly with align_corners=True (torch's option many CAM scripts use)."""
    rows = np.linspace(0, m.shape[0] - 1, size[0])
    cols = np.linspace(0, m.shape[1] - 1, size[1])
    across = np.stack([np.interp(cols, np.arange(m.shape[1]), row) for row in m])
    return np.stack([np.interp(rows, np.arange(m.shape[0]), col) for col in across.T]).T


def test_a_relud_reference_resized_another_way_is_not_said_to_miss_the_relu():
    """A correct ReLU'd map of a positive channel sum (LayerCAM-like: the ReLU cuts nothing,
    the library's only zeros are its minimum's corner block, 0.5% of the pixels) resized with
    align_corners=True was told 'apply ReLU to the sum before the min-max scaling'."""
    from explain.compare import without_relu
    rng = np.random.default_rng(2)
    raw = cv2.GaussianBlur(rng.random((7, 7)), (3, 3), 1).astype(np.float32)
    raw[0, 0] = raw.min() - 0.05
    raw = raw - raw.min() + 0.01  # above 0 everywhere: the ReLU leaves it as it is
    size = (224, 224)
    m = (raw - raw.min()) / (raw.max() - raw.min())
    reference = _aligned_corners(m, size).astype(np.float32)
    assert without_relu(_library_like(raw, size), reference) is None
    # the sum without its ReLU is still named
    signed = cv2.GaussianBlur(rng.normal(size=(13, 13)), (5, 5), 1).astype(np.float32) + 0.05
    unrelu = (signed - signed.min()) / (signed.max() - signed.min())
    unrelu = cv2.resize(unrelu, (64, 64), interpolation=cv2.INTER_LINEAR)
    got = without_relu(_library_like(signed, (64, 64)), unrelu)
    assert got is not None and got.startswith("r >= 0.95 where the library's map is above 0")
