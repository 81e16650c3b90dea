"""Every figure's text goes through one path (explain.render: Pillow, DejaVu Sans from a package),
so an image id or class name outside ASCII draws as itself, not as OpenCV Hershey's '?'."""

import ast
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest

from explain import channels, render
from explain.channels import (ViewOptions, activation_view, class_contrast_view,
                              contribution_view, top_channels_view, view_title)
from explain.render import Text, draw_text, line_height, text_width
from explain.writers.concepts import concept_colours, concept_figure
from conftest import REPO

IDS = ["猫", "café", "Ωμέγα", "собака"]  # CJK (a glyph DejaVu lacks), Latin, Greek, Cyrillic


def ink_of(text: str, size: int) -> np.ndarray:
    """``text`` drawn alone by the shared helper, cut to its ink: the pattern to look for."""
    canvas = draw_text(np.full((line_height(size) + 4, text_width(text, size) + 4, 3), 255,
                               np.uint8), [Text(text, 2, 2, size)])
    inked = np.argwhere((canvas != 255).any(axis=-1))
    (y0, x0), (y1, x1) = inked.min(axis=0), inked.max(axis=0) + 1
    return canvas[y0:y1, x0:x1]


def shows(picture: np.ndarray, text: str, size: int) -> bool:
    """Whether ``text`` at ``size`` px appears in ``picture`` pixel for pixel."""
    pattern = ink_of(text, size)
    if pattern.shape[0] > picture.shape[0] or pattern.shape[1] > picture.shape[1]:
        return False
    found = cv2.matchTemplate(picture.astype(np.float32), pattern.astype(np.float32),
                              cv2.TM_SQDIFF)
    y, x = np.unravel_index(int(found.argmin()), found.shape)  # the best place, then exactly
    h, w = pattern.shape[:2]
    return np.array_equal(picture[y:y + h, x:x + w], pattern)


def small_layer(seed: int = 0, c: int = 12):
    rng = np.random.default_rng(seed)
    acts = rng.normal(size=(c, 5, 6)).astype(np.float32)
    grads = rng.normal(size=(c, 5, 6)).astype(np.float32)
    return acts, grads


def channel_pictures(image_id: str) -> dict[str, np.ndarray]:
    """The four channel views of one image, titled as the channel writer titles them."""
    acts, grads = small_layer()
    photo = np.random.default_rng(1).random((30, 36, 3)).astype(np.float32)
    layer = "features.4"
    return {
        "activations": activation_view(acts, view_title(image_id, layer)).image,
        "contributions": contribution_view(
            channels.channel_contributions("gradcam", acts, grads),
            view_title(image_id, layer, "cat", "gradcam"), method="gradcam").image,
        "top": top_channels_view("gradcam", acts, grads, photo=photo, k=4,
                                 title=view_title(image_id, layer, "cat", "gradcam")).image,
        "contrast": class_contrast_view("gradcam", acts, grads, -grads, photo=photo, k=4,
                                        title=view_title(image_id, layer, "cat vs dog",
                                                         "gradcam")).image,
    }


def concept_picture(image_id: str) -> np.ndarray:
    photo = np.random.default_rng(2).integers(0, 255, (16, 16, 3), np.uint8)
    lines = ["1. 60% of the image: cat 0.90", "2. 40% of the image: dog 0.70"]
    return concept_figure(photo, photo, lines, concept_colours(2),
                          f"{image_id}: 2 concepts at features.4")


@pytest.mark.parametrize("image_id", IDS)
def test_channel_view_titles_draw_a_unicode_image_id(image_id):
    parts = {"activations": (), "contributions": ("cat", "gradcam"), "top": ("cat", "gradcam"),
             "contrast": ("cat vs dog", "gradcam")}
    for name, picture in channel_pictures(image_id).items():
        title = view_title(image_id, "features.4", *parts[name])
        assert shows(picture, title, channels.TITLE_SIZE), name  # drawn by the one helper, whole
        for fallback in ("?" * len(image_id), "?" * len(image_id.encode())):  # Hershey's '?'
            assert not shows(picture, title.replace(image_id, fallback), channels.TITLE_SIZE)


