"""Adaptive subdivision: PointRend's inference from coarse to fine (Sec. 3.1 of the paper)."""

import logging
from typing import Callable, Tuple

import torch
from torch import Tensor
from torch.nn import functional as F

from projects.layers import regular_grid_point_coords, uncertain_point_coords_on_grid

from .uncertainty import instance_mask_uncertainty

logger = logging.getLogger(__name__)

__all__ = ["fold_subdivision_steps", "subdivide_masks"]


def fold_subdivision_steps(resolution: int, steps: int, num_points: int) -> Tuple[int, int]:
    """Replace leading steps that re-predict every cell by a denser initial grid.

    A step on an ``S x S`` grid upsamples to ``2S x 2S``; if ``num_points >= 4 S^2`` every cell
    is re-predicted, so starting on the ``2S`` grid gives the same result for less work
    (7 x 7 with 5 steps of 784 points becomes 28 x 28 with 3 steps).

    Returns:
        tuple[int, int]: initial grid side and remaining steps.
    """
    while 4 * resolution**2 <= num_points:
        resolution, steps = resolution * 2, steps - 1
    if steps < 0:
        raise ValueError(
            f"MODEL.POINT_HEAD.SUBDIVISION_STEPS is too small: folding full steps into the first "
            f"grid needs {-steps} more for SUBDIVISION_NUM_POINTS={num_points}"
        )
    return resolution, steps


def subdivide_masks(
    point_logits_fn: Callable[[Tensor], Tensor],
    num_boxes: int,
    device: torch.device,
    init_resolution: int,
    steps: int,
    num_points: int,
) -> Tensor:
    """Predict per-box masks on a regular grid, then refine the most uncertain cells.

    The point head is evaluated on the ``init_resolution`` square grid; then ``steps`` times the
    logits are upsampled x2 (bilinear) and the ``num_points`` cells with the most uncertain
    (``-|logit|``) logits are predicted again.

    Only each box's own-class logit is carried: uncertainty and the output use no other, and
    bilinear upsampling treats channels independently, so this equals subdividing all classes
    and keeping the box's class at the end (Detectron2's order), for a fraction of the memory
    traffic.

    Args:
        point_logits_fn: maps box-relative points ``(R, P, 2)`` in ``[0, 1]`` to each box's
            own-class logits ``(R, 1, P)``.
        num_boxes: ``R``.
        device: device of the points.
        init_resolution: side of the first grid.
        steps: number of x2 steps.
        num_points: cells re-predicted per step and box.

    Returns:
        Tensor: mask logits ``(R, 1, M, M)``, ``M = init_resolution * 2 ** steps``.
    """
    grid = regular_grid_point_coords(num_boxes, init_resolution, device)
    logits = point_logits_fn(grid).reshape(num_boxes, 1, init_resolution, init_resolution)
    if num_boxes == 0:
        return logits
    for _ in range(steps):
        logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
        indices, point_coords = uncertain_point_coords_on_grid(
            instance_mask_uncertainty(logits, None), num_points
        )
        point_logits = point_logits_fn(point_coords)  # (R, 1, P)
        height, width = logits.shape[-2:]
        logits = logits.view(num_boxes, height * width).scatter_(1, indices, point_logits[:, 0])
        logits = logits.view(num_boxes, 1, height, width)
    return logits
