"""Model pieces shared by the methods: postprocessing of predictions, backbone variants.

* :mod:`projects.modeling.postprocessing`: full-image mask postprocessing (upsample to the padded
  input, crop, resize, threshold) and boxes derived from masks, for methods that predict one
  mask per instance over the whole image (YOLACT, FastInst); per-box masks keep using
  Detectron2's ``detector_postprocess``.
* :mod:`.backbone`: ResNet / ResNet-FPN with a deformable conv every ``DEFORM_INTERVAL``-th block
  (registered in ``BACKBONE_REGISTRY`` on import);
* :mod:`.fcos`: the FCOS detector (``PROPOSAL_GENERATOR_REGISTRY`` entry ``"FCOS"``), which
  one-stage methods (BlendMask) build on;
* :mod:`.config`: :func:`add_modeling_config` (``MODEL.RESNETS.DEFORM_INTERVAL``,
  ``MODEL.FCOS.*``).
"""

from .backbone import (
    build_resnet_deform_interval_backbone,
    build_resnet_deform_interval_fpn_backbone,
    deformable_block_flags,
)
from .config import add_modeling_config
from .fcos import FCOS, FCOSPositives, FCOSTrainingOutputs
from .postprocessing import (
    CHUNK_ELEMENTS,
    default_chunk_size,
    full_image_detector_postprocess,
    full_image_masks_postprocess,
    mask_boxes,
    resize_full_image_masks,
)

__all__ = [
    "FCOS",
    "FCOSPositives",
    "FCOSTrainingOutputs",
    "CHUNK_ELEMENTS",
    "add_modeling_config",
    "build_resnet_deform_interval_backbone",
    "build_resnet_deform_interval_fpn_backbone",
    "default_chunk_size",
    "deformable_block_flags",
    "full_image_detector_postprocess",
    "full_image_masks_postprocess",
    "mask_boxes",
    "resize_full_image_masks",
]
