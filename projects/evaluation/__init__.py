"""Evaluation wiring (COCO, semantic segmentation, boundary quality) and model analysis."""
