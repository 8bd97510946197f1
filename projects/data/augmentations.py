"""Augmentations shared by the methods: large-scale jitter (LSJ) and YOLACT's SSD-style pipeline.

Every class follows Detectron2's ``Augmentation`` (samples parameters) / ``Transform`` (applies
them deterministically) split, so images, boxes, polygons, bitmasks and semantic maps stay
consistent, and Detectron2's ``transform_instance_annotations`` works on the returned transforms.
All are plain attribute holders, hence picklable (data-loader workers).

Crops here clip polygons themselves: Detectron2 v0.6's ``CropTransform.apply_polygons`` needs
``shapely``, which the project does not depend on. Padding and canvases fill segmentation
(bitmasks, label maps) with 0; mappers that need "ignore" in padded areas transform an all-ones
validity map alongside (see ``projects.data.mappers``).

Recipes: :func:`build_augmentations` builds the list of the recipe named by
``cfg.INPUT.AUGMENTATIONS_NAME`` in
:data:`~projects.data.augmentation_registry.AUGMENTATION_REGISTRY`; the built-in ones, registered
here, are ``"default"``, ``"lsj"``, ``"ssd"`` and ``"semantic"``.
"""

import logging

import cv2
import numpy as np
from detectron2.data import transforms as T
from fvcore.transforms.transform import Transform, TransformList
from PIL import Image

from .augmentation_registry import (
    AUGMENTATION_REGISTRY,
    build_augmentations,
    input_size_keys,
    may_drop_instances,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ClipCropTransform",
    "CanvasTransform",
    "PhotometricTransform",
    "ResizeScale",
    "FixedSizeCrop",
    "Expand",
    "MinIoURandomCrop",
    "PhotometricDistortion",
    "RandomCropNoShapely",
    "ResizeShortestEdge",
    "AUGMENTATION_REGISTRY",
    "build_augmentations",
    "centre_keep_mask",
    "has_crop",
]


# ---------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------
def _clip_half_plane(poly, axis, bound, keep_below):
    """Sutherland-Hodgman step: keep the part of ``poly`` (N, 2) on one side of a line."""
    inside = poly[:, axis] <= bound if keep_below else poly[:, axis] >= bound
    if inside.all():
        return poly
    if not inside.any():
        return poly[:0]
    out = []
    for i in range(len(poly)):
        cur, prev = poly[i], poly[i - 1]
        if inside[i] != inside[i - 1]:
            t = (bound - prev[axis]) / (cur[axis] - prev[axis])
            point = prev + t * (cur - prev)
            point[axis] = bound
            out.append(point)
        if inside[i]:
            out.append(cur)
    return np.asarray(out, dtype=poly.dtype).reshape(-1, 2)


def clip_polygon(poly, width, height):
    """Clip a polygon to the box [0, width] x [0, height].

    Args:
        poly (np.ndarray): (N, 2) float vertices (x, y).
        width, height (float): the clip box.

    Returns:
        np.ndarray: (M, 2) clipped vertices; M may be 0. A concave polygon cut into several
        pieces stays one polygon joined along the box edge (zero-area bridges), which
        rasterizes to the same pixels.
    """
    poly = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    for axis, bound, keep_below in ((0, 0.0, False), (0, width, True), (1, 0.0, False)):
        poly = _clip_half_plane(poly, axis, bound, keep_below)
        if len(poly) == 0:
            return poly
    return _clip_half_plane(poly, 1, height, True)


class ClipCropTransform(Transform):
    """Crop the window (x0, y0, w, h); polygons are clipped to it (no shapely needed).

    Args:
        x0, y0 (int): top-left corner of the window in the input image.
        w, h (int): window size; must lie inside the input image.
        keep_centres_only (bool): marks an SSD crop: instances whose box centre falls outside the
            window are to be dropped (see :func:`centre_keep_mask`); the transform itself cannot
            drop annotations.
    """

    def __init__(self, x0: int, y0: int, w: int, h: int, keep_centres_only: bool = False):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img, interp=None):
        return img[self.y0 : self.y0 + self.h, self.x0 : self.x0 + self.w]

    def apply_segmentation(self, segmentation):
        return self.apply_image(segmentation)

    def apply_coords(self, coords):
        coords[:, 0] -= self.x0
        coords[:, 1] -= self.y0
        return coords

    def apply_polygons(self, polygons):
        out = []
        for poly in polygons:
            shifted = self.apply_coords(np.asarray(poly, dtype=np.float64).reshape(-1, 2).copy())
            clipped = clip_polygon(shifted, self.w, self.h)
            if len(clipped) >= 3:
                out.append(clipped)
        return out


