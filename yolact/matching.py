"""Anchor-to-ground-truth matching of YOLACT's training.

Per image: every anchor (as an XYXY box) takes the ground truth of its highest IoU; then each
ground truth in turn is forced onto an anchor: the (ground truth, anchor) pair of the highest
remaining IoU is fixed, its row and column are removed, and so on once per ground truth (a greedy
bipartite assignment, so two boxes never fight for one anchor). IoU >= ``pos_thresh`` (or forced)
is a positive, < ``neg_thresh`` a negative, between them neutral; a negative covered more than
``crowd_thresh`` by a crowd box (intersection over the anchor's area) is neutral too.
"""

from typing import Optional, Tuple

import torch
from detectron2.structures import Boxes, pairwise_ioa, pairwise_iou
from torch import Tensor

__all__ = ["NEUTRAL", "anchors_as_xyxy", "match_anchors"]

#: Label of anchors that train neither as positives nor as negatives.
NEUTRAL = -1


def anchors_as_xyxy(anchors: Tensor) -> Tensor:
    """``(A, 4)`` ``(cx, cy, w, h)`` -> ``(A, 4)`` XYXY."""
    return torch.cat([anchors[:, :2] - anchors[:, 2:] / 2, anchors[:, :2] + anchors[:, 2:] / 2], 1)


def match_anchors(
    anchor_boxes: Tensor,
    gt_boxes: Tensor,
    gt_classes: Tensor,
    crowd_boxes: Optional[Tensor],
    pos_thresh: float,
    neg_thresh: float,
    crowd_thresh: float,
) -> Tuple[Tensor, Tensor]:
    """Labels and matched ground truth of every anchor of one image.

    Args:
        anchor_boxes: ``(A, 4)`` XYXY anchors.
        gt_boxes: ``(G, 4)`` XYXY ground-truth boxes (G may be 0).
        gt_classes: ``(G,)`` their classes, 0-based.
        crowd_boxes: ``(C, 4)`` XYXY crowd boxes, or None.
        pos_thresh, neg_thresh, crowd_thresh: see the module docstring (crowd_thresh >= 1
            disables the crowd rule).

    Returns:
        tuple[Tensor, Tensor]: labels ``(A,)`` int64: :data:`NEUTRAL`, 0 (background) or
        class + 1; matched ``(A,)`` int64 index into ``gt_boxes`` (0 where G is 0).
    """
    num_anchors = anchor_boxes.shape[0]
    device = anchor_boxes.device
    if gt_boxes.shape[0] == 0:
        labels = torch.zeros(num_anchors, dtype=torch.long, device=device)
        matched = torch.zeros(num_anchors, dtype=torch.long, device=device)
    else:
        overlaps = pairwise_iou(Boxes(gt_boxes), Boxes(anchor_boxes))  # (G, A)
        best_overlap, matched = overlaps.max(dim=0)
        overlaps = overlaps.clone()
        for _ in range(gt_boxes.shape[0]):
            best_per_gt, best_anchor = overlaps.max(dim=1)
            j = best_per_gt.argmax()
            i = best_anchor[j]
            overlaps[:, i] = -1
            overlaps[j, :] = -1
            best_overlap[i] = 2.0
            matched[i] = j
        labels = gt_classes[matched].long() + 1
        labels[best_overlap < pos_thresh] = NEUTRAL
        labels[best_overlap < neg_thresh] = 0
    if crowd_boxes is not None and crowd_boxes.shape[0] > 0 and crowd_thresh < 1:
        covered = pairwise_ioa(Boxes(crowd_boxes), Boxes(anchor_boxes)).max(dim=0).values
        labels[(labels <= 0) & (covered > crowd_thresh)] = NEUTRAL
    return labels, matched
