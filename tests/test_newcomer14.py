"""Newcomer 14: a PhD student ranking CAM methods of a random-weights ResNet-18 over a labelled
folder of flips and crops with boxes, made faster with torchrun on the CPU, killed mid-way and
finished with --resume: the resumed result must be the uninterrupted one, and its notes too."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from conftest import IMAGES
from helpers import CAT, tiny_config, tiny_net

from explain.cli import main


def _refs(count: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(id=f"p{i}") for i in range(count)]


def _ids(chunks) -> list[list[str]]:
    return [[r.id for r in chunk] for chunk in chunks]


def test_torchrun_deals_the_one_process_batches_and_resume_keeps_them():
    """Ranks were dealt images (rank 0: p0, p2, p4, ...) and then cut them into batches, so an
    image shared its pass with other images than in one process, and after --resume with
    others again: at batch_size 4 a torchrun run and its resumed twin differed from the
    one-process run in the last bits of 9 maps, a PNG and the trust intervals."""
    from explain.distributed import Ranks
    from explain.runner import rank_batches
    refs = _refs(10)
    one = _ids(rank_batches(refs, set(), 4, Ranks()))
    assert one == [["p0", "p1", "p2", "p3"], ["p4", "p5", "p6", "p7"], ["p8", "p9"]]
    assert _ids(rank_batches(refs, set(), 4, Ranks(rank=0, world=2))) == [one[0], one[2]]
    assert _ids(rank_batches(refs, set(), 4, Ranks(rank=1, world=2))) == [one[1]]
    # a resume after p0..p1 and p4..p7 were kept: p2, p3 stay a batch of their own, p8 and p9
    # too (cut from the remaining images, p2, p3, p8, p9 were one batch)
    kept = {"p0", "p1", "p4", "p5", "p6", "p7"}
    assert _ids(rank_batches(refs, kept, 4, Ranks())) == [["p2", "p3"], ["p8", "p9"]]
    assert _ids(rank_batches(refs, kept, 4, Ranks(rank=1, world=2))) == [["p8", "p9"]]


def test_resume_does_not_call_the_kept_images_boxes_unused(tmp_path):
    """After --resume the notes said 'annotations: boxes for images not in this run: cat.jpg'
    for every kept image with a box: only the images computed after the resume matched."""
    torch.save(tiny_net(), tmp_path / "tiny.pth")
    cfg = tiny_config(tmp_path, {"file": str(tmp_path / "tiny.pth")},
                      images=[str(CAT), str(IMAGES / "dog.jpg")], target_layers=["0"],
                      metrics=[], classes={"cat": 0, "dog": 1}, batch_size=1,
                      annotations={"boxes": {"cat": {"cat": [100, 0, 350, 300]},
                                             "dog": {"dog": [128, 224, 314, 537]}}})
    assert main([str(cfg), "--quiet"]) == 0
    run_dir = tmp_path / "results" / "exp"
    (run_dir / "summary.json").unlink()  # interrupted before its end, dog not finished
    (run_dir / "items" / "dog.json").unlink()
    assert main([str(cfg), "--quiet", "--resume"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "resumed: 1 image(s) kept from the interrupted run, 1 computed now" in summary["notes"]
    assert not [n for n in summary["notes"] if n.startswith("annotations:")], summary["notes"]
    assert [bool(e["boxes"]) for e in summary["images"]] == [True, True]


def test_torchrun_keeps_one_estimate_per_part():
    """Every rank estimated the whole run from its own timed passes and rank 0 kept every
    rank's line: the notes held 'about 10 s' and 'about 6 s' for the same faithfulness."""
    from explain import distributed
    summary = SimpleNamespace(notes=["estimate: faithfulness (road_combined): about 10 s"],
                              durations_s={}, skipped_images=[], device="cpu")
    other = {"notes": ["estimate: faithfulness (road_combined): about 6 s", "rank 1 note"],
             "durations": {}, "skipped": [], "device": "cpu", "writers": []}

    class Lead:
        lead, world = True, 2

        @staticmethod
        def to_lead(_mine, take):
            take(other)
    distributed.hand_in(Lead(), SimpleNamespace(summary=summary), [], [])
    assert summary.notes == ["estimate: faithfulness (road_combined): about 10 s", "rank 1 note"]