class CanvasTransform(Transform):
    """Place the image at (x0, y0) on a (canvas_h, canvas_w) canvas filled with ``fill``.

    Covers padding (x0 = y0 = 0) and SSD's Expand. Segmentation is filled with 0.

    Args:
        x0, y0 (int): position of the image's top-left corner on the canvas.
        canvas_w, canvas_h (int): canvas size, at least the image size plus the offset.
        fill (float or sequence[float]): image fill value, scalar or one per channel.
    """

    def __init__(self, x0: int, y0: int, canvas_w: int, canvas_h: int, fill=0.0):
        super().__init__()
        self._set_attributes(locals())

    def _place(self, img, fill):
        h, w = img.shape[:2]
        if self.x0 + w > self.canvas_w or self.y0 + h > self.canvas_h:
            raise ValueError(
                f"CanvasTransform: image {w}x{h} at ({self.x0}, {self.y0}) does not fit the "
                f"{self.canvas_w}x{self.canvas_h} canvas"
            )
        canvas = np.empty((self.canvas_h, self.canvas_w) + img.shape[2:], dtype=img.dtype)
        canvas[...] = np.asarray(fill).astype(img.dtype)
        canvas[self.y0 : self.y0 + h, self.x0 : self.x0 + w] = img
        return canvas

    def apply_image(self, img, interp=None):
        fill = np.asarray(self.fill, dtype=np.float64)
        if fill.ndim == 1 and img.ndim == 3 and len(fill) != img.shape[2]:
            raise ValueError(
                f"CanvasTransform: {len(fill)} fill values for {img.shape[2]} channels"
            )
        if fill.ndim == 1 and img.ndim == 2:
            fill = fill.mean()
        if np.issubdtype(img.dtype, np.integer):
            fill = np.clip(np.round(fill), 0, np.iinfo(img.dtype).max)
        return self._place(img, fill)

    def apply_segmentation(self, segmentation):
        return self._place(segmentation, 0)

    def apply_coords(self, coords):
        coords[:, 0] += self.x0
        coords[:, 1] += self.y0
        return coords


class PhotometricTransform(Transform):
    """SSD photometric distortion with fixed, already-sampled parameters.

    Order: brightness, [contrast], saturation, hue, [contrast] (contrast first or last). A
    parameter of None skips its step. Geometry is unchanged.

    Args:
        brightness (float or None): added to every pixel (0-255 scale).
        contrast (float or None): pixel multiplier.
        contrast_first (bool): apply contrast before the HSV steps, else after.
        saturation (float or None): multiplier of HSV saturation.
        hue (float or None): degrees added to HSV hue (wraps at 360).
        image_format (str): "BGR", "RGB" or "L" (no saturation/hue for "L").
    """

    def __init__(
        self,
        brightness=None,
        contrast=None,
        contrast_first=True,
        saturation=None,
        hue=None,
        image_format="BGR",
    ):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img, interp=None):
        dtype = img.dtype
        x = img.astype(np.float32)
        if self.brightness is not None:
            x = np.clip(x + self.brightness, 0, 255)
        if self.contrast is not None and self.contrast_first:
            x = np.clip(x * self.contrast, 0, 255)
        if self.image_format in ("BGR", "RGB") and (
            self.saturation is not None or self.hue is not None
        ):
            to_hsv, from_hsv = (
                (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR)
                if self.image_format == "BGR"
                else (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB)
            )
            hsv = cv2.cvtColor(np.ascontiguousarray(x), to_hsv)  # H in [0, 360), S in [0, 1]
            if self.saturation is not None:
                hsv[..., 1] = np.clip(hsv[..., 1] * self.saturation, 0, 1)
            if self.hue is not None:
                hsv[..., 0] = np.mod(hsv[..., 0] + self.hue, 360.0)
            x = np.clip(cv2.cvtColor(hsv, from_hsv), 0, 255)
        if self.contrast is not None and not self.contrast_first:
            x = np.clip(x * self.contrast, 0, 255)
        if np.issubdtype(dtype, np.integer):
            x = np.round(x)
        return x.astype(dtype)

    def apply_coords(self, coords):
        return coords

    def apply_segmentation(self, segmentation):
        return segmentation


