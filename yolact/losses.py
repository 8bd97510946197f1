"""YOLACT's losses.

With ``P`` the positives of the whole batch (all-reduced: the mean over processes), the losses are

* ``loss_cls``: cross-entropy (softmax over background + classes) of the positives and of the
  hardest negatives (OHEM: per image, the ``NEG_POS_RATIO`` x positives negatives of the highest
  background loss ``logsumexp(x) - x_0``; neutrals never count), summed, / P;
* ``loss_box``: smooth-L1 (beta 1) of the SSD offsets of the positives, summed, / P;
* ``loss_mask``: per positive (at most ``MASKS_TO_TRAIN`` per image, drawn at random and the sum
  scaled back), the BCE of ``sigmoid(P C^T)`` against the binarised ground-truth mask at prototype
  resolution, inside the ground-truth box (one prototype pixel of margin), summed over the crop
  and divided by the box's area in prototype pixels; summed, / P;
* ``loss_semantic``: per-class sigmoid BCE of a 1x1 conv on P3 against the per-class union of the
  binarised instance masks at P3's size, summed, / (H3 W3), averaged over images;
* ``loss_maskiou`` (YOLACT++): smooth-L1 between the re-scoring net's IoU for the ground-truth
  class and the IoU of the binarised cropped mask with the ground truth, for positives whose
  ground-truth mask covers more than ``MIN_AREA`` prototype pixels, summed, / P.

The BCE of the cropped masks is taken on logits (``binary_cross_entropy_with_logits``, which
autocast runs in float32); outside the crop the prediction is 0, whose BCE is the authors' clamp
of ``-log 0`` at 100 where the target is 1.
"""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "crop_masks",
    "downsample_masks",
    "mask_loss_terms",
    "ohem_negatives",
    "semantic_targets",
]

# -log(0) as torch's binary_cross_entropy clamps it (and the authors' mask loss with it)
_LOG_CLAMP = 100.0


def ohem_negatives(cls_logits: Tensor, labels: Tensor, neg_pos_ratio: float) -> Tensor:
    """The hard negatives of every image.

    Args:
        cls_logits: ``(N, A, K + 1)`` class logits, background first.
        labels: ``(N, A)`` int64: -1 neutral, 0 background, class + 1.
        neg_pos_ratio: negatives per positive.

    Returns:
        Tensor: ``(N, A)`` bool: per image the ``min(ratio x positives, A - 1)`` negatives of
        the highest background loss (fewer where fewer negatives exist).
    """
    with torch.no_grad():
        logits = cls_logits.detach().float()
        bg_loss = torch.logsumexp(logits, dim=-1) - logits[..., 0]
        candidate = labels == 0
        bg_loss = torch.where(candidate, bg_loss, torch.zeros_like(bg_loss))
        order = bg_loss.argsort(dim=1, descending=True)
        rank = order.argsort(dim=1)
        num_pos = (labels > 0).sum(dim=1, keepdim=True)
        num_neg = torch.clamp(neg_pos_ratio * num_pos, max=labels.shape[1] - 1)
        return (rank < num_neg) & candidate


