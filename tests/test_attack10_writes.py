"""The tenth attack (r6): a folder of the run swapped for a symbolic link between a write's
check and the write itself (renameat2 exchange by whoever may rename entries of the folder
holding the run) redirected the write outside the run folder. The swap is made here at the
exact moment, by a hook on the call that creates the temporary file or renames it into place."""

import os
import pickle
import stat
import threading
from pathlib import Path

import pytest

from explain import safewrite
from explain.errors import ExplainError
from explain.outputs import RUN_MARKER, RunFolder, claim_run_dir, open_run_dir


def tree(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file and folder below ``folder``: relative path -> (bytes or b'<dir>', mode)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = os.lstat(p)
        body = b"<dir>" if stat.S_ISDIR(st.st_mode) else p.read_bytes()
        out[p.relative_to(folder).as_posix()] = (body, stat.S_IMODE(st.st_mode))
    return out


def swap_for_link(real: Path, target: Path) -> Path:
    """What the attacker does: ``real`` moved aside (still the same folder) and a link to
    ``target`` put in its place. Returns where the folder went."""
    aside = real.with_name(f".{real.name}.aside")
    os.rename(real, aside)
    os.symlink(target, real, target_is_directory=True)
    return aside


def swap_at(monkeypatch, call: str, real: Path, target: Path) -> dict:
    """Swap ``real`` for a link to ``target`` just before the first ``os.<call>`` of a
    temporary file ('.<name>.<...>.part'): after every check of the write. Returns a dict
    that holds 'aside' once the swap happened."""
    original, done = getattr(os, call), {}

    def hooked(name, *args, **kwargs):
        if not done and str(os.fspath(name)).endswith(".part"):
            done["aside"] = swap_for_link(real, target)
        return original(name, *args, **kwargs)

    monkeypatch.setattr(os, call, hooked)
    return done


def outside_run(tmp_path: Path) -> tuple[Path, dict]:
    """Another run of the same user, which the swapped link points to, and its files."""
    other = tmp_path / "home" / "results" / "important_run"
    other.mkdir(parents=True)
    (other / "summary.json").write_text('{"precious": true}')
    (other / "cams" / "gradcam").mkdir(parents=True)
    return other, tree(other)


@pytest.mark.parametrize("call", ["open", "replace"])
def test_a_subfolder_swapped_after_its_check_takes_no_write_outside(tmp_path, monkeypatch,
                                                                     call):
    """cams/gradcam is swapped for a link to another run's cams/gradcam after the write
    checked it: the file lands in the run's own folder (or the write is refused in one
    ExplainError), and nothing appears in the other run."""
    other, before = outside_run(tmp_path)
    run = RunFolder(tmp_path / "shared" / "demo")
    run.root.mkdir(parents=True)
    run.write_bytes("cams/gradcam/first.png", b"first")  # the folder made and checked
    done = swap_at(monkeypatch, call, run.root / "cams" / "gradcam", other / "cams" / "gradcam")
    try:
        run.write_bytes("cams/gradcam/second.png", b"second")
        landed = True
    except ExplainError:
        landed = False
    monkeypatch.undo()
    assert "aside" in done, "the swap did not happen"
    assert tree(other) == before  # no file, no temporary file in the other run
    if landed:
        assert (done["aside"] / "second.png").read_bytes() == b"second"
    assert sorted(p.name for p in done["aside"].iterdir()) == \
        ["first.png", "second.png"][:1 + landed]


@pytest.mark.parametrize("call", ["open", "replace"])
def test_the_run_folder_swapped_after_its_check_takes_no_write_outside(tmp_path, monkeypatch,
                                                                        call):
    """The run folder itself is swapped for a link to another run (the attacker owns the
    folder holding it: output.dir /tmp/x made by them): the run's summary.json does not
    replace the other run's, and later writes, new folders too, stay in the run's folder."""
    other, before = outside_run(tmp_path)
    run = RunFolder(tmp_path / "shared" / "demo")
    run.root.mkdir(parents=True)
    run.write_bytes(RUN_MARKER, b"written by explain\n")  # claim_run_dir's first write
    done = swap_at(monkeypatch, call, run.root, other)
    try:
        run.write_bytes("summary.json", b'{"from": "explain"}\n')
    except ExplainError:
        pass
    monkeypatch.undo()
    assert "aside" in done, "the swap did not happen"
    assert tree(other) == before  # the other run's summary.json is not replaced
    run.write_bytes("items/cat.json", b"{}")  # a folder made after the swap
    run.write_bytes("cams/gradcam/cat.png", b"map")
    assert tree(other) == before
    assert (done["aside"] / "items" / "cat.json").read_bytes() == b"{}"
    assert (done["aside"] / "cams" / "gradcam" / "cat.png").read_bytes() == b"map"
    run.release()
    with pytest.raises(ExplainError, match="missing or a symbolic link"):  # opened again
        run.write_bytes("summary.json", b"{}")
    assert tree(other) == before


def test_a_new_run_folder_is_the_one_made_even_if_the_results_folder_is_swapped(tmp_path,
                                                                               monkeypatch):
    """claim_run_dir makes the run folder and opens it at the results folder's descriptor:
    the results folder swapped for a link to the user's own results right after the mkdir
    (where a run of that name is) changes nothing in those results, not even for the time of
    the run (the lock file is taken at the run folder's descriptor)."""
    shared, mine = tmp_path / "shared_x", tmp_path / "home" / "results"
    shared.mkdir()
    (mine / "exp").mkdir(parents=True)
    (mine / "exp" / "summary.json").write_text('{"precious": true}')
    (mine / "exp" / RUN_MARKER).write_text("written by explain\n")
    before = tree(mine)
    original, done = os.mkdir, {}

    def hooked(name, *args, **kwargs):
        original(name, *args, **kwargs)
        if not done and os.fspath(name) in ("exp", os.fspath(shared / "exp")):
            done["aside"] = swap_for_link(shared, mine)

    monkeypatch.setattr(os, "mkdir", hooked)
    try:
        run = claim_run_dir(shared, "exp")
    except ExplainError:
        run = None
    monkeypatch.undo()
    assert "aside" in done
    assert tree(mine) == before  # its lock file too is in the folder it made
    if run is not None:
        run.write_json("config.json", {"a": 1})
        run.release()
        assert sorted(p.name for p in (done["aside"] / "exp").iterdir()) == \
            [RUN_MARKER, "config.json"]
    assert tree(mine) == before


def test_ordinary_writes_are_byte_and_mode_identical_to_writes_by_path(tmp_path, monkeypatch):
    """The same files, bytes and permissions (0666 / 0777 less the umask) as the writes by
    path (the systems without descriptor calls), no temporary file left, a link planted at a
    file's name replaced, not followed."""
    files = {"a.txt": b"x", "empty.bin": b"", "cams/gradcam/cat.png": bytes(range(256)) * 7,
             "cams/gradcam/dog.png": b"dog", "items/cat.json": b"{}\n",
             "arrays/gradcam/deep/er/x.npy": os.urandom(300_001)}
    for umask in (0o022, 0o077):
        trees = []
        for at_calls in (True, False):
            monkeypatch.setattr(safewrite, "AT_CALLS", at_calls)
            root = tmp_path / f"{umask:o}-{at_calls}"
            root.mkdir()
            (root / "victim").write_bytes(b"keep")
            os.symlink(root / "victim", root / "planted.txt")
            old = os.umask(umask)
            try:
                run = RunFolder(root)
                for rel, data in files.items():
                    run.write_bytes(rel, data)
                run.write_bytes("planted.txt", b"new")
                run.release()
            finally:
                os.umask(old)
            trees.append(tree(root))
        assert trees[0] == trees[1]
        assert trees[0]["a.txt"] == (b"x", 0o666 & ~umask)
        assert trees[0]["cams/gradcam"] == (b"<dir>", 0o777 & ~umask)
        assert trees[0]["planted.txt"] == (b"new", 0o666 & ~umask)
        assert trees[0]["victim"][0] == b"keep"
        assert {k: v[0] for k, v in trees[0].items() if k in files} == files
        assert not [k for k in trees[0] if k.rpartition("/")[2].startswith(".")]


def open_fds(inside: Path) -> list[str]:
    """The descriptors this process holds open on ``inside`` or below it (not a count of all:
    an earlier test's objects may be collected meanwhile and close theirs)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
        if target == str(inside) or target.startswith(f"{inside}/"):
            held.append(target)
    return held


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_threads_share_the_descriptors_and_release_closes_them(tmp_path, monkeypatch):
    """Eight writer threads, 40 folders (more than the descriptors kept: some are closed and
    opened again), every file lands; after release no descriptor is left open, and a copy
    sent to another process (pickle, torchrun) holds none."""
    monkeypatch.setattr(safewrite, "MAX_KEPT", 8)
    run = claim_run_dir(tmp_path, "exp")
    start = threading.Barrier(8)

    def writer(n):
        start.wait()
        for i in range(60):
            run.write_bytes(f"cams/m{(n * 60 + i) % 40}/f{n}-{i}.png", b"%d" % i)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for _ in (tmp_path / "exp" / "cams").rglob("*.png")) == 480
    copy = pickle.loads(pickle.dumps(run))
    assert copy.folders.fds == {} and copy.lock.fd is None
    run.release()
    assert open_fds(tmp_path) == []
    again = open_run_dir(tmp_path, "exp")  # --resume: pinned, released, nothing left
    again.write_bytes("items/x.json", b"{}")
    again.release()
    assert open_fds(tmp_path) == []


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_release_during_a_write_closes_the_folder_after_that_write(tmp_path, monkeypatch):
    """release() while a writer thread is between creating its temporary file and renaming it:
    the folder's descriptor stays open until that write is done (a closed number reused by
    another open would send the rename elsewhere), then nothing is left open."""
    run = RunFolder(tmp_path)
    run.write_bytes("cams/a.png", b"a")
    real = safewrite.temporary

    def releasing(*args):
        made = real(*args)
        run.release()
        return made

    monkeypatch.setattr(safewrite, "temporary", releasing)
    run.write_bytes("cams/b.png", b"b")
    monkeypatch.undo()
    assert (tmp_path / "cams" / "b.png").read_bytes() == b"b"
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == ["a.png", "b.png"]
    assert open_fds(tmp_path) == []
