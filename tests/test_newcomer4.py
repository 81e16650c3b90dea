"""What a newcomer hit following the README on a fresh clone (the twelfth session's run):
a named image that cannot be read said neither the config nor the field."""

from __future__ import annotations

import shutil

import pytest
import torch

from helpers import CAT, cli, tiny_config, tiny_net


@pytest.mark.parametrize("first", [True, False])
def test_a_named_image_that_is_no_picture_names_the_config_and_the_field(tmp_path, capsys,
                                                                          first):
    """Named first, it fails the preflight pass; named after a good one, the run's batches:
    either way one line with the config file and 'images:'."""
    (tmp_path / "fake.jpg").write_text("not an image")
    shutil.copy(CAT, tmp_path / "cat.jpg")
    torch.save(tiny_net(), tmp_path / "tiny.pt")
    images = ["fake.jpg"] if first else ["cat.jpg", "fake.jpg"]
    config = tiny_config(tmp_path, {"file": "tiny.pt"}, images=images,
                         classes={"cat": 0, "dog": 1}, metrics=[])
    rc, err, out = cli(capsys, config, "--quiet")
    assert rc == 2 and out == ""
    assert err == f"explain: error: {config}: images: {tmp_path / 'fake.jpg'}: not a readable " \
                  f"image"
    assert not (tmp_path / "results").exists()


def test_a_model_file_named_with_another_suffix_gets_a_did_you_mean(tmp_path, capsys):
    """'torch_alex.pt' for the course's 'torch_alex.pth': images got a "did you mean", the
    model file did not."""
    (tmp_path / "models").mkdir()
    torch.save(tiny_net(), tmp_path / "models" / "torch_alex.pth")
    (tmp_path / "models" / "notes.txt").write_text("not a model")
    config = tiny_config(tmp_path, {"file": "models/torch_alex.pt"})
    rc, err, _ = cli(capsys, config, "--quiet")
    assert rc == 2
    assert err == (f"explain: error: {config}: model.file: {tmp_path / 'models' / 'torch_alex.pt'}"
                   f": model file not found — did you mean "
                   f"{tmp_path / 'models' / 'torch_alex.pth'}? Or put the model file there, or "
                   f"try the demo: python -m explain configs/demo_catdog.yaml")
    (tmp_path / "models" / "torch_alex").mkdir()  # a folder is not offered
    config = tiny_config(tmp_path, {"file": "models/torch_alx.pth"})
    assert cli(capsys, config, "--quiet")[1].endswith("did you mean "
                                                      f"{tmp_path / 'models' / 'torch_alex.pth'}? "
                                                      "Or put the model file there, or try the "
                                                      "demo: python -m explain "
                                                      "configs/demo_catdog.yaml")
    config = tiny_config(tmp_path, {"file": "models/notes.pt"})
    assert cli(capsys, config, "--quiet")[1].endswith(
        "notes.pt: model file not found: put the model file there, or try the demo: python -m "
        "explain configs/demo_catdog.yaml")  # a text file is not offered


@pytest.mark.parametrize("typed", ["gradcam layercam", "GradCAM  Layer_CAM"])
def test_two_methods_in_one_name_are_said_to_be_a_list(tmp_path, capsys, typed):
    """'methods: gradcam layercam' suggested 'layercam', as if one name were misspelt."""
    config = tiny_config(tmp_path, {"file": "tiny.pt"}, methods=typed)
    rc, err, _ = cli(capsys, config, "--quiet")
    assert rc == 2 and err == (
        f"explain: error: {config}: methods[0].name: '{typed}' is 2 methods in one name: write "
        f"a list, methods: [gradcam, layercam] (on the command line --methods gradcam,layercam)")
    rc, err, _ = cli(capsys, config, "--quiet", "--methods", "gradcm")
    assert rc == 2 and "unknown method 'gradcm' — did you mean 'gradcam'? (valid: " in err


def test_the_course_model_missing_points_at_the_readmes_stand_in(tmp_path, capsys):
    """Newcomer 13: the course's torch_alex.pth is not to be had; the line said to put it
    there or try the demo, not that the README saves a stand-in in one line."""
    config = tiny_config(tmp_path, {"file": "models/torch_alex.pth"})
    err = cli(capsys, config, "--quiet")[1]
    assert "torch_alex.pth: model file not found: put the model file there (README.md, 'For " \
           "the computer-vision course', saves an untrained stand-in in one line), or try the " \
           "demo" in err
