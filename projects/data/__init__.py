"""Datasets (COCO, the bundled toy set, user COCO-format sets), mappers and augmentations."""
from .mapper_registry import DATASET_MAPPER_REGISTRY, build_dataset_mapper

__all__ = ["DATASET_MAPPER_REGISTRY", "build_dataset_mapper"]
