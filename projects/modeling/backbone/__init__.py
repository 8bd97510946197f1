"""Backbone variants shared by the methods.

Registered in Detectron2's ``BACKBONE_REGISTRY`` (each called as ``builder(cfg, input_shape)``):

* ``build_resnet_deform_interval_backbone``: Detectron2's ResNet with a deformable conv in every
  ``MODEL.RESNETS.DEFORM_INTERVAL``-th block of the stages ``DEFORM_ON_PER_STAGE`` enables
  (BlendMask ``dcni3``, YOLACT++);
* ``build_resnet_deform_interval_fpn_backbone``: Detectron2's ResNet-FPN on that ResNet.
"""

from .fpn import build_resnet_deform_interval_fpn_backbone
from .resnet import (
    BLOCKS_PER_STAGE,
    build_resnet_deform_interval_backbone,
    deformable_block_flags,
    make_interval_stage,
)

__all__ = [
    "BLOCKS_PER_STAGE",
    "build_resnet_deform_interval_backbone",
    "build_resnet_deform_interval_fpn_backbone",
    "deformable_block_flags",
    "make_interval_stage",
]
