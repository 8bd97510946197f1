"""Determinism on the CPU: two runs of a toy config with the same seed give bit-identical losses.

Every toy config (the methods' CPU-sized configs under ``configs/toy``) is trained twice for 10
iterations with its own seed, data pipeline (one loader worker) and model; only the image size and
batch are reduced to keep the test short. No op used on the CPU is non-deterministic, so none of
the configs declares an exception.
"""

import glob
import os

import pytest
from detectron2.utils.env import seed_all_rng

from projects.engine.setup import load_config
from projects.engine.trainer import Trainer
from tests.helpers.learning import REPO

ITERATIONS = 10
TOY_CONFIGS = sorted(
    os.path.basename(p)
    for p in glob.glob(os.path.join(REPO, "configs", "toy", "*.yaml"))
    if not os.path.basename(p).startswith("Base-") and os.path.basename(p) != "bars.yaml"
)


def _loss_history(config_file, output_dir):
    opts = [
        "SOLVER.MAX_ITER", str(ITERATIONS),
        "SOLVER.IMS_PER_BATCH", "1",
        "SOLVER.CHECKPOINT_PERIOD", "100000",
        "TEST.EVAL_PERIOD", "0",
        "INPUT.MIN_SIZE_TRAIN", "(96,)",
        "INPUT.MAX_SIZE_TRAIN", "128",
        "OUTPUT_DIR", str(output_dir),
    ]  # fmt: skip
    cfg = load_config(config_file, opts, freeze=False)
    cfg.DATASETS.TEST = ()
    cfg.freeze()
    seed_all_rng(cfg.SEED)  # as default_setup does
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    history = trainer.storage.histories()
    return {
        k: [v for v, _ in h.values()] for k, h in history.items() if k.startswith(("loss", "total"))
    }


@pytest.mark.slow
@pytest.mark.parametrize("config_name", TOY_CONFIGS)
def test_two_runs_give_bit_identical_losses(config_name, tmp_path):
    config_file = os.path.join(REPO, "configs", "toy", config_name)
    first = _loss_history(config_file, tmp_path / "first")
    second = _loss_history(config_file, tmp_path / "second")
    assert len(first["total_loss"]) == ITERATIONS
    assert set(first) == set(second)
    for key in first:
        assert first[key] == second[key], f"{config_name}: {key} differs between two runs"
