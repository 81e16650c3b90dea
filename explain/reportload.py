"""A run folder read back for ``explain report`` (and explain.load, explain diff): its
summary.json, or the item files of an interrupted run, every file read from inside the
folder without following a link, and each record checked against the run it says it is.

A shared folder is anyone's edit, so what is read is bounded by what the run holds: only
the item files of the summary's own images are read, each up to a size its image's records
give; one with more than one name (a hard link) is not (one 64 MB file under 8 names was
parsed 8 times); compare rows are kept only for the run's own maps, task numbers only of its
task and methods; and a file name the records give is linked only when it is the name
explain gives that file (explain.reportlinks). What is left out is said in the report's
notes."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pydantic import ValidationError

from explain.config import Config
from explain.errors import ExplainError
from explain.names import listed, quote
from explain.outputs import RUN_MARKER, RunFolder
from explain.recordfiles import (MAX_ITEM_BYTES, check_entries, check_format, item_files,
                                 own_rows, parse_item, parse_json, validated, why)
from explain.reportlinks import foreign_links
from explain.results import CompareRow, ImageEntry, ItemFile, RunSummary
from explain.tasks.records import task_notes, task_problem, task_summary

MAX_SUMMARY_BYTES = 512 * 1024 * 1024  # summary.json read back by explain report


@dataclass
class ReportData:
    """Everything a report is made from: the summary, compare rows per image, and whether
    the run finished (an interrupted run's report is made from its item files)."""
    summary: RunSummary
    compare_rows: dict[str, list[CompareRow]] = field(default_factory=dict)
    finished: bool = True
    regrouped: Optional[str] = None  # explain report --photo-separator: the separator used


def _read_json(run: RunFolder, rel: str, what: str) -> Any:
    data = run.read_bytes(rel, MAX_SUMMARY_BYTES)
    if data is None:
        raise ExplainError(f"{run.root / rel}: missing or not a plain file")
    return parse_json(data, str(run.root / rel), what)


def _not_a_run(root: Path) -> str:
    """What is at ``root`` instead of a results folder."""
    if not root.is_file():
        return "no such results folder"
    if root.suffix.lower() in (".yaml", ".yml"):
        return f"a config file, not a results folder (`explain {shlex.quote(str(root))}` runs it)"
    return "a file, not a results folder"


class ItemReader:
    """Reads item files, each file once: the same file under a second name (a hard link) or
    one larger than its image's records is not read, and is named in ``notes``."""

    def __init__(self, run: RunFolder) -> None:
        self.run = run
        self.linked: list[str] = []
        self.large: list[str] = []
        self.seen: set[tuple[int, int]] = set()

    def read(self, rel: str, limit: int = MAX_ITEM_BYTES) -> Optional[ItemFile]:
        """The item file ``rel``, or None when it is not a plain file, is a file read already
        under another name or is larger than ``limit`` bytes (checked on the file read)."""
        read = self.run.read_stat(rel, min(limit, MAX_ITEM_BYTES))
        if read is None:
            return None
        found, data = read
        if (found.st_dev, found.st_ino) in self.seen:
            self.linked.append(quote(rel, 80))
            return None
        self.seen.add((found.st_dev, found.st_ino))
        if data is None:
            self.large.append(quote(rel, 80))
            return None
        return parse_item(data, str(self.run.root / rel))

    def notes(self, left_out: str) -> list[str]:
        """The notes on the item files not read (``left_out``: what the report lacks then)."""
        linked = [f"{len(self.linked)} item file(s) that are another item file under a second "
                  f"name (hard links) were not read: {listed(self.linked)}; "
                  f"{left_out}"] if self.linked else []
        return linked + ([f"{len(self.large)} item file(s) larger than their image's records "
                          f"can make were not read: {listed(self.large)}; {left_out}"]
                         if self.large else [])


ITEM_SLACK = 64 * 1024


def item_budget(entry: ImageEntry) -> int:
    """The most bytes the item file of a summary's ``entry`` may hold: its entry (indented,
    under 2x; the summary's is at least as long) and a compare row per map, with room to
    spare. Each 64 MB item file of a summary's image was ~2 GB once parsed and validated."""
    return 4 * len(entry.model_dump_json()) + 1024 * len(entry.cams) + ITEM_SLACK


def _rows_note(dropped: int) -> list[str]:
    return [f"compare: {dropped} row(s) of the item files are not of the run's maps (another "
            f"image, class or method, or a map's second row) and were left out"] if dropped else []


def _compare_rows(run: RunFolder, summary: RunSummary) -> dict[str, list[CompareRow]]:
    """A finished run's compare rows: from the item files of its own images only (their
    count, names and sizes are the summary's), each map's row once; notes on what was left
    out."""
    names = run.file_names("items")
    reader, rows, dropped = ItemReader(run), {}, 0
    for entry in summary.images:
        if f"{entry.id}.json" not in names:
            continue
        item = reader.read(f"items/{entry.id}.json", item_budget(entry))
        if item is not None:
            rows[entry.id] = own_rows(entry, item.compare)
            dropped += len(item.compare) - len(rows[entry.id])
    summary.notes += reader.notes("their image's compare rows are not in the report") + \
        _rows_note(dropped)
    return rows


def _runs_inside(root: Path) -> str:
    """'; it holds the runs a, b: name one' for a folder of results folders (results/, where
    each config's run goes), else ''. Only its first 1,000 entries are looked at."""
    import itertools
    try:
        with os.scandir(root) as entries:
            runs = sorted(e.name for e in itertools.islice(entries, 1000) if _is_run(e))
    except OSError:
        return ""
    if not runs:
        return ""
    import shlex  # 'my run, v2' read as two runs; the example is a path the shell takes whole
    return (f"; it holds the run(s) {listed([shlex.quote(r) for r in runs])}: name one, e.g. "
            f"{shlex.quote(str(root / runs[0]))}")


def _is_run(entry: os.DirEntry) -> bool:
    """A folder holding the marker as RunFolder.has_file reads it (a regular file, not a
    link); False for one it may not look into, which leaves the others named."""
    import stat
    try:
        return entry.is_dir(follow_symlinks=False) and stat.S_ISREG(
            os.lstat(os.path.join(entry.path, RUN_MARKER)).st_mode)
    except OSError:
        return False


def load_run(root: Path) -> ReportData:
    """A results folder's records: summary.json, or the item files of an interrupted run.
    Every file is read from inside the folder, without following a link."""
    if not root.is_dir():
        raise ExplainError(f"{root}: {_not_a_run(root)}")
    if root.is_symlink():
        raise ExplainError(f"{root}: a symbolic link; give the results folder itself")
    run = RunFolder(root)
    if not run.has_file(RUN_MARKER):
        raise ExplainError(f"{root}: not a results folder written by explain (no {RUN_MARKER})"
                           f"{_runs_inside(root)}")
    if not run.has_file("summary.json"):
        return _unfinished(run)
    where = root / "summary.json"
    raw = _read_json(run, "summary.json", "a summary")
    check_format(raw, str(where))
    try:
        summary = validated(RunSummary, raw)
    except (ValidationError, RecursionError) as exc:
        raise ExplainError(f"{where}: not a summary of this explain version ({why(exc)}); "
                           f"the run folder is damaged") from None
    check_entries(summary.images, summary.config, where)
    from explain import datasets
    problem = summary.dataset and datasets.problem(summary.dataset, summary.config,
                                                   len(summary.images))
    if problem:
        raise ExplainError(f"{where}: dataset: {problem}; the run folder is damaged")
    _check_task(summary)
    _check_trust(summary, where)
    data = ReportData(summary)
    if summary.compare:
        data.compare_rows = _compare_rows(run, summary)
    _check_links(summary)
    return data


def _check_task(summary: RunSummary) -> None:
    """Leave out task numbers the run cannot have written, with a note."""
    config = summary.config
    problem = summary.task and task_problem(summary.task, config.task,
                                            [m.name for m in config.methods])
    if problem:
        summary.task = None
        summary.notes.append(f"summary.json: task: {problem}; the task table is left out (the "
                             f"run folder was edited after the run)")


def _check_trust(summary: RunSummary, where: Path) -> None:
    """A trust record its run cannot have written is a damaged folder (ExplainError)."""
    from explain.evidence import evidence_problem
    from explain.metrics import TABLE
    if summary.trust is None:
        return
    metrics = set(TABLE) | {k for e in summary.images for r in e.cams for k in r.faithfulness or {}}
    from explain.baselines import BASELINES
    problem = evidence_problem(summary.trust, [m.name for m in summary.config.methods], metrics,
                               set(BASELINES))
    if problem:
        raise ExplainError(f"{where}: trust: {problem}; the run folder is damaged")


def _check_links(summary: RunSummary) -> None:
    """Unlink the file names the run does not give its files, with a note."""
    summary.notes += foreign_links(summary)


def _unfinished(run: RunFolder) -> ReportData:
    """An interrupted run's records: its config and the entries of its item files."""
    items = item_files(run)
    if not items:
        raise ExplainError(f"{run.root}: no summary.json and no items/: the run finished no "
                           f"image yet")
    config = _run_config(run)
    reader = ItemReader(run)
    maps = _maps_per_method(config) * len(config.methods)  # what one image's item file holds
    limit = ITEM_SLACK + 8 * 1024 * maps if maps else MAX_ITEM_BYTES
    read = [i for i in (reader.read(rel, limit) for rel in items) if i is not None]
    check_entries([i.entry for i in read], config, run.root / "items")
    where = os.path.abspath(run.root)  # 'explain report .': its name, not '' (--resume)
    summary = RunSummary(name=Path(where).name, config_file="(unfinished run)",
                         output_dir=where, device="(unfinished run)", config=config,
                         versions={}, images=[i.entry for i in read])
    summary.counts = {"images": len(read), "maps": sum(len(i.entry.cams) for i in read)}
    if config.task != "classification":  # the Methods table's means and the task's notes
        summary.task = task_summary(config.task, summary.images, [m.name for m in config.methods])
        # as the run's end makes them, from the run folder alone
        summary.notes += task_notes(config, summary.images, listing=False)
    rows = {i.entry.id: own_rows(i.entry, i.compare) for i in read}
    summary.notes += reader.notes("their images are not in the report") + \
        _rows_note(sum(len(i.compare) for i in read) - sum(map(len, rows.values())))
    _check_links(summary)
    return ReportData(summary, rows, finished=False)


def _maps_per_method(config: Config) -> int:
    """The most maps of one method an image has: a map per class, or per explained
    detection (up to detection.max_boxes, whatever the classes)."""
    if config.task == "detection":
        return config.detection.max_boxes
    return len(config.classes)


def _run_config(run: RunFolder) -> Config:
    """config.json of an interrupted run: the config it ran (ExplainError naming the file)."""
    where = run.root / "config.json"
    try:
        return validated(Config, _read_json(run, "config.json", "a config file"))
    except (ValidationError, RecursionError) as exc:
        raise ExplainError(f"{where}: not the config of a run of this explain version "
                           f"({why(exc)}); the run folder is damaged") from None
