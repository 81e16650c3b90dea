"""The pipeline helpers: read-ahead keeps order and bounds, the file pool writes item steps only
after the files before them, errors come back to the caller's thread as they were."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from explain.errors import ExplainError
from explain.outputs import RunFolder
from explain.pipeline import FilePool, QueuedWrites, prefetch


def test_prefetch_keeps_order_and_reads_ahead_a_bounded_amount():
    started = []
    lock = threading.Lock()

    def work(n):
        with lock:
            started.append(n)
        time.sleep(0.002 * (n % 3))  # finish out of order
        return n * n

    chunks = [[i, i + 100] for i in range(10)]
    seen = []
    for k, out in enumerate(prefetch(chunks, work, workers=3, ahead=2)):
        seen.append(out)
        time.sleep(0.02)
        with lock:  # never more than `ahead` chunks beyond the one being used
            assert len(started) <= 2 * (k + 1 + 2)
    assert seen == [[i * i, (i + 100) ** 2] for i in range(10)]


def test_prefetch_raises_in_the_caller_and_stops():
    def work(n):
        if n == 3:
            raise ExplainError("image 3 is broken")
        return n

    got = []
    with pytest.raises(ExplainError, match="image 3 is broken"):
        for out in prefetch([[0], [1], [2], [3], [4]], work, workers=2):
            got.append(out)
    assert got == [[0], [1], [2]]


def test_then_runs_after_every_earlier_write():
    pool = FilePool(workers=3)
    done, order = set(), []

    def slow(name, delay):
        time.sleep(delay)
        done.add(name)

    def item(names):
        order.append(("item", sorted(done)))
        assert set(names) <= done

    for i in range(6):
        pool.submit(slow, f"a{i}", 0.03 * (6 - i))
    pool.then(item, [f"a{i}" for i in range(6)])
    pool.drain()
    pool.close()
    assert order == [("item", [f"a{i}" for i in range(6)])]


def test_a_failed_write_stops_its_item_step_and_is_raised_once(tmp_path):
    pool = FilePool(workers=2)
    written = []

    def fail():
        raise OSError(28, "No space left on device", "cams/x.png")

    with pytest.raises(OSError, match="No space left"):  # at the next call after it failed
        pool.submit(fail)
        pool.then(written.append, "items/x.json")
        pool.drain()
    assert written == []
    pool.drain()  # raised once, not again
    pool.close()


def test_a_queued_file_counts_as_there_and_a_read_waits_for_it(tmp_path):
    """While a write waits in the pool, has_file and file_names count it (the report lists
    the panels without waiting for their encoding); read_bytes waits and sees the bytes; a
    file already on disk still counts; a queued write that fails is raised by drain."""
    gate, pool = threading.Event(), FilePool(1)
    run = RunFolder(tmp_path)
    run.write_bytes("panels/old.png", b"on disk")
    queued = QueuedWrites(run, pool)
    pool.submit(gate.wait)  # the writer thread is busy until the gate opens, in 2 s
    threading.Timer(2.0, gate.set).start()  # (a has_file that waited would return after it)
    queued.write_bytes("panels/cat.png", b"cat")
    assert queued.has_file("panels/cat.png") and queued.file_names("panels") == {"cat.png",
                                                                                 "old.png"}
    assert not (tmp_path / "panels" / "cat.png").exists()  # answered without waiting
    assert not queued.has_file("panels/dog.png") and queued.has_file("panels/old.png")
    assert queued.read_bytes("panels/cat.png") == b"cat"
    queued.write_bytes("../escape.png", b"x")  # refused in the thread
    with pytest.raises(ExplainError, match="refusing to write"):
        pool.drain()
    pool.close()


def test_submit_blocks_at_the_limit():
    pool = FilePool(workers=1, limit=2)
    gate = threading.Event()
    pool.submit(gate.wait)
    pool.submit(gate.wait)
    t0 = time.perf_counter()
    threading.Timer(0.2, gate.set).start()
    pool.submit(lambda: None)  # waits for a slot
    assert time.perf_counter() - t0 >= 0.15
    pool.drain()
    pool.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_queued_writes_give_the_same_bytes(tmp_path, workers):
    folders = []
    for name in ("direct", "queued"):
        folders.append(RunFolder(tmp_path / name))
        folders[-1].root.mkdir()
    pool = FilePool(workers)
    direct, queued = folders[0], QueuedWrites(folders[1], pool)
    rng = np.random.default_rng(0)
    pictures = [(rng.random((8, 8, 3)) * 255).astype(np.uint8) for _ in range(5)]
    record = {"a": [1, 2]}
    for target in (direct, queued):
        for i, picture in enumerate(pictures):
            target.write_image(f"cams/m/{i}.png", picture)
            target.write_npy(f"cams/m/{i}.npy", picture)
        target.write_json("items/x.json", record)
        target.write_csv("t.csv", [{"a": 1}, {"b": 2}])
    record["a"].append(3)  # a later change does not reach the queued JSON
    pool.drain()
    pool.close()
    files = sorted(p.relative_to(tmp_path / "direct") for p in (tmp_path / "direct").rglob("*")
                   if p.is_file())
    assert len(files) == 12
    for rel in files:
        assert (tmp_path / "direct" / rel).read_bytes() == (tmp_path / "queued" / rel).read_bytes()
    assert b"3" not in (tmp_path / "queued" / "items/x.json").read_bytes()


@pytest.mark.parametrize("fmt", ["jpg"])
def test_image_format_writes_the_same_pictures_lossy(tmp_path, fmt):
    """output.image_format: the overlays and channel views come as .jpg/.webp, showing what
    the PNGs show (lossy: a few levels apart), and the records and the report point to them."""
    import cv2
    import torch

    from conftest import SMALL_SIZE, make_small_alexnet, write_config
    from explain.cli import main
    torch.save(make_small_alexnet(), tmp_path / "m.pth")
    results = {}
    for name, form in (("lossless", "png"), ("lossy", fmt)):
        cfg = write_config(tmp_path, name=name, model={"file": str(tmp_path / "m.pth")},
                           preprocess={"size": [SMALL_SIZE, SMALL_SIZE]},
                           target_layers=["features.10"], channels={"enabled": True},
                           output={"dir": str(tmp_path / "results"), "image_format": form})
        assert main([str(cfg), "--quiet"]) == 0
        results[name] = tmp_path / "results" / name
    lossy = results["lossy"]
    summary = (lossy / "summary.json").read_text()
    assert f"__cat.{fmt}" in summary and "__cat.png" not in summary
    report = (lossy / "report.html").read_text()
    assert f"cams/gradcam/both__dog.{fmt}" in report
    for stem in ("cams/gradcam/both__dog", "channels/gradcam/both__dog__top",
                 "channels/both__activations"):
        png = cv2.imread(str(results["lossless"] / f"{stem}.png")).astype(int)
        other = cv2.imread(str(lossy / f"{stem}.{fmt}")).astype(int)
        assert other.shape == png.shape, stem
        assert np.abs(other - png).mean() < 4, stem  # the same picture, lossy
    assert not list(lossy.glob("cams/**/*.png"))


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_pictures_are_encoded_by_their_extension(tmp_path, suffix):
    import cv2
    folder = RunFolder(tmp_path)
    picture = np.zeros((40, 60, 3), np.uint8)
    picture[:, :30] = (200, 40, 10)  # RGB: a red left half
    folder.write_image(f"x{suffix}", picture)
    data = (tmp_path / f"x{suffix}").read_bytes()
    magic = {".png": b"\x89PNG", ".jpg": b"\xff\xd8\xff", ".webp": b"RIFF"}[suffix]
    assert data.startswith(magic)
    back = cv2.cvtColor(cv2.imread(str(tmp_path / f"x{suffix}")), cv2.COLOR_BGR2RGB).astype(int)
    assert np.abs(back - picture).mean() < 3
    with pytest.raises(ExplainError, match="unknown picture format"):
        folder.write_image("x.gif", picture)


def test_the_progress_bar_ends_at_the_maps_made(tmp_path, capfd):
    """targets [predicted, a, b]: the prediction is a or b, one map serves both slots, so
    two maps of three slots are made per image. The bar counted the maps made and shrank its
    total at the end (9 of 12 shown as 9/9); then it counted slots, 12/12 above '8 maps'
    (newcomer 15: '72/72 map' above '36 maps'); now each batch lowers the total by the slots
    its images left empty: it ends at 8/8, the summary's count."""
    from helpers import tiny_config, tiny_net
    from conftest import IMAGES
    import torch
    from explain.config import load_config
    from explain.runner import RunOptions, run
    torch.save(tiny_net(), tmp_path / "m.pth")
    pics = [str(IMAGES / f) for f in ("cat.jpg", "dog.jpg")]
    config = tiny_config(tmp_path, {"file": str(tmp_path / "m.pth")}, images=pics,
                         classes={"a": 0, "b": 1}, targets=["predicted", "a", "b"],
                         methods=["gradcam", "layercam"])
    summary = run(load_config(config, {}), RunOptions(out_root=tmp_path / "out",
                                                      log=lambda line: None))
    err = capfd.readouterr().err
    assert summary.counts["maps"] == 2 * 2 * 2  # images x classes x methods
    last = err.replace("\r", "\n").strip().splitlines()
    assert "CAMs: 100%" in err and " 8/8 " in err and "0/12 " in err, err  # slots at first
    assert "/9 " not in err and not any(" 12/12 " in line for line in last), err