@pytest.mark.parametrize("image_id", IDS)
def test_concept_figure_title_draws_a_unicode_image_id(image_id):
    from explain.writers.concepts import TEXT_SIZE
    figure = concept_picture(image_id)
    title = f"{image_id}: 2 concepts at features.4"
    assert shows(figure, title, TEXT_SIZE)
    for fallback in ("?" * len(image_id), "?" * len(image_id.encode())):  # Hershey's '?'
        assert not shows(figure, title.replace(image_id, fallback), TEXT_SIZE)
        other = concept_picture(fallback)
        assert figure.shape != other.shape or not np.array_equal(figure, other)


def test_a_panel_row_label_draws_a_unicode_image_id():
    photo = np.full((20, 20, 3), 200, np.uint8)
    page = render.panel([("猫", photo, [photo]), ("café", photo, [photo])], ["gradcam"],
                        "class 'собака'").image
    for text, size in (("猫", 13), ("café", 13), ("class 'собака'", 15)):
        assert shows(page, text, size), text
    assert not shows(page, "caf?", 13)


def test_cjk_and_question_mark_draw_differently():
    # DejaVu Sans has no CJK glyphs: '猫' draws as its missing-glyph box, still not a '?'
    assert not np.array_equal(ink_of("猫", 15), ink_of("?", 15))
    assert not np.array_equal(ink_of("é", 15), ink_of("?", 15))
    assert text_width("猫 | layer x", 15) != text_width("? | layer x", 15) or \
        not np.array_equal(ink_of("猫 | layer x", 15), ink_of("? | layer x", 15))


def test_measured_text_fits_the_pictures():
    long_id = "Ωμέγα-" * 12
    acts, grads = small_layer(3, c=9)
    view = activation_view(acts, view_title(long_id, "features.4"))
    title = view_title(long_id, "features.4")
    assert view.image.shape[1] >= text_width(title, channels.TITLE_SIZE)
    assert shows(view.image, title, channels.TITLE_SIZE)  # whole, not clipped at the edge
    figure = concept_picture(long_id)
    assert shows(figure, f"{long_id}: 2 concepts at features.4", 13)
    # tile labels shrink until they fit their tile (down to the smallest size)
    tiny = top_channels_view("gradcam", acts, grads, k=4,
                             options=ViewOptions(detail_tile_size=40, tile_size=20))
    lay = tiny.layout
    widest = max(text_width(f"#{r + 1}  ch {c}", lay.font_size)
                 for r, c in enumerate(tiny.channels))
    assert lay.font_size < ViewOptions().font_size
    assert widest + 4 <= lay.tile_w or lay.font_size == channels.MIN_LABEL_SIZE
    assert lay.line_h == line_height(lay.font_size) + 1
    assert lay.label_h == 3 * lay.line_h + 2  # three lines, each a full text line high


def test_one_font_file_shipped_by_a_package():
    font = render.font_file()
    assert font.name == "DejaVuSans.ttf" and font.is_file()
    assert font.is_relative_to(Path(matplotlib.get_data_path()))  # not a system font path
    assert render._font(13).getname() == ("DejaVu Sans", "Book")


def test_no_figure_draws_text_another_way():
    """Only explain/render.py draws text: no OpenCV Hershey text, no other Pillow text."""
    offenders = []
    for path in sorted((REPO / "explain").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            name = node.attr if isinstance(node, ast.Attribute) else \
                node.id if isinstance(node, ast.Name) else None
            if name in ("putText", "getTextSize") or (name or "").startswith("FONT_HERSHEY"):
                offenders.append(f"{path.name}:{node.lineno} {name}")
            if name in ("truetype", "ImageDraw") and path.name != "render.py":
                offenders.append(f"{path.name}:{node.lineno} {name}")
    assert offenders == []
