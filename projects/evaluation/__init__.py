"""Evaluation wiring (COCO with boundary AP, semantic segmentation) and model analysis."""

from .boundary import boundary_iou, mask_to_boundary, pairwise_boundary_iou
from .coco_boundary import COCOBoundaryEvaluator, evaluate_boundary_on_coco
from .config import add_evaluation_config

__all__ = [
    "COCOBoundaryEvaluator",
    "add_evaluation_config",
    "boundary_iou",
    "evaluate_boundary_on_coco",
    "mask_to_boundary",
    "pairwise_boundary_iou",
]
