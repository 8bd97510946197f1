"""Detectron2's ResNet with a deformable convolution in every n-th block of the chosen stages.

Detectron2 v0.6's ``build_resnet_backbone`` makes every block of a stage deformable when
``MODEL.RESNETS.DEFORM_ON_PER_STAGE`` enables that stage. BlendMask's ``dcni3`` models
(AdelaiDet's ``resnet_interval.py``) and YOLACT++ (``dcn_interval=3``) use one in every third
block instead. Both count from the first block of each stage: block ``i`` (0-based, within its
stage) is deformable when ``i % interval == 0``. For a ResNet-101 with C3-C5 enabled and
interval 3 that is ``res3.{0,3}``, ``res4.{0,3,...,21}`` and ``res5.0`` (11 blocks, the blocks
of YOLACT++'s published R101 model); interval 1 is Detectron2's every-block behaviour.

The blocks are Detectron2's own ``BottleneckBlock`` / ``DeformBottleneckBlock`` / ``BasicBlock``
inside Detectron2's ``ResNet``, so parameter names equal those of Detectron2's builder and of
AdelaiDet's: a deformable block ``resN.i`` holds ``conv2_offset`` (offsets, plus the modulation
mask when ``MODEL.RESNETS.DEFORM_MODULATED``) beside ``conv2``.

Registered in ``BACKBONE_REGISTRY``: ``build_resnet_deform_interval_backbone`` (this module) and
``build_resnet_deform_interval_fpn_backbone`` (:mod:`.fpn`). Both are called as
``builder(cfg, input_shape)`` and read ``MODEL.RESNETS.DEFORM_INTERVAL`` (added by
:func:`projects.modeling.config.add_modeling_config`).
"""

from typing import List, Sequence

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import (
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    DeformBottleneckBlock,
    ResNet,
)

__all__ = [
    "BLOCKS_PER_STAGE",
    "build_resnet_deform_interval_backbone",
    "deformable_block_flags",
    "make_interval_stage",
]

#: Blocks in res2..res5 for each ResNet depth (Detectron2's table).
BLOCKS_PER_STAGE = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
_STAGE_NAMES = ("res2", "res3", "res4", "res5")


def _check_interval(interval) -> int:
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise ValueError(
            f"MODEL.RESNETS.DEFORM_INTERVAL must be an integer >= 1 (1: every block of a stage "
            f"enabled by DEFORM_ON_PER_STAGE is deformable, 3: blocks 0, 3, 6, ...), got "
            f"{interval!r}; disable deformable stages with DEFORM_ON_PER_STAGE instead"
        )
    return interval


def deformable_block_flags(num_blocks: int, interval: int) -> List[bool]:
    """Which blocks of a deformable stage get the deformable convolution.

    Args:
        num_blocks (int): blocks in the stage.
        interval (int): ``MODEL.RESNETS.DEFORM_INTERVAL`` (>= 1).

    Returns:
        list[bool]: ``num_blocks`` flags; block ``i`` is deformable iff ``i % interval == 0``.
    """
    interval = _check_interval(interval)
    return [i % interval == 0 for i in range(num_blocks)]


def make_interval_stage(
    *,
    num_blocks: int,
    in_channels: int,
    out_channels: int,
    first_stride: int,
    deform_flags: Sequence[bool],
    deform_modulated: bool = False,
    deform_num_groups: int = 1,
    **block_kwargs,
) -> list:
    """One bottleneck stage whose flagged blocks are ``DeformBottleneckBlock``.

    Args:
        num_blocks (int): blocks in the stage.
        in_channels (int): input channels of the stage's first block.
        out_channels (int): output channels of every block.
        first_stride (int): stride of the first block (the others have stride 1).
        deform_flags (Sequence[bool]): ``num_blocks`` flags, True for a deformable block.
        deform_modulated (bool): modulated (v2) deformable convolution.
        deform_num_groups (int): offset groups of the deformable convolution.
        block_kwargs: the other ``BottleneckBlock`` arguments (``bottleneck_channels``,
            ``num_groups``, ``norm``, ``stride_in_1x1``, ``dilation``).

    Returns:
        list[CNNBlockBase]: the blocks, in order.
    """
    if len(deform_flags) != num_blocks:
        raise ValueError(f"deform_flags has {len(deform_flags)} entries for {num_blocks} blocks")
    blocks = []
    for i, deformable in enumerate(deform_flags):
        kwargs = dict(block_kwargs, stride=first_stride if i == 0 else 1)
        if deformable:
            block_class = DeformBottleneckBlock
            kwargs.update(deform_modulated=deform_modulated, deform_num_groups=deform_num_groups)
        else:
            block_class = BottleneckBlock
        blocks.append(block_class(in_channels=in_channels, out_channels=out_channels, **kwargs))
        in_channels = out_channels
    return blocks


