"""The run's printed estimates against the measured times, side by side: the faithfulness
metrics (ROAD and a plain metric) at two input sizes, ScoreCAM and the sanity checks, on the
demo.

Each row is a whole `explain` run of the demo config (the demo network, its three photos,
2 classes x GradCAM + LayerCAM unless said) with one change, channel views and the report off;
"estimate" is what the run printed before its first batch (summary.json ``estimates_s``),
"measured" the time the same work took (``durations_s``: ``metrics``, ``sanity`` or
``method_<name>``).
Target: estimate / measured between 0.5 and 2 (issue "A run at the engine's pace").
Prints the load average before and after (the 2-core machine is shared: times are noisy).

Run: python benchmarks/estimates.py [--scratch DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from explain.config import load_config  # noqa: E402
from explain.runner import RunOptions, run  # noqa: E402

ROWS = [  # (what, measured key, config changes)
    ("ROAD 9 percentiles, 224 short side", "metrics",
     {"metrics": [{"name": "road_combined"}]}),
    ("ROAD 9 percentiles, 128 x 128", "metrics",
     {"metrics": [{"name": "road_combined"}], "preprocess.size": [128, 128]}),
    ("ROAD 9 percentiles, 64 x 64", "metrics",
     {"metrics": [{"name": "road_combined"}], "preprocess.size": [64, 64]}),
    ("drop_in_confidence, 128 x 128", "metrics",
     {"metrics": [{"name": "drop_in_confidence"}], "preprocess.size": [128, 128]}),
    ("ScoreCAM alone (no metrics), 224 short side", "method_scorecam",
     {"methods": ["scorecam"], "metrics": []}),
    ("sanity checks, 4 layers (no metrics), 224", "sanity",
     {"sanity.enabled": True, "sanity.layers": 4, "metrics": []}),
    ("sanity checks with ScoreCAM, 2 layers, 128 x 128", "sanity",
     {"sanity.enabled": True, "sanity.layers": 2, "methods": ["gradcam", "scorecam"],
      "metrics": [], "preprocess.size": [128, 128]}),
]


def one_row(changes: dict, key: str, scratch: Path, name: str) -> tuple[float, float]:
    """(estimate, measured) seconds of one demo run with ``changes`` (dotted fields)."""
    overrides = {"channels.enabled": False, "report.enabled": False,
                 "output.dir": str(scratch), "name": name, **changes}
    cfg = load_config(ROOT / "configs" / "demo_catdog.yaml", overrides)
    summary = run(cfg, RunOptions(progress=False, log=lambda line: None))
    estimate_key = key.removeprefix("method_")
    return summary.estimates_s[estimate_key], summary.durations_s[key]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scratch", type=Path, default=None)
    p.add_argument("--only", default="", help="the rows whose text holds this, e.g. sanity")
    args = p.parse_args()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="explain-estimates-"))
    print(f"load before {os.getloadavg()[0]:.1f}")
    print(f"{'run':46s} {'estimate s':>10s} {'measured s':>10s} {'estimate/measured':>18s}")
    rows = [r for r in ROWS if not args.only or args.only in r[0]]
    for n, (what, key, changes) in enumerate(rows):
        estimate, measured = one_row(changes, key, scratch, f"row{n}")
        print(f"{what:46s} {estimate:10.2f} {measured:10.2f} {estimate / measured:18.2f}")
    print(f"load after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
