"""The thing classes of the toy dataset: shapes with curves, thin parts and holes.

A shape lives in normalised, object-aligned coordinates ``(u, v)``: the object's centre is the
origin, its rotation is undone and its scale ``s`` (pixels) divides distances, so every shape fits
in the disk of radius :data:`EXTENT`. Each class has a parameter sampler (parameters may depend on
the scale, e.g. to keep thin parts at least ~1 px thick) and an inside test.
"""

import logging
from dataclasses import dataclass
from typing import Callable, Dict

import numpy as np

logger = logging.getLogger(__name__)

# Every shape lies inside |(u, v)| <= EXTENT.
EXTENT = 1.45


@dataclass(frozen=True)
class ShapeClass:
    """One thing class.

    Attributes:
        name (str): class name written to the COCO categories.
        dataset_id (int): COCO category id (deliberately not contiguous, like COCO's).
        hue (float): colour the class leans to (a weak cue; shape decides the class).
        sample (Callable): ``sample(rng, scale) -> dict`` of shape parameters.
        inside (Callable): ``inside(u, v, params) -> bool array`` of the shape's pixels.
    """

    name: str
    dataset_id: int
    hue: float
    sample: Callable[[np.random.Generator, float], Dict[str, float]]
    inside: Callable[[np.ndarray, np.ndarray, Dict[str, float]], np.ndarray]


def _ring_sample(rng, scale):
    inner = min(rng.uniform(0.45, 0.72), 1.0 - 2.0 / scale)
    return {"inner": inner, "aspect": rng.uniform(0.7, 1.0)}


def _ring_inside(u, v, p):
    r = np.sqrt(u**2 + (v / p["aspect"]) ** 2)
    return (r < 1.0) & (r > p["inner"])


def _crescent_sample(rng, scale):
    return {"offset": rng.uniform(0.3, 0.6), "bite": rng.uniform(0.75, 0.95)}


def _crescent_inside(u, v, p):
    return (u**2 + v**2 < 1.0) & ((u - p["offset"]) ** 2 + v**2 > p["bite"] ** 2)


def _star_sample(rng, scale):
    return {"points": int(rng.integers(4, 8)), "inner": rng.uniform(0.35, 0.55)}


def _star_inside(u, v, p):
    n, inner = p["points"], p["inner"]
    sector = 2 * np.pi / n
    phi = np.mod(np.arctan2(v, u), sector)
    phi = np.minimum(phi, sector - phi)  # fold onto [0, sector / 2]
    # Edge from the outer tip (1, 0) to the inner corner at angle sector / 2: a ray at angle phi
    # meets it at t = (P0 x P1) / (d x (P1 - P0)).
    p1x, p1y = inner * np.cos(sector / 2), inner * np.sin(sector / 2)
    cross_p0_p1 = p1y
    denom = np.cos(phi) * p1y - np.sin(phi) * (p1x - 1.0)
    return np.hypot(u, v) < cross_p0_p1 / denom


def _ellipse_sample(rng, scale):
    return {"minor": rng.uniform(0.4, 0.75)}


def _ellipse_inside(u, v, p):
    return u**2 + (v / p["minor"]) ** 2 < 1.0


def _bar_sample(rng, scale):
    return {"half_width": max(rng.uniform(0.07, 0.14), 1.0 / scale), "bend": rng.uniform(-0.4, 0.4)}


def _bar_inside(u, v, p):
    return (np.abs(v - p["bend"] * u**2) < p["half_width"]) & (np.abs(u) < 1.0)


def _blob_sample(rng, scale):
    params = {"base": 0.78}
    for k in range(2, 6):
        params[f"amp{k}"] = rng.uniform(0.0, 0.13)
        params[f"phase{k}"] = rng.uniform(0, 2 * np.pi)
    return params


def _blob_inside(u, v, p):
    phi = np.arctan2(v, u)
    radius = np.full_like(u, p["base"])
    for k in range(2, 6):
        radius += p[f"amp{k}"] * np.cos(k * phi + p[f"phase{k}"])
    return np.hypot(u, v) < radius


def _dumbbell_sample(rng, scale):
    left = rng.uniform(0.3, 0.42)
    return {
        "left": left,
        "right": left * rng.uniform(0.7, 1.0),
        "half_width": max(rng.uniform(0.06, 0.12), 0.9 / scale),
    }


def _dumbbell_inside(u, v, p):
    left, right = p["left"], p["right"]
    heads = ((u + 1 - left) ** 2 + v**2 < left**2) | ((u - 1 + right) ** 2 + v**2 < right**2)
    handle = (np.abs(v) < p["half_width"]) & (u > -1 + left) & (u < 1 - right)
    return heads | handle


THING_SHAPES = (
    ShapeClass("ring", 1, 0.0, _ring_sample, _ring_inside),
    ShapeClass("crescent", 2, 0.14, _crescent_sample, _crescent_inside),
    ShapeClass("star", 4, 0.3, _star_sample, _star_inside),
    ShapeClass("ellipse", 5, 0.48, _ellipse_sample, _ellipse_inside),
    ShapeClass("bar", 7, 0.62, _bar_sample, _bar_inside),
    ShapeClass("blob", 8, 0.76, _blob_sample, _blob_inside),
    ShapeClass("dumbbell", 10, 0.9, _dumbbell_sample, _dumbbell_inside),
)
THING_CLASSES = tuple(shape.name for shape in THING_SHAPES)


def rasterize_shape(shape, params, center, scale, angle, height, width):
    """Pixels of one placed shape (sampled at pixel centres), clipped to the image.

    Args:
        shape (ShapeClass): the class.
        params (dict): from ``shape.sample``.
        center (tuple[float, float]): (x, y) in pixels.
        scale (float): pixels per normalised unit.
        angle (float): rotation in radians.
        height, width (int): image size.

    Returns:
        np.ndarray: (height, width) bool.
    """
    mask = np.zeros((height, width), bool)
    cx, cy = center
    reach = EXTENT * scale + 1
    x0, x1 = max(0, int(cx - reach)), min(width, int(np.ceil(cx + reach)))
    y0, y1 = max(0, int(cy - reach)), min(height, int(np.ceil(cy + reach)))
    if x0 >= x1 or y0 >= y1:
        return mask
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dx * cos + dy * sin) / scale
    v = (-dx * sin + dy * cos) / scale
    mask[y0:y1, x0:x1] = shape.inside(u, v, params)
    return mask


# Contiguous class index == position in THING_SHAPES == rank of the COCO id (Detectron2's mapping),
# and the semantic label maps use the same index.
assert [s.dataset_id for s in THING_SHAPES] == sorted(s.dataset_id for s in THING_SHAPES)
