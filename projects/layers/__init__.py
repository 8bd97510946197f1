"""Pieces two or more methods share (point sampling for PointRend, FastInst, ...; the
self-offset deformable conv of FCOS's towers)."""

from .deformable import OffsetDeformConv2d
from .point_sampling import (
    bilinear_sample_rows,
    point_sample,
    regular_grid_point_coords,
    uncertain_point_coords_on_grid,
    uncertain_point_coords_with_randomness,
)

__all__ = [
    "OffsetDeformConv2d",
    "bilinear_sample_rows",
    "point_sample",
    "regular_grid_point_coords",
    "uncertain_point_coords_on_grid",
    "uncertain_point_coords_with_randomness",
]
