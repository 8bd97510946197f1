"""Compose one toy sample: background stuff, occluding textured shapes, annotations, label map.

A sample is a pure function of ``(seed, split, index)``: its generator is seeded with that triple,
so image ``i`` of a split does not depend on how many images the split has.

How annotations stay exact: shapes are placed back to front; visibility is resolved front to back
(each shape keeps the pixels no nearer shape kept), so the final visible masks are disjoint and
each instance is painted on exactly its visible mask. Instances whose visible part is too small or
too occluded are dropped *before* painting (never painted, never annotated). On polygon-format
images each mask is traced to pixel-corner polygons that decode back to it exactly (holes are cut
open); a mask that cannot round-trip is stored as RLE.
"""

import logging
from dataclasses import dataclass, field
from typing import List

import numpy as np
from scipy import ndimage

from .polygons import encode_rle, mask_to_polygons
from .shapes import THING_SHAPES, rasterize_shape
from .textures import STUFF_CLASSES, object_texture, render_stuff

logger = logging.getLogger(__name__)

SPLIT_CODES = {"train": 0, "val": 1}


@dataclass(frozen=True)
class ToyConfig:
    """Content knobs of the generator (changing a default changes the data: bump the version).

    Attributes:
        classes (tuple[str]): names of the thing classes (of ``THING_SHAPES``), in contiguous-id
            order.
        min_size, max_size (int): range of image height and width (each drawn independently).
        max_instances (int): most shapes placed in one image (before visibility filtering).
        empty_prob (float): probability of an image with no shapes.
        min_scale, max_scale (float): range of the shape radius in pixels (log-uniform).
        cluster_prob (float): probability of placing a shape next to a previous one (occlusion).
        min_visible_area (int): fewer visible pixels than this drops the instance.
        min_visible_fraction (float): a smaller visible fraction of its in-image area drops it.
        min_fragment (int): visible fragments smaller than this are given to what lies behind.
        polygon_prob (float): probability that an image stores polygons (else RLE).
        noise_sigma (tuple[float, float]): range of the per-image Gaussian pixel noise.
        hue_cue_prob (float): probability that an object's main colour takes its class's hue.
        hue_jitter (float): standard deviation of that hue around the class's.
        second_hue_prob (float): probability that the pattern's second colour is a shade of the
            main one (else any hue).
        hues (tuple[float] or None): hue of each class; None: each shape's own ``hue``.
        saturation, value (tuple[float, float]): ranges of an object's main colour's HSV
            saturation and value.
        second_saturation (tuple[float, float]): range of the saturation of its pattern's second
            colour.
    """

    classes: tuple = tuple(shape.name for shape in THING_SHAPES)
    min_size: int = 192
    max_size: int = 320
    max_instances: int = 15
    empty_prob: float = 0.08
    min_scale: float = 6.0
    max_scale: float = 70.0
    cluster_prob: float = 0.35
    min_visible_area: int = 16
    min_visible_fraction: float = 0.3
    min_fragment: int = 5
    polygon_prob: float = 0.5
    noise_sigma: tuple = (2.0, 7.0)
    hue_cue_prob: float = 0.6
    hue_jitter: float = 0.05
    second_hue_prob: float = 0.5
    hues: tuple = None
    saturation: tuple = (0.3, 1.0)
    value: tuple = (0.35, 1.0)
    second_saturation: tuple = (0.2, 1.0)

    @property
    def shapes(self):
        """The :class:`ShapeClass` of each class, in contiguous-id order."""
        by_name = {shape.name: shape for shape in THING_SHAPES}
        return tuple(by_name[name] for name in self.classes)

    def hue(self, category):
        """The hue class ``category`` (contiguous index) leans to."""
        return self.hues[category] if self.hues is not None else self.shapes[category].hue


@dataclass
class ToyInstance:
    """One annotated instance of a sample.

    Attributes:
        category (int): contiguous class index into ``THING_SHAPES``.
        mask (np.ndarray): (H, W) bool, the visible pixels (exactly the painted region).
        segmentation (list or dict): COCO polygons or compressed RLE; decodes to ``mask``.
        depth (int): 0 is the front-most kept instance.
        full_area (int): in-image pixels of the whole shape; more than the mask's when occluded.
    """

    category: int
    mask: np.ndarray
    segmentation: object
    depth: int
    full_area: int


