"""Faults mid-run: SIGKILL at any moment (during a checkpoint write too) then ``--resume`` gives
the uninterrupted run's result; a data-loader worker that dies is reported with its sample."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from detectron2.utils.env import seed_all_rng

from projects.engine.checkpoint import ProjectCheckpointer
from projects.engine.sampler import build_resumable_train_loader
from projects.engine.trainer import Trainer, drop_metrics_from
from projects.engine.worker_faults import DataLoaderWorkerError
from tests.helpers.tiny_coco import (
    register_tiny_coco,
    tiny_mask_rcnn_cfg,
    write_cfg,
    write_tiny_coco,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs train_net.py with one fault injected by FAULT=<kind>:<target>:
#   write:<file>@<n>  killed halfway through the n-th write of <file> (checkpoint or
#                     last_checkpoint)
#   tag:<file>    killed after <file> is complete, before last_checkpoint names it
#   step:<k>      killed after iteration k (between checkpoints)
_DRIVER = r"""
import io, os, signal, sys
import train_net
from detectron2.engine import HookBase
from projects.engine import checkpoint
from projects.engine.trainer import Trainer

kind, target = os.environ["FAULT"].split(":")
target, _, nth = target.partition("@")
writes = []

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if kind == "write":
    atomic_write = checkpoint.atomic_write
    def half_write(path, write):
        if os.path.basename(path) == target:
            writes.append(path)
        if len(writes) != int(nth or 1) or os.path.basename(path) != target:
            return atomic_write(path, write)
        def write_half(f):
            buf = io.BytesIO()
            write(buf)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os.fsync(f.fileno())
            die()
        return atomic_write(path, write_half)
    checkpoint.atomic_write = half_write
elif kind == "tag":
    tag = checkpoint.ProjectCheckpointer.tag_last_checkpoint
    def tag_or_die(self, name):
        if name == target:
            die()
        return tag(self, name)
    checkpoint.ProjectCheckpointer.tag_last_checkpoint = tag_or_die
elif kind == "step":
    class Kill(HookBase):
        def after_step(self):
            if self.trainer.iter == int(target):
                die()
    build_hooks = Trainer.build_hooks
    Trainer.build_hooks = lambda self: build_hooks(self) + [Kill()]

