"""Point sampling: features at real-valued points, and where to put the points.

PointRend (Kirillov et al., CVPR 2020) evaluates a head at a few points instead of on a dense
grid; Mask2Former-style matching and losses (FastInst) reuse the same sampling. Points live in
the normalized ``[0, 1] x [0, 1]`` square of the map they index, ``(x, y)`` order, with ``(0, 0)``
the top-left corner of the top-left pixel and ``(1, 1)`` the bottom-right corner of the
bottom-right pixel (``align_corners=False`` semantics).

Shape shorthand: ``N`` maps (images or boxes), ``C`` channels, ``P`` points.
"""

import logging
from typing import Callable, Tuple

import torch
from torch import Tensor
from torch.nn import functional as F

logger = logging.getLogger(__name__)

__all__ = [
    "point_sample",
    "regular_grid_point_coords",
    "uncertain_point_coords_with_randomness",
    "uncertain_point_coords_on_grid",
]


def point_sample(input: Tensor, point_coords: Tensor, **kwargs) -> Tensor:
    """Bilinearly sample ``input`` at points given in ``[0, 1]`` coordinates.

    A thin layer over :func:`torch.nn.functional.grid_sample`, which takes ``[-1, 1]``
    coordinates and a 4-D grid; this also takes a 3-D list of points.

    Args:
        input: feature maps, shape ``(N, C, H, W)``.
        point_coords: ``(x, y)`` points in ``[0, 1]``, shape ``(N, P, 2)`` or
            ``(N, Hg, Wg, 2)``.
        **kwargs: passed to ``grid_sample`` (``mode``, ``padding_mode``, ``align_corners``).
            Callers in this project pass ``align_corners=False``.

    Returns:
        Tensor: the sampled values, shape ``(N, C, P)`` for 3-D ``point_coords``, else
        ``(N, C, Hg, Wg)``.
    """
    if point_coords.dim() not in (3, 4) or point_coords.shape[-1] != 2:
        raise ValueError(
            "point_coords must have shape (N, P, 2) or (N, Hg, Wg, 2), "
            f"got {tuple(point_coords.shape)}"
        )
    grid = point_coords.unsqueeze(2) if point_coords.dim() == 3 else point_coords
    output = F.grid_sample(input, 2.0 * grid - 1.0, **kwargs)
    return output.squeeze(3) if point_coords.dim() == 3 else output


def regular_grid_point_coords(num_grids: int, side: int, device: torch.device) -> Tensor:
    """Centers of the cells of a ``side x side`` grid over the unit square.

    Args:
        num_grids: how many copies to return (one per box or image).
        side: cells per side.
        device: device of the result.

    Returns:
        Tensor: shape ``(num_grids, side * side, 2)``, ``(x, y)`` in row-major cell order
        (x varies fastest), so ``.view(num_grids, side, side, 2)`` is the grid. The copies share
        memory (an expanded view).
    """
    # The cell centers through affine_grid: identical, bit for bit, to the coordinates
    # Detectron2's point sampling uses, so pretrained models give identical results.
    theta = torch.tensor([[[0.5, 0.0, 0.5], [0.0, 0.5, 0.5]]], device=device)
    grid = F.affine_grid(theta, [1, 1, side, side], align_corners=False)
    return grid.view(1, side * side, 2).expand(num_grids, -1, -1)


def uncertain_point_coords_with_randomness(
    coarse_logits: Tensor,
    uncertainty_func: Callable[[Tensor], Tensor],
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
) -> Tensor:
    """Training points biased towards uncertain regions (PointRend, Sec. 3.1).

    Draws ``kP`` uniform points (``k = oversample_ratio``), keeps the ``beta * P`` most uncertain
    of them (``beta = importance_sample_ratio``) and adds ``(1 - beta) * P`` fresh uniform points.
    Uncertainty is computed on the logits *interpolated at the points*, not interpolated from an
    uncertainty map: halfway between logits -1 and +1 the interpolated logit is 0, the most
    uncertain value, while both neighbours are fairly certain.

    Random numbers are drawn in this order: ``torch.rand(N, kP, 2)``, then
    ``torch.rand(N, P - beta * P, 2)`` (skipped if empty), as Detectron2's PointRend does, so a
    seeded run reproduces its points.

    Args:
        coarse_logits: shape ``(N, C, H, W)``.
        uncertainty_func: maps point logits ``(N, C, kP)`` to uncertainties ``(N, 1, kP)``,
            larger meaning more uncertain.
        num_points: ``P``, points per map.
        oversample_ratio: ``k >= 1``.
        importance_sample_ratio: ``beta`` in ``[0, 1]``.

    Returns:
        Tensor: point coordinates in ``[0, 1]``, shape ``(N, P, 2)``; the importance-sampled
        points come first.
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0.0 <= importance_sample_ratio <= 1.0:
        raise ValueError(
            f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}"
        )
    num_maps, device = coarse_logits.shape[0], coarse_logits.device
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain

    candidates = torch.rand(num_maps, num_sampled, 2, device=device)
    point_logits = point_sample(coarse_logits, candidates, align_corners=False)
    uncertainties = uncertainty_func(point_logits)[:, 0, :]  # (N, kP)
    top = torch.topk(uncertainties, k=num_uncertain, dim=1)[1]  # (N, beta * P)
    coords = torch.gather(candidates, 1, top.unsqueeze(2).expand(-1, -1, 2))
    if num_random > 0:
        coords = torch.cat([coords, torch.rand(num_maps, num_random, 2, device=device)], dim=1)
    return coords


def uncertain_point_coords_on_grid(
    uncertainty_map: Tensor, num_points: int
) -> Tuple[Tensor, Tensor]:
    """The ``num_points`` most uncertain cells of a regular grid (adaptive subdivision).

    Args:
        uncertainty_map: shape ``(N, 1, H, W)``, larger meaning more uncertain.
        num_points: ``P``; capped at ``H * W``.

    Returns:
        tuple[Tensor, Tensor]: flat cell indices in ``[0, H * W)``, shape ``(N, P)``, and the
        cell centers in ``[0, 1]``, ``(x, y)``, shape ``(N, P, 2)``.
    """
    num_maps, _, height, width = uncertainty_map.shape
    num_points = min(height * width, num_points)
    indices = torch.topk(uncertainty_map.view(num_maps, height * width), k=num_points, dim=1)[1]
    # Half a step plus a whole number of steps (Detectron2's arithmetic, bit for bit).
    w_step, h_step = 1.0 / float(width), 1.0 / float(height)
    xs = w_step / 2.0 + (indices % width).to(torch.float) * w_step
    ys = h_step / 2.0 + torch.div(indices, width, rounding_mode="floor").to(torch.float) * h_step
    return indices, torch.stack([xs, ys], dim=2)