@dataclass
class ToySample:
    """One generated image with its annotations.

    Attributes:
        image (np.ndarray): (H, W, 3) uint8 RGB.
        sem_seg (np.ndarray): (H, W) uint8: thing index, or ``len(THING_SHAPES) + stuff index``.
        instances (list[ToyInstance]): back to front.
        mask_format (str): "polygon" or "rle", the image's preferred storage.
    """

    image: np.ndarray
    sem_seg: np.ndarray
    instances: List[ToyInstance] = field(default_factory=list)
    mask_format: str = "rle"


def sample_rng(seed, split, index):
    """The generator of one sample, seeded with (seed, split code, index)."""
    if split not in SPLIT_CODES:
        raise KeyError(f"Unknown toy split {split!r}; expected one of {sorted(SPLIT_CODES)}")
    return np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])


def _place_shapes(rng, height, width, config):
    """Sample shapes back to front: list of (category, full in-image mask, window angle)."""
    if rng.random() < config.empty_prob:
        return []
    count = int(rng.integers(1, config.max_instances + 1))
    placed, centers = [], []
    log_lo, log_hi = np.log(config.min_scale), np.log(config.max_scale)
    shapes = config.shapes
    for _ in range(count):
        category = int(rng.integers(len(shapes)))
        shape = shapes[category]
        scale = float(np.exp(rng.uniform(log_lo, log_hi)))
        if centers and rng.random() < config.cluster_prob:
            ax, ay, a_scale = centers[int(rng.integers(len(centers)))]
            reach = a_scale + scale
            cx = ax + rng.uniform(-reach, reach) * 0.8
            cy = ay + rng.uniform(-reach, reach) * 0.8
        else:
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        angle = float(rng.uniform(0, 2 * np.pi))
        params = shape.sample(rng, scale)
        full = rasterize_shape(shape, params, (cx, cy), scale, angle, height, width)
        centers.append((cx, cy, scale))
        if full.any():
            placed.append((category, full, angle))
    return placed


def _drop_fragments(mask, min_fragment):
    """``mask`` without its 8-connected components smaller than ``min_fragment`` pixels."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_fragment
    keep[0] = False
    return keep[labels]


def _resolve_visibility(placed, config):
    """Visible masks, front to back; drops instances that are too small or too occluded.

    Returns:
        list of (category, visible mask, full mask, angle), back to front.
    """
    covered = np.zeros_like(placed[0][1]) if placed else None
    kept = []
    for category, full, angle in reversed(placed):
        visible = _drop_fragments(full & ~covered, config.min_fragment)
        area = int(visible.sum())
        if area < config.min_visible_area or area < config.min_visible_fraction * full.sum():
            continue
        covered |= visible
        kept.append((category, visible, full, angle))
    kept.reverse()
    return kept


def _paint(rng, image, full, visible, category, angle, config):
    ys, xs = np.nonzero(full)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    texture = object_texture(
        rng,
        y1 - y0,
        x1 - x0,
        config.hue(category),
        angle,
        cue_prob=config.hue_cue_prob,
        jitter=config.hue_jitter,
        second_hue_prob=config.second_hue_prob,
        saturation=config.saturation,
        value=config.value,
        second_saturation=config.second_saturation,
    )
    window = visible[y0:y1, x0:x1]
    image[y0:y1, x0:x1][window] = texture[window]


def render_sample(seed, split, index, config=None):
    """Generate one sample.

    Args:
        seed (int): dataset seed.
        split (str): "train" or "val".
        index (int): image index within the split.
        config (ToyConfig): content knobs (default: ``ToyConfig()``).

    Returns:
        ToySample: the image, its label map and its instances (masks equal the painted regions).
    """
    config = config or ToyConfig()
    rng = sample_rng(seed, split, index)
    height, width = (int(v) for v in rng.integers(config.min_size, config.max_size + 1, size=2))
    image, stuff = render_stuff(rng, height, width)
    sem_seg = (stuff + len(config.classes)).astype(np.uint8)
    mask_format = "polygon" if rng.random() < config.polygon_prob else "rle"
    kept = _resolve_visibility(_place_shapes(rng, height, width, config), config)
    instances = []
    for depth, (category, visible, full, angle) in zip(range(len(kept) - 1, -1, -1), kept):
        _paint(rng, image, full, visible, category, angle, config)
        sem_seg[visible] = category
        segmentation = mask_to_polygons(visible) if mask_format == "polygon" else None
        if segmentation is None:
            segmentation = encode_rle(visible)
        instances.append(ToyInstance(category, visible, segmentation, depth, int(full.sum())))
    sigma = rng.uniform(*config.noise_sigma)
    image = image + rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return ToySample(image, sem_seg, instances, mask_format)


NUM_SEM_SEG_CLASSES = len(THING_SHAPES) + len(STUFF_CLASSES)
