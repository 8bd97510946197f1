"""Pieces two or more methods share (point sampling for PointRend, FastInst, ...)."""

from .point_sampling import (
    bilinear_sample_rows,
    point_sample,
    regular_grid_point_coords,
    uncertain_point_coords_on_grid,
    uncertain_point_coords_with_randomness,
)

__all__ = [
    "bilinear_sample_rows",
    "point_sample",
    "regular_grid_point_coords",
    "uncertain_point_coords_on_grid",
    "uncertain_point_coords_with_randomness",
]
