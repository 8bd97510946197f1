"""The yardstick: Detectron2's Mask R-CNN learns on the toy instance regime and memorises a few
images; the bars separate learning from not learning (an untrained model scores far below them),
and the deliberately broken variants of :mod:`tests.helpers.broken` fail the memorisation check.

Bars are measured over seeds (``configs/toy/bars.yaml``: mean - 3 SD of the runs noted there), so
they hold on any CPU that computes correctly, not only where runs are bit-identical.
"""

import os

import pytest
import torch

from projects.engine.setup import load_config
from projects.engine.trainer import Trainer
from tests.helpers.broken import BROKEN_VARIANTS
from tests.helpers.learning import (
    YARDSTICK,
    assert_losses_fell,
    bars,
    memorise,
    memorise_job,
    toy_config,
    train_job,
    train_toy,
)


@pytest.mark.slow
@pytest.mark.toy_jobs(lambda: [train_job(YARDSTICK)])
def test_toy_mask_rcnn_learns_past_its_bar(tmp_path_factory):
    results, output_dir = train_toy(YARDSTICK, tmp_path_factory.getbasetemp() / "learning")
    bar = bars(YARDSTICK)
    metrics = os.path.join(output_dir, "metrics.json")
    assert_losses_fell(metrics, bar["loss_factors"])
    assert results["segm"]["AP"] >= bar["segm_AP"], results["segm"]
    assert results["bbox"]["AP"] >= bar["bbox_AP"], results["bbox"]


@pytest.mark.slow
def test_untrained_model_scores_far_below_the_bar(tmp_path):
    cfg = load_config(toy_config(YARDSTICK), ["OUTPUT_DIR", str(tmp_path)])
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)  # random initialisation, no weights loaded
    results = Trainer.test(cfg, model)
    assert results["segm"]["AP"] < bars(YARDSTICK)["segm_AP"] / 5, results["segm"]


@pytest.mark.slow
@pytest.mark.toy_jobs(lambda: [memorise_job(YARDSTICK)])
def test_toy_mask_rcnn_memorises_a_few_images(tmp_path_factory):
    """Trained on four toy images for the short schedule of its ``memorise`` entry, the yardstick
    reaches the high mask AP of that entry on the same images."""
    results, _ = memorise(YARDSTICK, tmp_path_factory.getbasetemp() / "learning")
    assert results["segm"]["AP"] >= bars(YARDSTICK)["memorise"]["segm_AP"], results["segm"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(BROKEN_VARIANTS))
@pytest.mark.toy_jobs(lambda variant: [memorise_job(YARDSTICK, *BROKEN_VARIANTS[variant])])
def test_broken_yardstick_fails_the_memorisation_check(variant, tmp_path_factory):
    """Each control (a target, paste or label bug in the mask branch) stays below the bar the
    correct yardstick passes, with the same images, schedule and seed."""
    root = tmp_path_factory.getbasetemp() / "learning"
    results, _ = memorise(YARDSTICK, root, *BROKEN_VARIANTS[variant])
    assert results["segm"]["AP"] < bars(YARDSTICK)["memorise"]["segm_AP"], results["segm"]
