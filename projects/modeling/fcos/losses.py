"""FCOS's box losses on (left, top, right, bottom) distances from a location, and the
process-averaged normalisers of its losses.

Shape shorthand: ``P`` positive locations.
"""

import torch
import torch.distributed as dist
from detectron2.utils import comm
from torch import Tensor

__all__ = ["LOC_LOSS_TYPES", "ltrb_iou", "iou_loss", "mean_over_processes"]

LOC_LOSS_TYPES = ("iou", "linear_iou", "giou")


def ltrb_iou(pred: Tensor, target: Tensor):
    """IoU and GIoU of boxes given as distances from a common point.

    Both boxes of a pair contain the point, so their intersection is
    ``(min(l) + min(r)) x (min(t) + min(b))`` and their enclosing box
    ``(max(l) + max(r)) x (max(t) + max(b))``. The IoU is smoothed by one unit, as FCOS does:
    ``(I + 1) / (U + 1)``; GIoU = IoU - (E - U) / E (E the enclosing area).

    Args:
        pred, target: ``(P, 4)`` non-negative (l, t, r, b) distances (FCOS: in strides).

    Returns:
        ``(iou, giou)``, each ``(P,)``.
    """
    pred_area = (pred[:, 0] + pred[:, 2]) * (pred[:, 1] + pred[:, 3])
    target_area = (target[:, 0] + target[:, 2]) * (target[:, 1] + target[:, 3])
    inter_w = torch.min(pred[:, 0], target[:, 0]) + torch.min(pred[:, 2], target[:, 2])
    inter_h = torch.min(pred[:, 1], target[:, 1]) + torch.min(pred[:, 3], target[:, 3])
    outer_w = torch.max(pred[:, 0], target[:, 0]) + torch.max(pred[:, 2], target[:, 2])
    outer_h = torch.max(pred[:, 1], target[:, 1]) + torch.max(pred[:, 3], target[:, 3])
    inter = inter_w * inter_h
    union = pred_area + target_area - inter
    enclosing = outer_w * outer_h
    iou = (inter + 1.0) / (union + 1.0)
    giou = iou - (enclosing - union) / enclosing
    return iou, giou


def iou_loss(iou: Tensor, giou: Tensor, loss_type: str, weight: Tensor = None) -> Tensor:
    """Summed box loss: ``-log(iou)``, ``1 - iou`` or ``1 - giou`` per pair, times ``weight``.

    Raises:
        ValueError: an unknown ``loss_type`` (``MODEL.FCOS.LOC_LOSS_TYPE``).
    """
    if loss_type == "iou":
        losses = -torch.log(iou)
    elif loss_type == "linear_iou":
        losses = 1 - iou
    elif loss_type == "giou":
        losses = 1 - giou
    else:
        raise ValueError(
            f"MODEL.FCOS.LOC_LOSS_TYPE must be one of {LOC_LOSS_TYPES}, got {loss_type!r}"
        )
    if weight is not None:
        losses = losses * weight
    return losses.sum()


def mean_over_processes(value: Tensor) -> float:
    """The mean of a scalar over all training processes (the value itself in one process)."""
    value = value.detach().float().reshape(())
    world = comm.get_world_size()
    if world > 1:
        value = value.clone()
        if dist.get_backend() == "nccl" and value.device.type != "cuda":
            value = value.cuda()  # NCCL reduces CUDA tensors only
        dist.all_reduce(value)
        value = value / world
    return float(value.item())
