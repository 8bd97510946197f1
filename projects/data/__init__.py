"""Datasets (COCO, the bundled toy set, user COCO-format sets), mappers and augmentations.

Importing this package registers the mappers in :data:`DATASET_MAPPER_REGISTRY` and the built-in
augmentation recipes (``default``, ``lsj``, ``ssd``, ``semantic``) in
:data:`AUGMENTATION_REGISTRY`.
"""

from .augmentations import AUGMENTATION_REGISTRY, build_augmentations
from .datasets import ensure_datasets_registered, register_all_datasets, register_coco_dataset
from .image_io import BadImageError, read_image_for_dict, read_label_map
from .mapper_registry import DATASET_MAPPER_REGISTRY, build_dataset_mapper
from .mappers import (
    ANNOTATION_STATS,
    BadAnnotationError,
    InstanceDatasetMapper,
    SemanticDatasetMapper,
    filter_dataset_dicts,
    sanitize_annotations,
)

register_all_datasets()

__all__ = [
    "ANNOTATION_STATS",
    "AUGMENTATION_REGISTRY",
    "BadAnnotationError",
    "BadImageError",
    "DATASET_MAPPER_REGISTRY",
    "InstanceDatasetMapper",
    "SemanticDatasetMapper",
    "build_augmentations",
    "build_dataset_mapper",
    "ensure_datasets_registered",
    "register_all_datasets",
    "register_coco_dataset",
    "filter_dataset_dicts",
    "read_image_for_dict",
    "read_label_map",
    "sanitize_annotations",
]
