"""launch(): CPU processes over gloo when there is no CUDA, with DDP and SyncBN working."""

import pytest
import torch
from detectron2.engine import default_argument_parser
from detectron2.utils import comm

import projects.engine.launch as launch_module
import train_net
from projects.engine.launch import launch
from projects.engine.trainer import Trainer
from tests.helpers.tiny_coco import (
    register_tiny_coco,
    tiny_mask_rcnn_cfg,
    write_cfg,
    write_tiny_coco,
)

DATASET = "engine_launch_tiny"


def _train_worker(cfg_file, json_path, image_dir, out_dir):
    register_tiny_coco(DATASET, json_path, image_dir)  # spawned processes start empty
    args = default_argument_parser().parse_args(["--config-file", cfg_file, "--num-gpus", "2"])
    cfg = train_net.setup(args)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    state = {k: v.detach().clone() for k, v in trainer.model.module.state_dict().items()}
    torch.save(
        {"state": state, "world_size": comm.get_world_size(), "results": results},
        f"{out_dir}/rank{comm.get_rank()}.pth",
    )


@pytest.mark.integration
@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU (gloo) path")
def test_two_cpu_processes_train_identical_replicas(tmp_path):
    json_path, image_dir = write_tiny_coco(str(tmp_path / "data"))
    register_tiny_coco(DATASET, json_path, image_dir)
    cfg = tiny_mask_rcnn_cfg(tmp_path / "out", DATASET, DATASET, norm="SyncBN")
    cfg.SOLVER.MAX_ITER = 3
    cfg.MODEL.DEVICE = "cuda"  # the CPU launch must move it to the CPU
    cfg_file = write_cfg(cfg, tmp_path / "cfg.yaml")
    launch(
        _train_worker,
        2,
        dist_url="auto",
        args=(cfg_file, json_path, image_dir, str(tmp_path)),
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pth", weights_only=True) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    a, b = ranks[0]["state"], ranks[1]["state"]
    assert a.keys() == b.keys()
    # parameters (DDP) and BN running statistics (synchronized BN) agree on both replicas
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any("running_mean" in k for k in a)
    # what rank 0 checkpointed at the end is what both replicas hold
    final = torch.load(tmp_path / "out" / "model_final.pth", weights_only=True)["model"]
    assert all(torch.equal(final[k], a[k]) for k in final)
    assert set(ranks[0]["results"]) == {"bbox", "segm", "boundary"}  # gathered evaluation on rank 0


def test_launch_single_cpu_process_runs_inline():
    calls = []
    launch(calls.append, 1, args=(5,))
    assert calls == [5]


def test_too_many_gpus_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(launch_module.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(launch_module.torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="--num-gpus 4 but this machine has 1 visible CUDA"):
        launch(print, 4)


def test_bad_machine_rank():
    with pytest.raises(ValueError, match="--machine-rank 2"):
        launch(print, 1, num_machines=2, machine_rank=2)


def _toy_cli_worker(argv, out_dir):
    """What ``train_net.py <argv>`` runs in each process, then each replica's weights saved."""
    args = default_argument_parser().parse_args(argv)
    cfg = train_net.setup(args)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    state = {k: v.detach().clone() for k, v in trainer.model.module.state_dict().items()}
    torch.save({"state": state, "rank": comm.get_rank()}, f"{out_dir}/rank{comm.get_rank()}.pth")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU (gloo) path")
def test_toy_config_two_cpu_processes_identical_replicas(tmp_path):
    """train_net.py --config-file configs/toy/mask_rcnn.yaml --num-gpus 2 SOLVER.MAX_ITER 10
    MODEL.WEIGHTS "" (from scratch: the replicas' agreement does not need the pretrained backbone)
    """
    argv = [
        "--config-file",
        "configs/toy/mask_rcnn.yaml",
        "--num-gpus",
        "2",
        "SOLVER.MAX_ITER",
        "10",
        "MODEL.WEIGHTS",
        "",
        "DATASETS.TEST",
        "()",
        "OUTPUT_DIR",
        str(tmp_path / "out"),
    ]
    launch(_toy_cli_worker, 2, dist_url="auto", args=(argv, str(tmp_path)))
    a, b = (torch.load(tmp_path / f"rank{r}.pth", weights_only=True)["state"] for r in range(2))
    # DDP keeps the weights equal; with plain "BN" (as in Detectron2 on GPUs) each replica keeps
    # its own running statistics, so those buffers are not compared.
    weights = [
        k for k in a if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    assert len(weights) > 100 and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in weights)
    final = torch.load(tmp_path / "out" / "model_final.pth", weights_only=True)
    assert final["iteration"] == 9
    assert all(torch.equal(final["model"][k], a[k]) for k in final["model"])
