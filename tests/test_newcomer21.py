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
