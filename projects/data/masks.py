"""Mask conversions the mappers use: RLE to polygons, masks to semantic targets."""

import logging

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.structures import BitMasks, polygons_to_bitmask

logger = logging.getLogger(__name__)

__all__ = ["instances_to_sem_seg", "rle_to_polygons"]


def _decode_rle(segm, height, width):
    rle = segm
    if isinstance(segm["counts"], list):  # uncompressed RLE
        rle = mask_util.frPyObjects(segm, height, width)
    return mask_util.decode(rle).astype(bool)


def rle_to_polygons(segm, height, width, upsample=4):
    """Polygons of the outer contours of an RLE mask.

    Contours are traced on a ``upsample``-times enlarged crop of the mask so the polygons run
    within ``1 / (2 * upsample)`` pixel of the pixel edges (tracing pixel centres would lose
    half a pixel all around). Holes are filled.

    Args:
        segm (dict): COCO RLE (compressed or not).
        height, width (int): image size.

    Returns:
        list[list[float]]: flat [x0, y0, x1, y1, ...] polygons, each of at least 3 points.
    """
    mask = _decode_rle(segm, height, width)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return []
    x0, y0 = xs.min(), ys.min()
    crop = mask[y0 : ys.max() + 1, x0 : xs.max() + 1].astype(np.uint8)
    big = np.kron(crop, np.ones((upsample, upsample), dtype=np.uint8))
    big = np.pad(big, 1)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        pts = contour.reshape(-1, 2).astype(np.float64)
        if len(pts) < 3:
            continue
        pts = (pts - 1 + 0.5) / upsample + np.array([x0, y0])
        polygons.append(pts.reshape(-1).tolist())
    return polygons


def _masks_as_bool(gt_masks, image_hw):
    """(N, H, W) bool numpy array of PolygonMasks / BitMasks."""
    if isinstance(gt_masks, BitMasks):
        return gt_masks.tensor.numpy().astype(bool)
    out = np.zeros((len(gt_masks),) + tuple(image_hw), dtype=bool)
    for i, polys in enumerate(gt_masks.polygons):
        if polys:
            out[i] = polygons_to_bitmask(polys, *image_hw)
    return out


def _segmentation_as_bool(segm, image_hw):
    """A transformed annotation's segmentation (polygons, RLE or array) -> (H, W) bool."""
    if isinstance(segm, list):
        if not segm:
            return np.zeros(image_hw, dtype=bool)
        return polygons_to_bitmask([np.asarray(p) for p in segm], *image_hw)
    if isinstance(segm, dict):
        return _decode_rle(segm, *image_hw)
    return np.asarray(segm).astype(bool)


def instances_to_sem_seg(
    masks, classes, image_hw, *, num_classes, background="last", ignore_value=255, crowd_masks=()
):
    """Semantic target from instance masks.

    Larger instances are painted first, so where instances overlap the smaller one wins (equal
    areas: the later one). Crowd regions are ``ignore_value`` unless an instance covers them.
    Without instances (N = 0, e.g. a crop removed them all) the target is all background apart
    from the crowd regions.

    Args:
        masks (np.ndarray): (N, H, W) bool instance masks; N may be 0.
        classes (np.ndarray): (N,) contiguous class ids in [0, num_classes).
        image_hw (tuple[int, int]): (H, W).
        num_classes (int or None): K; required for ``background="last"``.
        background (str): ``"last"``: background K, things keep their ids; ``"zero"``:
            background 0, things are id + 1.
        ignore_value (int): label of crowd pixels.
        crowd_masks (sequence[np.ndarray]): (H, W) bool masks of crowd regions.

    Returns:
        torch.Tensor: (H, W) int64.
    """
    if background == "last":
        if num_classes is None:
            raise ValueError("background='last' needs num_classes")
        bg, offset = num_classes, 0
    elif background == "zero":
        bg, offset = 0, 1
    else:
        raise ValueError(
            f"INPUT.INSTANCE_SEM_SEG.BACKGROUND must be 'last' or 'zero', got {background!r}"
        )
    sem = np.full(tuple(image_hw), bg, dtype=np.int64)
    for crowd in crowd_masks:
        sem[crowd] = ignore_value
    masks = np.asarray(masks, dtype=bool).reshape((-1,) + tuple(image_hw))
    classes = np.asarray(classes).reshape(-1)
    if len(classes) != len(masks):
        raise ValueError(f"instances_to_sem_seg: {len(masks)} masks but {len(classes)} classes")
    areas = masks.sum(axis=(1, 2))
    for i in np.argsort(-areas, kind="stable"):
        sem[masks[i]] = int(classes[i]) + offset
    return torch.from_numpy(sem)
