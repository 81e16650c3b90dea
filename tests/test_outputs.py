"""The run folder: writes stay inside it, never follow links, survive a full disk in one line."""

import os
import stat
import threading

import numpy as np
import pytest

from explain.errors import ExplainError
from explain.outputs import RUN_MARKER, RunFolder, claim_run_dir


@pytest.mark.parametrize("rel", ["../evil.png", "/etc/evil.png", "cams/../../evil.png",
                                 "cams//x.png", "a\\b.png", "nul\x00.png", "."])
def test_paths_that_leave_the_folder_are_refused(tmp_path, rel):
    run = RunFolder(tmp_path / "run")
    run.root.mkdir()
    with pytest.raises(ExplainError, match="refusing to write"):
        run.write_bytes(rel, b"x")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["run"]


def test_a_planted_link_is_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    run = RunFolder(tmp_path / "run")
    run.root.mkdir()
    (run.root / "cams").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ExplainError, match="symbolic link"):
        run.write_image("cams/gradcam/x.png", np.zeros((4, 4, 3), np.uint8))
    assert list(outside.iterdir()) == []
    (run.root / "file.png").symlink_to(outside / "victim.png")
    run.write_bytes("file.png", b"new")  # the link itself is replaced, its target untouched
    assert not (outside / "victim.png").exists() and not (run.root / "file.png").is_symlink()


def test_writes_land_whole_in_folders_made_on_the_way(tmp_path):
    """Every byte of a large file arrives (a write may take several calls), folders are made
    as needed and reused, no temporary file is left; a part of the path that is a file is
    refused with one error naming it, nothing written beside it."""
    run = RunFolder(tmp_path)
    data = np.random.default_rng(0).integers(0, 256, 5_000_003, dtype=np.uint8).tobytes()
    run.write_bytes("cams/gradcam/big.bin", data)
    run.write_bytes("cams/gradcam/small.bin", b"x")
    run.write_bytes("cams/layercam/small.bin", b"y")
    assert (tmp_path / "cams" / "gradcam" / "big.bin").read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "cams").rglob("*")) == \
        ["big.bin", "gradcam", "layercam", "small.bin", "small.bin"]
    (tmp_path / "panels").write_bytes(b"not a folder")
    with pytest.raises(ExplainError, match=r"panels: expected a folder written by explain, "
                                           r"found a file"):
        run.write_bytes("panels/cat.png", b"z")
    with pytest.raises(ExplainError, match=r"panels: expected a folder .* found a file"):
        run.write_bytes("panels/deeper/cat.png", b"z")
    assert (tmp_path / "panels").read_bytes() == b"not a folder"
    os.mkfifo(tmp_path / "sanity")
    with pytest.raises(ExplainError, match=r"sanity: expected a folder .* found a FIFO, socket"):
        run.write_bytes("sanity/maps.csv", b"z")


def test_files_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        run = RunFolder(tmp_path)
        run.write_bytes("a.txt", b"x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_a_full_disk_is_one_error_naming_the_file(tmp_path, monkeypatch):
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    from explain import safewrite
    real = safewrite.temporary

    def on_full_disk(*args):
        name, fd = real(*args)
        os.close(fd)
        return name, os.open("/dev/full", os.O_WRONLY)

    monkeypatch.setattr(safewrite, "temporary", on_full_disk)
    run = RunFolder(tmp_path)
    with pytest.raises(ExplainError, match=r"x\.npy: cannot write \(No space left on device\)"):
        run.write_npy("x.npy", np.zeros(1000))
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too


def test_parallel_claims_get_distinct_folders(tmp_path):
    claimed, barrier = [], threading.Barrier(6)

    def claim():
        barrier.wait()
        claimed.append(claim_run_dir(tmp_path, "exp").root.name)

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == ["exp", "exp-2", "exp-3", "exp-4", "exp-5", "exp-6"]
    assert all((tmp_path / name / RUN_MARKER).is_file() for name in claimed)


def test_overwrite_refuses_folders_explain_did_not_write(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "thesis.tex").write_text("years of work")
    with pytest.raises(ExplainError, match="not written by explain"):
        claim_run_dir(tmp_path, "exp", overwrite=True)
    assert (tmp_path / "exp" / "thesis.tex").read_text() == "years of work"
    (tmp_path / "link").symlink_to(tmp_path / "exp")
    with pytest.raises(ExplainError, match="symbolic link"):
        claim_run_dir(tmp_path, "link", overwrite=True)
    assert (tmp_path / "exp" / "thesis.tex").exists()


def test_a_listing_answers_as_has_file_does(tmp_path):
    """The report's file checks come from one listing per folder (outputs.Listing): a plain
    file is there; a link to a file, a FIFO, a sub-folder, anything in a linked folder or a
    missing one is not; a path out of the folder is refused, as has_file refuses it."""
    from explain.outputs import Listing
    root = tmp_path / "run"
    (root / "cams" / "gradcam").mkdir(parents=True)
    (root / "cams" / "gradcam" / "a.png").write_bytes(b"x")
    (root / "top.txt").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b.png").write_bytes(b"x")
    os.symlink(outside / "b.png", root / "cams" / "gradcam" / "b.png")
    os.symlink(outside, root / "cams" / "linked")
    os.mkfifo(root / "cams" / "gradcam" / "pipe.png")
    run = RunFolder(root)
    listing = Listing(run)
    asked = ["cams/gradcam/a.png", "top.txt", "cams/gradcam/b.png", "cams/gradcam/pipe.png",
             "cams/gradcam", "cams/linked/b.png", "cams/none/a.png", "cams/gradcam/c.png"]
    assert [listing.has_file(r) for r in asked] == [run.has_file(r) for r in asked] == \
        [True, True, False, False, False, False, False, False]
    assert run.file_names("cams/gradcam") == {"a.png"}
    assert run.file_names("") == {"top.txt"}
    for bad in ("../outside/b.png", "cams/../top.txt", "/etc/passwd"):
        with pytest.raises(ExplainError, match="not a plain relative path"):
            listing.has_file(bad)