# ---------------------------------------------------------------------------------------------
# Augmentations
# ---------------------------------------------------------------------------------------------
class ResizeScale(T.Augmentation):
    """Resize so the image fits a randomly scaled target box, keeping the aspect ratio (LSJ).

    A scale s ~ U(min_scale, max_scale) sets the box (s * target_height, s * target_width);
    the image is resized by min(box_h / h, box_w / w).
    """

    def __init__(self, min_scale, max_scale, target_height, target_width, interp=Image.BILINEAR):
        super().__init__()
        if not 0 < min_scale <= max_scale:
            raise ValueError(
                f"ResizeScale needs 0 < min_scale <= max_scale, got {min_scale}, {max_scale}"
            )
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        scale = np.random.uniform(self.min_scale, self.max_scale)
        factor = min(scale * self.target_height / h, scale * self.target_width / w)
        new_h, new_w = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
        return T.ResizeTransform(h, w, new_h, new_w, self.interp)


class ResizeShortestEdge(T.ResizeShortestEdge):
    """Detectron2's ``ResizeShortestEdge``, except that no side is ever resized to 0 pixels.

    Detectron2 rounds the short side of an image more elongated than ``2 * max_size : 1`` (a
    16 x 4000 image with ``max_size`` 64) to 0 pixels, and the resize then fails with a bare
    "height and width must be > 0"; here that side is 1 pixel.
    """

    def get_transform(self, image):
        transform = super().get_transform(image)
        if isinstance(transform, T.ResizeTransform) and min(transform.new_h, transform.new_w) < 1:
            t = transform
            transform = T.ResizeTransform(t.h, t.w, max(t.new_h, 1), max(t.new_w, 1), t.interp)
        return transform


class FixedSizeCrop(T.Augmentation):
    """Randomly crop to ``crop_size`` where the image is larger, then pad bottom/right (LSJ).

    Args:
        crop_size (tuple[int, int]): output (height, width).
        pad (bool): pad smaller images up to ``crop_size``; otherwise they stay smaller.
        pad_value (float or sequence[float]): image padding value (segmentation gets 0).
    """

    def __init__(self, crop_size, pad=True, pad_value=128.0):
        super().__init__()
        crop_size = tuple(int(s) for s in crop_size)
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        out_h, out_w = min(h, self.crop_size[0]), min(w, self.crop_size[1])
        y0 = int(round(np.random.uniform(0, h - out_h)))
        x0 = int(round(np.random.uniform(0, w - out_w)))
        transforms = [ClipCropTransform(x0, y0, out_w, out_h)]
        if self.pad and (out_h, out_w) != self.crop_size:
            transforms.append(
                CanvasTransform(0, 0, self.crop_size[1], self.crop_size[0], self.pad_value)
            )
        return TransformList(transforms)


class Expand(T.Augmentation):
    """SSD zoom-out: with probability ``prob`` put the image on a larger ``fill`` canvas.

    The canvas is ``r`` times the image (r ~ U(1, max_ratio)); the image's position is uniform.

    Args:
        fill (float or sequence[float]): canvas colour (the pixel mean, in the image's format).
        max_ratio (float): largest canvas / image side ratio (>= 1).
        prob (float): probability of expanding.
    """

    def __init__(self, fill, max_ratio=4.0, prob=0.5):
        super().__init__()
        if max_ratio < 1:
            raise ValueError(f"Expand max_ratio must be >= 1, got {max_ratio}")
        self._init(locals())

    def get_transform(self, image):
        if np.random.uniform() >= self.prob:
            return T.NoOpTransform()
        h, w = image.shape[:2]
        ratio = np.random.uniform(1.0, self.max_ratio)
        canvas_h, canvas_w = int(h * ratio), int(w * ratio)
        y0 = int(np.random.uniform(0, canvas_h - h))
        x0 = int(np.random.uniform(0, canvas_w - w))
        return CanvasTransform(x0, y0, canvas_w, canvas_h, self.fill)


