"""The yardstick: Detectron2's Mask R-CNN learns on the toy data, and the bar separates learning
from not learning (an untrained model scores far below it)."""

import os

import pytest
import torch

from projects.engine.setup import load_config
from projects.engine.trainer import Trainer
from tests.helpers.learning import assert_losses_fell, bars, toy_config, train_toy


@pytest.mark.slow
def test_toy_mask_rcnn_learns_past_its_bar(tmp_path_factory):
    results, output_dir = train_toy("mask_rcnn.yaml", tmp_path_factory.getbasetemp() / "learning")
    bar = bars("mask_rcnn.yaml")
    metrics = os.path.join(output_dir, "metrics.json")
    # measured: total 2.70 -> 2.02 (x0.75), mask 0.67 -> 0.42 (x0.63)
    assert_losses_fell(metrics, {"total_loss": 0.85, "loss_mask": 0.75})
    assert results["segm"]["AP"] >= bar["segm_AP"], results["segm"]
    assert results["bbox"]["AP"] >= bar["bbox_AP"], results["bbox"]


@pytest.mark.slow
def test_untrained_model_scores_far_below_the_bar(tmp_path):
    cfg = load_config(toy_config("mask_rcnn.yaml"), ["OUTPUT_DIR", str(tmp_path)])
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)  # random initialisation, no weights loaded
    results = Trainer.test(cfg, model)
    assert results["segm"]["AP"] < bars("mask_rcnn.yaml")["segm_AP"] / 5, results["segm"]
