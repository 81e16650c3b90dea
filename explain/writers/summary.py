"""summary.json and summary.csv, made from the typed run summary (explain.results)."""

from __future__ import annotations

import time

from explain.results import csv_rows
from explain.writers import RunContext, Writer


class SummaryWriter(Writer):
    """Runs last: the summary holds what every other writer added."""

    def finish(self, ctx: RunContext) -> None:
        summary = ctx.summary
        summary.counts = {"images": len(summary.images),
                          "maps": sum(len(i.cams) for i in summary.images)}
        durations = summary.durations_s
        durations["total"] = time.perf_counter() - ctx.started
        summary.durations_s = {k: round(v, 3) for k, v in durations.items()}
        ctx.run.write_csv("summary.csv", csv_rows(summary))
        ctx.run.write_json("summary.json", summary.dump())
