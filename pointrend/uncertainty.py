"""Uncertainty of logits: where PointRend places its points. Larger means more uncertain."""

from typing import Optional

import torch
from torch import Tensor

__all__ = ["instance_mask_uncertainty", "own_class_logits", "semantic_uncertainty"]


def own_class_logits(logits: Tensor, classes: Optional[Tensor]) -> Tensor:
    """Each box's own-class channel of class-specific logits.

    Args:
        logits: ``(R, C, ...)``, or ``(R, 1, ...)`` (class-agnostic: returned as is).
        classes: ``(R,)``; unused for class-agnostic logits.

    Returns:
        Tensor: ``(R, 1, ...)``.
    """
    if logits.shape[1] == 1:
        return logits
    return logits[torch.arange(logits.shape[0], device=logits.device), classes].unsqueeze(1)


def instance_mask_uncertainty(logits: Tensor, classes: Optional[Tensor]) -> Tensor:
    """Minus the distance of each box's own-class mask logit from 0 (the decision boundary).

    Args:
        logits: mask logits, shape ``(R, C, ...)`` (class-specific) or ``(R, 1, ...)``
            (class-agnostic).
        classes: the class of each box (ground truth in training, predicted at inference),
            shape ``(R,)``; unused for class-agnostic logits.

    Returns:
        Tensor: ``-|logit|``, shape ``(R, 1, ...)``.
    """
    return -own_class_logits(logits, classes).abs()


def semantic_uncertainty(logits: Tensor) -> Tensor:
    """Minus the gap between the two largest class logits of each location.

    Args:
        logits: semantic logits, shape ``(N, C, ...)`` with ``C >= 2``.

    Returns:
        Tensor: ``second - first`` (<= 0), shape ``(N, 1, ...)``.
    """
    top2 = torch.topk(logits, k=2, dim=1)[0]
    return (top2[:, 1] - top2[:, 0]).unsqueeze(1)
