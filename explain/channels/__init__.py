"""Per-channel views of one layer, arrays in and arrays out (no file I/O).

Per image, class and method:
- ``numbers``: each channel's term of a CAM (from the library's own per-method code), its
  weight, shares, the channels that hold 50% / 90% of a map, the per-channel rows of the CSV;
- ``tiles``: where tiles go in a mosaic (``GridLayout``), drawing options, colour scales;
- ``figures``: assembling a picture (text, tile labels, colour bar, photo and CAM panels);
- ``views``: the four pictures a run writes per image, class and method.

Across the run (the channel atlas, ``channels.atlas``; explain.writers.atlas writes it):
- ``atlas``: each channel's peaks and sums streamed over the images in bounded memory;
- ``ablation``: whether zeroing the channels a method calls important lowers the score;
- ``fingerprints``: the atlas's state as records and CSV rows;
- ``atlasviews``: its pictures (reference regions, ablation curves).

The per-image names a writer or a test needs are taken from here.
"""

from explain.channels.numbers import (channel_contributions, channel_shares, channel_stats,
                                      channel_totals, channel_weights, channels_needed,
                                      cumulative_share, top_channels)
from explain.channels.tiles import (BAND, GAP, MIN_LABEL_SIZE, TEXT_SIZE, TITLE_SIZE,
                                    ColourScale, GridLayout, ViewOptions, colour_lut,
                                    grid_shape, normalise, view_title)
from explain.channels.figures import ChannelView, SharedPanels
from explain.channels.views import (ClassContrast, TopChannels, activation_view,
                                    class_contrast_view, contribution_view, top_channels_view)
from explain.render import INK

__all__ = ["BAND", "GAP", "INK", "MIN_LABEL_SIZE", "TEXT_SIZE", "TITLE_SIZE", "ChannelView",
           "ClassContrast", "ColourScale", "GridLayout", "SharedPanels", "TopChannels", "ViewOptions",
           "activation_view", "channel_contributions", "channel_shares", "channel_stats",
           "channel_totals", "channel_weights", "channels_needed", "class_contrast_view",
           "colour_lut", "contribution_view", "cumulative_share", "grid_shape", "normalise",
           "top_channels", "top_channels_view", "view_title"]
