"""PointRend learns on the toy data and holds its own against its baselines at the same budget:
instance PointRend against the Mask R-CNN yardstick (mask AP, boundary AP), semantic PointRend
against its own coarse head, i.e. Semantic FPN's prediction from the same weights (mIoU, pixel
accuracy).

Two runs of one commit give bit-identical results on the CPU (tests/test_determinism.py), but
changes that only reorder floating-point sums move the toy results by a few points (seen: semantic
PointRend mIoU 35.17 and 32.68 at two commits of the 300-iteration schedule), so the comparison
with the separately trained yardstick carries the tolerances of configs/toy/bars.yaml.
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
def test_toy_semantic_pointrend_learns_and_its_refinement_beats_its_coarse_head(tmp_path_factory):
    """Semantic PointRend learns, and its point head improves on the coarse head it refines: the
    same weights evaluated with ``SUBDIVISION_STEPS 0`` (Semantic FPN's own inference) score lower
    on frequency-weighted IoU and pixel accuracy, and the refined mIoU is at most a tolerance below
    the coarse one (it was below in one seed of three).

    Against plain Semantic FPN trained at the same budget, PointRend was ahead on mIoU and pixel
    accuracy in each of three seeds (README, "Measured here: accuracy on the toy data"). That
    comparison is a measurement (``tools/benchmark.py --toy-accuracy-only`` trains both), not part
    of this test: a second 600-iteration training would take the suite past its 30-minute budget.
    """
    root = tmp_path_factory.getbasetemp() / "learning"
    pointrend, output_dir = train_toy("pointrend_semseg.yaml", root)
    metrics = os.path.join(output_dir, "metrics.json")
    # measured: total 3.44 -> 1.14 (x0.33), points 1.82 -> 0.86 (x0.47)
    assert_losses_fell(metrics, {"total_loss": 0.45, "loss_sem_seg_point": 0.6})
    refined = pointrend["sem_seg"]
    assert refined["mIoU"] >= bars("pointrend_semseg.yaml")["mIoU"], refined

    coarse = evaluate_toy(
        "pointrend_semseg.yaml",
        os.path.join(output_dir, "model_final.pth"),
        os.path.join(output_dir, "coarse_only"),
        "MODEL.POINT_HEAD.SUBDIVISION_STEPS",
        "0",
    )["sem_seg"]
    # measured, seeds 7 / 8 / 9: fwIoU +0.77 / +0.54 / +0.20, pixel accuracy +0.72 / +0.66 / +0.59,
    # mIoU +1.10 / -0.74 / +0.45 (the seven thing classes' IoUs swing between runs)
    for metric in ("fwIoU", "pACC"):
        assert refined[metric] > coarse[metric], (metric, refined, coarse)
    tolerance = bars("pointrend_semseg.yaml")["mIoU_below_coarse_tolerance"]
    assert refined["mIoU"] >= coarse["mIoU"] - tolerance, (refined, coarse)
