"""The yardstick: Detectron2's Mask R-CNN learns on the toy data, and the bar separates learning
from not learning (an untrained model scores far below it)."""

import json
import os

import pytest
import torch

from learning import bars, toy_config, train_toy
from projects.engine.setup import load_config
from projects.engine.trainer import Trainer


def mean_loss(metrics_file, first, count=20):
    """Mean ``total_loss`` of ``count`` logged iterations from the start (first) or the end."""
    with open(metrics_file) as f:
        rows = [json.loads(line) for line in f if '"total_loss"' in line]
    rows = rows[:count] if first else rows[-count:]
    return sum(r["total_loss"] for r in rows) / len(rows)


@pytest.mark.slow
def test_toy_mask_rcnn_learns_past_its_bar(tmp_path_factory):
    results, output_dir = train_toy("mask_rcnn.yaml", tmp_path_factory.getbasetemp() / "learning")
    bar = bars("mask_rcnn.yaml")
    metrics = os.path.join(output_dir, "metrics.json")
    assert mean_loss(metrics, first=False) < 0.6 * mean_loss(metrics, first=True)
    assert results["segm"]["AP"] >= bar["segm_AP"], results["segm"]
    assert results["bbox"]["AP"] >= bar["bbox_AP"], results["bbox"]


@pytest.mark.slow
def test_untrained_model_scores_far_below_the_bar(tmp_path):
    cfg = load_config(toy_config("mask_rcnn.yaml"), ["OUTPUT_DIR", str(tmp_path)])
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)  # random initialisation, no weights loaded
    results = Trainer.test(cfg, model)
    assert results["segm"]["AP"] < bars("mask_rcnn.yaml")["segm_AP"] / 5, results["segm"]
