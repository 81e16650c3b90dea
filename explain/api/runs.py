"""``explain.run``, ``explain.load``, ``explain.load_model`` and the ``Run`` they return.

``run`` is the command line without the command line: the config (a YAML file, a dict or a
Config) with overrides merged as ``--set`` merges them, validated by the same code, run by
``explain.runner.run`` into the same run folder. ``load`` reads a run folder back through the
report's loader (``explain.reportload.load_run``: files inside the folder only, no link
followed, every record typed), without the model.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from explain.api import display
from explain.api.recompute import Recomputer
from explain.errors import ExplainError
from explain.names import close_match

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure
    from torch import nn

    from explain.config import Config
    from explain.evidence import Evidence
    from explain.results import CompareRow, ImageEntry, MapRecord, RunSummary

ConfigInput = Union[str, os.PathLike, dict, "Config"]
# Config keys that are sections: a dict given for one is merged into the section, key by key
SECTIONS = ("model", "preprocess", "channels", "guided", "concepts", "compare", "output",
            "annotations", "report")
MAX_ARRAY_HEADER = 4096  # bytes of a .npy header (a map's is 128)


def dotted(overrides: dict[str, Any]) -> dict[str, Any]:
    """Keyword overrides as the command line's dotted keys: ``methods=[...]`` (or 'a,b' as
    ``--methods`` takes it), ``layer='x'`` (``--layer``), ``compare=True`` (``--compare``), a
    section as a dict merged key by key (``output={'dir': 'out'}`` is ``--set output.dir=out``),
    dotted keys as they are (``**{'output.dir': 'out'}``)."""
    found: dict[str, Any] = {}
    for key, value in overrides.items():
        value = value.model_dump() if callable(getattr(value, "model_dump", None)) else value
        if key == "layer":
            found["target_layers"] = [value] if isinstance(value, str) else list(value)
        elif key == "compare" and isinstance(value, bool):
            found["compare.enabled"] = value
        elif key in SECTIONS and isinstance(value, dict):
            found.update({f"{key}.{sub}": v for sub, v in value.items()})
        else:
            found[key] = value
    return found


def load_settings(config: ConfigInput, overrides: Optional[dict[str, Any]] = None) -> "Config":
    """``config`` with ``overrides`` (see ``dotted``), validated; ExplainError naming the file
    (or 'config' for a dict) and the key, as the command line says it. A dict's relative
    paths are relative to the working directory (messages start 'config dict:'); a file's to
    its folder."""
    from pydantic import ValidationError

    from explain.config import Config, apply_override, explain_validation, load_config
    changes = dotted(overrides or {})
    if isinstance(config, (str, os.PathLike)):
        return load_config(config, changes)
    if isinstance(config, Config):
        if not changes:
            return config
        data, where, source = config.model_dump(), str(config.source or "config"), config.source
    elif isinstance(config, dict):
        data, where, source = copy.deepcopy(config), "config dict", None
    else:
        raise ExplainError(f"config: expected a YAML file path, a dict or an explain Config "
                           f"(got {type(config).__name__})")
    for key, value in changes.items():
        apply_override(data, key, value)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        raise explain_validation(err, where) from None
    return cfg.model_copy(update={"source": source})


def load_model(config: ConfigInput, **overrides: Any) -> "nn.Module":
    """The network a config names, loaded as a run loads it (the same trust rules: a model
    file is read without running its code unless ``model.trust: true``), for ``explain.cam``.

    >>> net = explain.load_model("configs/demo_catdog.yaml")
    """
    from explain.models.guard import mark_unvetted
    from explain.models.loading import load_model as load
    from explain.plan import needs_bounds
    cfg = load_settings(config, overrides)
    net = load(cfg)
    return mark_unvetted(net) if needs_bounds(cfg) else net


def _say(line: str) -> None:
    from explain.names import printable
    print(printable(line), file=sys.stdout)


def _os_error(exc: OSError) -> ExplainError:
    """An OSError (a full disk, a read-only folder) as the line the command line prints."""
    from explain.names import short
    where = f"{short(exc.filename)}: " if exc.filename else ""
    return ExplainError(f"{where}{exc.strerror or exc}")


def run(config: ConfigInput, *, out: Union[str, os.PathLike, None] = None,
        overwrite: bool = False, resume: bool = False, progress: bool = True,
        log: Optional[Callable[[str], None]] = None, **overrides: Any) -> "Run":
    """Run a study as ``explain CONFIG`` does and return it as a Run.

    config: a YAML file (relative paths inside it: relative to its folder), a dict (relative
    paths: relative to the working directory; run name 'run' unless it has ``name``) or a
    Config. overrides: config keys, merged as ``--set`` merges them: ``methods=['gradcam']``,
    ``channels={'enabled': True}`` (a section: merged key by key), ``layer='features.11'``
    (``--layer``), ``compare=True`` (``--compare``), ``**{'output.dir': 'out'}``. out,
    overwrite, resume: ``--out`` (relative to the working directory), ``--overwrite``,
    ``--resume``. progress: the progress bar (tqdm; a widget in a notebook). log: gets each
    line the command line prints (default: printed). Raises ExplainError (the command line's
    one-line message); a run that fails its early checks writes nothing.

    >>> r = explain.run("configs/demo_catdog.yaml", methods=["gradcam"])
    >>> r.table()[0]
    """
    if resume and overwrite:
        raise ExplainError("resume and overwrite exclude each other: resume completes an "
                           "interrupted run, overwrite replaces it")
    from explain.config import attribute
    from explain.runner import RunOptions, run as run_config
    opts = RunOptions(out_root=Path(out).expanduser().resolve() if out is not None else None,
                      overwrite=overwrite, resume=resume, progress=progress, log=log or _say)
    try:
        cfg = load_settings(config, overrides)
        summary = run_config(cfg, opts)
        root = Path(summary.output_dir)
        rows = {}
        if summary.compare:  # the rows live in the item files (kept images' too, on --resume)
            from explain.reportload import load_run
            rows = load_run(root).compare_rows
    except OSError as exc:
        raise _os_error(exc) from exc
    except ExplainError as exc:  # a field this call set is not the file's: the line says so
        attribute(exc, config, dotted(overrides), "the call's arguments")
        raise
    return Run(summary, root, compare_rows=rows, config=_resolved(summary, cfg))


def _resolved(summary: "RunSummary", cfg: "Config") -> Optional["Config"]:
    """The run's config as it resolved it (layer names, classes), with the file it came
    from: what Run.map needs to make a map again."""
    from pydantic import ValidationError

    from explain.config import Config
    try:
        found = Config.model_validate(summary.config)
    except ValidationError:  # pragma: no cover - the runner records a valid config
        return None
    return found.model_copy(update={"source": cfg.source})


def load(run_dir: Union[str, os.PathLike]) -> "Run":
    """A run folder (finished, or the finished images of an interrupted run), read without the
    model: only files inside the folder, never through a link. Its maps are there when the run
    saved arrays (``output.save_arrays``).

    >>> r = explain.load("results/demo_catdog")
    >>> r.map("both", "cat", "gradcam").shape
    """
    from explain.reportload import load_run
    root = Path(run_dir).expanduser().absolute()
    try:
        data = load_run(root)
    except OSError as exc:
        raise _os_error(exc) from exc
    return Run(data.summary, root, finished=data.finished, compare_rows=data.compare_rows)


def _suggest(value: str, known: list[str]) -> str:
    close = close_match(value, known)
    return f" — did you mean {close[0]!r}?" if close else ""


SHOW_MAPS = 60  # maps a Run.show draws at most


class Run:
    """A run's results: the typed records of summary.json (``summary``: images, their
    probabilities and every map's numbers and files), the folder, and the maps.

    Made by ``explain.run`` or ``explain.load``. Images are named by id (``'both'``, as in the
    file names) or position; classes and methods by name. Shows itself in Jupyter (header,
    methods table, class panels, pictures embedded)."""

    def __init__(self, summary: "RunSummary", folder: Path, *, finished: bool = True,
                 compare_rows: Optional[dict[str, list["CompareRow"]]] = None,
                 config: Optional["Config"] = None):
        from explain.outputs import RunFolder
        self.summary = summary
        self.folder = Path(folder)
        self.finished = finished
        self.compare_rows = dict(compare_rows or {})
        self._files = RunFolder(self.folder)
        self._again = Recomputer(config) if config is not None else None

    # ---- what the run holds -----------------------------------------------------------
    @property
    def name(self) -> str:
        """The run's name (its folder's, without a -2 suffix)."""
        return self.summary.name

    @property
    def config(self) -> dict[str, Any]:
        """The run's resolved config as summary.json holds it (a dict)."""
        return self.summary.config.model_dump(mode="json")

    @property
    def images(self) -> list["ImageEntry"]:
        """One typed record per explained image, in config order."""
        return list(self.summary.images)

    @property
    def methods(self) -> list[str]:
        """The methods, in config order."""
        return [m.name for m in self.summary.config.methods]

    @property
    def classes(self) -> list[str]:
        """The named classes, in config order."""
        return self.summary.class_names()

    @property
    def layers(self) -> list[str]:
        """The target layers, as the run resolved them."""
        return list(self.summary.config.target_layers)

    @property
    def report_path(self) -> Optional[Path]:
        """report.html, or None when the run wrote none (report.enabled: false, unfinished)."""
        return self.folder / "report.html" if self._files.has_file("report.html") else None

    def entry(self, image: Union[str, int]) -> "ImageEntry":
        """The record of one image, by id or position."""
        if isinstance(image, int) and not isinstance(image, bool):
            if not -len(self.images) <= image < len(self.images):
                raise ExplainError(f"image {image}: the run has {len(self.images)} image(s)")
            return self.images[image]
        ids = [e.id for e in self.images]
        if image not in ids:
            raise ExplainError(f"image {image!r} is not in the run{_suggest(str(image), ids)} "
                               f"(images: {', '.join(ids[:20])}{' ...' if len(ids) > 20 else ''})")
        return self.images[ids.index(image)]

    def record(self, image: Union[str, int], cls: str, method: str) -> "MapRecord":
        """The record of one map: peak, mass per half, strength, metrics, file."""
        entry = self.entry(image)
        for rec in entry.cams:
            if rec.class_name == cls and rec.method == method:
                return rec
        explained = entry.explained_classes()
        if cls not in explained:
            raise ExplainError(f"class {cls!r} was not explained for image {entry.id!r}"
                               f"{_suggest(str(cls), explained)} (classes: {', '.join(explained)})")
        raise ExplainError(f"method {method!r} is not in the run"
                           f"{_suggest(str(method), self.methods)} (methods: "
                           f"{', '.join(self.methods)})")

    def map(self, image: Union[str, int], cls: str, method: str) -> "np.ndarray":
        """The map of one image x class x method: float32 (H, W) in 0..1 at input size.

        Read from the file the map's record names (``files.array``:
        ``cams/<method>/<image>__<class>.npy``) when the run saved arrays
        (``output.save_arrays: true``). Without them, a Run that ``explain.run`` returned in
        this process makes the map again from its config (the model loaded once more; the
        image's batch rebuilt as the run built it: the run's numbers for a run made in one
        go); a loaded Run raises ExplainError saying to set ``output.save_arrays: true``."""
        entry, rec = self.entry(image), self.record(image, cls, method)
        rel = rec.files.array
        found = self._array(rel, tuple(entry.input_size)) if rel else None
        if found is not None:
            return found
        if self._again is not None:
            return self._again.map(entry.id, rec.class_name, rec.method)
        if rel:
            raise ExplainError(f"{self.folder / rel}: the saved map of {entry.id} / "
                               f"{rec.class_name} / {rec.method} is missing or not a plain "
                               f"file; the run folder is damaged")
        raise ExplainError(f"{self.folder}: no saved map of {entry.id} / {rec.class_name} / "
                           f"{rec.method}: the run saved no arrays "
                           f"(output.save_arrays: false), and a loaded run cannot make a map "
                           f"again without the model; run it with output.save_arrays: true "
                           f"(explain.run(..., output={{'save_arrays': True}})), or use the Run "
                           f"that explain.run returned")

    def _array(self, rel: str, size: tuple[int, ...]) -> Optional["np.ndarray"]:
        """A map array of the folder (inside it, no link), checked; None when absent."""
        import numpy as np

        from explain.readback import stored_array
        data = self._files.read_bytes(rel, MAX_ARRAY_HEADER + 4 * int(np.prod(size)))
        if data is None:
            return None
        try:
            array = stored_array(data)
        except (ValueError, OSError, EOFError) as exc:
            raise ExplainError(f"{self.folder / rel}: not a map array ({exc}); the run folder "
                               f"is damaged") from None
        if array.shape != size or array.dtype != np.float32:
            raise ExplainError(f"{self.folder / rel}: a {array.dtype} array of shape "
                               f"{array.shape}, not the {size[0]}x{size[1]} float32 map the "
                               f"summary lists; the run folder is damaged")
        return array

    def picture(self, image: Union[str, int], cls: str, method: str) -> "np.ndarray":
        """The overlay picture the run wrote for one map, uint8 RGB."""
        rec = self.record(image, cls, method)
        size = self.entry(image).input_size
        found = self._picture(rec.file, size)
        if found is None:
            raise ExplainError(f"{self.folder / rec.file}: missing from the run folder, or not "
                               f"a picture explain wrote (unreadable, or not {size[0]} x "
                               f"{size[1]} pixels, the image's input size)")
        return found

    def photo(self, image: Union[str, int]) -> Optional["np.ndarray"]:
        """The photo at input size as the report shows it (uint8 RGB; the image record's
        ``files.photo``), None when the run wrote none or it is absent."""
        entry = self.entry(image)
        rel = entry.files.photo
        return self._picture(rel, entry.input_size) if rel else None

    def _picture(self, rel: str, size: list[int]) -> Optional["np.ndarray"]:
        """The picture at ``rel`` when it is ``size`` (height, width) pixels, as its record
        says (a shared folder's 2**27-pixel overlays of a 32 x 32 input took 5 GB to show)."""
        import cv2

        from explain.images.reading import decode_stored
        data = self._files.read_bytes(rel)
        bgr = None if data is None else decode_stored(data, size=(size[0], size[1]))
        return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def table(self, as_frame: bool = False) -> Any:
        """summary.csv's rows: one dict per image x class x method (the image's prediction
        and probabilities alongside; an image without a map: one, class '(none)'); with
        ``as_frame``, a pandas DataFrame (pandas is not a dependency of explain: ExplainError
        when it is not installed)."""
        from explain.writers.summary import csv_rows
        rows = csv_rows(self.summary)
        if not as_frame:
            return rows
        try:
            import pandas
        except ImportError:
            raise ExplainError("table(as_frame=True) needs pandas, which explain does not "
                               "install: pip install pandas (table() gives the rows as "
                               "dicts)") from None
        return pandas.DataFrame(rows)

    def trust(self, photo_separator: Optional[str] = None) -> "Evidence":
        """Which map to trust: the run's record (summary.json's ``trust``: ``.conclusion``,
        ``.lines``, ``.comparisons``); with ``photo_separator``, worked out again from the
        map records with images whose ids agree up to it as one photo, as
        ``report.photo_separator`` would have at run time (no model needed)."""
        from explain import trustlines
        try:
            return trustlines.regrouped(self.summary, self.methods, photo_separator)
        except ValueError as exc:
            raise ExplainError(f"trust: photo_separator: {exc}") from None

    def dataframe(self) -> Any:
        """``table(as_frame=True)``: summary.csv's rows as a pandas DataFrame."""
        return self.table(as_frame=True)

    def show(self, image: Union[str, int], cls: Optional[str] = None,
             methods: Optional[list[str]] = None) -> "Figure":
        """A matplotlib figure of one image: a row per class (``cls`` or every class
        explained): the photo, then each method's overlay as the run wrote it. Displays itself
        in Jupyter; ``fig.savefig(path)`` in a script."""
        entry = self.entry(image)
        classes = [cls] if cls is not None else entry.explained_classes()
        if not classes:
            raise ExplainError(f"{self.folder}: image '{entry.id}' has no maps to show")
        if len(classes) * len(methods or self.methods) > SHOW_MAPS:  # each one decoded
            raise ExplainError(f"{self.folder}: image '{entry.id}' has {len(classes)} class(es) "
                               f"x {len(methods or self.methods)} method(s); a figure shows at "
                               f"most {SHOW_MAPS} maps: pass cls=... or methods=[...]")
        photo = self.photo(entry.id)
        first = [(display.photo_title(entry), display.shown(photo))] \
            if photo is not None else []
        rows = [first + [(self._title(entry, c, m), display.shown(self.picture(entry.id, c, m)))
                         for m in (methods or self.methods)] for c in classes]
        return display.draw_boxes(display.grid_figure(rows), [(entry.boxes or {}).get(c, [])
                                  for c in classes], entry.input_size, len(first))

    def _title(self, entry: "ImageEntry", cls: str, method: str) -> str:
        """An overlay's title in ``show``: method, class, probability (a segmentation
        class's predicted share of the pixels, a detection's score, as the card says), and
        'all zero' for a map where the method found nothing (an overlay of one colour)."""
        p = entry.probabilities.get(cls)
        rec = self.record(entry.id, cls, method)
        task = self.summary.config.task
        said = "" if p is None else f" (predicted {p:.1%} of the image)" \
            if task == "segmentation" else f" (p {p:.3f})"
        if task == "detection" and rec.detection is not None:
            said = f" (score {rec.detection.score:.2f})"
        return f"{method} · {cls}{said}" + (" · all zero" if rec.peak_value <= 0 else "")

    def _repr_html_(self) -> str:
        from explain.api.runview import run_html
        return display.block(run_html(self))

    def __repr__(self) -> str:
        maps = sum(len(e.cams) for e in self.images)
        state = "" if self.finished else ", unfinished"
        return f"Run({self.name!r}, {len(self.images)} images, {maps} maps{state}, " \
               f"folder={str(self.folder)!r})"
