"""PointRend learns on the toy data and holds its own against its baselines at the same budget:
instance PointRend against the Mask R-CNN yardstick (mask AP, boundary AP), semantic PointRend
against plain Semantic FPN (mIoU).

Two runs of one commit give bit-identical results on the CPU (tests/test_determinism.py), but
changes that only reorder floating-point sums move the toy results by a few points (seen: semantic
PointRend mIoU 35.17 and 32.68 at two commits), so the comparisons carry the tolerances of
configs/toy/bars.yaml.
"""

import os

import pytest

from learning import bars, train_toy
from test_learning_yardstick import assert_losses_fell


@pytest.mark.slow
def test_toy_pointrend_learns_and_is_on_par_with_the_yardstick(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "learning"
    results, output_dir = train_toy("pointrend.yaml", root)
    yardstick, _ = train_toy("mask_rcnn.yaml", root)
    metrics = os.path.join(output_dir, "metrics.json")
    # measured: total 3.24 -> 2.55 (x0.79), coarse mask 0.61 -> 0.45 (x0.75), points x0.79
    assert_losses_fell(metrics, {"total_loss": 0.87, "loss_mask": 0.85, "loss_mask_point": 0.87})
    bar = bars("pointrend.yaml")
    assert results["segm"]["AP"] >= bar["segm_AP"], results["segm"]
    # Measured once: mask AP 8.29 vs 7.45, boundary AP 6.40 vs 5.27 (PointRend ahead on both).
    for task in ("segm", "boundary"):
        assert results[task]["AP"] >= yardstick[task]["AP"] - bar[f"{task}_AP_tolerance"], (
            results[task],
            yardstick[task],
        )


@pytest.mark.slow
def test_toy_semantic_pointrend_learns_and_is_on_par_with_semantic_fpn(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "learning"
    pointrend, output_dir = train_toy("pointrend_semseg.yaml", root)
    baseline, _ = train_toy("semantic_fpn.yaml", root)
    metrics = os.path.join(output_dir, "metrics.json")
    # measured: total 3.19 -> 1.11 (x0.35)
    assert_losses_fell(metrics, {"total_loss": 0.6})
    assert pointrend["sem_seg"]["mIoU"] >= bars("pointrend_semseg.yaml")["mIoU"]
    assert baseline["sem_seg"]["mIoU"] >= bars("semantic_fpn.yaml")["mIoU"]
    # Measured: 35.17 vs 34.94 at one commit, 32.68 vs 36.50 at another.
    tolerance = bars("pointrend_semseg.yaml")["mIoU_tolerance"]
    assert pointrend["sem_seg"]["mIoU"] >= baseline["sem_seg"]["mIoU"] - tolerance, (
        pointrend["sem_seg"],
        baseline["sem_seg"],
    )
