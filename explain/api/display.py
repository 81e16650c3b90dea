"""Pictures for notebooks: data URIs (pictures inside the HTML, so a notebook is
self-contained), small HTML pieces, and matplotlib figures that display themselves.

Nothing here keeps state between calls: no pyplot figure is made (a ``matplotlib.figure.Figure``
is drawn on its own canvas and shows itself in Jupyter through ``_repr_png_``), so ``show`` in
a loop leaves no figure open.
"""

from __future__ import annotations

import base64
import html
from functools import lru_cache
from io import BytesIO
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

JPEG_QUALITY = 88
EMBED_LIMIT = 2 * 1024 * 1024  # bytes of one embedded picture; larger ones are re-encoded smaller
EMBED_WIDTH = 1400  # pixels: what a larger picture is shrunk to before it is embedded
STYLE = ("<style>.explain-api table{border-collapse:collapse;margin:4px 0}"
         ".explain-api td,.explain-api th{border:1px solid #ccc;padding:2px 6px;text-align:left;"
         "vertical-align:top}.explain-api figure{display:inline-block;margin:2px 6px 6px 0}"
         ".explain-api figcaption{font-size:85%;color:#333}"
         ".explain-api img{max-width:100%;image-orientation:none}"  # shown as stored
         "</style>")


def esc(value: object) -> str:
    """Text from a file or a model, safe inside HTML (its bidirectional controls shown
    escaped, as on the report)."""
    from explain.names import without_bidi
    return html.escape(str(without_bidi(str(value))), quote=True)


def encoded(rgb: "np.ndarray", kind: str = "jpeg") -> bytes:
    """A uint8 RGB (H, W, 3) picture as JPEG or PNG bytes."""
    import cv2
    ext, params = (".png", []) if kind == "png" else (".jpg", [cv2.IMWRITE_JPEG_QUALITY,
                                                               JPEG_QUALITY])
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB array
        raise ValueError("OpenCV could not encode the picture")
    return buf.tobytes()


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,...`` for an <img src>."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def picture_uri(rgb: "np.ndarray", kind: str = "jpeg") -> str:
    """A uint8 RGB picture as a data URI (JPEG by default, PNG for exact pixels)."""
    return data_uri(encoded(rgb, kind), "image/png" if kind == "png" else "image/jpeg")


