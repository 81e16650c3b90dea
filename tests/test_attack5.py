"""The fifth attack (a review session's findings): a hard link planted as a run's lock file, a
compressed member in a mean-map state, a JPEG that repeats one scan thousands of times, and
records read back with links off the folder or integers no float can hold (the last two are
cases of test_attack2_runfolder's tampered-summary table)."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import explain_error
from explain.datasets import MeanSums
from explain.images import ImageError, ImageRef, precheck, prepare
from explain.config import Preprocess
from explain.images.jpeg import MAX_JPEG_SCANS
from explain.recordfiles import parse_item, parse_json
from explain.runlock import LOCK_FILE, RunLock
from explain.writers.report import href


# ---- a hard link as the lock file ----------------------------------------------------------------

def test_a_lock_file_hard_linked_to_another_file_is_refused_and_that_file_kept(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's notes\n")
    run = tmp_path / "results" / "base"
    run.mkdir(parents=True)
    os.link(victim, run / LOCK_FILE)
    for flag in ("--resume", "--overwrite"):
        text = explain_error(RunLock.take, run, flag)
        assert text.startswith(f"{flag}: {run / LOCK_FILE} is not a lock file explain wrote")
        assert "hard link" in text
    assert victim.read_text() == "the user's notes\n"
    (run / LOCK_FILE).unlink()
    lock = RunLock.take(run, "--resume")  # a lock file of its own is taken as before
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (run / LOCK_FILE).exists() and victim.read_text() == "the user's notes\n"


def test_a_live_lock_hard_linked_by_a_backup_is_still_busy_not_to_be_removed(tmp_path):
    """A live run's lock file that a backup tool hard-linked: the second run is told the
    folder is in use (not to remove the lock)."""
    run = tmp_path / "exp"
    run.mkdir()
    lock = RunLock.take(run, "--resume")
    try:
        os.link(run / LOCK_FILE, tmp_path / "backup-of-lock")
        text = explain_error(RunLock.take, run, "--resume")
        assert "is in use by a running explain" in text and "remove it" not in text
    finally:
        lock.release()


# ---- a deflated member in the mean maps' state -------------------------------------------------

def _state() -> MeanSums:
    state = MeanSums((8, 8))
    state.add(("cat", "gradcam", "correct"), np.linspace(0, 1, 64).reshape(8, 8))
    return state


def test_a_mean_map_state_with_a_compressed_member_is_refused():
    data = _state().to_bytes(["cat"])
    back, pending = MeanSums.from_bytes(data, "sums.zip")  # what explain writes: stored
    assert pending == ["cat"] and np.array_equal(back.sums[("cat", "gradcam", "correct")],
                                                 _state().sums[("cat", "gradcam", "correct")])
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as z, zipfile.ZipFile(out, "w") as w:
        for info in z.infolist():  # the same members, deflated: small on disk, large in memory
            w.writestr(info.filename, z.read(info), compress_type=zipfile.ZIP_DEFLATED)
    text = explain_error(MeanSums.from_bytes, out.getvalue(), "dataset/mean/sums.zip")
    assert text.startswith("dataset/mean/sums.zip: not a mean-map state")
    assert "'state.json' is compressed" in text


# ---- a JPEG that repeats a scan ----------------------------------------------------------------

def _segments(data: bytes) -> tuple[list[bytes], int]:
    """The progressive JPEG's scans (each with its entropy-coded data) and where its end is."""
    pos, scans = 2, []
    while data[pos + 1] != 0xD9:
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if data[pos + 1] == 0xDA:  # entropy data to the next marker (not FF00, not a restart)
            while not (data[end] == 0xFF and data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7):
                end += 1
            scans.append(data[pos:end])
        pos = end
    return scans, pos


def _progressive(tmp_path: Path, copies: int, tail: bytes = b"") -> ImageRef:
    """A grey progressive JPEG whose last scan is repeated ``copies`` times, then ``tail``
    after its end marker."""
    buf = io.BytesIO()
    gradient = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    Image.fromarray(gradient).save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    scans, end = _segments(data)
    assert len(scans) > 2  # a progressive file
    path = tmp_path / f"scans{copies}.jpg"
    path.write_bytes(data[:end] + scans[-1] * copies + b"\xff\xd9" + tail)
    return ImageRef(path.stem, path, from_folder=False)


