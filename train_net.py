#!/usr/bin/env python
"""Train or evaluate any method of this repository; the config alone picks the method.

python train_net.py --config-file configs/toy/mask_rcnn.yaml
python train_net.py --config-file configs/toy/mask_rcnn.yaml --resume
python train_net.py --config-file configs/toy/mask_rcnn.yaml --eval-only MODEL.WEIGHTS model.pth
python train_net.py --config-file configs/toy/mask_rcnn.yaml --num-gpus 2   # CPU: 2 processes

The body is :mod:`projects.engine.main` (also ``python -m projects.engine.main``).
"""

from projects.engine.main import cli, main, setup

__all__ = ["cli", "main", "setup"]

if __name__ == "__main__":
    cli()
