"""Newcomer round 21: a labelled ResNet-18 study (gradcam, gradcamplusplus, layercam,
scorecam), its report, explain diff against a second checkpoint and explain.load."""
import torch

from explain.config import load_config
from helpers import cli, one_line, tiny_config, tiny_net


def test_arch_args_null_reads_as_no_arguments(tmp_path):
    """Switching a state_dict config to a whole model file from the command line: the run said
    to remove model.arch_args, but --set model.arch_args=null stopped with pydantic's
    'Input should be a valid dictionary (got None)'; an empty 'arch_args:' in YAML too."""
    path = tiny_config(tmp_path, {"file": "m.pth", "arch_args": None, "builder_args": None})
    cfg = load_config(path)
    assert cfg.model.arch_args == {} and cfg.model.builder_args == {}


def test_a_whole_model_with_arch_and_arch_args_names_both_at_once(tmp_path, capsys):
    """A whole model file under a config with arch and arch_args: the line named only
    model.arch; removing it gave a second run and a second line for model.arch_args."""
    torch.save(tiny_net(), tmp_path / "m.pth")
    path = tiny_config(tmp_path, {"file": "m.pth", "arch": "torchvision.models.resnet18",
                                  "arch_args": {"num_classes": 2}})
    code, err, _ = cli(capsys, path)
    assert code == 2
    one_line(err, "model.arch and model.arch_args would be ignored",
             "remove model.arch and model.arch_args")


def _road_run(tmp_path, name: str, percentiles: list[int]):
    from explain.cli import main
    torch.save(tiny_net(), tmp_path / "m.pth")
    path = tiny_config(tmp_path, {"file": "m.pth"}, stem=name, classes={"cat": 0, "dog": 1},
                       metrics=[{"name": "road_combined", "percentiles": percentiles}],
                       output={"dir": str(tmp_path / "results"), "save_arrays": True})
    assert main([str(path), "--quiet"]) == 0
    return tmp_path / "results" / name


def test_diff_says_when_a_metric_was_measured_at_other_percentiles(tmp_path, capsys):
    """Run A at ROAD's 9 percentiles, run B at [90] only: explain diff printed 'road_combined
    -0.0452 [-0.0654, -0.0235]' as the maps' change, with nothing but the settings list to say
    that the metric itself had changed; the console and the page's 'Read first' now say so."""
    a, b = _road_run(tmp_path, "a", [10, 50, 90]), _road_run(tmp_path, "b", [90])
    capsys.readouterr()
    code, err, out = cli(capsys, "diff", a, b)
    assert code == 0, err
    said = ("road_combined: measured at percentiles 10, 50, 90 in A and 90 in B: its change is "
            "partly the setting's, not only the maps'")
    assert said in out
    page = next((tmp_path / "results").glob("diff-a-b*/diff.html")).read_text()
    assert said.replace("'", "&#39;") in page


def test_diff_names_the_methods_that_differ_whole(tmp_path):
    """Four methods in A, two in B: the settings line read 'methods: [{"name": "gradcam"},
    {"name": "gradca...e": "layercam"}, {"name": "scorecam"}] -> ...', cut inside a name."""
    from types import SimpleNamespace
    from explain.diff.numbers import config_changes
    four = ["gradcam", "gradcamplusplus", "layercam", "scorecam"]
    a, b = (SimpleNamespace(config=load_config(tiny_config(tmp_path, {"file": "m.pth"},
                                                           stem=stem, methods=methods)))
            for stem, methods in (("a", four), ("b", ["gradcam", "layercam"])))
    shown, _ = config_changes(a, b)
    assert 'methods: ["gradcam", "gradcamplusplus", "layercam", "scorecam"] -> ' \
           '["gradcam", "layercam"]' in shown, shown
