#!/usr/bin/env python
"""Five instance-segmentation methods on Detectron2: BlendMask, YOLACT/YOLACT++, PointRend,
RefineMask and FastInst. Install with ``make setup`` (which also installs Detectron2)."""

from setuptools import find_packages, setup

METHOD_PACKAGES = ["blendmask", "yolact", "pointrend", "refinemask", "fastinst"]

setup(
    name="d2-instance-seg",
    version="0.1.0",
    description="BlendMask, YOLACT, PointRend, RefineMask and FastInst on Detectron2",
    python_requires=">=3.9",
    packages=find_packages(include=["projects", "projects.*"] + [p + "*" for p in METHOD_PACKAGES]),
    # The configs, through the link projects/configs -> ../configs (projects.methods.config_root).
    package_data={"projects": ["configs/*.yaml", "configs/*/*.yaml"]},
    install_requires=[
        "detectron2",
        "torch",
        "torchvision",
        "fvcore",
        "iopath",
        "pycocotools",
        "opencv-python-headless",
    ],
)
