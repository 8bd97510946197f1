"""Evaluation metrics: COCO evaluation with boundary AP, semantic segmentation, FLOP counting.

* :mod:`.boundary`, :mod:`.coco_boundary`: Boundary IoU and the COCO evaluator with boundary AP;
* :mod:`.flops`: fvcore FLOPs of a Detectron2 model (no caffe2), :mod:`.flop_handles`: handles
  for the ops fvcore does not count, :mod:`.mask_head_flops`: FLOPs of a tensor-in module and
  of Mask R-CNN's conv mask head at any output size (what methods' head counters compare with).

The benchmark that uses them is a tool of its own: :mod:`projects.benchmark`.
"""

from .boundary import boundary_iou, mask_to_boundary, pairwise_boundary_iou
from .coco_boundary import COCOBoundaryEvaluator, evaluate_boundary_on_coco
from .config import add_evaluation_config
from .flop_handles import EXTRA_FLOP_HANDLES
from .flops import count_flops
from .mask_head_flops import conv_mask_head_flops, module_flops

__all__ = [
    "COCOBoundaryEvaluator",
    "EXTRA_FLOP_HANDLES",
    "add_evaluation_config",
    "boundary_iou",
    "conv_mask_head_flops",
    "count_flops",
    "evaluate_boundary_on_coco",
    "mask_to_boundary",
    "module_flops",
    "pairwise_boundary_iou",
]
