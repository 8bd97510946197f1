"""YOLACT's anchors ("priors") and its SSD box coding.

Anchors are ``(cx, cy, w, h)`` in input pixels. On a level of ``H x W`` cells over a padded input
of ``Hp x Wp`` pixels, cell ``(i, j)`` is centred at ``((j + 0.5) Wp / W, (i + 0.5) Hp / H)``
(YOLACT's cell centres, which at 550 px fall every 550 / 69 px on P3, not every 8 px). Each cell
has, for every scale ``s`` of its level and every aspect ratio ``r`` (scales outer, ratios
inner), ``w = s sqrt(r)`` and ``h = s / sqrt(r)``, or ``h = w`` with square anchors (the
published YOLACT models were trained with square anchors by accident; YOLACT++ fixed it).
Anchors are listed level by level, then row, column, scale, ratio: the order of the head's
flattened outputs.

Sizes are in pixels: at the published input size (550, every image resized to 550 x 550) they are
the authors' anchors exactly; for other sizes the anchors keep their pixel size (the authors'
configs rescale them by hand, ``yolact_im400`` / ``im700``).
"""

import math
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["BOX_VARIANCES", "decode_boxes", "encode_boxes", "make_anchors", "anchors_per_cell"]

#: SSD's variances of the centre and size offsets.
BOX_VARIANCES = (0.1, 0.2)


def anchors_per_cell(scales: Sequence[Sequence[float]], aspect_ratios: Sequence[float]) -> int:
    """Anchors per cell (the same on every level: the head is shared)."""
    counts = {len(s) * len(aspect_ratios) for s in scales}
    if len(counts) != 1:
        raise ValueError(
            f"MODEL.YOLACT.ANCHOR_SCALES must give every level the same number of scales (the "
            f"prediction head is shared across levels), got {[list(s) for s in scales]}"
        )
    return counts.pop()


def make_anchors(
    feature_sizes: Sequence[Tuple[int, int]],
    image_size: Tuple[int, int],
    scales: Sequence[Sequence[float]],
    aspect_ratios: Sequence[float],
    square: bool = False,
    device=None,
) -> Tensor:
    """All anchors of an input, level by level.

    Args:
        feature_sizes: ``(H, W)`` of each level, finest first.
        image_size: ``(Hp, Wp)`` of the padded input tensor.
        scales: anchor sides in pixels, one sequence per level.
        aspect_ratios: width / height ratios.
        square: ``h = w`` (see the module docstring).
        device: where to build them.

    Returns:
        Tensor: ``(sum_l H_l W_l A, 4)`` float32 ``(cx, cy, w, h)`` in pixels.
    """
    if len(scales) != len(feature_sizes):
        raise ValueError(
            f"MODEL.YOLACT.ANCHOR_SCALES has {len(scales)} levels, the head runs on "
            f"{len(feature_sizes)}"
        )
    img_h, img_w = float(image_size[0]), float(image_size[1])
    out = []
    for (h, w), level_scales in zip(feature_sizes, scales):
        sizes = []
        for s in level_scales:
            for r in aspect_ratios:
                aw = s * math.sqrt(r)
                ah = aw if square else s / math.sqrt(r)
                sizes.append((aw, ah))
        wh = torch.tensor(sizes, dtype=torch.float32, device=device)  # (A, 2)
        cy = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h * img_h
        cx = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w * img_w
        cy, cx = torch.meshgrid(cy, cx, indexing="ij")
        centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, wh.shape[0], 2)
        level = torch.cat([centres, wh[None].expand(centres.shape[0], -1, 2)], dim=-1)
        out.append(level.reshape(-1, 4))
    return torch.cat(out, dim=0)


def encode_boxes(boxes: Tensor, anchors: Tensor) -> Tensor:
    """SSD offsets of XYXY ``boxes`` (N, 4) from their ``anchors`` (N, 4) ``(cx, cy, w, h)``:
    ``((cx - acx) / (0.1 aw), (cy - acy) / (0.1 ah), log(w / aw) / 0.2, log(h / ah) / 0.2)``."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 - anchors[:, :2]
    centre = centre / (BOX_VARIANCES[0] * anchors[:, 2:])
    size = torch.log((boxes[:, 2:] - boxes[:, :2]) / anchors[:, 2:]) / BOX_VARIANCES[1]
    return torch.cat([centre, size], dim=1)


def decode_boxes(deltas: Tensor, anchors: Tensor) -> Tensor:
    """Inverse of :func:`encode_boxes`: ``deltas`` (..., N, 4) and ``anchors`` (N, 4) -> XYXY
    boxes (..., N, 4)."""
    centre = anchors[..., :2] + deltas[..., :2] * BOX_VARIANCES[0] * anchors[..., 2:]
    size = anchors[..., 2:] * torch.exp(deltas[..., 2:] * BOX_VARIANCES[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def level_sizes(features: List[Tensor]) -> List[Tuple[int, int]]:
    """``(H, W)`` of each level's feature map."""
    return [(int(f.shape[-2]), int(f.shape[-1])) for f in features]