def downsample_masks(masks: Tensor, size: Tuple[int, int]) -> Tensor:
    """Binary masks ``(G, Hp, Wp)`` -> ``(G, h, w)`` float 0/1: bilinear, then > 0.5."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0,) + tuple(size), dtype=torch.float32)
    small = F.interpolate(masks[None].float(), size=size, mode="bilinear", align_corners=False)
    return (small[0] > 0.5).float()


def crop_masks(masks: Tensor, boxes: Tensor, scale: Tuple[float, float], padding: int = 1):
    """Where each box covers its mask, as YOLACT crops: ``(n, h, w)`` bool.

    Args:
        masks: ``(n, h, w)`` (only the shape and device are used).
        boxes: ``(n, 4)`` XYXY in input pixels.
        scale: ``(h / Hp, w / Wp)``, input pixels to mask pixels.
        padding: margin in mask pixels on every side.

    Returns:
        Tensor: ``(n, h, w)`` bool: column ``c`` is inside when ``x0 - padding <= c < x1 +
        padding`` with ``x0, x1`` the box's sides in mask pixels (clamped to the mask), rows
        likewise.
    """
    n, h, w = masks.shape
    x0 = torch.minimum(boxes[:, 0], boxes[:, 2]) * scale[1]
    x1 = torch.maximum(boxes[:, 0], boxes[:, 2]) * scale[1]
    y0 = torch.minimum(boxes[:, 1], boxes[:, 3]) * scale[0]
    y1 = torch.maximum(boxes[:, 1], boxes[:, 3]) * scale[0]
    x0 = torch.clamp(x0 - padding, min=0)
    x1 = torch.clamp(x1 + padding, max=w)
    y0 = torch.clamp(y0 - padding, min=0)
    y1 = torch.clamp(y1 + padding, max=h)
    cols = torch.arange(w, device=masks.device, dtype=boxes.dtype)[None, None, :]
    rows = torch.arange(h, device=masks.device, dtype=boxes.dtype)[None, :, None]
    inside_x = (cols >= x0[:, None, None]) & (cols < x1[:, None, None])
    inside_y = (rows >= y0[:, None, None]) & (rows < y1[:, None, None])
    return inside_x & inside_y


def cropped_mask_bce(logits: Tensor, inside: Tensor, targets: Tensor) -> Tensor:
    """Per-pixel BCE of ``sigmoid(logits)`` zeroed outside ``inside``, against ``targets``
    (all ``(n, h, w)``), in float32."""
    logits, targets = logits.float(), targets.float()
    inner = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return torch.where(inside, inner, targets * _LOG_CLAMP)


def mask_loss_terms(
    prototypes: Tensor,
    coefficients: Tensor,
    gt_masks_small: Tensor,
    gt_boxes: Tensor,
    scale: Tuple[float, float],
    max_masks: int,
    generator: Optional[torch.Generator] = None,
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """One image's summed mask loss (before the weight and the positives' normaliser).

    Args:
        prototypes: ``(h, w, k)`` prototypes (after their ReLU).
        coefficients: ``(n, k)`` coefficients of the image's positives.
        gt_masks_small: ``(n, h, w)`` float 0/1 matched ground-truth masks at prototype size.
        gt_boxes: ``(n, 4)`` matched ground-truth boxes, XYXY input pixels.
        scale: ``(h / Hp, w / Wp)``.
        max_masks: positives trained at most (a random subset beyond, the sum scaled back).
        generator: random source of the subset.

    Returns:
        tuple: the summed loss (scalar float32), and the trained positives' ``logits``
        ``(m, h, w)``, ``inside`` crops, ``targets`` and ``index`` (into the n positives),
        which the re-scoring net trains on.
    """
    n = coefficients.shape[0]
    index = torch.arange(n, device=coefficients.device)
    if n > max_masks:
        index = torch.randperm(n, generator=generator)[:max_masks].to(coefficients.device)
    logits = torch.einsum("hwk,nk->nhw", prototypes, coefficients[index])
    targets = gt_masks_small[index]
    boxes = gt_boxes[index]
    inside = crop_masks(logits, boxes, scale)
    bce = cropped_mask_bce(logits, inside, targets).sum(dim=(1, 2))
    box_w = (boxes[:, 2] - boxes[:, 0]).float() * scale[1]
    box_h = (boxes[:, 3] - boxes[:, 1]).float() * scale[0]
    loss = (bce / box_w / box_h).sum()
    if n > index.shape[0]:
        loss = loss * (n / index.shape[0])
    return loss, {"logits": logits, "inside": inside, "targets": targets, "index": index}


def semantic_targets(
    gt_masks: List[Tensor], gt_classes: List[Tensor], num_classes: int, size: Tuple[int, int]
) -> Tensor:
    """Per-class unions of the binarised instance masks at ``size``: ``(N, K, h, w)`` float.

    Args:
        gt_masks: per image ``(G_i, Hp, Wp)`` binary masks over the padded input.
        gt_classes: per image ``(G_i,)`` classes.
        num_classes: K.
        size: ``(h, w)`` of the semantic logits.
    """
    out = []
    for masks, classes in zip(gt_masks, gt_classes):
        target = masks.new_zeros((num_classes,) + tuple(size), dtype=torch.float32)
        small = downsample_masks(masks, size)
        if small.shape[0]:
            index = classes.long()[:, None, None].expand_as(small)
            target = target.scatter_reduce(0, index, small, reduce="amax", include_self=True)
        out.append(target)
    return torch.stack(out)