def _check_config(depth, res2_out_channels, num_groups, res5_dilation, deform_on_per_stage):
    if depth not in BLOCKS_PER_STAGE:
        raise ValueError(
            f"MODEL.RESNETS.DEPTH must be one of {sorted(BLOCKS_PER_STAGE)}, got {depth!r}"
        )
    if len(deform_on_per_stage) != 4:
        raise ValueError(
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE needs one flag per stage res2..res5, got "
            f"{list(deform_on_per_stage)!r}"
        )
    if res5_dilation not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {res5_dilation!r}")
    if depth in (18, 34):
        # Detectron2's conditions for BasicBlock ResNets (it asserts them).
        wrong = {
            "RES2_OUT_CHANNELS": (res2_out_channels, 64),
            "NUM_GROUPS": (num_groups, 1),
            "RES5_DILATION": (res5_dilation, 1),
        }
        for key, (value, needed) in wrong.items():
            if value != needed:
                raise ValueError(f"R{depth} needs MODEL.RESNETS.{key} = {needed}, got {value!r}")
        if any(deform_on_per_stage):
            raise ValueError(
                f"R{depth} has no deformable blocks (Detectron2's BasicBlock): set "
                f"MODEL.RESNETS.DEFORM_ON_PER_STAGE to all False, got {list(deform_on_per_stage)!r}"
            )


def _resnet_from_config(cfg, input_shape: ShapeSpec):
    r = cfg.MODEL.RESNETS
    if "DEFORM_INTERVAL" not in r:
        raise KeyError(
            "MODEL.RESNETS.DEFORM_INTERVAL is missing from the config: build it with "
            "projects.config.get_cfg() or call projects.modeling.config.add_modeling_config(cfg)"
        )
    return {
        "in_channels": input_shape.channels,
        "depth": r.DEPTH,
        "out_features": r.OUT_FEATURES,
        "norm": r.NORM,
        "stem_out_channels": r.STEM_OUT_CHANNELS,
        "res2_out_channels": r.RES2_OUT_CHANNELS,
        "num_groups": r.NUM_GROUPS,
        "width_per_group": r.WIDTH_PER_GROUP,
        "stride_in_1x1": r.STRIDE_IN_1X1,
        "res5_dilation": r.RES5_DILATION,
        "deform_on_per_stage": r.DEFORM_ON_PER_STAGE,
        "deform_modulated": r.DEFORM_MODULATED,
        "deform_num_groups": r.DEFORM_NUM_GROUPS,
        "deform_interval": r.DEFORM_INTERVAL,
        "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
    }


