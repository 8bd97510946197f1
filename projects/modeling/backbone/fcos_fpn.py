"""The ResNet-FPN of FCOS-based detectors (BlendMask): P3-P5 from res3-res5, with P6 / P7
computed from P5, under the builder name the published FCOS / BlendMask configs use (parameter
names as in their checkpoints)."""

from typing import List

import fvcore.nn.weight_init as weight_init
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelP6P7
from torch import Tensor, nn

from .resnet import build_resnet_deform_interval_backbone

__all__ = ["LastLevelP6", "LastLevelP6P7", "build_fcos_resnet_fpn_backbone"]


class LastLevelP6(nn.Module):
    """P6 = conv3x3/2(P5) only (BlendMask-550's four levels)."""

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "p5"):
        super().__init__()
        self.num_levels = 1
        self.in_feature = in_feature
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        weight_init.c2_xavier_fill(self.p6)

    def forward(self, x: Tensor) -> List[Tensor]:
        """``(N, C, H, W)`` -> ``[(N, C', H/2, W/2)]``."""
        return [self.p6(x)]


# P6 and P7: Detectron2's own RetinaNet block, fed with P5 (same parameter names, p6 / p7)
_TOP_BLOCKS = {2: LastLevelP6P7, 1: LastLevelP6}


@BACKBONE_REGISTRY.register()
def build_fcos_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet-FPN with ``MODEL.FCOS.TOP_LEVELS`` extra levels computed from P5.

    The ResNet is Detectron2's, with a deformable conv every ``MODEL.RESNETS.DEFORM_INTERVAL``-th
    block of the stages ``DEFORM_ON_PER_STAGE`` enables (the ``dcni3`` configs).

    Args:
        cfg (CfgNode): reads ``MODEL.RESNETS.*``, ``MODEL.BACKBONE.FREEZE_AT``,
            ``MODEL.FPN.{IN_FEATURES, OUT_CHANNELS, NORM, FUSE_TYPE}`` and
            ``MODEL.FCOS.TOP_LEVELS`` (2: P6 and P7, 1: P6, 0: none).
        input_shape (ShapeSpec): the image channels.

    Returns:
        FPN: ``(N, C, H, W)`` images -> ``{"p3": (N, OUT_CHANNELS, H / 8, W / 8), ...}`` for
        the levels of ``MODEL.FPN.IN_FEATURES`` (res3-res5 in FCOS's configs) and the extra ones.

    Raises:
        ValueError: ``MODEL.FCOS.TOP_LEVELS`` is not 0, 1 or 2.
    """
    top_levels = cfg.MODEL.FCOS.TOP_LEVELS
    if top_levels not in (0, 1, 2):
        raise ValueError(f"MODEL.FCOS.TOP_LEVELS must be 0, 1 or 2, got {top_levels!r}")
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    top_block = _TOP_BLOCKS[top_levels](out_channels, out_channels, "p5") if top_levels else None
    return FPN(
        bottom_up=build_resnet_deform_interval_backbone(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
