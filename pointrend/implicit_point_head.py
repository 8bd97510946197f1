"""Implicit PointRend's point head: an MLP whose weights are predicted per box.

(Cheng et al., "PointRend / Implicit PointRend", as in Detectron2's ``ImplicitPointHead``.)
"""

import logging
import math
from typing import List, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from torch import Tensor, nn
from torch.nn import functional as F

from .point_head import POINTREND_POINT_HEAD_REGISTRY

logger = logging.getLogger(__name__)

__all__ = ["RenderImplicitPointHead"]

_POS_ENC_FREQUENCIES = 128  # random Fourier features: 128 sines + 128 cosines


@POINTREND_POINT_HEAD_REGISTRY.register()
class RenderImplicitPointHead(nn.Module):
    """Per-point MLP with per-box parameters (the head itself has no learned parameters).

    Input per point: random Fourier features of its box-relative position (256 channels, if
    enabled) followed by the fine-grained image features (if enabled). Layers: ``num_layers``
    dynamic linear layers (``channels`` wide, ReLU between them) down to ``num_mask_classes``.
    The per-box parameter vector holds all weights (layer by layer, each ``(out, in)``
    row-major) followed by all biases; its length is :attr:`num_params`.
    The buffer ``positional_encoding_gaussian_matrix`` ``(2, 128)`` has Detectron2's name.
    """

    @configurable
    def __init__(
        self,
        *,
        input_channels: int,
        channels: int,
        num_layers: int,
        num_mask_classes: int,
        image_feature_enabled: bool = True,
        positional_encoding_enabled: bool = True,
    ):
        """
        Args:
            input_channels: fine-grained feature channels per point.
            channels: width of the hidden layers.
            num_layers: dynamic layers including the output one (Detectron2: ``NUM_FC + 1``),
                at least 2.
            num_mask_classes: logits per point (classes, or 1 if class-agnostic).
            image_feature_enabled: feed the fine-grained features.
            positional_encoding_enabled: feed the position encoding.
        """
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"RenderImplicitPointHead needs num_layers >= 2, got {num_layers}")
        self.channels = channels
        self.num_layers = num_layers
        self.num_classes = num_mask_classes
        self.image_feature_enabled = image_feature_enabled
        self.positional_encoding_enabled = positional_encoding_enabled
        self.in_channels = input_channels if image_feature_enabled else 0
        if positional_encoding_enabled:
            self.in_channels += 2 * _POS_ENC_FREQUENCIES
            self.register_buffer(
                "positional_encoding_gaussian_matrix", torch.randn((2, _POS_ENC_FREQUENCIES))
            )
        if self.in_channels == 0:
            raise ValueError(
                "RenderImplicitPointHead has no input: enable MODEL.IMPLICIT_POINTREND."
                "IMAGE_FEATURE_ENABLED or POS_ENC_ENABLED"
            )
        dims = [self.in_channels] + [channels] * (num_layers - 1) + [num_mask_classes]
        self.layer_shapes: List[Tuple[int, int]] = list(zip(dims[1:], dims[:-1]))  # (out, in)
        self.num_weight_params = [o * i for o, i in self.layer_shapes]
        self.num_bias_params = [o for o, _ in self.layer_shapes]
        self.num_params = sum(self.num_weight_params) + sum(self.num_bias_params)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        point_cfg, implicit_cfg = cfg.MODEL.POINT_HEAD, cfg.MODEL.IMPLICIT_POINTREND
        return {
            "input_channels": input_shape.channels,
            "channels": point_cfg.FC_DIM,
            "num_layers": point_cfg.NUM_FC + 1,
            "num_mask_classes": 1 if point_cfg.CLS_AGNOSTIC_MASK else point_cfg.NUM_CLASSES,
            "image_feature_enabled": implicit_cfg.IMAGE_FEATURE_ENABLED,
            "positional_encoding_enabled": implicit_cfg.POS_ENC_ENABLED,
        }

    def _position_encoding(self, point_coords: Tensor) -> Tensor:
        """``(R, P, 2)`` points in ``[0, 1]`` -> ``(R, 256, P)`` sin/cos features."""
        num_boxes, num_points = point_coords.shape[:2]
        xy = 2 * point_coords.reshape(num_boxes * num_points, 2) - 1
        xy = 2 * math.pi * (xy @ self.positional_encoding_gaussian_matrix.to(xy.device))
        enc = torch.cat([torch.sin(xy), torch.cos(xy)], dim=1)
        return enc.reshape(num_boxes, num_points, -1).permute(0, 2, 1)

    def forward(
        self, fine_grained_features: Tensor, point_coords: Tensor, parameters: Tensor
    ) -> Tensor:
        """
        Args:
            fine_grained_features: ``(R, input_channels, P)``.
            point_coords: box-relative points in ``[0, 1]``, ``(R, P, 2)``.
            parameters: per-box MLP parameters, ``(R, num_params)``.

        Returns:
            Tensor: point logits ``(R, num_mask_classes, P)``.
        """
        num_boxes, _, num_points = fine_grained_features.shape
        if num_boxes == 0:
            return fine_grained_features.new_zeros((0, self.num_classes, num_points))
        inputs = []
        if self.positional_encoding_enabled:
            inputs.append(self._position_encoding(point_coords))
        if self.image_feature_enabled:
            inputs.append(fine_grained_features)
        x = torch.cat(inputs, dim=1) if len(inputs) > 1 else inputs[0]

        if parameters.shape != (num_boxes, self.num_params):
            raise ValueError(
                f"expected parameters of shape ({num_boxes}, {self.num_params}), "
                f"got {tuple(parameters.shape)}"
            )
        chunks = torch.split(parameters, self.num_weight_params + self.num_bias_params, dim=1)
        weights, biases = chunks[: self.num_layers], chunks[self.num_layers :]
        for k, ((out_dim, in_dim), w, b) in enumerate(zip(self.layer_shapes, weights, biases)):
            w = w.reshape(num_boxes, out_dim, in_dim)
            x = torch.einsum("nck,ndc->ndk", x, w) + b.reshape(num_boxes, out_dim, 1)
            if k < self.num_layers - 1:
                x = F.relu(x)
        return x
