"""Synchronized batch norm that also works on the CPU over gloo.

Detectron2 v0.6's ``get_norm("SyncBN")`` is ``torch.nn.SyncBatchNorm`` (on torch > 1.5), which
is plain BN in a single process but raises "SyncBatchNorm expected input tensor to be on GPU"
in a multi-process CPU run. Detectron2's ``NaiveSyncBatchNorm`` reduces its statistics with
``all_reduce``, which gloo implements on the CPU, and has the same parameters and buffers.
"""

import logging

import torch
from detectron2.layers import NaiveSyncBatchNorm
from detectron2.utils import comm
from torch import nn

logger = logging.getLogger(__name__)


def _naive_copy(module):
    new = NaiveSyncBatchNorm(
        module.num_features,
        eps=module.eps,
        momentum=module.momentum,
        affine=module.affine,
        track_running_stats=module.track_running_stats,
        stats_mode="N",  # weight by batch size like torch's SyncBatchNorm; allows empty batches
    )
    with torch.no_grad():
        new.load_state_dict(module.state_dict())
    new.train(module.training)
    return new.to(next(iter(module.state_dict().values())).device)


def convert_sync_batchnorm_for_cpu(model):
    """Replace every ``nn.SyncBatchNorm`` of ``model`` by an equivalent ``NaiveSyncBatchNorm``.

    Needed only when several processes train on the CPU (gloo); same state-dict keys, so
    checkpoints are interchangeable. Synchronized BN must have affine parameters here.

    Returns:
        nn.Module: ``model`` (changed in place) or its replacement if it is itself a SyncBN.
    """
    if isinstance(model, nn.SyncBatchNorm):
        return _naive_copy(model)
    for name, child in model.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            setattr(model, name, _naive_copy(child))
        else:
            convert_sync_batchnorm_for_cpu(child)
    return model


def needs_cpu_syncbn(device):
    """Whether SyncBN layers must be converted: several processes, and a CPU model."""
    return comm.get_world_size() > 1 and torch.device(device).type == "cpu"
