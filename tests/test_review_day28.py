"""Review 22 (day 28): the sanity interval's note, explain diff's settings and intervals, the
durations' parts."""

from __future__ import annotations

from types import SimpleNamespace

from explain.sanity_records import SanitySummary


def _sanity(verdict: str, final: float, low: float, high: float,
            randomisable: int) -> SanitySummary:
    sim = {"spearman": final, "spearman_abs": final, "ssim": final, "ssim_abs": final}
    return SanitySummary.model_validate({
        "measure": "spearman", "threshold": 0.5, "logit_threshold": 0.5, "seed": 0,
        "layers": ["fc", "conv"], "randomisable": randomisable, "not_randomised": 0,
        "methods": [{"method": "gradcam", "verdict": verdict, "final": final,
                     "final_low": low, "final_high": high, "cascading": [],
                     "final_per_map": [sim] * 6}],
        "maps": [{"image": i, "class": c} for i in "abc" for c in ("cat", "dog")]})


def _sanity_html(record: SanitySummary) -> str:
    from explain.writers.report import environment
    return environment().get_template("sanity.html.j2").render(
        summary=SimpleNamespace(sanity=record), prefix="")


def test_a_partial_cascades_inconclusive_verdict_is_not_left_to_more_images():
    """A partial cascade fails nothing whatever the images: its interval across the threshold
    said 'more images would settle the verdict' beside 'raise sanity.layers to decide'."""
    partial = _sanity("fail", 0.6, 0.4, 0.8, randomisable=10)
    word, text = partial.verdicts()["gradcam"]
    assert word == "inconclusive (partial cascade)"
    assert text == ("rank correlation 0.60 [0.40, 0.80] over 3 images with the trained model's "
                    "maps after 2 of 10 layer(s) re-initialised; passes below 0.5; a partial "
                    "cascade fails nothing: raise sanity.layers to decide")
    assert "more images" not in _sanity_html(partial)
    # the whole cascade: the mean decides, and more images may settle it (not 'would': a
    # mean at the threshold stays there)
    whole = _sanity("fail", 0.6, 0.4, 0.8, randomisable=2)
    assert whole.verdicts()["gradcam"][1].endswith(
        "passes below 0.5; its interval reaches across the threshold: more images "
        "(sanity.images) may settle the verdict")
    assert ("reaches across 0.5: more images (<code>sanity.images</code>) may settle the "
            "verdict.") in _sanity_html(whole)
    # a partial cascade's pass is a pass: its interval's note stays
    passed = _sanity("pass", 0.45, 0.3, 0.6, randomisable=10)
    assert "may settle the verdict" in passed.verdicts()["gradcam"][1]
    assert "may settle the verdict" in _sanity_html(passed)


def _diff(a: dict, b: dict) -> list[str]:
    from explain.config.schema import Config
    from explain.diff.numbers import config_changes

    def config(**fields) -> Config:
        return Config.model_validate({
            "model": {"builder": "torchvision.models:alexnet"}, "images": ["a.jpg"],
            "target_layers": ["features.10"], "methods": ["gradcam"], "metrics": [],
            **fields})
    shown, total = config_changes(SimpleNamespace(config=config(**a)),
                                  SimpleNamespace(config=config(**b)))
    assert total == len(shown)
    return shown


def test_diff_lists_the_report_settings_that_act_without_the_page():
    """report.enabled: false turns off the page only: photo_separator still sets the unit of
    the trust intervals (and of explain diff's), weak_below each map's weak flag; both were
    left out as settings of a section that is off."""
    off = {"enabled": False}
    assert _diff({"report": off},
                 {"report": {**off, "photo_separator": "_", "weak_below": 0.2}}) == \
        ["report.photo_separator: null -> _", "report.weak_below: 0.05 -> 0.2"]
    # a section that is off still has its settings left out
    assert _diff({"sanity": {"images": 1}}, {"sanity": {"images": 2}}) == []


def test_diff_shows_a_list_of_names_as_the_config_writes_it():
    """'as the config writes them': a list's names kept their letters (json's ASCII escapes
    read 'Äpfel' as '\\u00c4pfel'), as a plain text setting's are."""
    classes = {"Äpfel": 0, "cat": 1, "dog": 2}
    shown = _diff({"classes": classes, "targets": ["Äpfel", "cat"]},
                  {"classes": classes, "targets": ["Äpfel", "dog"]})
    assert shown == ['targets: ["Äpfel", "cat"] -> ["Äpfel", "dog"]']


def test_a_methods_own_passes_are_said_to_be_part_of_the_cams_time():
    """The durations' parts add up to the total (the rest named), but a ScoreCAM's own passes
    were listed as one more part beside them: 'method scorecam 10.0 s' in a 17 s run of
    parts summing to 27 s."""
    from explain.writers.summary import OTHER, duration_parts
    parts = duration_parts({"cams": 12.0, "figures": 3.0, "model_load": 1.0,
                            "method_scorecam": 10.0, "total": 17.0})
    assert parts == [("model load", 1.0), ("cams", 12.0), ("method scorecam (in cams)", 10.0),
                     ("pictures and files", 3.0), (OTHER, 1.0), ("total", 17.0)]
