"""Model pieces shared by the methods: postprocessing of predictions, backbone variants.

* :mod:`projects.modeling.postprocessing`: full-image mask postprocessing (upsample to the padded
  input, crop, resize, threshold) and boxes derived from masks, for methods that predict one
  mask per instance over the whole image (YOLACT, FastInst); per-box masks keep using
  Detectron2's ``detector_postprocess``.
"""

from .postprocessing import (
    CHUNK_ELEMENTS,
    default_chunk_size,
    full_image_detector_postprocess,
    full_image_masks_postprocess,
    mask_boxes,
    resize_full_image_masks,
)

__all__ = [
    "CHUNK_ELEMENTS",
    "default_chunk_size",
    "full_image_detector_postprocess",
    "full_image_masks_postprocess",
    "mask_boxes",
    "resize_full_image_masks",
]
