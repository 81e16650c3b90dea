"""Newcomer round 21: a labelled ResNet-18 study (gradcam, gradcamplusplus, layercam,
scorecam), its report, explain diff against a second checkpoint and explain.load."""

from explain.config import load_config
from helpers import tiny_config


def test_arch_args_null_reads_as_no_arguments(tmp_path):
    """Switching a state_dict config to a whole model file from the command line: the run said
    to remove model.arch_args, but --set model.arch_args=null stopped with pydantic's
    'Input should be a valid dictionary (got None)'; an empty 'arch_args:' in YAML too."""
    path = tiny_config(tmp_path, {"file": "m.pth", "arch_args": None, "builder_args": None})
    cfg = load_config(path)
    assert cfg.model.arch_args == {} and cfg.model.builder_args == {}