@BACKBONE_REGISTRY.register()
@configurable(from_config=_resnet_from_config)
def build_resnet_deform_interval_backbone(
    *,
    in_channels: int = 3,
    depth: int = 50,
    out_features: Sequence[str] = ("res4",),
    norm: str = "FrozenBN",
    stem_out_channels: int = 64,
    res2_out_channels: int = 256,
    num_groups: int = 1,
    width_per_group: int = 64,
    stride_in_1x1: bool = True,
    res5_dilation: int = 1,
    deform_on_per_stage: Sequence[bool] = (False, False, False, False),
    deform_modulated: bool = False,
    deform_num_groups: int = 1,
    deform_interval: int = 1,
    freeze_at: int = 0,
) -> ResNet:
    """Detectron2's ResNet whose deformable stages hold a deformable conv every n-th block.

    Called as ``build_resnet_deform_interval_backbone(cfg, input_shape)`` (the registry's
    signature; the keys are ``MODEL.RESNETS.*`` of the same names and
    ``MODEL.BACKBONE.FREEZE_AT``) or with the keyword arguments below. Apart from
    ``deform_interval`` it builds what Detectron2's ``build_resnet_backbone`` builds.

    Args:
        in_channels (int): image channels (``input_shape.channels``).
        depth (int): 18, 34, 50, 101 or 152.
        out_features (Sequence[str]): returned features, e.g. ``("res3", "res4", "res5")``;
            stages after the last one named are not built.
        norm (str): normalization of every conv (``get_norm`` name).
        stem_out_channels (int): channels of the 7x7 stem.
        res2_out_channels (int): output channels of res2 (doubled each stage).
        num_groups (int): groups of the 3x3 convs (ResNeXt).
        width_per_group (int): bottleneck width per group in res2.
        stride_in_1x1 (bool): stride in the first 1x1 conv (MSRA weights) or in the 3x3.
        res5_dilation (int): 1, or 2 for a stride-16 res5.
        deform_on_per_stage (Sequence[bool]): four flags for res2..res5.
        deform_modulated (bool): modulated (v2) deformable convolution.
        deform_num_groups (int): offset groups of the deformable convolution.
        deform_interval (int): block ``i`` of an enabled stage is deformable iff
            ``i % deform_interval == 0``; 1 is Detectron2's every-block behaviour.
        freeze_at (int): stages to freeze (0 none, 1 the stem, 2 the stem and res2, ...).

    Returns:
        ResNet: whose ``forward(x)`` maps ``(N, in_channels, H, W)`` to
        ``{name: (N, C_name, H / stride_name, W / stride_name)}`` for ``out_features``.
    """
    _check_config(depth, res2_out_channels, num_groups, res5_dilation, deform_on_per_stage)
    _check_interval(deform_interval)
    stem = BasicStem(in_channels=in_channels, out_channels=stem_out_channels, norm=norm)
    # Stages after the last requested feature are not built (Detectron2's ResNet drops them).
    num_stages = max(
        [_STAGE_NAMES.index(f) + 1 for f in out_features if f in _STAGE_NAMES], default=0
    )
    stage_in, stage_out = stem_out_channels, res2_out_channels
    bottleneck_channels = num_groups * width_per_group
    stages = []
    for idx in range(num_stages):
        num_blocks = BLOCKS_PER_STAGE[depth][idx]
        dilation = res5_dilation if idx == 3 else 1
        first_stride = 1 if idx == 0 or (idx == 3 and dilation == 2) else 2
        if depth in (18, 34):
            blocks = ResNet.make_stage(
                BasicBlock,
                num_blocks,
                in_channels=stage_in,
                out_channels=stage_out,
                stride_per_block=[first_stride] + [1] * (num_blocks - 1),
                norm=norm,
            )
        else:
            enabled = bool(deform_on_per_stage[idx])
            blocks = make_interval_stage(
                num_blocks=num_blocks,
                in_channels=stage_in,
                out_channels=stage_out,
                first_stride=first_stride,
                deform_flags=(
                    deformable_block_flags(num_blocks, deform_interval)
                    if enabled
                    else [False] * num_blocks
                ),
                deform_modulated=deform_modulated,
                deform_num_groups=deform_num_groups,
                bottleneck_channels=bottleneck_channels,
                num_groups=num_groups,
                norm=norm,
                stride_in_1x1=stride_in_1x1,
                dilation=dilation,
            )
        stages.append(blocks)
        stage_in, stage_out = stage_out, stage_out * 2
        bottleneck_channels *= 2
    return ResNet(stem, stages, out_features=list(out_features), freeze_at=freeze_at)