def _iou_with_boxes(patch, boxes):
    """IoU of one XYXY ``patch`` with each of ``boxes`` (N, 4) -> (N,)."""
    iw = np.clip(np.minimum(patch[2], boxes[:, 2]) - np.maximum(patch[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(patch[3], boxes[:, 3]) - np.maximum(patch[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    area_p = (patch[2] - patch[0]) * (patch[3] - patch[1])
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area_p + area_b - inter, 1e-12)


class MinIoURandomCrop(T.Augmentation):
    """SSD random crop: the patch has at least a sampled IoU with every box.

    Each call picks one option among: keep the image, each of ``min_ious``, and "any" (no IoU
    constraint). For an IoU option it tries up to ``max_trials`` patches with sides in
    [min_crop_size, 1] of the image and aspect ratio h / w in [0.5, 2]; a patch is accepted when
    its minimum IoU with the boxes reaches the option and at least one box centre lies inside.
    Boxes whose centre falls outside the accepted patch are to be dropped by the mapper
    (:func:`centre_keep_mask`). Without boxes any patch is accepted.

    Args:
        min_ious (sequence[float]): IoU options (SSD: 0.1, 0.3, 0.7, 0.9).
        min_crop_size (float): smallest patch side as a fraction of the image side.
        max_trials (int): patches tried per option before another option is drawn.
        max_rounds (int): options drawn before giving up (returns the image uncropped).
        keep_original (bool): include the "keep the image" option (SSD: yes).
        allow_any (bool): include the "any patch" option (SSD: yes).
    """

    def __init__(
        self,
        min_ious=(0.1, 0.3, 0.7, 0.9),
        min_crop_size=0.3,
        max_trials=50,
        max_rounds=20,
        keep_original=True,
        allow_any=True,
    ):
        super().__init__()
        min_ious = tuple(float(v) for v in min_ious)
        options = ((None,) if keep_original else ()) + min_ious + ((-np.inf,) if allow_any else ())
        if not options:
            raise ValueError("MinIoURandomCrop needs at least one option")
        self._init(locals())

    def get_transform(self, image, boxes):
        h, w = image.shape[:2]
        boxes = np.zeros((0, 4)) if boxes is None else np.asarray(boxes, dtype=np.float64)
        boxes = boxes.reshape(-1, 4)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        for _ in range(self.max_rounds):
            min_iou = self.options[np.random.randint(len(self.options))]
            if min_iou is None:
                return T.NoOpTransform()
            for _ in range(self.max_trials):
                new_w = np.random.uniform(self.min_crop_size * w, w)
                new_h = np.random.uniform(self.min_crop_size * h, h)
                if not 0.5 <= new_h / new_w <= 2:
                    continue
                x0, y0 = int(np.random.uniform(0, w - new_w)), int(np.random.uniform(0, h - new_h))
                x1, y1 = int(x0 + new_w), int(y0 + new_h)
                if x1 <= x0 or y1 <= y0:
                    continue
                patch = np.array([x0, y0, x1, y1], dtype=np.float64)
                if len(boxes):
                    if _iou_with_boxes(patch, boxes).min() < min_iou:
                        continue
                    inside = (
                        (centres[:, 0] > x0)
                        & (centres[:, 0] < x1)
                        & (centres[:, 1] > y0)
                        & (centres[:, 1] < y1)
                    )
                    if not inside.any():
                        continue
                return ClipCropTransform(x0, y0, x1 - x0, y1 - y0, keep_centres_only=True)
        return T.NoOpTransform()


class PhotometricDistortion(T.Augmentation):
    """SSD/YOLACT photometric distortion; each step applied with probability 1/2.

    Random brightness (delta ~ U(-32, 32)), then contrast either first or last (coin flip),
    with saturation and hue in between: contrast and saturation factors ~ U(0.5, 1.5), hue delta
    ~ U(-18, 18) degrees.

    Args:
        image_format (str): "BGR", "RGB" or "L" (no saturation/hue for "L").
    """

    def __init__(
        self,
        image_format="BGR",
        brightness_delta=32.0,
        contrast_range=(0.5, 1.5),
        saturation_range=(0.5, 1.5),
        hue_delta=18.0,
    ):
        super().__init__()
        if image_format not in ("BGR", "RGB", "L"):
            raise ValueError(f"PhotometricDistortion supports BGR, RGB, L; got {image_format!r}")
        self._init(locals())

    def get_transform(self, image):
        def maybe(sample):
            return sample() if np.random.randint(2) else None

        u = np.random.uniform
        return PhotometricTransform(
            brightness=maybe(lambda: u(-self.brightness_delta, self.brightness_delta)),
            contrast=maybe(lambda: u(*self.contrast_range)),
            contrast_first=bool(np.random.randint(2)),
            saturation=maybe(lambda: u(*self.saturation_range)),
            hue=maybe(lambda: u(-self.hue_delta, self.hue_delta)),
            image_format=self.image_format,
        )


class RandomCropNoShapely(T.RandomCrop):
    """Detectron2's ``RandomCrop`` (INPUT.CROP.*) with a crop that clips polygons itself."""

    def get_transform(self, image):
        crop = super().get_transform(image)
        return ClipCropTransform(crop.x0, crop.y0, crop.w, crop.h)


# ---------------------------------------------------------------------------------------------
# Helpers for mappers and the recipes
# ---------------------------------------------------------------------------------------------
def _flatten(transforms):
    if isinstance(transforms, TransformList):
        return [t for sub in transforms.transforms for t in _flatten(sub)]
    return [transforms]


def centre_keep_mask(transforms, boxes_xyxy, image_hw):
    """Which boxes survive an SSD crop: their transformed centre lies inside the output image.

    Args:
        transforms (Transform or TransformList): what the augmentations returned.
        boxes_xyxy (np.ndarray): (N, 4) boxes in the input image.
        image_hw (tuple[int, int]): output (height, width).

    Returns:
        np.ndarray: (N,) bool; all True when no transform asks for centre filtering.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    if not any(getattr(t, "keep_centres_only", False) for t in _flatten(transforms)):
        return np.ones(len(boxes), dtype=bool)
    centres = transforms.apply_coords((boxes[:, :2] + boxes[:, 2:]) / 2)
    h, w = image_hw
    return (centres[:, 0] >= 0) & (centres[:, 0] < w) & (centres[:, 1] >= 0) & (centres[:, 1] < h)


def has_crop(augmentations):
    """Whether any augmentation may crop objects (then boxes are recomputed from masks)."""
    return any(
        isinstance(
            a,
            (FixedSizeCrop, MinIoURandomCrop, T.RandomCrop, T.RandomCrop_CategoryAreaConstraint),
        )
        for a in augmentations
    )


def _flip(cfg):
    mode = cfg.INPUT.RANDOM_FLIP
    if mode == "none":
        return []
    return [T.RandomFlip(horizontal=mode == "horizontal", vertical=mode == "vertical")]


# The keys of Detectron2's ResizeShortestEdge recipes.
_RESIZE_KEYS = (
    "INPUT.MIN_SIZE_TRAIN",
    "INPUT.MAX_SIZE_TRAIN",
    "INPUT.MIN_SIZE_TEST",
    "INPUT.MAX_SIZE_TEST",
)


def _train_resize(cfg):
    return [
        ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    ]


def _test_resize(cfg):
    return [ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]


# ---------------------------------------------------------------------------------------------
# Recipes (INPUT.AUGMENTATIONS_NAME), registered under their function names
# ---------------------------------------------------------------------------------------------
@AUGMENTATION_REGISTRY.register()
@input_size_keys(*_RESIZE_KEYS)
@may_drop_instances(lambda cfg: cfg.INPUT.CROP.ENABLED)
def default(cfg, is_train):
    """Detectron2's ``build_augmentation`` with :class:`ResizeShortestEdge`: train: INPUT.CROP if
    enabled, ResizeShortestEdge, RandomFlip; test: ResizeShortestEdge. The semantic mapper takes
    :func:`semantic` for ``"default"``."""
    if not is_train:
        return _test_resize(cfg)
    augs = _train_resize(cfg) + _flip(cfg)
    if cfg.INPUT.CROP.ENABLED:
        augs.insert(0, RandomCropNoShapely(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    return augs


@AUGMENTATION_REGISTRY.register()
@input_size_keys("INPUT.LSJ.IMAGE_SIZE", "INPUT.MIN_SIZE_TEST", "INPUT.MAX_SIZE_TEST")
@may_drop_instances(lambda cfg: True)
def lsj(cfg, is_train):
    """Large-scale jitter: RandomFlip, ResizeScale(INPUT.LSJ.MIN_SCALE..MAX_SCALE of IMAGE_SIZE),
    then FixedSizeCrop(IMAGE_SIZE, pad with INPUT.LSJ.PAD_VALUE); test: ResizeShortestEdge."""
    if not is_train:
        return _test_resize(cfg)
    size = cfg.INPUT.LSJ.IMAGE_SIZE
    return _flip(cfg) + [
        ResizeScale(cfg.INPUT.LSJ.MIN_SCALE, cfg.INPUT.LSJ.MAX_SCALE, size, size),
        FixedSizeCrop((size, size), pad=True, pad_value=cfg.INPUT.LSJ.PAD_VALUE),
    ]


@AUGMENTATION_REGISTRY.register()
@input_size_keys("INPUT.SSD.SIZE")
@may_drop_instances(lambda cfg: True)
def ssd(cfg, is_train):
    """YOLACT's SSD pipeline: PhotometricDistortion, Expand(MODEL.PIXEL_MEAN), MinIoURandomCrop,
    RandomFlip, Resize to INPUT.SSD.SIZE squared (with INPUT.SSD.KEEP_ASPECT: the long side to
    INPUT.SSD.SIZE, the aspect ratio kept; batches are padded); test: the resize only."""
    size = cfg.INPUT.SSD.SIZE
    if cfg.INPUT.SSD.KEEP_ASPECT:
        resize = [ResizeShortestEdge(size, size, "choice")]
    else:
        resize = [T.Resize((size, size))]
    if not is_train:
        return resize
    fmt = cfg.INPUT.FORMAT
    photometric = [PhotometricDistortion(fmt)] if fmt in ("BGR", "RGB", "L") else []
    return (
        photometric
        + [
            Expand(
                list(cfg.MODEL.PIXEL_MEAN),
                cfg.INPUT.SSD.EXPAND_MAX_RATIO,
                cfg.INPUT.SSD.EXPAND_PROB,
            ),
            MinIoURandomCrop(cfg.INPUT.SSD.MIN_IOUS, cfg.INPUT.SSD.MIN_CROP_SIZE),
        ]
        + _flip(cfg)
        + resize
    )


@AUGMENTATION_REGISTRY.register()
@input_size_keys(*_RESIZE_KEYS)
@may_drop_instances(lambda cfg: cfg.INPUT.CROP.ENABLED)
def semantic(cfg, is_train):
    """Detectron2's semantic-segmentation recipe (``build_sem_seg_train_aug`` of its PointRend and
    DeepLab projects): ResizeShortestEdge, then INPUT.CROP if enabled (a crop of the resized image
    in which no category covers more than INPUT.CROP.SINGLE_CATEGORY_MAX_AREA, ignore label aside;
    10 tries), PhotometricDistortion (SSD colours) if INPUT.COLOR_AUG_SSD, RandomFlip; test:
    ResizeShortestEdge."""
    if not is_train:
        return _test_resize(cfg)
    augs = _train_resize(cfg)
    if cfg.INPUT.CROP.ENABLED:
        augs.append(
            T.RandomCrop_CategoryAreaConstraint(
                cfg.INPUT.CROP.TYPE,
                cfg.INPUT.CROP.SIZE,
                cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            )
        )
    if cfg.INPUT.COLOR_AUG_SSD:
        augs.append(PhotometricDistortion(cfg.INPUT.FORMAT))
    return augs + _flip(cfg)
