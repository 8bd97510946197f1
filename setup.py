#!/usr/bin/env python
"""Five instance-segmentation methods on Detectron2: BlendMask, YOLACT/YOLACT++, PointRend,
RefineMask and FastInst. Install with ``make setup`` (which also installs Detectron2)."""

from setuptools import find_packages, setup

METHOD_PACKAGES = ["blendmask", "yolact", "pointrend", "refinemask", "fastinst"]

# Every third-party distribution the code imports (projects/, the method packages, train_net.py,
# demo.py, tools/); tests/test_setup_env.py checks this list against the imports. `make setup`
# installs the project with --no-deps: these come from requirements.txt (pinned by
# constraints.txt), PyTorch from TORCH_SPEC and Detectron2 from tools/install_detectron2.py.
INSTALL_REQUIRES = [
    "detectron2",
    "torch",
    "torchvision",
    "faster-coco-eval>=1.8",
    "fvcore>=0.1.5,<0.1.6",
    "iopath",
    "matplotlib",
    "numpy",
    "opencv-python-headless",
    "Pillow>=10",
    "psutil",
    "pycocotools>=2.0.2",
    "scipy",
    "tabulate",
    "tqdm>4.29.0",
]

setup(
    name="d2-instance-seg",
    version="0.1.0",
    description="BlendMask, YOLACT, PointRend, RefineMask and FastInst on Detectron2",
    python_requires=">=3.9",
    packages=find_packages(include=["projects", "projects.*"] + [p + "*" for p in METHOD_PACKAGES]),
    # The configs, through the link projects/configs -> ../configs (projects.methods.config_root).
    package_data={"projects": ["configs/*.yaml", "configs/*/*.yaml"]},
    install_requires=INSTALL_REQUIRES,
)
