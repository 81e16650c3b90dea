"""The experiment file: its sections (``sections``), the whole config (``schema``) and how
a file is read, overridden and validated (``loading``).

Relative paths inside a config file are resolved against the folder that holds the config
file, so a run gives the same result from any working directory. Paths given on the command
line (``--out``) are relative to the working directory, as usual for command-line arguments.
"""

from explain.config.channelviews import Channels
from explain.config.sections import (Annotations, BoxValues, COLORMAPS, Compare, Concepts, DOTTED,
                                     GREY_WEIGHTS, GREY_WORDS, Guided, IMAGENET_MEAN, IMAGENET_STD,
                                     Int, LAYER, LabelledImages, MANY_CLASSES, MAX_CLASSES,
                                     MAX_CONFIG_BYTES, MAX_CONFIG_NODES, MAX_PIXELS, MAX_SIDE,
                                     MethodSpec, MetricSpec, ModelSpec, Number, Output, Percent,
                                     Preprocess, Report, Reshape, TARGET_WORDS, Text, box_problem,
                                     is_finite)
from explain.config.schema import Config
from explain.config.loading import (MAX_NESTING, apply_override, attribute,
                                    explain_validation, load_config, names_a_field,
                                    nesting_problem, parse_value, read_bounded_bytes,
                                    read_bounded_text, read_yaml, resolved)

__all__ = ["Annotations", "BoxValues", "COLORMAPS", "Channels", "Compare", "Concepts", "DOTTED",
           "GREY_WEIGHTS", "GREY_WORDS", "Guided", "IMAGENET_MEAN", "IMAGENET_STD", "Int", "LAYER",
           "LabelledImages",
           "MANY_CLASSES", "MAX_CLASSES", "MAX_CONFIG_BYTES", "MAX_CONFIG_NODES", "MAX_PIXELS",
           "MAX_SIDE", "MethodSpec", "MetricSpec", "ModelSpec", "Number", "Output", "Percent",
           "Preprocess", "Report", "Reshape", "TARGET_WORDS", "Text", "box_problem", "is_finite",
           "Config", "MAX_NESTING", "apply_override", "attribute", "explain_validation",
           "load_config", "names_a_field", "nesting_problem", "parse_value", "read_bounded_bytes",
           "read_bounded_text", "read_yaml", "resolved"]
