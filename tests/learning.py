"""Shared by the slow learning tests: train a toy config once per session and read its bars.

Bars (the mask AP etc. a config must reach on the toy data) live in ``configs/toy/bars.yaml`` next
to the configs, each with the value measured when it was set.
"""

import os

import yaml
from detectron2.engine import default_argument_parser

import train_net

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RESULTS = {}


def toy_config(name):
    return os.path.join(REPO, "configs", "toy", name)


def bars(config_name):
    """The bars of ``configs/toy/<config_name>`` from ``configs/toy/bars.yaml``."""
    with open(toy_config("bars.yaml")) as f:
        return yaml.safe_load(f)[config_name]


def train_toy(config_name, output_root, *opts):
    """Train ``configs/toy/<config_name>`` as ``train_net.py`` would (once per session and options)
    and return ``(final evaluation results, output dir)``."""
    key = (config_name,) + tuple(opts)
    if key not in _RESULTS:
        output_dir = os.path.join(str(output_root), config_name.replace(".yaml", ""))
        argv = ["--config-file", toy_config(config_name), "OUTPUT_DIR", output_dir, *opts]
        results = train_net.main(default_argument_parser().parse_args(argv))
        _RESULTS[key] = (results, output_dir)
    return _RESULTS[key]


def evaluate_toy(config_name, weights, output_dir, *opts):
    """Evaluate ``weights`` with ``configs/toy/<config_name>`` (plus ``opts``) as
    ``train_net.py --eval-only`` would, and return the evaluation results."""
    argv = ["--config-file", toy_config(config_name), "--eval-only"]
    argv += ["MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(output_dir), *opts]
    return train_net.main(default_argument_parser().parse_args(argv))
