"""YOLACT's detection step: candidates, Fast NMS (or standard NMS) and mask assembly, tensors in
and tensors out (no data-dependent Python control flow), for export.

Fast NMS, exactly as the authors compute it: the candidates are the anchors whose best class score
exceeds the threshold; per class, the ``top_k`` best candidates by that class's score are sorted
and their pairwise IoU matrix is kept above the diagonal; a box is kept when its column maximum
(its IoU with every better box of its class, suppressed or not) is at most the IoU threshold.
There is no second score threshold: a candidate's other classes enter with whatever score they
have. The best ``max_detections`` kept (class, box) pairs over all classes are the output.
Instead of dropping non-candidates (a data-dependent shape), they get the score -1: sorted behind
every candidate they suppress nothing that counts, and they are marked invalid in the output.
"""

from typing import Tuple

import torch
from detectron2.layers import batched_nms
from torch import Tensor

from .losses import crop_masks

__all__ = ["assemble_masks", "box_iou_matrix", "fast_nms", "standard_nms"]

_INVALID = -1.0


def box_iou_matrix(boxes: Tensor) -> Tensor:
    """Pairwise IoU within each set: ``(..., n, 4)`` XYXY -> ``(..., n, n)``."""
    lt = torch.maximum(boxes[..., :, None, :2], boxes[..., None, :, :2])
    rb = torch.minimum(boxes[..., :, None, 2:], boxes[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return inter / (area[..., :, None] + area[..., None, :] - inter)


def fast_nms(
    boxes: Tensor,
    scores: Tensor,
    *,
    score_thresh: float,
    iou_thresh: float,
    top_k: int,
    max_detections: int,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fast NMS of one image (see the module docstring).

    Args:
        boxes: ``(A, 4)`` XYXY decoded boxes.
        scores: ``(A, K)`` foreground class probabilities.
        score_thresh, iou_thresh, top_k, max_detections: the thresholds and counts.

    Returns:
        tuple: anchor index ``(D,)``, class ``(D,)``, score ``(D,)`` and valid ``(D,)`` bool,
        best first, ``D = min(max_detections, K x min(top_k, A))``; entries past the valid ones
        are filler.
    """
    num_anchors, num_classes = scores.shape
    candidate = scores.max(dim=1).values > score_thresh  # (A,)
    per_class = torch.where(candidate[None, :], scores.t(), scores.new_tensor(_INVALID))
    k = min(top_k, num_anchors)
    top_scores, top_index = per_class.topk(k, dim=1)  # (K, k), sorted
    iou = box_iou_matrix(boxes[top_index]).triu(diagonal=1)  # (K, k, k)
    column_max = iou.max(dim=1).values if k > 0 else top_scores
    keep = (column_max <= iou_thresh) & (top_scores > _INVALID)
    flat = torch.where(keep, top_scores, top_scores.new_tensor(_INVALID)).reshape(-1)
    d = min(max_detections, flat.shape[0])
    out_scores, order = flat.topk(d)
    classes = torch.div(order, k, rounding_mode="floor")
    anchors = top_index.reshape(-1)[order]
    return anchors, classes, out_scores, out_scores > _INVALID


def standard_nms(
    boxes: Tensor,
    scores: Tensor,
    *,
    score_thresh: float,
    iou_thresh: float,
    max_detections: int,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-class NMS over every (anchor, class) pair above the threshold; outputs as
    :func:`fast_nms` (all valid)."""
    anchor_index, classes = (scores > score_thresh).nonzero(as_tuple=True)
    flat_scores = scores[anchor_index, classes]
    keep = batched_nms(boxes[anchor_index], flat_scores, classes, iou_thresh)[:max_detections]
    valid = torch.ones(keep.shape[0], dtype=torch.bool, device=boxes.device)
    return anchor_index[keep], classes[keep], flat_scores[keep], valid


def assemble_masks(
    prototypes: Tensor, coefficients: Tensor, boxes: Tensor, padded_size: Tuple[int, int]
) -> Tensor:
    """Masks ``sigmoid(P C^T)`` zeroed outside their (padded by one pixel) boxes.

    Args:
        prototypes: ``(k, h, w)`` one image's prototypes.
        coefficients: ``(D, k)``.
        boxes: ``(D, 4)`` XYXY input pixels.
        padded_size: ``(Hp, Wp)`` of the network input.

    Returns:
        Tensor: ``(D, h, w)`` probabilities, float32.
    """
    logits = torch.einsum("khw,dk->dhw", prototypes.float(), coefficients.float())
    h, w = logits.shape[-2:]
    inside = crop_masks(logits, boxes.float(), (h / padded_size[0], w / padded_size[1]))
    return torch.sigmoid(logits) * inside
