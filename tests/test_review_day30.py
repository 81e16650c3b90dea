"""Review day 30 (review 24): findings in the commits of day 30 (pace, per-class pointing,
the top-channels figure of a blank map, explain diff's switched-off sections, attack 34)."""
import numpy as np


def test_a_flat_map_of_a_positive_channel_sum_is_not_called_a_sum_the_relu_cut():
    """A 1 x 1 channel layer (a ResNet's last block at 32 x 32) whose channel sum is positive:
    the library's min-max scaling makes its map 0 everywhere, and the top-channels figure said
    'its channels' sum is <= 0 at every position, so these shares are of a sum the ReLU
    removes', of a sum the ReLU left as it was."""
    from explain.channels import channel_contributions, top_channels_view
    rng = np.random.default_rng(4)
    acts = np.abs(rng.normal(size=(12, 1, 1))).astype(np.float32) + 0.1
    grads = np.abs(rng.normal(size=(12, 1, 1))).astype(np.float32) + 0.1
    assert channel_contributions("gradcam", acts, grads).sum() > 0
    flat = np.zeros((8, 8), np.float32)  # the library's map of it: (v - v) / (0 + 1e-7)
    view = top_channels_view("gradcam", acts, grads, cam=flat, k=4)
    shown = top_channels_view("gradcam", acts, grads, cam=np.ones((8, 8), np.float32), k=4)
    assert view.blank is False and view.image.shape == shown.image.shape
    # a sum the ReLU cuts everywhere is still said to be one, with or without the map
    assert top_channels_view("gradcam", acts, -grads, cam=flat, k=4).blank
    assert top_channels_view("gradcam", acts, -grads, k=4).blank
