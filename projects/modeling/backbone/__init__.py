"""Backbone variants shared by the methods.

Registered in Detectron2's ``BACKBONE_REGISTRY`` (each called as ``builder(cfg, input_shape)``):

* ``build_resnet_deform_interval_backbone``: Detectron2's ResNet with a deformable conv in every
  ``MODEL.RESNETS.DEFORM_INTERVAL``-th block of the stages ``DEFORM_ON_PER_STAGE`` enables
  (BlendMask ``dcni3``, YOLACT++);
* ``build_resnet_deform_interval_fpn_backbone``: Detectron2's ResNet-FPN on that ResNet;
* ``build_fcos_resnet_fpn_backbone``: FCOS's ResNet-FPN (P3-P5, P6 / P7 from P5).
"""

from .fcos_fpn import LastLevelP6, LastLevelP6P7, build_fcos_resnet_fpn_backbone
from .fpn import build_resnet_deform_interval_fpn_backbone
from .resnet import (
    BLOCKS_PER_STAGE,
    build_resnet_deform_interval_backbone,
    deformable_block_flags,
    make_interval_stage,
)

__all__ = [
    "BLOCKS_PER_STAGE",
    "LastLevelP6",
    "LastLevelP6P7",
    "build_fcos_resnet_fpn_backbone",
    "build_resnet_deform_interval_backbone",
    "build_resnet_deform_interval_fpn_backbone",
    "deformable_block_flags",
    "make_interval_stage",
]
