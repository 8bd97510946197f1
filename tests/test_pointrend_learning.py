"""PointRend learns on the toy data and holds its own against its baselines at the same budget:
instance PointRend against the Mask R-CNN yardstick (mask AP, boundary AP), semantic PointRend
against its own coarse head and plain Semantic FPN (mIoU, pixel accuracy).

Two runs of one commit give bit-identical results on the CPU (tests/test_determinism.py), but
changes that only reorder floating-point sums move the toy results by a few points (seen: semantic
PointRend mIoU 35.17 and 32.68 at two commits of the 300-iteration schedule), so the comparisons
with separately trained baselines carry the tolerances of configs/toy/bars.yaml.
"""

import os

import pytest

from learning import bars, evaluate_toy, train_toy
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
def test_toy_semantic_pointrend_learns_and_its_refinement_helps(tmp_path_factory):
    """Semantic PointRend learns, its point head improves on the coarse head it refines (the same
    weights evaluated with ``SUBDIVISION_STEPS 0``, i.e. Semantic FPN's own inference), and it is
    ahead of plain Semantic FPN trained at the same budget on pixel accuracy.

    Falls short of the issue on one point: PointRend's mIoU does not reliably beat Semantic FPN's
    on the toy data (seeds 7 / 8 / 9: +1.20, -0.33, -1.26), so it is held within the seeds' spread
    (configs/toy/bars.yaml has every measured value).
    """
    root = tmp_path_factory.getbasetemp() / "learning"
    pointrend, output_dir = train_toy("pointrend_semseg.yaml", root)
    metrics = os.path.join(output_dir, "metrics.json")
    # measured: total 3.19 -> 0.93 (x0.29), points 1.75 -> 0.70 (x0.40)
    assert_losses_fell(metrics, {"total_loss": 0.45, "loss_sem_seg_point": 0.6})
    bar = bars("pointrend_semseg.yaml")
    refined = pointrend["sem_seg"]
    assert refined["mIoU"] >= bar["mIoU"], refined

    coarse = evaluate_toy(
        "pointrend_semseg.yaml",
        os.path.join(output_dir, "model_final.pth"),
        os.path.join(output_dir, "coarse_only"),
        "MODEL.POINT_HEAD.SUBDIVISION_STEPS",
        "0",
    )["sem_seg"]
    # measured, seeds 7 / 8 / 9: mIoU +0.53 / +0.24 / +0.30, pixel accuracy +0.85 / +0.57 / +0.63
    for metric in ("mIoU", "fwIoU", "pACC"):
        assert refined[metric] > coarse[metric], (metric, refined, coarse)

    baseline, _ = train_toy("semantic_fpn.yaml", root)
    baseline = baseline["sem_seg"]
    assert baseline["mIoU"] >= bars("semantic_fpn.yaml")["mIoU"], baseline
    # measured, seeds 7 / 8 / 9: pixel accuracy +0.91 / +0.69 / +0.38
    assert refined["pACC"] > baseline["pACC"], (refined, baseline)
    assert refined["mIoU"] >= baseline["mIoU"] - bar["mIoU_tolerance"], (refined, baseline)