train_net.cli(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    json_path, image_dir = write_tiny_coco(str(tmp_path_factory.mktemp("faults_coco")))
    return f"coco_format:{json_path}:{image_dir}"


def _run(cfg_file, out_dir, fault=None, resume=False, stage=0):
    args = [sys.executable, "-c", _DRIVER, "--config-file", cfg_file]
    args += ["--resume"] if resume else []
    args += ["OUTPUT_DIR", str(out_dir)]
    env = dict(os.environ, FAULT=fault or "none:")
    log = out_dir.parent / f"{out_dir.name}_{stage}.log"
    with open(log, "w") as f:
        proc = subprocess.run(args, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    return proc.returncode, log.read_text()


def _cfg_file(tmp_path, dataset):
    cfg = tiny_mask_rcnn_cfg(tmp_path / "unused", dataset, None)
    cfg.DATALOADER.NUM_WORKERS = 1
    cfg.SOLVER.CHECKPOINT_PERIOD = 2  # model_0000001, model_0000003, model_0000005 + model_final
    return write_cfg(cfg, tmp_path / "cfg.yaml")


def _final_weights(out_dir):
    return torch.load(out_dir / "model_final.pth", map_location="cpu", weights_only=True)["model"]


def _loss_records(out_dir):
    """The iteration, learning rate and losses of every metrics.json record (not the times)."""
    records = [json.loads(line) for line in (out_dir / "metrics.json").read_text().splitlines()]
    keep = ("iteration", "lr")
    return [{k: v for k, v in r.items() if k in keep or "loss" in k} for r in records]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, dataset):
    root = tmp_path_factory.mktemp("uninterrupted")
    out = root / "out"
    rc, log = _run(_cfg_file(root, dataset), out)
    assert rc == 0, log[-3000:]
    return _final_weights(out), _loss_records(out)


# Each stage resumes the previous one with a fault; the last completes. Checkpoints (period 2):
# model_0000001 after iteration 1, model_0000003 after 3, model_0000005 and model_final after 5.
_STAGES = [
    # (fault, iteration the stage starts at, last_checkpoint after it, a temporary file left)
    ("step:2", 0, "model_0000001.pth", False),  # killed between checkpoints
    ("write:model_0000003.pth", 2, "model_0000001.pth", True),  # halfway through the checkpoint
    ("tag:model_0000003.pth", 2, "model_0000001.pth", False),  # checkpoint complete, not named
    ("write:last_checkpoint", 2, "model_0000001.pth", True),  # halfway through naming it
    ("step:4", 2, "model_0000003.pth", False),
    (None, 4, "model_final.pth", False),
]


@pytest.mark.integration
def test_sigkill_at_any_moment_then_resume_equals_uninterrupted_run(
    tmp_path, dataset, uninterrupted
):
    cfg_file, out = _cfg_file(tmp_path, dataset), tmp_path / "out"
    for i, (fault, start, last_complete, leaves_temporary) in enumerate(_STAGES):
        rc, log = _run(cfg_file, out, fault=fault, resume=i > 0, stage=i)
        assert rc == (-signal.SIGKILL if fault else 0), (fault, log[-3000:])
        assert f"Starting training from iteration {start}" in log, fault
        assert (out / "last_checkpoint").read_text() == last_complete, fault
        temporaries = [p for p in os.listdir(out) if p.startswith(".")]
        assert bool(temporaries) == leaves_temporary, (fault, temporaries)  # removed on resume
    weights, metrics = uninterrupted
    resumed = _final_weights(out)
    assert resumed.keys() == weights.keys()
    assert all(torch.equal(resumed[k], weights[k]) for k in weights)  # bit-identical on the CPU
    assert _loss_records(out) == metrics  # the smoothed losses logged, too


def test_resume_drops_metrics_of_iterations_trained_again(tmp_path):
    path = tmp_path / "metrics.json"
    records = [{"iteration": i, "total_loss": 1.0 / (i + 1)} for i in range(6)]
    text = "".join(json.dumps(r) + "\n" for r in records)
    path.write_text(text + '{"iteration": 6, "total_lo')  # cut short by a kill
    with open(path, "a") as writer:  # Detectron2's JSONWriter keeps the file open to append
        assert drop_metrics_from(str(path), 4) == 3
        writer.write(json.dumps({"iteration": 4}) + "\n")
    assert [json.loads(line) for line in path.read_text().splitlines()] == records[:4] + [
        {"iteration": 4}
    ]
    assert drop_metrics_from(str(tmp_path / "missing.json"), 0) == 0


def test_remove_incomplete_files_keeps_checkpoints(tmp_path):
    names = ["model_0000001.pth", "last_checkpoint", ".model_0000003.pth.ab_cd123", ".notes.txt"]
    names += [".last_checkpoint.Zx9_k2Lq"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    removed = ProjectCheckpointer(torch.nn.Linear(1, 1), str(tmp_path)).remove_incomplete_files()
    assert sorted(os.path.basename(p) for p in removed) == sorted(names[2:3] + names[4:])
    assert sorted(os.listdir(tmp_path)) == sorted(names[:2] + [".notes.txt"])


# ------------------------------------------------------------------ a worker that dies
class _KillingMapper:
    """Maps nothing; kills its worker process on the image ``victim``."""

    def __init__(self, victim):
        self.victim = victim

    def __call__(self, dataset_dict):
        if dataset_dict["file_name"] == self.victim:
            os.kill(os.getpid(), signal.SIGKILL)
        return {"file_name": dataset_dict["file_name"]}


@pytest.fixture(scope="module")
def tiny_registered(tmp_path_factory):
    root = tmp_path_factory.mktemp("worker_coco")
    return register_tiny_coco("engine_faults_tiny", *write_tiny_coco(str(root)))


def _first_batch_file(loader):
    index = next(iter(loader.batch_sampler))[1][0]  # the second sample of the first batch
    return index, loader.records[index]["file_name"]


def test_dead_worker_is_reported_with_its_sample(tmp_path, tiny_registered):
    cfg = tiny_mask_rcnn_cfg(tmp_path, tiny_registered, None)
    cfg.DATALOADER.NUM_WORKERS = 1
    probe = build_resumable_train_loader(cfg, _KillingMapper(None))
    index, victim = _first_batch_file(probe)
    loader = build_resumable_train_loader(cfg, _KillingMapper(victim))
    with pytest.raises(DataLoaderWorkerError) as info:
        next(iter(loader))
    message = str(info.value)
    assert f"worker 0 was mapping dataset index {index} (file_name={victim!r}" in message
    assert "DataLoader worker (pid" in message  # PyTorch's own report is kept


def test_trainer_reports_dead_worker_with_its_sample(tmp_path, tiny_registered):
    cfg = tiny_mask_rcnn_cfg(tmp_path, tiny_registered, None)
    cfg.DATALOADER.NUM_WORKERS = 1
    victim = _first_batch_file(build_resumable_train_loader(cfg, _KillingMapper(None)))[1]

    class KillingTrainer(Trainer):
        @classmethod
        def build_train_loader(cls, cfg):
            return build_resumable_train_loader(cfg, _KillingMapper(victim))

    seed_all_rng(cfg.SEED)
    trainer = KillingTrainer(cfg)
    trainer.resume_or_load(resume=False)
    with pytest.raises(DataLoaderWorkerError, match=f"file_name={victim!r}"):
        trainer.train()
