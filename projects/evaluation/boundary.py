"""Boundary IoU (Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation
Evaluation", CVPR 2021).

The boundary region of a binary mask ``M`` of an ``H x W`` image is the set of mask pixels that lie
within chessboard (L-infinity) distance ``r`` of a pixel outside the mask, where pixels beyond the
image border count as outside (an object cut by the border has a boundary there):
``M - erode(M, r)`` with a ``3 x 3`` square structuring element applied ``r`` times and the image
zero-padded. ``r = max(1, round(dilation_ratio * sqrt(H**2 + W**2)))`` with Python's ``round``
(halves go to the even integer), as in the authors' reference code.

Boundary IoU of two masks is the IoU of their boundary regions. For COCO-style boundary AP the
IoU of a (detection, ground truth) pair is ``min(mask IoU, boundary IoU)``; against crowd regions
the plain mask overlap (intersection over detection area) is kept.
"""

import logging
import math

import cv2
import numpy as np
import pycocotools.mask as mask_util

logger = logging.getLogger(__name__)

__all__ = [
    "dilation_radius",
    "mask_to_boundary",
    "boundary_iou",
    "boundary_rle",
    "pairwise_boundary_iou",
]


def dilation_radius(height, width, dilation_ratio):
    """Boundary width ``r`` in pixels for an image of ``height x width``.

    Args:
        height (int): image height.
        width (int): image width.
        dilation_ratio (float): ``r`` as a fraction of the image diagonal (>= 0).

    Returns:
        int: ``max(1, round(dilation_ratio * diagonal))``.
    """
    if not (isinstance(dilation_ratio, (int, float)) and math.isfinite(dilation_ratio)):
        raise ValueError(f"dilation_ratio must be a finite number, got {dilation_ratio!r}")
    if dilation_ratio < 0:
        raise ValueError(f"dilation_ratio must be >= 0, got {dilation_ratio}")
    return max(1, int(round(dilation_ratio * math.sqrt(height**2 + width**2))))


def _check_mask(mask, name):
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be a (H, W) mask, got an array of shape {mask.shape}")
    return mask.astype(bool, copy=False)


def mask_to_boundary(mask, dilation_ratio=0.02):
    """Boundary region of a binary mask.

    Args:
        mask (np.ndarray): (H, W) binary mask (bool or integers, non-zero is foreground).
        dilation_ratio (float): boundary width as a fraction of the image diagonal.

    Returns:
        np.ndarray: (H, W) bool, the mask pixels within ``r`` pixels (chessboard distance) of the
        background or of the image border.
    """
    mask = _check_mask(mask, "mask")
    h, w = mask.shape
    r = dilation_radius(h, w, dilation_ratio)
    boundary = np.zeros((h, w), dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return boundary
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    # Everything outside the mask's bounding box is background (inside or beyond the image), so
    # eroding the box padded with one zero pixel all round is exact: any (2r+1)^2 window of a box
    # pixel that leaves the box crosses the zero ring. Beyond the ring OpenCV's default erosion
    # border never erodes.
    crop = np.zeros((y1 - y0 + 2, x1 - x0 + 2), dtype=np.uint8)
    crop[1:-1, 1:-1] = mask[y0:y1, x0:x1]
    kernel = np.ones((2 * r + 1, 2 * r + 1), dtype=np.uint8)
    interior = cv2.erode(crop, kernel)[1:-1, 1:-1].astype(bool)
    boundary[y0:y1, x0:x1] = mask[y0:y1, x0:x1] & ~interior
    return boundary


def boundary_iou(gt, pred, dilation_ratio=0.02):
    """Boundary IoU of two binary masks of the same image.

    Args:
        gt (np.ndarray): (H, W) ground-truth mask.
        pred (np.ndarray): (H, W) predicted mask.
        dilation_ratio (float): boundary width as a fraction of the image diagonal.

    Returns:
        float: ``|Gb & Pb| / |Gb | Pb|``; 0 when both boundaries are empty (as pycocotools does
        for masks).
    """
    gt, pred = _check_mask(gt, "gt"), _check_mask(pred, "pred")
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred masks differ in shape: {gt.shape} vs {pred.shape}")
    gb = mask_to_boundary(gt, dilation_ratio)
    pb = mask_to_boundary(pred, dilation_ratio)
    union = np.count_nonzero(gb | pb)
    return float(np.count_nonzero(gb & pb) / union) if union else 0.0


def boundary_rle(rle, dilation_ratio=0.02):
    """Boundary region of a COCO RLE mask, as an RLE of the same size.

    Args:
        rle (dict): COCO RLE with ``size`` ``[H, W]`` and ``counts`` (bytes or str).
        dilation_ratio (float): boundary width as a fraction of the image diagonal.

    Returns:
        dict: RLE of the (H, W) boundary region.
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"expected a COCO RLE dict with 'size' and 'counts', got {rle!r:.80}")
    boundary = mask_to_boundary(mask_util.decode(rle), dilation_ratio)
    return mask_util.encode(np.asfortranarray(boundary.astype(np.uint8)))


def pairwise_boundary_iou(dt_rles, gt_rles, iscrowd, dilation_ratio=0.02, gt_boundaries=None):
    """IoU matrix for boundary AP: ``min(mask IoU, boundary IoU)`` for every pair.

    Columns of crowd ground truth keep pycocotools' crowd mask overlap (intersection over
    detection area), as in the authors' COCO API.

    Args:
        dt_rles (list[dict]): D detection RLEs.
        gt_rles (list[dict]): G ground-truth RLEs of the same image size.
        iscrowd (list[int]): G crowd flags.
        dilation_ratio (float): boundary width as a fraction of the image diagonal.
        gt_boundaries (list[dict or None] or None): G precomputed boundary RLEs of ``gt_rles``
            (e.g. from a cache; entries of crowd regions are not read and may be None); computed
            here when None.

    Returns:
        np.ndarray: (D, G) float64 IoUs.
    """
    num_dt, num_gt = len(dt_rles), len(gt_rles)
    if len(iscrowd) != num_gt:
        raise ValueError(f"iscrowd has {len(iscrowd)} flags for {num_gt} ground-truth masks")
    if gt_boundaries is not None and len(gt_boundaries) != num_gt:
        raise ValueError(f"gt_boundaries has {len(gt_boundaries)} RLEs for {num_gt} masks")
    if num_dt == 0 or num_gt == 0:
        return np.zeros((num_dt, num_gt), dtype=np.float64)
    iscrowd = [int(c) for c in iscrowd]
    ious = np.asarray(mask_util.iou(dt_rles, gt_rles, iscrowd), dtype=np.float64)
    regular = [j for j, c in enumerate(iscrowd) if not c]
    if not regular:
        return ious
    if gt_boundaries is None:
        gt_b = [boundary_rle(gt_rles[j], dilation_ratio) for j in regular]
    else:
        gt_b = [gt_boundaries[j] for j in regular]
    dt_b = [boundary_rle(d, dilation_ratio) for d in dt_rles]
    b_ious = np.asarray(mask_util.iou(dt_b, gt_b, [0] * len(regular)), dtype=np.float64)
    ious[:, regular] = np.minimum(ious[:, regular], b_ious)
    return ious
