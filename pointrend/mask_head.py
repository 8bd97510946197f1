"""PointRend's instance mask head: a coarse 7 x 7 mask refined at uncertain points.

Used by a :class:`detectron2.modeling.StandardROIHeads` (or :class:`pointrend.RenderROIHeads`)
whose mask pooler is off (``MODEL.ROI_MASK_HEAD.POOLER_TYPE: ""``): the head then receives the
image-level feature maps of ``MODEL.ROI_HEADS.IN_FEATURES`` and samples them itself.

Shape shorthand: ``R`` boxes over the batch, ``C`` classes (1 if class-agnostic), ``P`` points.
"""

import logging
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import ROI_MASK_HEAD_REGISTRY
from detectron2.modeling.roi_heads.mask_head import mask_rcnn_inference, mask_rcnn_loss
from detectron2.structures import Boxes, Instances
from torch import Tensor, nn

from projects.layers import (
    bilinear_sample_rows,
    point_sample,
    regular_grid_point_coords,
    uncertain_point_coords_with_randomness,
)

from .coarse_head import RenderCoarseHead
from .losses import mask_point_loss
from .point_features import (
    box_points_to_image,
    channels_last_maps,
    sample_features_at_points,
    sample_image_features_at_points,
    sample_mask_labels_at_points,
)
from .point_head import build_point_head
from .subdivision import fold_subdivision_steps, subdivide_masks
from .uncertainty import instance_mask_uncertainty

logger = logging.getLogger(__name__)

__all__ = ["RenderMaskHead", "feature_input_shapes"]

# Points sampled and fed to the point head per block in CPU inference (see
# RenderMaskHead._subdivision_point_logits_fn): a block's features, 4 MB, fit in the cache.
POINTS_PER_BLOCK = 4096


def feature_input_shapes(cfg, input_shape, head_name: str) -> Dict[str, ShapeSpec]:
    """Check that the ROI heads hand the mask head image features (mask pooler off).

    Returns:
        dict[str, ShapeSpec]: ``input_shape``, which must be a dict of feature shapes that
        contains ``ROI_MASK_HEAD.IN_FEATURES`` and ``POINT_HEAD.IN_FEATURES``.
    """
    if not isinstance(input_shape, dict):
        raise ValueError(
            f"{head_name} samples the image features itself, but the ROI heads pooled them: set "
            f"MODEL.ROI_MASK_HEAD.POOLER_TYPE to '' (it is "
            f"{cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE!r})."
        )
    for key in ("ROI_MASK_HEAD", "POINT_HEAD"):
        missing = [f for f in cfg.MODEL[key].IN_FEATURES if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.{key}.IN_FEATURES has {missing}, which the ROI heads do not pass to the "
                f"mask head; they pass MODEL.ROI_HEADS.IN_FEATURES={sorted(input_shape)}."
            )
    return input_shape


