"""FCOS's training targets: which location regresses which ground-truth box, at which level.

A location ``(x, y)`` of level ``l`` (stride ``s``) sits at ``(s // 2 + s * j, s // 2 + s * i)``
in the input image. It is a positive of box ``b`` when

* it lies inside ``b``, or, with centre sampling, inside ``b``'s centre region: the square of
  half-side ``radius * s`` around the box centre, clipped to the box;
* the largest of its four distances to ``b``'s sides lies in level ``l``'s size range
  ``[m_{l-1}, m_l]`` (``SIZES_OF_INTEREST`` ``m``, with ``m_{-1} = -1`` and a last range up to
  infinity), both ends inclusive;

and, when several boxes qualify, the one of smallest area wins (the first of equal areas).

Shape shorthand: ``L`` locations of all levels of one image (level-major), ``G`` boxes.
"""

from typing import List, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    "INF",
    "assign_targets",
    "centerness_targets",
    "compute_locations",
    "size_ranges",
]

INF = 100000000.0


def compute_locations(height: int, width: int, stride: int, device=None) -> Tensor:
    """The image coordinates of a level's locations.

    Returns:
        Tensor: ``(height * width, 2)`` float ``(x, y)``, row-major (``x`` fastest).
    """
    xs = torch.arange(0, width * stride, step=stride, dtype=torch.float32, device=device)
    ys = torch.arange(0, height * stride, step=stride, dtype=torch.float32, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), dim=1) + stride // 2


def size_ranges(sizes_of_interest: Sequence[float]) -> List[Tuple[float, float]]:
    """``[m0, m1, ...]`` -> ``[(-1, m0), (m0, m1), ..., (m_last, INF)]``, one range per level."""
    bounds = [-1.0] + [float(s) for s in sizes_of_interest] + [INF]
    return list(zip(bounds[:-1], bounds[1:]))


def _in_center_region(
    boxes: Tensor, xs: Tensor, ys: Tensor, level_strides: Tensor, radius: float
) -> Tensor:
    """``(L, G)`` bool: location inside box ``g``'s centre region (clipped to the box)."""
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
    cy = (boxes[:, 1] + boxes[:, 3]) * 0.5
    half = level_strides[:, None] * radius  # (L, 1)
    x0 = torch.maximum(cx[None] - half, boxes[None, :, 0])
    y0 = torch.maximum(cy[None] - half, boxes[None, :, 1])
    x1 = torch.minimum(cx[None] + half, boxes[None, :, 2])
    y1 = torch.minimum(cy[None] + half, boxes[None, :, 3])
    dist = torch.stack((xs[:, None] - x0, ys[:, None] - y0, x1 - xs[:, None], y1 - ys[:, None]), 2)
    return dist.min(dim=2).values > 0


def assign_targets(
    locations: Tensor,
    level_strides: Tensor,
    level_ranges: Tensor,
    gt_boxes: Tensor,
    gt_classes: Tensor,
    num_classes: int,
    *,
    center_sample: bool = True,
    radius: float = 1.5,
) -> Tuple[Tensor, Tensor, Tensor]:
    """The FCOS targets of one image (see the module docstring).

    Args:
        locations: ``(L, 2)`` ``(x, y)`` of every location of every level.
        level_strides: ``(L,)`` the stride of each location's level.
        level_ranges: ``(L, 2)`` the size range ``(low, high)`` of each location's level.
        gt_boxes: ``(G, 4)`` ``(x0, y0, x1, y1)`` boxes; G may be 0.
        gt_classes: ``(G,)`` classes in ``[0, K)``.
        num_classes: K, the label of background locations.
        center_sample: positives only in the boxes' centre regions.
        radius: half-side of a centre region, in strides.

    Returns:
        labels ``(L,)`` int64 (K for background), distances ``(L, 4)`` (left, top, right,
        bottom) to the assigned box in pixels, and the assigned box's index ``(L,)`` int64
        (meaningful at positives only; 0 elsewhere).
    """
    num_loc = locations.shape[0]
    if gt_boxes.numel() == 0:
        return (
            torch.full((num_loc,), num_classes, dtype=torch.int64, device=locations.device),
            locations.new_zeros((num_loc, 4)),
            torch.zeros((num_loc,), dtype=torch.int64, device=locations.device),
        )
    xs, ys = locations[:, 0], locations[:, 1]
    dist = torch.stack(
        (
            xs[:, None] - gt_boxes[None, :, 0],
            ys[:, None] - gt_boxes[None, :, 1],
            gt_boxes[None, :, 2] - xs[:, None],
            gt_boxes[None, :, 3] - ys[:, None],
        ),
        dim=2,
    )  # (L, G, 4)
    if center_sample:
        inside = _in_center_region(gt_boxes, xs, ys, level_strides, radius)
    else:
        inside = dist.min(dim=2).values > 0
    reach = dist.max(dim=2).values
    in_range = (reach >= level_ranges[:, [0]]) & (reach <= level_ranges[:, [1]])
    areas = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    candidate_area = areas[None].expand(num_loc, -1).clone()
    candidate_area[~(inside & in_range)] = INF
    min_area, gt_index = candidate_area.min(dim=1)
    labels = gt_classes.to(torch.int64)[gt_index]
    labels[min_area == INF] = num_classes
    distances = dist[torch.arange(num_loc, device=locations.device), gt_index]
    return labels, distances, gt_index


def centerness_targets(distances: Tensor) -> Tensor:
    """``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` of ``(P, 4)`` distances, as
    ``(P,)``."""
    if distances.numel() == 0:
        return distances.new_zeros((0,))
    lr = distances[:, [0, 2]]
    tb = distances[:, [1, 3]]
    ratio = (lr.min(dim=1).values / lr.max(dim=1).values) * (
        tb.min(dim=1).values / tb.max(dim=1).values
    )
    return torch.sqrt(ratio)
