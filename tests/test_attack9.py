"""The ninth attack (a review session's findings): a shared interrupted run's saved parts and
records taken as they were by --resume, pictures read back at any size, an unbounded confusion
table, spreadsheet formulas in the CSV files, and nesting that broke serialising a config."""

from __future__ import annotations

import numpy as np
import pytest

from explain.channels import atlasviews
from explain.channels.atlas import AtlasState, ImageAtlas, MapAtlas
from explain.errors import ExplainError


def test_a_region_no_picture_holds_is_a_grey_tile_of_its_shape():
    """A crop whose image cannot be read was a grey array of the region's size (a shared
    state's 20,000 x 20,000 regions: 1.1 GiB each, all held until drawn)."""
    from explain.writers.atlaspages import _crop
    crop = _crop(None, "cat", 1.0, [0, 0, 20_000, 10_000, 0, 0, 1, 1])
    assert crop.rgb.shape == (atlasviews.TILE // 2, atlasviews.TILE, 3)
    assert (crop.rgb == 200).all() and crop.lines == ("cat", "(image not readable)")
    small = _crop(None, "cat", 1.0, [4, 4, 20, 12, 4, 4, 6, 6])
    assert small.rgb.shape == (8, 16, 3)  # a region smaller than a tile keeps its size


def test_a_long_caption_is_cut_without_measuring_it_per_character(monkeypatch):
    calls = []
    measure = atlasviews.text_width

    def counted(text, size):
        calls.append(len(text))
        return measure(text, size)
    monkeypatch.setattr(atlasviews, "text_width", counted)
    fitted = atlasviews._fit("x" * 20_000, 9, 80)
    assert fitted.endswith("…") and measure(fitted, 9) <= 80 and len(fitted) > 5
    assert max(calls) <= 82 and len(calls) < 90  # a text of at most width + 1 characters
    assert atlasviews._fit("cat", 9, 80) == "cat"


def _state_with_one_image() -> AtlasState:
    state = AtlasState(3, 2, top_k=1, crop=1, seed=0)
    state.add([ImageAtlas("cat", (32, 32), (4, 4), np.array([1.0, 2.0, 3.0]),
                          np.array([0, 5, 15], np.int32),
                          [MapAtlas("cat", "gradcam", None, np.array([0.5, 0.2, 0.1]),
                                    np.array([1, 2, 3], np.int32))])])
    return state


@pytest.mark.parametrize("change, why", [
    (lambda s: s.names.update({next(iter(s.names)): "dog"}), "not its key's"),
    (lambda s: s.covered.add("=cmd|' /C calc'!A0"), "image id \"=cmd|' /C calc'!A0\""),
    (lambda s: s.activation.boxes.__setitem__((0, 0, 2), 20_000), "a region outside any input"),
    (lambda s: s.activation.boxes.__setitem__((0, 0, 0), 40), "a region outside any input"),
    (lambda s: s.activation.keys.__setitem__((0, 1), 12345), "a heap key without its image"),
    (lambda s: s.contribution.update({("m0", "gradcam"): s.contribution[("cat", "gradcam")]}),
     "a class, method or k that is not this run's"),
])
def test_a_saved_state_must_be_one_this_run_makes(change, why):
    state = _state_with_one_image()
    again = AtlasState.from_bytes(state.to_bytes(), "s.zip", state, classes={"cat", "dog"},
                                  methods={"gradcam"})
    assert again.to_bytes() == state.to_bytes()
    change(state)
    with pytest.raises(ExplainError) as caught:
        AtlasState.from_bytes(state.to_bytes(), "s.zip", state, classes={"cat", "dog"},
                              methods={"gradcam"})
    assert str(caught.value).startswith("s.zip: not an atlas state of this explain version (")
    assert why in str(caught.value), str(caught.value)


def test_a_part_of_an_image_larger_than_any_input_is_refused():
    data = ImageAtlas("cat", (40_000, 32), (4, 4), np.ones(3), np.zeros(3, np.int32)).to_bytes()
    with pytest.raises(ExplainError, match=r"^p.zip: not an atlas part .*size 40000 x 32"):
        ImageAtlas.from_bytes(data, "p.zip")