def file_uri(data: bytes, name: str) -> Optional[str]:
    """A picture file's bytes (PNG, JPEG or WebP, as a run writes them) as a data URI; one
    larger than EMBED_LIMIT is shrunk to EMBED_WIDTH pixels wide and embedded as JPEG. None
    when the bytes do not decode as a picture."""
    import cv2

    from explain.images.reading import STORED_MAX_PIXELS, decode_stored, stored_size
    if len(data) <= EMBED_LIMIT:  # embedded as it is: its header is enough (decoding each
        size = stored_size(data)  # class panel took 6 s on a shared folder's bombs)
        if size is None or size[0] * size[1] > STORED_MAX_PIXELS:  # nor the browser's
            return None
        mime = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
                "webp": "image/webp"}.get(name.rsplit(".", 1)[-1].lower(), "image/png")
        return data_uri(data, mime)
    bgr = decode_stored(data)
    if bgr is None:
        return None
    scale = min(1.0, EMBED_WIDTH / bgr.shape[1])
    small = cv2.resize(bgr, (max(1, round(bgr.shape[1] * scale)),
                             max(1, round(bgr.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    return picture_uri(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))


def figure_html(uri: str, caption: str, width: Optional[int] = None) -> str:
    """One embedded picture with its caption."""
    size = f' width="{int(width)}"' if width else ""
    return (f'<figure><img src="{uri}"{size} alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def table_html(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A small HTML table; every cell escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def number(value: Optional[float], digits: int = 3) -> str:
    """A number for a table cell as the report shows it (``stats.cell``; stats is imported
    when a display first shows a number)."""
    from explain.stats import cell
    return cell(value, digits)


def block(body: str) -> str:
    """The outer <div> of every explain display."""
    return f'<div class="explain-api">{STYLE}{body}</div>'


@lru_cache(maxsize=1)
def _figure_class() -> type:
    """matplotlib's Figure with ``_repr_png_`` (made once, when a figure is first asked for:
    importing explain does not import matplotlib)."""
    from matplotlib.figure import Figure

    class ShownFigure(Figure):
        """A Figure with ``_repr_png_``: Jupyter shows it when it is a cell's value."""

        def _repr_png_(self) -> bytes:
            buf = BytesIO()
            self.savefig(buf, format="png", bbox_inches="tight")
            return buf.getvalue()

    return ShownFigure


def shown_figure(width: float, height: float) -> "Figure":
    """A matplotlib figure that is no pyplot figure (no global state) and displays itself in
    Jupyter as PNG; save it with ``fig.savefig(path)``."""
    return _figure_class()(figsize=(width, height), layout="constrained")


SHOWN_SIDE = 512  # pixels: a picture in a figure's cell (2.6 inches) is shrunk to this first


def shown(rgb: "np.ndarray") -> "np.ndarray":
    """``rgb`` shrunk to SHOWN_SIDE pixels on its longer side (a figure draws a cell at a few
    hundred pixels; kept at input size, 28 overlays of 4096 x 4096 held 1.4 GB)."""
    import cv2
    scale = SHOWN_SIDE / max(rgb.shape[:2])
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(rgb.shape[1] * scale)),
                            max(1, round(rgb.shape[0] * scale))), interpolation=cv2.INTER_AREA)


def grid_figure(rows: Sequence[Sequence[tuple[str, "np.ndarray"]]], cell: float = 2.6) -> "Figure":
    """A figure of pictures in rows: each cell (title, uint8 RGB picture). Titles are plain
    text: a name read from a shared run folder with '$' signs in it is drawn as it is."""
    n_rows = len(rows)
    n_cols = max((len(r) for r in rows), default=1)
    aspect = 1.0
    for row in rows:
        for _, picture in row:
            aspect = picture.shape[1] / picture.shape[0]
            break
    titles = [[wrapped(title, cell * aspect) for title, _ in row] for row in rows]
    lines = sum(max((t.count("\n") for t in row), default=0) for row in titles)
    fig = shown_figure(cell * aspect * n_cols, cell * n_rows + 0.3 + lines * TITLE_POINTS / 60)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(row):
                ax.imshow(row[c][1])
                ax.set_title(titles[r][c], fontsize=TITLE_POINTS,
                             parse_math=False)  # a '$' is a '$', not TeX
    return fig


TITLE_POINTS = 9


def wrapped(title: str, inches: float) -> str:
    """``title`` broken between words into lines that fit a cell ``inches`` wide (a labelled
    run's "malignant_0 (predicted malignant, label malignant)" ran over the next cell's title)."""
    import textwrap
    chars = max(8, int(inches * 72 / (TITLE_POINTS * 0.55)))  # a 9-point character: ~5 pt
    return textwrap.fill(title, chars, break_long_words=False, break_on_hyphens=False)


def photo_title(entry) -> str:
    """The photo cell's title in ``Run.show``: the prediction, and the label of a labelled run
    (as the report's card says them)."""
    label = f", label {entry.label}" if entry.label is not None else ""
    return f"{entry.id} (predicted {entry.predicted}{label})"


def draw_boxes(fig: "Figure", boxes: Sequence[Sequence[Sequence[float]]],
               size: Sequence[int], skip: int) -> "Figure":
    """The ground-truth boxes (model-input pixels of an h x w ``size``) dashed on each row's
    overlays, the cells from ``skip`` on: ``boxes`` holds a row's boxes, as the report's card
    draws them on the same overlays."""
    from matplotlib.patches import Rectangle
    columns = len(fig.axes) // max(1, len(boxes))
    for r, row in enumerate(boxes):
        for ax in fig.axes[r * columns + skip:(r + 1) * columns]:
            if not ax.images:
                continue
            scale = ax.images[0].get_array().shape[1] / size[1]
            for x0, y0, x1, y1 in row:
                ax.add_patch(Rectangle((x0 * scale - 0.5, y0 * scale - 0.5), (x1 - x0) * scale,
                                       (y1 - y0) * scale, fill=False, edgecolor="white",
                                       linestyle="--", linewidth=1.2))
    return fig
