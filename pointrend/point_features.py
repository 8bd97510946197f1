"""Points inside boxes: box-relative to image coordinates, features and labels at those points.

Shape shorthand: ``R`` boxes over the whole batch, ``P`` points per box, ``C`` channels.
"""

import logging
from typing import Dict, Iterable, List, Sequence

import torch
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from detectron2.utils.logger import log_first_n
from torch import Tensor

from projects.layers import point_sample

logger = logging.getLogger(__name__)

__all__ = [
    "box_points_to_image",
    "channels_last_maps",
    "sample_features_at_points",
    "sample_image_features_at_points",
    "sample_mask_labels_at_points",
]


def channels_last_maps(features: Dict[str, Tensor], names: Iterable[str]) -> Dict[str, Tensor]:
    """``features`` with the maps named in ``names`` stored channels-last (NHWC).

    Sampling many scattered points of a wide map reads one contiguous run of channels per
    neighbour in NHWC, against one cache line per channel in NCHW: on the CPU,
    :func:`torch.nn.functional.grid_sample` at PointRend's 78400 points per step of an
    800 x 1333 image's p2 takes about half the time. The sampled values are identical, and come
    out as ``(points, channels)`` rows, which the point head multiplies without a copy.

    Returns:
        dict[str, Tensor]: a new dict; the other maps are the same tensors.
    """
    out = dict(features)
    for name in set(names):
        out[name] = features[name].contiguous(memory_format=torch.channels_last)
    return out


def box_points_to_image(boxes: Tensor, point_coords: Tensor) -> Tensor:
    """Map box-relative ``[0, 1]`` points to absolute image coordinates.

    Args:
        boxes: ``(x0, y0, x1, y1)`` boxes in pixels, shape ``(R, 4)``.
        point_coords: ``(x, y)`` points relative to their box, shape ``(R, P, 2)``.

    Returns:
        Tensor: ``(x, y)`` points in image pixels, shape ``(R, P, 2)`` (no gradient).
    """
    with torch.no_grad():
        origin = boxes[:, None, 0:2]
        size = boxes[:, None, 2:4] - origin
        return point_coords * size + origin


def sample_features_at_points(
    features: Sequence[Tensor], strides: Sequence[int], boxes: List[Boxes], point_coords: Tensor
) -> Tensor:
    """Bilinearly sample image feature maps at points given relative to boxes.

    With a regular grid of points this is RoIAlign with one sample per bin; unlike an FPN
    RoIAlign it reads *every* map of ``features`` and concatenates their channels.

    Args:
        features: maps of a batch of ``N`` images, each ``(N, C_i, H_i, W_i)``.
        strides: the stride (input pixels per cell) of each map.
        boxes: the boxes of each image, ``R = sum(len(b) for b in boxes)``.
        point_coords: box-relative ``[0, 1]`` points, shape ``(R, P, 2)``.

    Returns:
        Tensor: shape ``(R, sum(C_i), P)``.
    """
    num_per_image = [len(b) for b in boxes]
    per_image = [
        sample_image_features_at_points(
            [feature[i : i + 1] for feature in features], strides, image_boxes.tensor, points
        )
        for i, (image_boxes, points) in enumerate(zip(boxes, point_coords.split(num_per_image)))
    ]
    # A single piece is returned as the view it is, ``(C, R, P)`` memory: a point head that
    # works on ``(R * P, C)`` rows then reads it without a copy.
    return torch.cat(per_image, dim=0) if len(per_image) > 1 else per_image[0]


def sample_image_features_at_points(
    features: Sequence[Tensor],
    strides: Sequence[int],
    boxes: Tensor,
    point_coords: Tensor,
    reduce: str = "cat",
) -> Tensor:
    """:func:`sample_features_at_points` for the boxes of one image.

    Args:
        features: the image's maps, each ``(1, C_i, H_i, W_i)``.
        strides: the stride of each map.
        boxes: ``(B, 4)`` boxes in pixels.
        point_coords: box-relative ``[0, 1]`` points, ``(B, P, 2)``.
        reduce: ``"cat"`` concatenates the maps' channels, ``"sum"`` adds the maps (which then
            must have equal channels).

    Returns:
        Tensor: ``(B, sum(C_i), P)`` (``"cat"``) or ``(B, C, P)`` (``"sum"``).
    """
    if reduce not in ("cat", "sum"):
        raise ValueError(f"reduce must be 'cat' or 'sum', got {reduce!r}")
    num_boxes, num_points = point_coords.shape[:2]
    # One grid_sample per map over all the boxes' points at once.
    flat = box_points_to_image(boxes, point_coords).reshape(1, num_boxes * num_points, 2)
    sampled = []
    for feature, stride in zip(features, strides):
        height, width = feature.shape[-2:]
        extent = torch.tensor([width * stride, height * stride], device=feature.device)
        values = point_sample(feature, flat / extent, align_corners=False)
        sampled.append(values[0].view(feature.shape[1], num_boxes, num_points).transpose(0, 1))
    if len(sampled) == 1:
        return sampled[0]
    return torch.cat(sampled, dim=1) if reduce == "cat" else torch.stack(sampled).sum(0)


def _bitmask_tensor(instances: Instances) -> Tensor:
    """The ground-truth masks of ``instances`` as an ``(R_i, H, W)`` tensor."""
    masks = instances.gt_masks
    if isinstance(masks, BitMasks):
        return masks.tensor
    if isinstance(masks, PolygonMasks):
        log_first_n(
            logging.WARNING,
            "PointRend samples point labels from full-image bitmasks; rasterizing polygon "
            "ground truth in the model every iteration. Set INPUT.MASK_FORMAT to 'bitmask' to "
            "rasterize once in the data loader instead.",
            n=1,
            name=__name__,
        )
        height, width = instances.image_size
        device = instances.gt_classes.device
        return BitMasks.from_polygon_masks(masks, height, width).tensor.to(device)
    raise TypeError(
        f"PointRend needs gt_masks as BitMasks or PolygonMasks, got {type(masks).__name__}; "
        "set INPUT.MASK_FORMAT to 'bitmask'."
    )


def sample_mask_labels_at_points(instances: List[Instances], points: Tensor) -> Tensor:
    """Soft point labels: the ground-truth masks bilinearly sampled at image points.

    Args:
        instances: per image, ``R_i`` boxes with ``gt_masks`` in 1:1 correspondence with the
            rows of ``points``; ``R = sum(R_i)``.
        points: ``(x, y)`` points in image pixels, shape ``(R, P, 2)``.

    Returns:
        Tensor: labels in ``[0, 1]``, shape ``(R, P)``.
    """
    labels = []
    with torch.no_grad():
        for inst, image_points in zip(instances, torch.split(points, [len(x) for x in instances])):
            if len(inst) == 0:
                continue
            masks = _bitmask_tensor(inst).to(torch.float32).unsqueeze(1)  # (R_i, 1, H, W)
            height, width = inst.image_size
            scale = torch.tensor([width, height], dtype=torch.float, device=masks.device)
            labels.append(point_sample(masks, image_points / scale, align_corners=False)[:, 0])
    if not labels:
        return points.new_zeros((0, points.shape[1]))
    return torch.cat(labels, dim=0)