@ROI_MASK_HEAD_REGISTRY.register()
class RenderMaskHead(nn.Module):
    """PointRend mask head (Kirillov et al., "PointRend: Image Segmentation as Rendering").

    * Coarse head: a ``pooler_resolution`` (14) square grid of points per box is sampled on the
      ``coarse_in_features`` maps and fed to ``coarse_head`` -> coarse logits ``(R, C, 7, 7)``,
      trained with Mask R-CNN's loss (``loss_mask``).
    * Training points (``point_head`` set): ``train_num_points`` per box, ``oversample_ratio``-times
      oversampled, the ``importance_sample_ratio`` most uncertain (``-|logit|`` of the box's class)
      kept, the rest uniform; labels are the full-image ground-truth masks sampled bilinearly;
      ``loss_mask_point`` is their binary cross-entropy.
    * Inference: adaptive subdivision. The point head predicts a regular grid, then
      ``subdivision_steps`` times the logits are upsampled x2 and the ``subdivision_num_points``
      most uncertain cells re-predicted. As in Detectron2, leading steps whose every cell would be
      re-predicted anyway are folded into a denser initial grid: 7 x 7, 5 steps of 784 points
      becomes a 28 x 28 grid plus 3 steps (56, 112, 224): 4 x 784 = 3136 evaluations per box.
      Without a point head, the coarse mask is the prediction.

    Parameter names (``coarse_head.*``, ``point_head.*``) and shapes are those of Detectron2's
    ``PointRendMaskHead``, so its checkpoints load as they are.
    """

    @configurable
    def __init__(
        self,
        *,
        feature_strides: Dict[str, int],
        coarse_in_features: List[str],
        pooler_resolution: int,
        coarse_head: nn.Module,
        point_in_features: List[str],
        point_head: Optional[nn.Module] = None,
        train_num_points: int = 14 * 14,
        oversample_ratio: float = 3,
        importance_sample_ratio: float = 0.75,
        output_side_resolution: int = 7,
        subdivision_steps: int = 5,
        subdivision_num_points: int = 28 * 28,
    ):
        """
        Args:
            feature_strides: stride of each feature map the head may read.
            coarse_in_features: maps the coarse head's RoI grid is sampled from (channels
                concatenated).
            pooler_resolution: side of that RoI grid.
            coarse_head: maps ``(R, sum C_i, pooler_resolution, pooler_resolution)`` to coarse
                logits ``(R, C, S, S)``, ``S = output_side_resolution``.
            point_in_features: maps sampled at the points for the point head.
            point_head: ``(fine (R, C_f, P), coarse (R, C, P)) -> (R, C or 1, P)``; None means
                the coarse mask is the output (no point loss).
            train_num_points: points per box in training.
            oversample_ratio: k, oversampling of the training points.
            importance_sample_ratio: beta, share of training points chosen by uncertainty.
            output_side_resolution: side ``S`` of the coarse logits.
            subdivision_steps: subdivision steps at inference, starting from ``S``.
            subdivision_num_points: points re-predicted per step.
        """
        super().__init__()
        self.feature_strides = dict(feature_strides)
        self.coarse_in_features = list(coarse_in_features)
        self.pooler_resolution = pooler_resolution
        self.coarse_head = coarse_head
        self.point_in_features = list(point_in_features)
        self.point_head = point_head
        self.train_num_points = train_num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.subdivision_num_points = subdivision_num_points
        self.subdivision_init_resolution, self.subdivision_steps = fold_subdivision_steps(
            output_side_resolution, subdivision_steps, subdivision_num_points
        )

    @classmethod
    def from_config(cls, cfg, input_shape):
        input_shape = feature_input_shapes(cfg, input_shape, cls.__name__)
        mask_cfg, point_cfg = cfg.MODEL.ROI_MASK_HEAD, cfg.MODEL.POINT_HEAD
        resolution = mask_cfg.POOLER_RESOLUTION
        coarse_channels = sum(input_shape[f].channels for f in mask_cfg.IN_FEATURES)
        ret = {
            "feature_strides": {k: v.stride for k, v in input_shape.items()},
            "coarse_in_features": list(mask_cfg.IN_FEATURES),
            "pooler_resolution": resolution,
            "coarse_head": RenderCoarseHead(
                cfg, ShapeSpec(channels=coarse_channels, height=resolution, width=resolution)
            ),
            "point_in_features": list(point_cfg.IN_FEATURES),
            "point_head": None,
            "train_num_points": point_cfg.TRAIN_NUM_POINTS,
            "oversample_ratio": point_cfg.OVERSAMPLE_RATIO,
            "importance_sample_ratio": point_cfg.IMPORTANCE_SAMPLE_RATIO,
            "output_side_resolution": mask_cfg.OUTPUT_SIDE_RESOLUTION,
            "subdivision_steps": point_cfg.SUBDIVISION_STEPS,
            "subdivision_num_points": point_cfg.SUBDIVISION_NUM_POINTS,
        }
        if mask_cfg.POINT_HEAD_ON:
            if point_cfg.NUM_CLASSES != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
                raise ValueError(
                    f"MODEL.POINT_HEAD.NUM_CLASSES={point_cfg.NUM_CLASSES} must equal "
                    f"MODEL.ROI_HEADS.NUM_CLASSES={cfg.MODEL.ROI_HEADS.NUM_CLASSES}"
                )
            fine_channels = sum(input_shape[f].channels for f in point_cfg.IN_FEATURES)
            overrides = {}
            if mask_cfg.CLS_AGNOSTIC_MASK:  # one coarse mask per box: one point logit too
                overrides = {"coarse_pred_channels": 1, "num_mask_classes": 1}
            ret["point_head"] = build_point_head(
                cfg, ShapeSpec(channels=fine_channels, width=1, height=1), **overrides
            )
        return ret

    # ------------------------------------------------------------------ forward
    def forward(self, features: Dict[str, Tensor], instances: List[Instances]):
        """
        Args:
            features: image-level maps ``(N, C_i, H_i, W_i)`` by name.
            instances: per image, the foreground proposals (training, with ``proposal_boxes``,
                ``gt_classes``, ``gt_masks``) or the detections (inference, ``pred_boxes``,
                ``pred_classes``).

        Returns:
            Training: ``{"loss_mask", "loss_mask_point"}`` (the latter with a point head).
            Inference: ``instances`` with ``pred_masks`` ``(R_i, 1, M, M)`` probabilities added.
        """
        features = channels_last_maps(features, self.coarse_in_features + self.point_in_features)
        if self.training:
            boxes = [x.proposal_boxes for x in instances]
            coarse_logits = self.coarse_head(self._roi_grid_features(features, boxes))
            losses = {"loss_mask": mask_rcnn_loss(coarse_logits, instances)}
            if self.point_head is not None:
                losses["loss_mask_point"] = self._point_loss(features, coarse_logits, instances)
            return losses
        boxes = [x.pred_boxes for x in instances]
        coarse_logits = self.coarse_head(self._roi_grid_features(features, boxes))
        if self.point_head is None:
            mask_rcnn_inference(coarse_logits, instances)
            return instances
        classes = torch.cat([x.pred_classes for x in instances])
        mask_rcnn_inference(self.subdivide(features, boxes, coarse_logits, classes), instances)
        return instances

    def _roi_grid_features(self, features: Dict[str, Tensor], boxes: List[Boxes]) -> Tensor:
        """RoIAlign-like features (one bilinear sample per bin) on a regular grid per box.

        Returns:
            Tensor: shape ``(R, sum C_i, pooler_resolution, pooler_resolution)``.
        """
        side = self.pooler_resolution
        num_boxes = sum(len(b) for b in boxes)
        grid = regular_grid_point_coords(num_boxes, side, boxes[0].device)
        maps = [features[f] for f in self.coarse_in_features]
        strides = [self.feature_strides[f] for f in self.coarse_in_features]
        roi_features = sample_features_at_points(maps, strides, boxes, grid)
        return roi_features.view(num_boxes, roi_features.shape[1], side, side)

    def _point_logits(
        self,
        features: Dict[str, Tensor],
        boxes: List[Boxes],
        point_coords: Tensor,
        coarse: Tensor,
        classes: Optional[Tensor] = None,
    ) -> Tensor:
        """Point-head logits at box-relative ``point_coords`` ``(R, P, 2)``: ``(R, C, P)``, or
        each box's ``classes`` logit only, ``(R, 1, P)``."""
        maps = [features[f] for f in self.point_in_features]
        strides = [self.feature_strides[f] for f in self.point_in_features]
        fine = sample_features_at_points(maps, strides, boxes, point_coords)
        coarse_at_points = point_sample(coarse, point_coords, align_corners=False)
        if classes is None:
            return self.point_head(fine, coarse_at_points)
        return self.point_head(fine, coarse_at_points, classes=classes)

    def _point_loss(self, features, coarse_logits: Tensor, instances: List[Instances]) -> Tensor:
        boxes = [x.proposal_boxes for x in instances]
        gt_classes = torch.cat([x.gt_classes for x in instances])
        with torch.no_grad():
            point_coords = uncertain_point_coords_with_randomness(
                coarse_logits,
                lambda logits: instance_mask_uncertainty(logits, gt_classes),
                self.train_num_points,
                self.oversample_ratio,
                self.importance_sample_ratio,
            )
            image_points = box_points_to_image(Boxes.cat(boxes).tensor, point_coords)
            point_labels = sample_mask_labels_at_points(instances, image_points)
        point_logits = self._point_logits(features, boxes, point_coords, coarse_logits)
        return mask_point_loss(point_logits, gt_classes, point_labels)

    @torch.no_grad()
    def subdivide(
        self,
        features: Dict[str, Tensor],
        boxes: List[Boxes],
        coarse_logits: Tensor,
        classes: Tensor,
    ) -> Tensor:
        """Adaptive subdivision (:func:`pointrend.subdivision.subdivide_masks`).

        Args:
            features: image-level maps by name.
            boxes: per image, the boxes (``R`` in total).
            coarse_logits: ``(R, C, S, S)``.
            classes: class of each box, ``(R,)``, choosing the channel whose uncertainty counts.

        No gradient flows through subdivision (the point selection is discrete).

        Returns:
            Tensor: each box's own-class mask logits ``(R, 1, M, M)``, ``M =
            subdivision_init_resolution * 2 ** subdivision_steps`` (224 for the defaults).
        """
        point_logits_fn = self._subdivision_point_logits_fn(features, boxes, coarse_logits, classes)
        return subdivide_masks(
            point_logits_fn,
            classes.shape[0],
            coarse_logits.device,
            self.subdivision_init_resolution,
            self.subdivision_steps,
            self.subdivision_num_points,
        )

    def _subdivision_point_logits_fn(self, features, boxes, coarse_logits, classes):
        """``points (R, P, 2) -> own-class logits (R, 1, P)`` for :meth:`subdivide`.

        A point head with ``forward_projected`` (:class:`RenderPointHead`) gets its first
        products with the image's features and with each box's coarse logits, computed once
        and sampled at the points, instead of multiplying the sampled values at every point
        (see the inference notes in :mod:`pointrend.point_head`).
        """
        if not hasattr(self.point_head, "forward_projected") or self.point_head.exact:
            return lambda points: self._point_logits(
                features, boxes, points, coarse_logits, classes
            )
        maps = self.point_head.project_fine_features([features[f] for f in self.point_in_features])
        strides = [self.feature_strides[f] for f in self.point_in_features]
        num_per_image = [len(b) for b in boxes]
        coarse_terms = self.point_head.project_coarse_logits(coarse_logits, classes)

        def point_logits(points: Tensor) -> Tensor:
            # A few boxes at a time: their sampled values stay in the CPU cache on their way
            # into the point head instead of making a round trip through memory.
            num_points = points.shape[1]
            block = max(1, POINTS_PER_BLOCK // max(1, num_points))
            if points.device.type != "cpu":  # a GPU wants few, large kernels
                block = max(1, len(points))
            logits = []
            for i, image_boxes in enumerate(boxes):
                first = sum(num_per_image[:i])
                image_maps = [m[i : i + 1] for m in maps]
                for lo in range(first, first + len(image_boxes), block):
                    rows = slice(lo, min(lo + block, first + len(image_boxes)))
                    fine = sample_image_features_at_points(
                        image_maps,
                        strides,
                        image_boxes.tensor[rows.start - first : rows.stop - first],
                        points[rows],
                        reduce="sum",
                    )
                    # Gathered as rows: grid_sample is slower on these short, wide maps.
                    coarse = bilinear_sample_rows(
                        coarse_terms[rows], points[rows].reshape(-1, 2), num_points
                    )
                    coarse = coarse.view(-1, num_points, coarse.shape[1]).transpose(1, 2)
                    logits.append(self.point_head.forward_projected(fine, coarse, classes[rows]))
            if not logits:
                return coarse_logits.new_zeros((0, 1, num_points))
            return torch.cat(logits)

        return point_logits