def test_a_jpeg_repeating_a_scan_is_refused_before_it_is_decoded(tmp_path):
    spec = Preprocess(size=[32, 32])
    plain = _progressive(tmp_path, 0)
    precheck(plain, spec)
    assert prepare(plain, spec).tensor.shape == (3, 32, 32)
    bomb = _progressive(tmp_path, MAX_JPEG_SCANS + 1)
    for step in (precheck, prepare):
        with pytest.raises(ImageError) as info:
            step(bomb, spec)
        assert str(info.value) == (
            f"{bomb.path}: more than {MAX_JPEG_SCANS} scans in one JPEG (a progressive photo "
            f"has about 10, and decoding makes a pass over the image for each); re-encode it")


def test_scans_after_the_end_marker_are_not_counted(tmp_path):
    """A phone appends a video after the photo; its bytes may hold FF DA anywhere."""
    video = b"\xff\xda\x00\x08" * 5000
    ref = _progressive(tmp_path, 0, tail=video)
    prepare(ref, Preprocess(size=[32, 32]))  # no error: the scans after FFD9 are not read


# ---- records read back ---------------------------------------------------------------------------

@pytest.mark.parametrize("rel", ["//attacker.example/x.png", "../beside.png", "/etc/x.png",
                                 "a//b.png", "a\\b.png", "a/./b.png", ""])
def test_a_link_off_the_folder_is_refused(rel):
    text = explain_error(href, rel)
    assert text.endswith("is not a plain relative path inside the run folder; the run folder "
                         "is damaged")
    assert href("cams/grad cam/a?b.png", "../") == "../cams/grad%20cam/a%3Fb.png"


def test_an_integer_no_float_can_hold_is_one_line_naming_the_file():
    big = json.dumps({"format": 2, "peak_x": 10 ** 400}).encode()
    text = explain_error(parse_json, big, "run/summary.json", "a summary")
    assert text == ("run/summary.json: not a summary of this explain version (an integer of "
                    "401 digits); the run folder is damaged")
    assert "an integer of 401 digits" in explain_error(parse_item, big, "items/cat.json")
    for n in (-(10 ** 300 - 1), 9223372036854775807):  # sys.maxsize in a config's arch_args
        assert parse_json(json.dumps({"n": n}).encode(), "x", "y") == {"n": n}
    assert "an integer of 301 digits" in explain_error(parse_json, b'{"n": 1' + b"0" * 300 + b"}",
                                                       "x", "y")


def test_many_tiny_segments_are_read_once_and_bounded(tmp_path):
    """Four-byte comments after the first scan: 5,000 are walked, each chunk of the file read
    once; past MAX_JPEG_STEPS the file is refused (each segment is a step of Python)."""
    from explain.images.jpeg import MAX_JPEG_STEPS, _scans
    data = _progressive(tmp_path, 0).path.read_bytes()
    scans, end = _segments(data)
    first = data.index(scans[0])
    for comments, walked in ((5_000, None), (200_000, MAX_JPEG_STEPS + 1)):
        body = data[:end] + b"\xff\xfe\x00\x02" * comments + scans[-1] + b"\xff\xd9"
        asked = []

        def read(at: int, n: int) -> bytes:
            asked.append(n)
            return body[at:at + n]
        counted, segments = _scans(read, len(body), first)
        if walked is None:  # every scan, and the segments between them (tables, comments)
            assert counted == len(scans) + 1 and segments > comments
        else:
            assert segments == walked and counted == len(scans)
        assert sum(min(n, len(body)) for n in asked) <= 2 * len(body)
    path = tmp_path / "comments.jpg"
    path.write_bytes(body)
    with pytest.raises(ImageError, match=f"more than {MAX_JPEG_STEPS} segments after the first "
                                         f"scan"):
        precheck(ImageRef("comments", path, from_folder=False), Preprocess(size=[32, 32]))
