"""A run folder read back for ``explain report`` (and explain.load, explain diff): its
summary.json, or the item files of an interrupted run, every file read from inside the
folder without following a link, and each record checked against the run it says it is."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pydantic import ValidationError

from explain.config import Config
from explain.errors import ExplainError
from explain.outputs import RUN_MARKER, RunFolder
from explain.recordfiles import (MAX_ITEM_BYTES, check_entries, check_format, item_files,
                                 parse_item, parse_json, validated, why)
from explain.results import CompareRow, ItemFile, RunSummary

MAX_SUMMARY_BYTES = 512 * 1024 * 1024  # summary.json read back by explain report


@dataclass
class ReportData:
    """Everything a report is made from: the summary, compare rows per image, and whether
    the run finished (an interrupted run's report is made from its item files)."""
    summary: RunSummary
    compare_rows: dict[str, list[CompareRow]] = field(default_factory=dict)
    finished: bool = True


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


def load_run(root: Path) -> ReportData:
    """A results folder's records: summary.json, or the item files of an interrupted run.
    Every file is read from inside the folder, without following a link."""
    if not root.is_dir():
        raise ExplainError(f"{root}: {_not_a_run(root)}")
    if root.is_symlink():
        raise ExplainError(f"{root}: a symbolic link; give the results folder itself")
    run = RunFolder(root)
    if not run.has_file(RUN_MARKER):
        raise ExplainError(f"{root}: not a results folder written by explain (no {RUN_MARKER})")
    items = item_files(run)
    if run.has_file("summary.json"):
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
        data = ReportData(summary)
        if summary.compare:
            for rel in items:
                item = _item(run, rel)
                if item is not None:
                    data.compare_rows[item.entry.id] = list(item.compare)
        return data
    if not items:
        raise ExplainError(f"{root}: no summary.json and no items/: the run finished no image yet")
    config = _run_config(run)
    read = [i for i in (_item(run, rel) for rel in items) if i is not None]
    check_entries([i.entry for i in read], config, root / "items")
    summary = RunSummary(name=root.name, config_file="(unfinished run)", output_dir=str(root),
                         device="(unfinished run)", config=config, versions={},
                         images=[i.entry for i in read])
    summary.counts = {"images": len(read), "maps": sum(len(i.entry.cams) for i in read)}
    return ReportData(summary, {i.entry.id: list(i.compare) for i in read}, finished=False)


def _run_config(run: RunFolder) -> Config:
    """config.json of an interrupted run: the config it ran (ExplainError naming the file)."""
    where = run.root / "config.json"
    try:
        return validated(Config, _read_json(run, "config.json", "a config file"))
    except (ValidationError, RecursionError) as exc:
        raise ExplainError(f"{where}: not the config of a run of this explain version "
                           f"({why(exc)}); the run folder is damaged") from None


def _item(run: RunFolder, rel: str) -> Optional[ItemFile]:
    data = run.read_bytes(rel, MAX_ITEM_BYTES)
    return None if data is None else parse_item(data, str(run.root / rel))
