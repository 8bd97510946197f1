"""A NaN / Inf loss: a clear error before the weights are touched, or a counted skip."""

import os

import pytest
import torch
from detectron2.utils.env import seed_all_rng

from projects.engine.nonfinite import NonFiniteLossError, NonFiniteLossGuard
from projects.engine.trainer import Trainer
from tests.helpers.tiny_coco import register_tiny_coco, tiny_mask_rcnn_cfg, write_tiny_coco


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_coco")
    return register_tiny_coco("engine_nonfinite_tiny", *write_tiny_coco(str(root)))


def _trainer(tmp_path, tiny_coco, nan_at, mode="error", max_skips=100):
    """A tiny trainer whose ``loss_mask`` is NaN at the iterations in ``nan_at``."""
    cfg = tiny_mask_rcnn_cfg(tmp_path, tiny_coco, None)
    cfg.SOLVER.NONFINITE_LOSS = mode
    cfg.SOLVER.NONFINITE_MAX_SKIPS = max_skips
    seed_all_rng(cfg.SEED)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    model = trainer.model
    forward = model.forward
    seen = {}

    def poisoned(batched_inputs):
        losses = forward(batched_inputs)
        if trainer.iter in nan_at:
            losses["loss_mask"] = losses["loss_mask"] * float("nan")
            seen[trainer.iter] = [d["image_id"] for d in batched_inputs]
        return losses

    model.forward = poisoned
    return trainer, seen


def _all_finite(model):
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_nan_loss_stops_with_iteration_term_and_images(tmp_path, tiny_coco):
    trainer, seen = _trainer(tmp_path, tiny_coco, nan_at={4})
    with pytest.raises(NonFiniteLossError) as error:
        trainer.train()
    message = str(error.value)
    assert "iteration 4" in message and "loss_mask=nan" in message
    assert "loss_cls" not in message  # only the bad term is named
    assert all(str(image_id) in message for image_id in seen[4])
    # Checked before backward: the weights never saw the NaN, and the last checkpoint
    # (iteration 2, period 3) is the one a --resume starts from.
    assert _all_finite(trainer.model)
    with open(os.path.join(tmp_path, "last_checkpoint")) as f:
        assert f.read() == "model_0000002.pth"
    state = torch.load(os.path.join(tmp_path, "model_0000002.pth"), weights_only=False)
    assert all(
        bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point()
    )


def test_skip_mode_skips_and_counts(tmp_path, tiny_coco):
    trainer, seen = _trainer(tmp_path, tiny_coco, nan_at={1, 3}, mode="skip")
    trainer.train()  # all 6 iterations run
    assert trainer.iter == 6 and sorted(seen) == [1, 3]
    assert trainer._trainer.guard.skipped == 2
    assert _all_finite(trainer.model)
    skips = trainer.storage.history("nonfinite_skips").values()
    assert [(v, it) for v, it in skips] == [(1, 1), (2, 3)]
    losses = trainer.storage.history("total_loss").values()
    assert sorted(it for _, it in losses) == [0, 2, 4, 5]  # skipped steps log no loss


def test_skip_mode_gives_up_after_max_skips(tmp_path, tiny_coco):
    trainer, _ = _trainer(tmp_path, tiny_coco, nan_at={1, 2}, mode="skip", max_skips=1)
    with pytest.raises(NonFiniteLossError, match="iteration 2.*1 steps were skipped"):
        trainer.train()


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="SOLVER.NONFINITE_LOSS.*'ignore'"):
        NonFiniteLossGuard("ignore")
