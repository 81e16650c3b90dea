"""What a researcher hit following README.md and docs/ with an own model, a labelled folder,
segmentation, detection and the notebook API (the fifth newcomer session)."""

from __future__ import annotations

from test_trust_section import GOOD, synthetic

from explain import trustlines
from explain.methodtable import method_table


def test_a_tie_at_the_top_does_not_hide_a_method_that_is_significantly_worse():
    """Three methods beat the baselines, two tie and the third is significantly worse: the
    conclusion said all three 'do not differ significantly', against its own comparisons."""
    summary = synthetic({"gradcam": list(GOOD), "layercam": [v + 0.2 for v in GOOD],
                         "gradcamplusplus": [v + 0.2 for v in GOOD]},
                        {"random": [v - 0.3 for v in GOOD]})
    table = method_table(summary, ["gradcam", "layercam", "gradcamplusplus"])
    evidence = trustlines.build(summary, table)
    assert evidence.trusted is None
    assert evidence.conclusion == (
        "no method is clearly better: gradcam, layercam, gradcamplusplus beat every baseline, "
        "but none is significantly better than every other on ROAD combined (significant: "
        "layercam better than gradcam; gradcamplusplus better than gradcam) (no sanity check "
        "ran: sanity.enabled)")
    assert "do not differ" not in evidence.conclusion
