"""Validation of experiment files: every problem named by file, field and a suggestion."""

import pytest

from explain.config import load_config
from explain.errors import ExplainError
from conftest import write_config
from helpers import explain_error


def error_of(path, overrides=None) -> str:
    """load_config's one-line error."""
    return explain_error(load_config, path, overrides)


def test_unknown_method_suggests_closest(tmp_path):
    path = write_config(tmp_path, model={"builder": "x:y"}, target_layers=["a"],
                        methods=["gradcam", "gradcam+"])
    msg = error_of(path)
    assert msg.startswith(str(path))
    assert "methods[1].name: unknown method 'gradcam+'" in msg
    assert "did you mean 'gradcamplusplus'?" in msg and "scorecam" in msg


def test_unknown_key_suggests_closest(tmp_path):
    path = write_config(tmp_path, model={"builder": "x:y"}, target_layers=["a"],
                        output={"colourmap": "jet"})
    assert "output.colourmap: unknown key 'colourmap' — did you mean 'colormap'?" in error_of(path)


def test_wrong_type_and_missing_key(tmp_path):
    path = write_config(tmp_path, model={"builder": "x:y"}, target_layers=["a"], batch_size="many")
    assert "batch_size:" in error_of(path) and "'many'" in error_of(path)
    path = write_config(tmp_path, model={"builder": "x:y"})
    assert "target_layers: required key is missing" in error_of(path)


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  builder: x:y\nmethods: [gradcam\nimages: []\n")
    msg = error_of(path)
    assert "bad.yaml" in msg and "line " in msg and "YAML" in msg


def test_method_options_are_checked(tmp_path):
    path = write_config(tmp_path, model={"builder": "x:y"}, target_layers=["a"],
                        methods=[{"name": "scorecam", "batch_size": 4}, {"name": "ablationcam", "bach_size": 2}])
    assert "has no option 'bach_size' — did you mean 'batch_size'?" in error_of(path)


def test_overrides_and_relative_paths(tmp_path):
    path = write_config(tmp_path, model={"file": "m.pth"}, target_layers=["a"], images=["pics/*.jpg"])
    cfg = load_config(path, {"methods": ["layercam", "scorecam"], "output.colormap": "turbo",
                             "target_layers": ["features.-1"]})
    assert [m.name for m in cfg.methods] == ["layercam", "scorecam"]
    assert cfg.output.colormap == "turbo" and cfg.target_layers == ["features.-1"]
    assert cfg.resolve(cfg.model.file) == (tmp_path / "m.pth").resolve()
    assert cfg.run_name == "exp"


def test_targets_must_be_named_classes(tmp_path):
    path = write_config(tmp_path, model={"builder": "x:y"}, target_layers=["a"], targets=["cta"])
    assert error_of(path).startswith(f"{path}: targets: 'cta' is not a named class — did you "
                                     f"mean 'cat'?")  # the field first, no 'config:' before it


def test_mean_and_std_belong_to_the_torch_mode(tmp_path):
    path = write_config(tmp_path, model={"builder": "x:y"}, target_layers=["a"],
                        preprocess={"mode": "caffe", "mean": [0.5, 0.5, 0.5]})
    assert "preprocess: mean and std apply to mode 'torch' only" in error_of(path)
    ok = write_config(tmp_path, name="ok", model={"builder": "x:y"}, target_layers=["a"],
                      preprocess={"mode": "tf"})
    assert load_config(ok).preprocess.mode == "tf"


def test_a_size_of_the_wrong_shape_says_what_a_size_is(tmp_path):
    for size, got in (([224], "got a list of 1"), ([224, 224, 3], "got a list of 3"),
                      ("big", "got 'big'")):
        path = write_config(tmp_path, model={"builder": "x:y"}, target_layers=["a"],
                            preprocess={"size": size})
        assert error_of(path) == (f"{path}: preprocess.size: a number (the short side, e.g. "
                                  f"224) or a pair [height, width]; {got}")
    for size, kept in ((200, 200), ([224, 448], (224, 448))):
        path = write_config(tmp_path, model={"builder": "x:y"}, target_layers=["a"],
                            preprocess={"size": size})
        assert load_config(path).preprocess.size == kept


def test_a_misspelt_required_key_is_one_problem(tmp_path):
    path = write_config(tmp_path, model={"builder": "x:y"}, target_layer=["a"])
    assert error_of(path) == (f"{path}: target_layer: unknown key 'target_layer' — did you mean "
                              f"'target_layers'?")
    path = write_config(tmp_path, model={"builder": "x:y"}, target_layer=["a"], methods=[])
    with pytest.raises(ExplainError) as info:  # a real second problem stays
        load_config(path)
    assert str(info.value).startswith(f"2 problems in {path}:\n") and "methods:" in str(info.value)


def test_a_folder_given_as_the_config_says_what_it_is(tmp_path):
    """A results folder given where a config goes points to ``explain report``; a config
    given to ``explain report`` points to running it."""
    from explain.writers.report import load_run
    run = tmp_path / "results" / "exp"
    run.mkdir(parents=True)
    (run / ".explain-run").write_text("")
    assert explain_error(load_config, run) == (
        f"{run}: a results folder, not a config file: give the config that made it (`explain "
        f"report {run}` rebuilds its report)")
    assert explain_error(load_config, tmp_path) == f"{tmp_path}: a folder, not a config file"
    assert explain_error(load_config, tmp_path / "none.yaml").endswith(
        "none.yaml: config file not found")
    config = write_config(tmp_path, "exp")
    assert explain_error(load_run, config) == (
        f"{config}: a config file, not a results folder (`explain {config}` runs it)")
    spaced = tmp_path / "my runs" / "exp.yml"
    spaced.parent.mkdir()
    spaced.write_text("")
    assert f"(`explain '{spaced}'` runs it)" in explain_error(load_run, spaced)
    notes = tmp_path / "notes.txt"
    notes.write_text("")
    assert explain_error(load_run, notes) == f"{notes}: a file, not a results folder"
    assert explain_error(load_run, tmp_path / "gone") == f"{tmp_path / 'gone'}: no such results folder"


def test_methods_in_one_string_as_on_the_command_line(tmp_path):
    """``--set methods=gradcam,layercam`` and ``methods: gradcam, layercam`` list two methods,
    as ``--methods gradcam,layercam`` does."""
    from conftest import REPO
    path = REPO / "configs" / "demo_catdog.yaml"
    for value in ("gradcam,layercam", " gradcam , layercam ,"):
        cfg = load_config(path, {"methods": value})
        assert [m.name for m in cfg.methods] == ["gradcam", "layercam"]
    assert "did you mean 'layercam'" in explain_error(load_config, path, {"methods": "gradcam,layrcam"})
    assert "at least one" in explain_error(load_config, path, {"methods": " , "})


def test_a_model_file_error_names_the_config_and_the_field(tmp_path, capsys):
    from conftest import REPO
    from helpers import refused
    config = REPO / "configs" / "alexnet_catdog.yaml"
    gone = tmp_path / "gone.pth"
    refused(capsys, config, "--set", f"model.file={gone}", needles=[
        f"{config} (model.file from the command line): model.file: {gone}: model file not "
        f"found: put the model file there"])
    text = tmp_path / "notes.pth"
    text.write_text("not a model")
    refused(capsys, config, "--set", f"model.file={text}", needles=[
        f"{config} (model.file from the command line): model.file: {text}: not a PyTorch "
        f"model file"])


def test_lists_of_names_take_one_comma_separated_string(tmp_path):
    """A newcomer's ``--set metrics=road_combined`` was "Input should be a valid list" while
    ``methods`` took the same form: methods, metrics and target layers all take it."""
    path = write_config(tmp_path, model={"file": "m.pth"}, methods="gradcam, layercam",
                        target_layers="a.1,b",
                        metrics="road_combined,drop_in_confidence")
    cfg = load_config(path)
    assert [m.name for m in cfg.methods] == ["gradcam", "layercam"]
    assert cfg.target_layers == ["a.1", "b"]
    assert [m.name for m in cfg.metrics] == ["road_combined", "drop_in_confidence"]
    assert load_config(path, {"target_layers": "auto"}).target_layers == ["auto"]


def test_a_layer_numbered_as_yaml_reads_it(tmp_path):
    """``target_layers: [1]`` (a Sequential's child) was "Input should be a valid string";
    ``[1.10]`` reads as 1.1, another layer: refused, saying to quote it (a newcomer's lead)."""
    from explain.config import load_config
    path = tmp_path / "c.yaml"
    body = "model: {file: m.pth}\nimages: [a.jpg]\nmethods: [gradcam]\n"
    path.write_text(body + "target_layers: [1, features.10]\n")
    assert load_config(path).target_layers == ["1", "features.10"]
    path.write_text(body + "target_layers: [1.10]\n")
    with pytest.raises(ExplainError) as err:
        load_config(path)
    assert str(err.value) == (f"{path}: target_layers: 1.1 is a number to YAML (1.10 reads as "
                              f"1.1): write the layer name in quotes, e.g. '1.10'")


def test_a_list_item_set_on_the_command_line_says_lists_are_set_whole(capsys):
    """``--set images.0=x.jpg`` made ``images`` a section {'0': 'x.jpg'} and said 'images:
    entry 0: unknown key 0': a list is set whole, and the line says so."""
    from conftest import REPO
    from helpers import refused
    err = refused(capsys, REPO / "configs" / "alexnet_catdog.yaml", "--set", "images.0=x.jpg")
    assert "images.0: images is a list, set whole (e.g. images=[a, b]); its items cannot be " \
           "set one by one" in err, err
