"""PointRend for semantic segmentation: a coarse semantic head refined at uncertain points.

Shape shorthand: ``N`` images, ``K`` classes, ``P`` points.
"""

import importlib
import logging
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F

from projects.layers import (
    point_sample,
    uncertain_point_coords_on_grid,
    uncertain_point_coords_with_randomness,
)

from .point_head import build_point_head
from .uncertainty import semantic_uncertainty

logger = logging.getLogger(__name__)

__all__ = ["RenderSemSegHead"]

# Coarse heads that live in a Detectron2 project module, imported on demand to register them.
_COARSE_HEAD_MODULES = {
    "DeepLabV3PlusHead": "detectron2.projects.deeplab",
    "DeepLabV3Head": "detectron2.projects.deeplab",
}


def build_coarse_sem_seg_head(name: str, cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Build the coarse head ``name`` from ``SEM_SEG_HEADS_REGISTRY``.

    It must offer ``layers(features) -> (N, K, H, W)`` logits at its output stride and
    ``losses(logits, targets) -> dict`` (as Detectron2's ``SemSegFPNHead`` and
    ``DeepLabV3PlusHead`` do).
    """
    if name not in SEM_SEG_HEADS_REGISTRY and name in _COARSE_HEAD_MODULES:
        importlib.import_module(_COARSE_HEAD_MODULES[name])
    if name not in SEM_SEG_HEADS_REGISTRY:
        raise KeyError(f"MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME={name!r} is not registered")
    head = SEM_SEG_HEADS_REGISTRY.get(name)(cfg, input_shape)
    if not (hasattr(head, "layers") and hasattr(head, "losses")):
        raise TypeError(
            f"MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME={name!r} has no layers()/losses() methods; "
            "RenderSemSegHead needs both (e.g. SemSegFPNHead, DeepLabV3PlusHead)."
        )
    return head


@SEM_SEG_HEADS_REGISTRY.register()
class RenderSemSegHead(nn.Module):
    """Semantic PointRend: a coarse semantic head plus a point head.

    * Training: the coarse head's own loss, plus ``loss_sem_seg_point``: cross-entropy (ignoring
      ``ignore_value``) of the point head at ``train_num_points`` points per image chosen by
      uncertainty (gap of the two top logits; oversampling ``oversample_ratio``, share
      ``importance_sample_ratio``), labels read at the points by nearest neighbour. A loss with
      nothing labelled to average over (a batch of ignored pixels, or points that all fall on
      ignored pixels) is 0, not cross-entropy's NaN.
    * Inference: ``subdivision_steps`` times, upsample the logits x2 and re-predict the
      ``subdivision_num_points`` most uncertain cells (Cityscapes: 2 steps of 8192 points from
      stride 4 to stride 1). If the steps stop short of stride 1 (an ablation such as
      ``SUBDIVISION_STEPS 0``: the coarse head alone), the logits are then upsampled bilinearly
      to stride 1, as the coarse head itself does. Detectron2's head returns them at the stride
      reached, which ``SemanticSegmentor`` takes for input-resolution logits.

    Parameter names (``coarse_sem_seg_head.*``, ``point_head.*``) are those of Detectron2's
    ``PointRendSemSegHead``.
    """

    @configurable
    def __init__(
        self,
        *,
        coarse_sem_seg_head: nn.Module,
        point_head: nn.Module,
        in_features: List[str],
        ignore_value: int = 255,
        train_num_points: int = 1024,
        oversample_ratio: float = 3,
        importance_sample_ratio: float = 0.75,
        subdivision_steps: int = 2,
        subdivision_num_points: int = 8192,
        coarse_stride: int = 4,
    ):
        """
        Args:
            coarse_sem_seg_head: module with ``layers(features) -> (N, K, h, w)`` and
                ``losses(logits, targets) -> dict``.
            point_head: ``(fine (N, C_f, P), coarse (N, K, P)) -> (N, K, P)``.
            in_features: maps sampled at the points (channels concatenated).
            ignore_value: label ignored by the point loss.
            train_num_points: points per image in training.
            oversample_ratio: k, oversampling of the training points.
            importance_sample_ratio: beta, share of training points chosen by uncertainty.
            subdivision_steps: x2 upsampling steps at inference.
            subdivision_num_points: points re-predicted per step and image.
            coarse_stride: output stride of the coarse head's logits (a power of 2 at least
                ``2 ** subdivision_steps``).
        """
        super().__init__()
        self.coarse_sem_seg_head = coarse_sem_seg_head
        self.point_head = point_head
        self.in_features = list(in_features)
        self.ignore_value = ignore_value
        self.train_num_points = train_num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.subdivision_steps = subdivision_steps
        self.subdivision_num_points = subdivision_num_points
        if coarse_stride % (2**subdivision_steps):
            raise ValueError(
                f"MODEL.POINT_HEAD.SUBDIVISION_STEPS={subdivision_steps} would upsample the coarse "
                f"logits (stride {coarse_stride}) beyond the input resolution; at most "
                f"{int(coarse_stride).bit_length() - 1} steps"
            )
        self.final_upsampling = coarse_stride // (2**subdivision_steps)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        point_cfg = cfg.MODEL.POINT_HEAD
        if point_cfg.NUM_CLASSES != cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES:
            raise ValueError(
                f"MODEL.POINT_HEAD.NUM_CLASSES={point_cfg.NUM_CLASSES} must equal "
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}"
            )
        missing = [f for f in point_cfg.IN_FEATURES if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.POINT_HEAD.IN_FEATURES has {missing}, not among the backbone's outputs "
                f"{sorted(input_shape)}"
            )
        fine_channels = sum(input_shape[f].channels for f in point_cfg.IN_FEATURES)
        return {
            "coarse_sem_seg_head": build_coarse_sem_seg_head(
                point_cfg.COARSE_SEM_SEG_HEAD_NAME, cfg, input_shape
            ),
            "point_head": build_point_head(
                cfg, ShapeSpec(channels=fine_channels, width=1, height=1)
            ),
            "in_features": list(point_cfg.IN_FEATURES),
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "train_num_points": point_cfg.TRAIN_NUM_POINTS,
            "oversample_ratio": point_cfg.OVERSAMPLE_RATIO,
            "importance_sample_ratio": point_cfg.IMPORTANCE_SAMPLE_RATIO,
            "subdivision_steps": point_cfg.SUBDIVISION_STEPS,
            "subdivision_num_points": point_cfg.SUBDIVISION_NUM_POINTS,
            "coarse_stride": cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE,
        }

    def _point_logits(self, features: Dict[str, Tensor], coarse: Tensor, point_coords: Tensor):
        """Point-head logits ``(N, K, P)`` at image-relative ``point_coords`` ``(N, P, 2)``."""
        fine = torch.cat(
            [
                point_sample(features[f], point_coords, align_corners=False)
                for f in self.in_features
            ],
            dim=1,
        )
        coarse_at_points = point_sample(coarse, point_coords, align_corners=False)
        return self.point_head(fine, coarse_at_points)

    def forward(self, features: Dict[str, Tensor], targets: Optional[Tensor] = None):
        """
        Args:
            features: backbone maps by name, each ``(N, C_i, H_i, W_i)``.
            targets: training labels ``(N, H, W)`` (long) at the padded input size.

        Returns:
            Training: ``(None, losses)``. Inference: ``(logits (N, K, H, W), {})`` at the padded
            input size (the coarse height times its stride).
        """
        coarse = self.coarse_sem_seg_head.layers(features)
        if self.training:
            losses = self.coarse_sem_seg_head.losses(coarse, targets)
            if not (targets != self.ignore_value).any():
                losses = {name: coarse.sum() * 0.0 for name in losses}
            with torch.no_grad():
                point_coords = uncertain_point_coords_with_randomness(
                    coarse,
                    semantic_uncertainty,
                    self.train_num_points,
                    self.oversample_ratio,
                    self.importance_sample_ratio,
                )
            point_logits = self._point_logits(features, coarse, point_coords)
            with torch.no_grad():
                point_targets = point_sample(
                    targets.unsqueeze(1).to(torch.float),
                    point_coords,
                    mode="nearest",
                    align_corners=False,
                )[:, 0].to(torch.long)
            if (point_targets != self.ignore_value).any():
                losses["loss_sem_seg_point"] = F.cross_entropy(
                    point_logits, point_targets, reduction="mean", ignore_index=self.ignore_value
                )
            else:
                losses["loss_sem_seg_point"] = point_logits.sum() * 0.0
            return None, losses

        logits = coarse.clone()
        for _ in range(self.subdivision_steps):
            logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
            indices, point_coords = uncertain_point_coords_on_grid(
                semantic_uncertainty(logits), self.subdivision_num_points
            )
            point_logits = self._point_logits(features, coarse, point_coords)
            num, channels, height, width = logits.shape
            logits = (
                logits.reshape(num, channels, height * width)
                .scatter(2, indices.unsqueeze(1).expand(-1, channels, -1), point_logits)
                .view(num, channels, height, width)
            )
        if self.final_upsampling > 1:
            logits = F.interpolate(
                logits, scale_factor=self.final_upsampling, mode="bilinear", align_corners=False
            )
        return logits, {}
