"""Exact resume of a tiny Mask R-CNN, the resumable sampler, and --eval-only reproducing the
end-of-training evaluation."""

import itertools
import json
import math
import os

import pytest
from detectron2.engine import HookBase, default_argument_parser
from detectron2.utils.env import seed_all_rng

import train_net
from projects.engine.sampler import ResumableBatchSampler
from projects.engine.trainer import Trainer
from tests.helpers.tiny_coco import (
    register_tiny_coco,
    tiny_mask_rcnn_cfg,
    write_cfg,
    write_tiny_coco,
)


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_coco")
    return register_tiny_coco("engine_resume_tiny", *write_tiny_coco(str(root)))


def test_sampler_start_iter_continues_the_stream():
    group_ids = [i % 3 == 0 for i in range(7)]
    full = ResumableBatchSampler(7, 2, seed=3, group_ids=group_ids)
    straight = list(itertools.islice(iter(full), 12))
    resumed = ResumableBatchSampler(7, 2, seed=3, group_ids=group_ids)
    resumed.set_start_iter(5)
    assert list(itertools.islice(iter(resumed), 7)) == straight[5:]
    assert all(len({group_ids[i] for i, _ in batch}) == 1 for batch in straight)
    positions = [p for batch in straight for _, p in batch]
    assert len(set(positions)) == len(positions)  # every sample has its own seed position


def test_sampler_ranks_split_the_stream():
    ranks = [ResumableBatchSampler(10, 1, seed=0, rank=r, world_size=2) for r in range(2)]
    first = [[b[0][0] for b in itertools.islice(iter(s), 5)] for s in ranks]
    assert sorted(first[0] + first[1]) == list(range(10))  # one epoch, split without overlap


class _Stop(HookBase):
    """Simulates a crash right after iteration ``at`` (after its checkpoint was written)."""

    def __init__(self, at):
        self.at = at

    def after_step(self):
        if self.trainer.iter == self.at:
            raise KeyboardInterrupt("stopped")


def _losses(trainer):
    return [(it, v) for v, it in trainer.storage.history("total_loss").values()]


def test_exact_resume_gives_identical_losses(tmp_path, tiny_coco):
    cfg = tiny_mask_rcnn_cfg(tmp_path / "straight", tiny_coco, None)
    cfg.DATALOADER.NUM_WORKERS = 1
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"
    seed_all_rng(cfg.SEED)  # what default_setup does at the start of every run
    straight = Trainer(cfg)
    straight.resume_or_load(resume=False)
    straight.train()
    expected = _losses(straight)
    assert [it for it, _ in expected] == list(range(6))

    cfg.OUTPUT_DIR = str(tmp_path / "stopped")
    seed_all_rng(cfg.SEED)
    first = Trainer(cfg)
    first.register_hooks([_Stop(at=2)])  # checkpoint period 3: model_0000002 is written
    first.resume_or_load(resume=False)
    with pytest.raises(KeyboardInterrupt):
        first.train()
    part1 = _losses(first)
    with open(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")) as f:
        assert f.read() == "model_0000002.pth"
    seed_all_rng(cfg.SEED + 1)  # a restart's fresh state must not matter
    second = Trainer(cfg)
    second.resume_or_load(resume=True)
    assert second.start_iter == 3
    second.train()
    part2 = _losses(second)
    assert [it for it, _ in part1] == [0, 1, 2]
    # The resumed run's history starts with the checkpoint's (for the smoothed logs), then its own.
    assert part2[:3] == part1 and [it for it, _ in part2[3:]] == [3, 4, 5]
    assert part2 == expected  # bit-identical on the CPU


def _metrics_equal(a, b):
    return all(
        (math.isnan(a[t][k]) and math.isnan(b[t][k])) or a[t][k] == b[t][k] for t in a for k in a[t]
    )


def test_eval_only_reproduces_end_of_training_results(tmp_path, tiny_coco):
    out = tmp_path / "out"
    cfg = tiny_mask_rcnn_cfg(out, tiny_coco, tiny_coco)
    cfg.SOLVER.MAX_ITER = 4
    cfg_file = write_cfg(cfg, tmp_path / "cfg.yaml")
    parser = default_argument_parser()
    trained = train_net.main(parser.parse_args(["--config-file", cfg_file]))
    pred_file = out / "inference" / tiny_coco / "coco_instances_results.json"
    trained_preds = json.loads(pred_file.read_text())
    pred_file.unlink()

    evaluated = train_net.main(
        parser.parse_args(
            [
                "--config-file",
                cfg_file,
                "--eval-only",
                "MODEL.WEIGHTS",
                str(out / "model_final.pth"),
            ]
        )
    )
    assert set(trained) == {"bbox", "segm", "boundary"} and set(evaluated) == set(trained)
    assert _metrics_equal(trained, evaluated)
    # The predictions themselves, not only the (possibly 0) AP of a 4-iteration model.
    assert trained_preds and json.loads(pred_file.read_text()) == trained_preds
