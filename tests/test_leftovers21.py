"""Leftovers of the twentieth session, mended in the twenty-first."""

from __future__ import annotations

from explain import trustlines
from explain.config import Config
from explain.evidence import Evidence
from explain.writers.report import ReportData, render_pages
from explain.outputs import RunFolder
from explain.api.runview import _not_beaten
from explain.methodtable import method_table
from test_trust_section import GOOD, METRIC, synthetic


def _few(tmp_path, name: str, legacy: bool):
    """3 images, layercam's mean below the centre baseline's: no test, a warning."""
    few = GOOD[:3]
    summary = synthetic({"gradcam": [v + 0.2 for v in few], "layercam": few},
                        {"centre": [v + 0.05 for v in few]})
    summary.config = Config.model_validate({"model": {"file": "m.pth"}, "images": ["a.jpg"],
                                            "target_layers": ["x"], "metrics": [METRIC],
                                            "methods": ["gradcam", "layercam"]})
    table = method_table(summary, ["gradcam", "layercam"])
    summary.trust = trustlines.build(summary, table)
    if legacy:  # a summary.json written before the rule: False on too few images
        data = summary.trust.model_dump()
        for row in data["rows"]:
            for s in row["metrics"].values():
                s["beats_baselines"] = False if s["not_beaten"] else s["beats_baselines"]
        summary.trust = Evidence.model_validate(data)
    (tmp_path / name).mkdir()
    page = render_pages(RunFolder(tmp_path / name), ReportData(summary))["report.html"]
    return summary, page


def test_too_few_images_is_none_in_summary_json_as_in_the_csv_and_the_page(tmp_path):
    """summary.json kept False for a method whose mean was below a baseline's on 3 images
    (no test made) while summary.csv said nothing and the page 'mean not better than':
    one rule now, False only for a test's finding; old summaries read the same way."""
    for legacy in (False, True):
        summary, page = _few(tmp_path, f"run{legacy}", legacy)
        stat = summary.trust.row("layercam").metrics[METRIC]
        assert stat.beats_baselines is None and stat.not_beaten == ["centre"]
        assert ">mean not better than centre</span>" in page and "✗ baseline:" not in page
        assert _not_beaten(stat) == " mean not better than centre"
        assert "too few images to tell" in summary.trust.lines[1].text
