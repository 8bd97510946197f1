"""ResNet-FPN on the deform-interval ResNet (:mod:`.resnet`), as Detectron2's
``build_resnet_fpn_backbone`` builds it on its own ResNet."""

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

from .resnet import build_resnet_deform_interval_backbone

__all__ = ["build_resnet_deform_interval_fpn_backbone"]


@BACKBONE_REGISTRY.register()
def build_resnet_deform_interval_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """Detectron2's ResNet-FPN (P2-P6, ``LastLevelMaxPool``) whose bottom-up ResNet honours
    ``MODEL.RESNETS.DEFORM_INTERVAL``.

    Args:
        cfg (CfgNode): reads ``MODEL.RESNETS.*``, ``MODEL.BACKBONE.FREEZE_AT`` and
            ``MODEL.FPN.{IN_FEATURES, OUT_CHANNELS, NORM, FUSE_TYPE}``.
        input_shape (ShapeSpec): the image channels.

    Returns:
        FPN: maps ``(N, C, H, W)`` images to ``{"p2": (N, OUT_CHANNELS, H / 4, W / 4), ...,
        "p6": (N, OUT_CHANNELS, H / 64, W / 64)}`` (the levels of ``MODEL.FPN.IN_FEATURES``
        plus P6). Parameter names are those of Detectron2's builder (``bottom_up.*``,
        ``fpn_lateral*``, ``fpn_output*``).
    """
    return FPN(
        bottom_up=build_resnet_deform_interval_backbone(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
