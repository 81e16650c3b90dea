"""Review of the changes since 577aa09 (day 27): what the hints, the runs-inside scan and the
notebook display did with inputs the change did not try."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from conftest import IMAGES, save_config
from explain.cli import main
from explain.errors import ExplainError
from explain.models.heads import select_output


def test_a_state_dict_with_a_number_key_is_one_line_not_a_traceback(tmp_path, capsys):
    """A weights-only pickle's keys may be any number (loading._outputs_hint says so): the
    new aux_classifier check called key.startswith on an int, an AttributeError traceback
    where the run said "unexpected key '0'"."""
    torch.save({0: torch.zeros(2, 2)}, tmp_path / "w.pt")
    cfg = save_config(tmp_path, "n", {
        "model": {"file": "w.pt", "arch": "torchvision.models.alexnet"},
        "classes": {"cat": 0}, "images": [str(IMAGES / "cat.jpg")],
        "target_layers": "auto", "methods": ["gradcam"]})
    assert main([str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unexpected key '0'" in err, err
    assert "aux_loss" not in err


def test_a_dict_with_features_before_its_logits_is_told_logits():
    """{'embedding': (N, 512), 'logits': (N, 2)}: the hint named the first 2-d tensor,
    'model.output: embedding', which runs and explains the embedding's 512 'classes'; before
    the change it said 'model.output: logits', right for this model."""
    out = {"embedding": torch.zeros(1, 512), "logits": torch.zeros(1, 2)}
    with pytest.raises(ExplainError) as caught:
        select_output(out, None)
    said = str(caught.value)
    assert said.endswith("e.g. model.output: logits"), said
    # a dict without such a name still gets its only 2-d tensor
    with pytest.raises(ExplainError, match="e.g. model.output: scores$"):
        select_output({"feat": torch.zeros(1, 4, 2, 2), "scores": torch.zeros(1, 3)}, None)


def test_an_unreadable_folder_among_runs_leaves_the_others_named(tmp_path, monkeypatch,
                                                                  capsys):
    """`explain report results/` names the runs in it; one folder it may not look into (another
    user's) made the whole scan give up, and the message named none."""
    from explain.runlock import RUN_MARKER
    for name in ("a_run", "b_locked"):
        (tmp_path / name).mkdir()
        (tmp_path / name / RUN_MARKER).write_text("")
    locked = str(tmp_path / "b_locked")
    for fn in ("stat", "lstat"):
        real = getattr(os, fn)

        def refusing(path, *args, _real=real, **kwargs):
            if os.fspath(path).startswith(locked):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return _real(path, *args, **kwargs)
        monkeypatch.setattr(os, fn, refusing)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"; it holds the run(s) a_run: name one, e.g. {tmp_path / 'a_run'}"), err


def test_a_folder_whose_marker_is_a_link_is_not_named_a_run(tmp_path, capsys):
    """explain report refuses a folder whose .explain-run is a symbolic link (RunFolder reads
    without following one); the scan named it all the same, a run to try that is refused."""
    from explain.runlock import RUN_MARKER
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / RUN_MARKER).write_text("")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / RUN_MARKER).symlink_to(tmp_path / "real" / RUN_MARKER)
    assert main(["report", str(tmp_path / "linked")]) == 2
    assert "not a results folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"; it holds the run(s) real: name one, e.g. {tmp_path / 'real'}"), err
