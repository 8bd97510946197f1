"""train_net.py setup: config typos are named with suggestions; --eval-only refuses bad weights."""

import pytest
import torch
from detectron2.engine import default_argument_parser

import train_net
from projects.config import get_cfg
from projects.engine.checkpoint import CheckpointError
from projects.engine.config_keys import ConfigKeyError, config_key_suggestions, suggest_keys
from tests.helpers.tiny_coco import tiny_mask_rcnn_cfg, write_cfg


def _args(*argv):
    return default_argument_parser().parse_args(list(argv))


def test_suggest_keys_finds_nearest():
    cfg = get_cfg()
    assert suggest_keys(cfg, "SOLVER.BASE_LRR")[0] == "SOLVER.BASE_LR"
    assert "SOLVER.BASE_LR" in suggest_keys(cfg, "MODEL.BASE_LR")


def test_typo_in_config_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("SOLVER:\n  BASE_LRR: 0.1\n")
    cfg = get_cfg()
    with pytest.raises(ConfigKeyError) as info:
        with config_key_suggestions(cfg, str(path)):
            cfg.merge_from_file(str(path))
    message = str(info.value)
    assert "'SOLVER.BASE_LRR'" in message and "bad.yaml" in message
    assert "did you mean: SOLVER.BASE_LR" in message


def test_typo_in_command_line_options_through_setup(tmp_path):
    args = _args("OUTPUT_DIR", str(tmp_path), "MODEL.ROI_HEADS.NUM_CLASES", "3")
    with pytest.raises(ConfigKeyError, match="'MODEL.ROI_HEADS.NUM_CLASES'.*NUM_CLASSES"):
        train_net.setup(args)


def test_other_errors_pass_through():
    cfg = get_cfg()
    with pytest.raises(KeyError, match="unrelated"):
        with config_key_suggestions(cfg):
            raise KeyError("unrelated")


def test_eval_only_without_weights_errors(tmp_path):
    cfg_file = write_cfg(
        tiny_mask_rcnn_cfg(tmp_path / "out", "toy_train", None), tmp_path / "c.yaml"
    )
    args = _args("--config-file", cfg_file, "--eval-only")
    with pytest.raises(ValueError, match="--eval-only needs trained weights.*MODEL.WEIGHTS"):
        train_net.main(args)


def test_eval_only_with_the_toy_initial_backbone_errors_without_making_it(tmp_path, monkeypatch):
    """The toy configs' MODEL.WEIGHTS (toy-pretrained://R-18.pkl) is where training starts: an
    --eval-only without trained weights says so at once instead of pretraining for minutes."""
    from projects.engine import toy_pretrained

    def no_training(*args):
        raise AssertionError("--eval-only must not make the toy backbone")

    monkeypatch.setattr(toy_pretrained, "ensure_pretrained", no_training)
    cfg = tiny_mask_rcnn_cfg(tmp_path / "out", "toy_train", None)
    cfg.MODEL.WEIGHTS = "toy-pretrained://R-18.pkl"
    args = _args("--config-file", write_cfg(cfg, tmp_path / "c.yaml"), "--eval-only")
    with pytest.raises(ValueError, match="needs trained weights: MODEL.WEIGHTS 'toy-pretrained"):
        train_net.main(args)


def test_eval_only_with_wrong_weights_errors(tmp_path):
    cfg_file = write_cfg(
        tiny_mask_rcnn_cfg(tmp_path / "out", "toy_train", None), tmp_path / "c.yaml"
    )
    weights = tmp_path / "other.pth"
    torch.save({"head.weight": torch.zeros(3), "head.bias": torch.zeros(3)}, weights)
    args = _args("--config-file", cfg_file, "--eval-only", "MODEL.WEIGHTS", str(weights))
    with pytest.raises(CheckpointError) as info:
        train_net.main(args)
    message = str(info.value)
    assert "other.pth does not fit the model" in message
    assert "2 unexpected keys" in message
    num_missing = int(message.split(" missing keys")[0].split()[-1])
    assert num_missing > 50
