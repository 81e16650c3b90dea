"""The thirty-third attack (a helper's findings): a shared run folder's records that the
report's template did not expect (docs/trust.md)."""

from __future__ import annotations

from helpers import finished_tiny_run, tampered


def test_a_summary_with_unset_metrics_makes_a_report(tmp_path, capsys):
    """A summary.json whose config records ``metrics: null`` (what an earlier version of
    explain kept; the readers accept it as 'any of explain's metrics') stopped ``explain
    report`` in a Python traceback (jinja iterating None: TypeError) after every check had
    passed it. The page says the metrics were unset."""
    from explain.cli import main
    run = tampered(finished_tiny_run(tmp_path), tmp_path / "shared",
                   lambda s: s["config"].__setitem__("metrics", None))
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "faithfulness</th><td>unset: the metrics explain chose" in page
    assert "explain: report -> " in capsys.readouterr().err
