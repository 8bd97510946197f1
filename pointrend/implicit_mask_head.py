"""Implicit PointRend's mask head: per-box MLP parameters instead of a coarse mask."""

import logging
import math
from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import ROI_MASK_HEAD_REGISTRY
from detectron2.modeling.roi_heads.mask_head import mask_rcnn_inference
from detectron2.structures import Boxes, Instances
from torch import Tensor, nn

from projects.layers import regular_grid_point_coords

from .coarse_head import RenderCoarseHead
from .losses import mask_point_loss
from .mask_head import feature_input_shapes
from .point_features import (
    box_points_to_image,
    channels_last_maps,
    sample_features_at_points,
    sample_mask_labels_at_points,
)
from .point_head import build_point_head
from .subdivision import subdivide_masks
from .uncertainty import own_class_logits

logger = logging.getLogger(__name__)

__all__ = ["RenderImplicitMaskHead"]


@ROI_MASK_HEAD_REGISTRY.register()
class RenderImplicitMaskHead(nn.Module):
    """Implicit PointRend (Detectron2's ``ImplicitPointRendMaskHead``).

    ``parameter_head`` (a :class:`RenderCoarseHead`) maps a 14 x 14 RoI grid of features to the
    parameters of a per-box MLP, which ``point_head`` (e.g. :class:`RenderImplicitPointHead`)
    evaluates at points. Training: ``train_num_points`` uniform points per box;
    losses ``loss_mask_point`` and ``loss_l2`` (``params_l2_regularizer * mean(params^2)``).
    Inference: subdivision from a ``sqrt(subdivision_num_points)`` square grid,
    ``subdivision_steps`` x2 steps.
    """

    @configurable
    def __init__(
        self,
        *,
        feature_strides: Dict[str, int],
        coarse_in_features: List[str],
        pooler_resolution: int,
        parameter_head: nn.Module,
        point_in_features: List[str],
        point_head: nn.Module,
        train_num_points: int = 14 * 14,
        subdivision_steps: int = 3,
        subdivision_num_points: int = 28 * 28,
        params_l2_regularizer: float = 1e-5,
    ):
        """
        Args:
            feature_strides: stride of each feature map the head may read.
            coarse_in_features: maps the parameter head's RoI grid is sampled from.
            pooler_resolution: side of that grid.
            parameter_head: ``(R, C, G, G) -> (R, point_head.num_params)``.
            point_in_features: maps sampled at the points.
            point_head: ``(fine (R, C_f, P), points (R, P, 2), params) -> (R, C, P)``.
            train_num_points: uniform points per box in training.
            subdivision_steps: x2 steps at inference.
            subdivision_num_points: points per step; a perfect square (first grid side).
            params_l2_regularizer: weight of ``loss_l2``.
        """
        super().__init__()
        init_resolution = int(math.isqrt(subdivision_num_points))
        if init_resolution**2 != subdivision_num_points:
            raise ValueError(
                "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS must be a perfect square for Implicit "
                f"PointRend, got {subdivision_num_points}"
            )
        self.feature_strides = dict(feature_strides)
        self.coarse_in_features = list(coarse_in_features)
        self.pooler_resolution = pooler_resolution
        self.parameter_head = parameter_head
        self.point_in_features = list(point_in_features)
        self.point_head = point_head
        self.train_num_points = train_num_points
        self.subdivision_init_resolution = init_resolution
        self.subdivision_steps = subdivision_steps
        self.subdivision_num_points = subdivision_num_points
        self.regularizer = params_l2_regularizer

    @classmethod
    def from_config(cls, cfg, input_shape):
        input_shape = feature_input_shapes(cfg, input_shape, cls.__name__)
        mask_cfg, point_cfg = cfg.MODEL.ROI_MASK_HEAD, cfg.MODEL.POINT_HEAD
        if point_cfg.NUM_CLASSES != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
            raise ValueError(
                f"MODEL.POINT_HEAD.NUM_CLASSES={point_cfg.NUM_CLASSES} must equal "
                f"MODEL.ROI_HEADS.NUM_CLASSES={cfg.MODEL.ROI_HEADS.NUM_CLASSES}"
            )
        fine_channels = sum(input_shape[f].channels for f in point_cfg.IN_FEATURES)
        point_head = build_point_head(cfg, ShapeSpec(channels=fine_channels, width=1, height=1))
        if not hasattr(point_head, "num_params"):
            raise TypeError(
                f"MODEL.POINT_HEAD.NAME={point_cfg.NAME!r} is not an implicit point head (no "
                "num_params); use 'RenderImplicitPointHead'"
            )
        resolution = mask_cfg.POOLER_RESOLUTION
        coarse_channels = sum(input_shape[f].channels for f in mask_cfg.IN_FEATURES)
        parameter_head = RenderCoarseHead(
            cfg,
            ShapeSpec(channels=coarse_channels, height=resolution, width=resolution),
            output_shape=(point_head.num_params,),
        )
        return {
            "feature_strides": {k: v.stride for k, v in input_shape.items()},
            "coarse_in_features": list(mask_cfg.IN_FEATURES),
            "pooler_resolution": resolution,
            "parameter_head": parameter_head,
            "point_in_features": list(point_cfg.IN_FEATURES),
            "point_head": point_head,
            "train_num_points": point_cfg.TRAIN_NUM_POINTS,
            "subdivision_steps": point_cfg.SUBDIVISION_STEPS,
            "subdivision_num_points": point_cfg.SUBDIVISION_NUM_POINTS,
            "params_l2_regularizer": cfg.MODEL.IMPLICIT_POINTREND.PARAMS_L2_REGULARIZER,
        }

    def _parameters_of(self, features: Dict[str, Tensor], boxes: List[Boxes]) -> Tensor:
        side = self.pooler_resolution
        num_boxes = sum(len(b) for b in boxes)
        grid = regular_grid_point_coords(num_boxes, side, boxes[0].device)
        maps = [features[f] for f in self.coarse_in_features]
        strides = [self.feature_strides[f] for f in self.coarse_in_features]
        roi_features = sample_features_at_points(maps, strides, boxes, grid)
        return self.parameter_head(roi_features.view(num_boxes, roi_features.shape[1], side, side))

    def _point_logits(self, features, boxes, point_coords: Tensor, parameters: Tensor) -> Tensor:
        maps = [features[f] for f in self.point_in_features]
        strides = [self.feature_strides[f] for f in self.point_in_features]
        fine = sample_features_at_points(maps, strides, boxes, point_coords)
        return self.point_head(fine, point_coords, parameters)

    def forward(self, features: Dict[str, Tensor], instances: List[Instances]):
        """Same contract as :meth:`pointrend.RenderMaskHead.forward`; training returns
        ``{"loss_l2", "loss_mask_point"}``."""
        features = channels_last_maps(features, self.coarse_in_features + self.point_in_features)
        if self.training:
            boxes = [x.proposal_boxes for x in instances]
            parameters = self._parameters_of(features, boxes)
            losses = {"loss_l2": self.regularizer * (parameters**2).mean()}
            cat_boxes = Boxes.cat(boxes).tensor
            point_coords = torch.rand(
                cat_boxes.shape[0], self.train_num_points, 2, device=cat_boxes.device
            )
            with torch.no_grad():
                image_points = box_points_to_image(cat_boxes, point_coords)
                point_labels = sample_mask_labels_at_points(instances, image_points)
            point_logits = self._point_logits(features, boxes, point_coords, parameters)
            gt_classes = torch.cat([x.gt_classes for x in instances])
            losses["loss_mask_point"] = mask_point_loss(point_logits, gt_classes, point_labels)
            return losses
        boxes = [x.pred_boxes for x in instances]
        parameters = self._parameters_of(features, boxes)
        classes = torch.cat([x.pred_classes for x in instances])
        mask_logits = subdivide_masks(
            lambda points: own_class_logits(
                self._point_logits(features, boxes, points, parameters), classes
            ),
            classes.shape[0],
            parameters.device,
            self.subdivision_init_resolution,
            self.subdivision_steps,
            self.subdivision_num_points,
        )
        mask_rcnn_inference(mask_logits, instances)
        return instances
