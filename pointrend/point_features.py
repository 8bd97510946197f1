"""Points inside boxes: box-relative to image coordinates, features and labels at those points.

Shape shorthand: ``R`` boxes over the whole batch, ``P`` points per box, ``C`` channels.
"""

import logging
from typing import List, Sequence

import torch
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from detectron2.utils.logger import log_first_n
from torch import Tensor

from projects.layers import point_sample

logger = logging.getLogger(__name__)

__all__ = ["box_points_to_image", "sample_features_at_points", "sample_mask_labels_at_points"]


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
    points = box_points_to_image(Boxes.cat(boxes).tensor, point_coords)
    per_image = []
    # One grid_sample per image and map, each over all boxes of the image at once.
    for i, image_points in enumerate(torch.split(points, num_per_image)):
        num_boxes, num_points = image_points.shape[:2]
        flat = image_points.reshape(1, num_boxes * num_points, 2)
        sampled = []
        for feature, stride in zip(features, strides):
            height, width = feature.shape[-2:]
            extent = torch.tensor([width * stride, height * stride], device=feature.device)
            values = point_sample(feature[i : i + 1], flat / extent, align_corners=False)
            channels = feature.shape[1]
            sampled.append(values[0].view(channels, num_boxes, num_points).transpose(0, 1))
        per_image.append(torch.cat(sampled, dim=1))
    return torch.cat(per_image, dim=0)


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
