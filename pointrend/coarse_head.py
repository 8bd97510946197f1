"""The coarse head: conv + FC layers from a small RoI feature grid to a coarse mask (or to the
parameters of Implicit PointRend's per-box MLP)."""

import logging
from typing import List, Sequence

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from torch import Tensor, nn
from torch.nn import functional as F

logger = logging.getLogger(__name__)

__all__ = ["RenderCoarseHead"]


class RenderCoarseHead(nn.Module):
    """Conv/FC head predicting a coarse ``output_shape`` tensor per box.

    Layers: an optional 1x1 conv reducing the channels to ``conv_dim`` (only if the input has
    more), a 2x2 stride-2 conv (both with ReLU), then FC layers with ReLU and a linear
    prediction. Parameter names (``reduce_channel_dim_conv``, ``reduce_spatial_dim_conv``,
    ``fc1`` ..., ``prediction``) and shapes are those of Detectron2 PointRend's ``ConvFCHead``.
    """

    # Version 2 renamed "coarse_mask_fc{k}" to "fc{k}" (Detectron2's weight format history).
    _version = 2

    @configurable
    def __init__(
        self,
        *,
        input_shape: ShapeSpec,
        conv_dim: int,
        fc_dims: List[int],
        output_shape: Sequence[int],
    ):
        """
        Args:
            input_shape: channels, height and width of the per-box input grid.
            conv_dim: channels of the conv layers.
            fc_dims: widths of the FC layers (at least one).
            output_shape: shape of the per-box prediction, e.g. ``(num_classes, 7, 7)``.
        """
        super().__init__()
        if not fc_dims:
            raise ValueError(
                "RenderCoarseHead needs at least one FC layer (MODEL.ROI_MASK_HEAD.NUM_FC)"
            )
        self.output_shape = tuple(output_shape)
        self.conv_layers = []
        if input_shape.channels > conv_dim:
            self.reduce_channel_dim_conv = Conv2d(
                input_shape.channels, conv_dim, kernel_size=1, bias=True, activation=F.relu
            )
            self.conv_layers.append(self.reduce_channel_dim_conv)
        self.reduce_spatial_dim_conv = Conv2d(
            conv_dim, conv_dim, kernel_size=2, stride=2, padding=0, bias=True, activation=F.relu
        )
        self.conv_layers.append(self.reduce_spatial_dim_conv)

        in_dim = conv_dim * (input_shape.height // 2) * (input_shape.width // 2)
        self.fcs = []
        for k, fc_dim in enumerate(fc_dims):
            fc = nn.Linear(in_dim, fc_dim)
            self.add_module(f"fc{k + 1}", fc)
            self.fcs.append(fc)
            in_dim = fc_dim
        self.prediction = nn.Linear(in_dim, int(torch.tensor(self.output_shape).prod()))

        for layer in self.conv_layers:
            weight_init.c2_msra_fill(layer)
        for layer in self.fcs:
            weight_init.c2_xavier_fill(layer)
        nn.init.normal_(self.prediction.weight, std=0.001)
        nn.init.constant_(self.prediction.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        side = cfg.MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION
        num_masks = (
            1 if cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES
        )
        return {
            "input_shape": input_shape,
            "conv_dim": cfg.MODEL.ROI_MASK_HEAD.CONV_DIM,
            "fc_dims": [cfg.MODEL.ROI_MASK_HEAD.FC_DIM] * cfg.MODEL.ROI_MASK_HEAD.NUM_FC,
            "output_shape": (num_masks, side, side),
        }

    def forward(self, x: Tensor) -> Tensor:
        """
        Args:
            x: per-box features, shape ``(R, C, H, W)``.

        Returns:
            Tensor: shape ``(R, *output_shape)``.
        """
        for layer in self.conv_layers:
            x = layer(x)
        x = torch.flatten(x, start_dim=1)
        for layer in self.fcs:
            x = F.relu(layer(x))
        return self.prediction(x).view(x.shape[0], *self.output_shape)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        version = local_metadata.get("version", None)
        if version is None or version < 2:
            for key in [k for k in state_dict if k.startswith(prefix + "coarse_mask_fc")]:
                new_key = prefix + "fc" + key[len(prefix + "coarse_mask_fc") :]
                logger.warning(f"Renaming old PointRend weight {key} to {new_key}")
                state_dict[new_key] = state_dict.pop(key)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
