"""Day 26 review: the sign test's cost on a large run, the reading scope's warning filters
beside another thread's catch_warnings, and SIGTERM in explain's other commands."""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings

import pytest

from explain import stats
from explain.images import quiet


def test_the_sign_test_of_a_large_run_takes_no_time_and_stays_exact_where_small():
    """sign_p summed math.comb term by term: 10,000 images that differ evenly took 5 s, 40,000
    took 270 s, for each pair of methods (or method and baseline) on each yes-or-no metric."""
    assert stats.sign_p([1.0] * 5) == 0.0625
    assert stats.sign_p([1.0] * 2 + [-1.0] * 8) == pytest.approx(0.109375, abs=1e-12)
    assert stats.sign_p([0.0, float("nan")]) == 1.0
    t0 = time.perf_counter()
    even = stats.sign_p([1.0] * 20_000 + [-1.0] * 20_000)
    lopsided = stats.sign_p([1.0] * 20_600 + [-1.0] * 19_400)
    assert time.perf_counter() - t0 < 1.0
    assert even == pytest.approx(1.0)
    assert lopsided < 1e-8  # 51.5% of 40,000 one way: z = 6


def test_reading_beside_another_threads_catch_warnings_leaves_the_filters_as_they_were():
    """quiet.reading saved warnings.filters with catch_warnings and put that copy back when
    its last reader left. A reader thread inside while the main thread's catch_warnings
    (the concepts writer's simplefilter('ignore'), or a library's) came and went put back
    'ignore everything' for the rest of the process (a notebook's warnings all lost)."""
    before = list(warnings.filters)
    inside, leave = threading.Event(), threading.Event()

    def reader() -> None:
        with quiet.reading():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=reader)
    with warnings.catch_warnings():  # entered first, left while the reader is inside
        warnings.simplefilter("ignore")
        thread.start()
        assert inside.wait(10)
    leave.set()
    thread.join(10)
    assert warnings.filters == before
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("still shown", UserWarning)
    assert [str(w.message) for w in caught] == ["still shown"]


def test_reading_entered_first_takes_its_filters_out_of_a_list_another_block_puts_back():
    """The other order: the reader enters, a catch_warnings block copies the filters (with the
    reader's), the reader leaves, the block puts its copy back: the reader's filters stay
    out of the process's list."""
    before = list(warnings.filters)
    inside, leave, left = threading.Event(), threading.Event(), threading.Event()

    def reader() -> None:
        with quiet.reading():
            inside.set()
            leave.wait(10)
        left.set()

    thread = threading.Thread(target=reader)
    thread.start()
    assert inside.wait(10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        leave.set()
        assert left.wait(10)
    thread.join(10)
    assert warnings.filters == before


def test_the_reading_scope_still_hides_pillows_warnings_and_puts_the_bound_back():
    from PIL import Image
    bound = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet.reading(), quiet.reading():
            assert Image.MAX_IMAGE_PIXELS is None
            warnings.warn_explicit("a bad tag", UserWarning, "TiffImagePlugin.py", 1,
                                   module="PIL.TiffImagePlugin")
            warnings.warn("a bomb", Image.DecompressionBombWarning)
        warnings.warn_explicit("a bad tag", UserWarning, "TiffImagePlugin.py", 1,
                               module="PIL.TiffImagePlugin")
    assert [str(w.message) for w in caught] == ["a bad tag"]
    assert Image.MAX_IMAGE_PIXELS == bound


def test_sigterm_in_explain_diff_ends_it_with_a_line_and_code_143(monkeypatch, capsys):
    """SIGTERM became a KeyboardInterrupt for every command, but only a run answered it:
    'explain diff', 'explain report' and 'explain layers' printed a KeyboardInterrupt
    traceback and exited as on Ctrl-C (they had ended silently with 143 before)."""
    import explain.diff
    from explain import cli

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs here
        raise AssertionError("SIGTERM was not answered")

    monkeypatch.setattr(explain.diff, "diff_runs", killed)
    monkeypatch.setattr(cli, "_TERMINATED", [])
    before = signal.getsignal(signal.SIGTERM)
    try:
        cli.stop_on_terminate()
        assert cli.main(["diff", "run-a", "run-b"]) == 143
    finally:
        signal.signal(signal.SIGTERM, before)
    err = capsys.readouterr().err
    assert "explain diff: interrupted" in err and "Traceback" not in err
