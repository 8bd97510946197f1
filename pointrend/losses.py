"""PointRend's point loss for instance masks."""

import torch
from detectron2.utils.events import get_event_storage
from torch import Tensor
from torch.nn import functional as F

__all__ = ["mask_point_loss"]


def mask_point_loss(point_logits: Tensor, gt_classes: Tensor, point_labels: Tensor) -> Tensor:
    """Binary cross-entropy of each box's own-class point logits against soft point labels.

    Also records ``point/accuracy`` (logit > 0 versus label rounded down, as Detectron2 does) in
    the event storage.

    Args:
        point_logits: shape ``(R, C, P)`` (class-specific) or ``(R, 1, P)`` (class-agnostic).
        gt_classes: ground-truth class of each box, shape ``(R,)``.
        point_labels: ground-truth mask values in ``[0, 1]`` at the points, shape ``(R, P)``.

    Returns:
        Tensor: scalar mean loss over boxes and points; ``0 * sum(point_logits)`` (keeping the
        graph) when there is no box.
    """
    if point_logits.shape[0] == 0:
        return point_logits.sum() * 0
    if point_logits.shape[1] == 1:
        logits = point_logits[:, 0]
    else:
        rows = torch.arange(point_logits.shape[0], device=point_logits.device)
        logits = point_logits[rows, gt_classes.to(torch.int64)]

    with torch.no_grad():
        correct = (logits > 0.0) == point_labels.to(dtype=torch.uint8)
        accuracy = correct.sum().item() / max(correct.numel(), 1)
    get_event_storage().put_scalar("point/accuracy", accuracy)
    return F.binary_cross_entropy_with_logits(logits, point_labels.to(torch.float32))
