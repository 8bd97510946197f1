"""Point heads: per-point predictors (an MLP as kernel-1 Conv1d layers) and their registry."""

import logging
from typing import List

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry
from torch import Tensor, nn
from torch.nn import functional as F

logger = logging.getLogger(__name__)

__all__ = ["POINTREND_POINT_HEAD_REGISTRY", "RenderPointHead", "build_point_head"]

POINTREND_POINT_HEAD_REGISTRY = Registry("POINTREND_POINT_HEAD")
POINTREND_POINT_HEAD_REGISTRY.__doc__ = """
Registry of PointRend point heads: predictors of per-point logits from per-point features.

Called as ``obj(cfg, input_shape, **overrides)``, where ``input_shape`` is a
:class:`detectron2.layers.ShapeSpec` whose ``channels`` is the number of fine-grained feature
channels per point, and ``overrides`` are ``__init__`` arguments that replace what
``from_config`` reads (e.g. ``coarse_pred_channels=1`` for a class-agnostic coarse mask).
The module's forward depends on the head; see each class.
"""


@POINTREND_POINT_HEAD_REGISTRY.register()
class RenderPointHead(nn.Module):
    """PointRend's point head: an MLP over [fine features, coarse logits] at each point.

    Every hidden layer is a kernel-1 ``Conv1d`` followed by ReLU; with
    ``coarse_pred_each_layer`` the coarse logits are concatenated again to the input of every
    following layer, as in the paper. Parameter names (``fc1`` ... ``fcK``, ``predictor``) and
    shapes are those of Detectron2's ``StandardPointHead``.
    """

    @configurable
    def __init__(
        self,
        *,
        input_channels: int,
        coarse_pred_channels: int,
        num_mask_classes: int,
        fc_dims: List[int],
        coarse_pred_each_layer: bool = True,
    ):
        """
        Args:
            input_channels: fine-grained feature channels per point.
            coarse_pred_channels: channels of the coarse prediction sampled at each point
                (number of classes, or 1 for a class-agnostic coarse mask).
            num_mask_classes: output logits per point (number of classes, or 1).
            fc_dims: widths of the hidden layers (Detectron2: ``[FC_DIM] * NUM_FC``).
            coarse_pred_each_layer: concatenate the coarse prediction to every layer's input
                (True), or only to the first one.
        """
        super().__init__()
        self.coarse_pred_each_layer = coarse_pred_each_layer
        self.fc_layers = []
        in_dim = input_channels + coarse_pred_channels
        for k, fc_dim in enumerate(fc_dims):
            fc = nn.Conv1d(in_dim, fc_dim, kernel_size=1, stride=1, padding=0, bias=True)
            self.add_module(f"fc{k + 1}", fc)
            self.fc_layers.append(fc)
            in_dim = fc_dim + (coarse_pred_channels if coarse_pred_each_layer else 0)
        self.predictor = nn.Conv1d(in_dim, num_mask_classes, kernel_size=1, stride=1, padding=0)

        for layer in self.fc_layers:
            weight_init.c2_msra_fill(layer)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        num_classes = cfg.MODEL.POINT_HEAD.NUM_CLASSES
        return {
            "input_channels": input_shape.channels,
            "coarse_pred_channels": num_classes,
            "num_mask_classes": 1 if cfg.MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK else num_classes,
            "fc_dims": [cfg.MODEL.POINT_HEAD.FC_DIM] * cfg.MODEL.POINT_HEAD.NUM_FC,
            "coarse_pred_each_layer": cfg.MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER,
        }

    def forward(self, fine_grained_features: Tensor, coarse_features: Tensor) -> Tensor:
        """
        Args:
            fine_grained_features: shape ``(R, input_channels, P)``.
            coarse_features: coarse logits at the same points, ``(R, coarse_pred_channels, P)``.

        Returns:
            Tensor: point logits, shape ``(R, num_mask_classes, P)``.
        """
        x = torch.cat((fine_grained_features, coarse_features), dim=1)
        for layer in self.fc_layers:
            x = F.relu(layer(x))
            if self.coarse_pred_each_layer:
                x = torch.cat((x, coarse_features), dim=1)
        return self.predictor(x)


def build_point_head(cfg, input_shape: ShapeSpec, **overrides) -> nn.Module:
    """Build the point head named by ``cfg.MODEL.POINT_HEAD.NAME``.

    Args:
        cfg: the config.
        input_shape: ``channels`` = fine-grained feature channels per point.
        **overrides: ``__init__`` arguments replacing what the head's ``from_config`` reads.
    """
    name = cfg.MODEL.POINT_HEAD.NAME
    if name not in POINTREND_POINT_HEAD_REGISTRY:
        raise KeyError(
            f"MODEL.POINT_HEAD.NAME={name!r} is not a registered point head; this project's are "
            f"{sorted(k for k, _ in POINTREND_POINT_HEAD_REGISTRY)} (Detectron2's own "
            "'StandardPointHead' / 'ImplicitPointHead' belong to detectron2.projects.point_rend)."
        )
    return POINTREND_POINT_HEAD_REGISTRY.get(name)(cfg, input_shape, **overrides)
