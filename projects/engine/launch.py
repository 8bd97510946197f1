"""``launch``: Detectron2's on CUDA machines; N CPU processes over gloo on machines without CUDA.

Detectron2 v0.6's ``launch`` asserts CUDA in every worker and uses NCCL. Without CUDA,
``--num-gpus N`` here starts N processes per machine that train on the CPU and talk over gloo,
so distributed code (DDP, gathered evaluation, synchronized BN) runs anywhere.
"""

import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

from .amp import amp_policy_from_config

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)


def _free_port():
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(
    main_func,
    num_gpus_per_machine,
    num_machines=1,
    machine_rank=0,
    dist_url=None,
    args=(),
    timeout=DEFAULT_TIMEOUT,
):
    """Run ``main_func(*args)`` in ``num_machines * num_gpus_per_machine`` processes.

    On a machine with CUDA this is Detectron2's ``launch`` (NCCL, one GPU per process), after
    checking that the machine has ``num_gpus_per_machine`` GPUs. On a machine without CUDA,
    ``num_gpus_per_machine`` is the number of CPU processes per machine, joined over gloo.

    Args:
        main_func (callable): run in every process as ``main_func(*args)``.
        num_gpus_per_machine (int): processes (GPUs, or CPU processes) per machine.
        num_machines (int): machines taking part.
        machine_rank (int): rank of this machine.
        dist_url (str): ``torch.distributed`` init method, e.g. ``tcp://host:port``; ``"auto"``
            picks a free local port (single machine only).
        args (tuple): arguments of ``main_func``.
        timeout (timedelta): timeout of collective operations.

    Raises:
        ValueError: more GPUs per machine than this machine has, or bad process counts.
    """
    if num_gpus_per_machine < 1 or num_machines < 1:
        raise ValueError(
            f"--num-gpus ({num_gpus_per_machine}) and --num-machines ({num_machines}) must be >= 1"
        )
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"--machine-rank {machine_rank} is not in [0, {num_machines})")
    if torch.cuda.is_available():
        visible = torch.cuda.device_count()
        if num_gpus_per_machine > visible:
            raise ValueError(
                f"--num-gpus {num_gpus_per_machine} but this machine has {visible} visible CUDA "
                "device(s) (see CUDA_VISIBLE_DEVICES)"
            )
        return d2_launch(
            main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, args, timeout
        )

    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        return main_func(*args)
    if dist_url is None or dist_url == "auto":
        if num_machines > 1:
            raise ValueError("--dist-url auto only works on one machine; give tcp://host:port")
        dist_url = f"tcp://127.0.0.1:{_free_port()}"
    logger.info(
        "No CUDA: starting %d CPU processes (world size %d) over gloo at %s",
        num_gpus_per_machine,
        world_size,
        dist_url,
    )
    mp.spawn(
        _cpu_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
    )


def _cpu_worker(
    local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args, timeout
):
    global_rank = machine_rank * num_per_machine + local_rank
    try:
        dist.init_process_group(
            backend="gloo",
            init_method=dist_url,
            world_size=world_size,
            rank=global_rank,
            timeout=timeout,
        )
    except Exception:
        logger.error("Process group URL: %s", dist_url)
        raise
    # The local process group (ranks on this machine), as Detectron2's GPU worker sets it up.
    assert comm._LOCAL_PROCESS_GROUP is None
    for machine in range(world_size // num_per_machine):
        ranks = list(range(machine * num_per_machine, (machine + 1) * num_per_machine))
        group = dist.new_group(ranks)
        if machine == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    # Share the cores instead of every process using all of them.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_per_machine))
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()


def fit_device_to_machine(cfg):
    """Fit ``MODEL.DEVICE`` and ``SOLVER.AMP`` of ``cfg`` (unfrozen) to this machine, in place;
    returns ``cfg``.

    * ``MODEL.DEVICE`` becomes ``"cpu"`` (with a warning) when it names CUDA and there is none;
    * with ``SOLVER.AMP.ENABLED``, the (new) device's AMP policy is resolved
      (:func:`projects.engine.amp.resolve_amp_policy`: ``SOLVER.AMP.DTYPE`` ``"auto"`` is
      bfloat16 on the CPU); where the device cannot run it, ``SOLVER.AMP.ENABLED`` becomes
      False with a warning naming the keys, so the saved ``config.yaml`` says what ran.

    Used by ``train_net.py``'s setup, so that the CPU processes started by :func:`launch` (and
    single-process runs) train on the CPU whatever the config says.

    Raises:
        ValueError: an unknown ``SOLVER.AMP.DTYPE``.
    """
    if cfg.MODEL.DEVICE != "cpu" and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE=%r but CUDA is not available: using the CPU", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    if amp_policy_from_config(cfg) is None and cfg.SOLVER.AMP.ENABLED:
        cfg.SOLVER.AMP.ENABLED = False  # amp_policy_from_config has warned
    return cfg
