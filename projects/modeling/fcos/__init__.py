"""FCOS, shared by the one-stage methods: the ``PROPOSAL_GENERATOR_REGISTRY`` entry ``"FCOS"``
(:class:`FCOS`), its head, targets and losses. Keys: ``MODEL.FCOS.*``
(:func:`projects.modeling.config.add_modeling_config`); backbone:
``build_fcos_resnet_fpn_backbone`` (:mod:`projects.modeling.backbone`)."""

from .fcos import FCOS, FCOSPositives, FCOSTrainingOutputs
from .head import FCOS_NORMS, FCOSHead, PerLevelNorm, Scale
from .losses import LOC_LOSS_TYPES, iou_loss, ltrb_iou, mean_over_processes
from .targets import INF, assign_targets, centerness_targets, compute_locations, size_ranges

__all__ = [
    "FCOS",
    "FCOSHead",
    "FCOSPositives",
    "FCOSTrainingOutputs",
    "FCOS_NORMS",
    "INF",
    "LOC_LOSS_TYPES",
    "PerLevelNorm",
    "Scale",
    "assign_targets",
    "centerness_targets",
    "compute_locations",
    "iou_loss",
    "ltrb_iou",
    "mean_over_processes",
    "size_ranges",
]
