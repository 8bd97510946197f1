"""Model pieces shared by the methods: postprocessing of predictions, backbone variants.

* :mod:`.backbone`: ResNet / ResNet-FPN with a deformable conv every ``DEFORM_INTERVAL``-th block
  (registered in ``BACKBONE_REGISTRY`` on import);
* :mod:`.config`: :func:`add_modeling_config` (``MODEL.RESNETS.DEFORM_INTERVAL``).
"""

from .backbone import (
    build_resnet_deform_interval_backbone,
    build_resnet_deform_interval_fpn_backbone,
    deformable_block_flags,
)
from .config import add_modeling_config

__all__ = [
    "add_modeling_config",
    "build_resnet_deform_interval_backbone",
    "build_resnet_deform_interval_fpn_backbone",
    "deformable_block_flags",
]
