"""YOLACT's ResNet-FPN: P3-P5 from res3-res5 with bilinear top-down upsampling and ReLU after the
3x3 output convs, P6 and P7 by stride-2 convs (P6 from P5, P7 from P6, no ReLU on either).

Input sizes are not padded to a multiple of 32 (``size_divisibility`` 0): at 550 x 550 the levels
are 69 / 35 / 18 / 9 / 5, as the authors' network computes them (each top-down step is resized to
its lateral's own size), so converted checkpoints give the original's outputs.
"""

from typing import Dict, List

import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import Tensor, nn

from projects.modeling.backbone.resnet import build_resnet_deform_interval_backbone

__all__ = ["YolactFPN", "build_yolact_resnet_fpn_backbone"]


class YolactFPN(Backbone):
    """FPN over a bottom-up network, with YOLACT's choices of upsampling, ReLU and extra levels.

    Parameters: ``fpn_lateral{3,4,5}`` (1x1), ``fpn_output{3,4,5}`` (3x3), ``top_block.p6`` /
    ``top_block.p7`` (3x3, stride 2); every conv has a bias.
    """

    def __init__(
        self,
        bottom_up: Backbone,
        in_features: List[str],
        out_channels: int,
        num_extra_levels: int = 2,
    ):
        """
        Args:
            bottom_up: the ResNet; its outputs named by ``in_features`` feed the FPN.
            in_features: bottom-up outputs, finest first (``["res3", "res4", "res5"]``).
            out_channels: channels of every level.
            num_extra_levels: stride-2 levels on top of the last one (YOLACT: 2, P6 and P7).
        """
        super().__init__()
        shapes = bottom_up.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ValueError(
                f"MODEL.FPN.IN_FEATURES {list(in_features)} names {missing}, which the bottom-up "
                f"network does not output (it has {sorted(shapes)})"
            )
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        strides = [shapes[f].stride for f in in_features]
        stages = [int(round(s).bit_length() - 1) for s in strides]
        self._stage_names = [f"p{s}" for s in stages]
        for name, feature, stage in zip(self._stage_names, in_features, stages):
            lateral = nn.Conv2d(shapes[feature].channels, out_channels, 1)
            output = nn.Conv2d(out_channels, out_channels, 3, padding=1)
            self.add_module(f"fpn_lateral{stage}", lateral)
            self.add_module(f"fpn_output{stage}", output)
        self.top_block = nn.Module()
        last = stages[-1]
        for i in range(num_extra_levels):
            self.top_block.add_module(
                f"p{last + 1 + i}", nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
            )
            self._stage_names.append(f"p{last + 1 + i}")
        self._out_features = list(self._stage_names)
        self._out_feature_strides = {name: 2 ** int(name[1:]) for name in self._out_features}
        self._out_feature_channels = {name: out_channels for name in self._out_features}
        self._stages = stages
        self.num_extra_levels = num_extra_levels
        for module in self.modules():
            if (
                module is not self
                and isinstance(module, nn.Conv2d)
                and not any(module is m for m in bottom_up.modules())
            ):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def size_divisibility(self) -> int:
        return 0

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """``(N, 3, H, W)`` -> ``{"p3": (N, C, ceil(H / 8), ...), ..., "p7": ...}``."""
        bottom_up = self.bottom_up(x)
        feats = [bottom_up[f] for f in self.in_features]
        laterals: List[Tensor] = [None] * len(feats)
        top = None
        for i in range(len(feats) - 1, -1, -1):
            lateral = getattr(self, f"fpn_lateral{self._stages[i]}")(feats[i])
            if top is not None:
                top = F.interpolate(
                    top, size=lateral.shape[-2:], mode="bilinear", align_corners=False
                )
                lateral = lateral + top
            laterals[i] = lateral
            top = lateral
        outs = [
            F.relu(getattr(self, f"fpn_output{stage}")(lat))
            for stage, lat in zip(self._stages, laterals)
        ]
        for i in range(self.num_extra_levels):
            outs.append(getattr(self.top_block, f"p{self._stages[-1] + 1 + i}")(outs[-1]))
        return dict(zip(self._out_features, outs))

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_yolact_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> YolactFPN:
    """YOLACT's ResNet-FPN (see :class:`YolactFPN`).

    Args:
        cfg (CfgNode): reads ``MODEL.RESNETS.*`` (Detectron2's ResNet, with a deformable block
            every ``DEFORM_INTERVAL``-th block of the stages ``DEFORM_ON_PER_STAGE`` enables:
            YOLACT++), ``MODEL.BACKBONE.FREEZE_AT``, ``MODEL.FPN.IN_FEATURES`` and
            ``MODEL.FPN.OUT_CHANNELS``; two extra levels (P6, P7).
        input_shape (ShapeSpec): the image channels.

    Returns:
        YolactFPN: ``{"p3", ..., "p7"}`` at strides 8-128.
    """
    return YolactFPN(
        bottom_up=build_resnet_deform_interval_backbone(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        num_extra_levels=2,
    )
