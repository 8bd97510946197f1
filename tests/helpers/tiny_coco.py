"""Shared helpers of the engine tests: a tiny synthetic COCO dataset and a tiny Mask R-CNN config.

(Named ``test_engine_*`` to live with the engine tests; it defines no tests itself.)
"""

import json
import os

import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances
from PIL import Image

from projects.config import get_cfg


def write_tiny_coco(root, num_images=6, seed=0):
    """Write ``num_images`` small images with 1-2 filled rectangles/ellipses of 2 classes and
    their COCO JSON (polygons) under ``root``. Returns ``(json_path, image_dir)``."""
    rng = np.random.RandomState(seed)
    image_dir = os.path.join(root, "images")
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        w, h = (80, 64) if i % 3 else (64, 80)  # mostly landscape, some portrait
        img = (rng.rand(h, w, 3) * 60).astype(np.uint8)
        for _ in range(1 + i % 2):
            cat = int(rng.randint(2))
            bw, bh = int(rng.randint(20, 36)), int(rng.randint(20, 36))
            x0, y0 = int(rng.randint(0, w - bw)), int(rng.randint(0, h - bh))
            if cat == 0:
                img[y0 : y0 + bh, x0 : x0 + bw] = (200, 60, 60)
                poly = [x0, y0, x0 + bw, y0, x0 + bw, y0 + bh, x0, y0 + bh]
            else:
                t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
                cx, cy = x0 + bw / 2, y0 + bh / 2
                xs, ys = cx + bw / 2 * np.cos(t), cy + bh / 2 * np.sin(t)
                yy, xx = np.mgrid[:h, :w]
                inside = ((xx - cx) / (bw / 2)) ** 2 + ((yy - cy) / (bh / 2)) ** 2 <= 1
                img[inside] = (60, 200, 60)
                poly = np.stack([xs, ys], 1).ravel().round(1).tolist()
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": cat + 1,
                    "bbox": [x0, y0, bw, bh],
                    "area": float(bw * bh),
                    "iscrowd": 0,
                    "segmentation": [poly],
                }
            )
        name = f"{i:03d}.png"
        Image.fromarray(img).save(os.path.join(image_dir, name))
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
    categories = [{"id": 1, "name": "box"}, {"id": 2, "name": "blob"}]
    json_path = os.path.join(root, "annotations.json")
    with open(json_path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return json_path, image_dir


def register_tiny_coco(name, json_path, image_dir):
    """Register (once per process) a COCO-format dataset under ``name``."""
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, json_path, image_dir)
    return name


def tiny_mask_rcnn_cfg(output_dir, train, test, norm="BN"):
    """A Mask R-CNN with a ResNet-18 FPN of 32 channels on 64-px images, for CPU tests."""
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32], [64], [128], [256]]
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 50
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 50
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 64
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 1
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 16
    cfg.INPUT.MIN_SIZE_TRAIN = (56, 64)
    cfg.INPUT.MAX_SIZE_TRAIN = 100
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 100
    cfg.INPUT.DATASET_MAPPER_NAME = "DatasetMapper"  # Detectron2's own, always registered
    cfg.DATASETS.TRAIN = (train,)
    cfg.DATASETS.TEST = (test,) if test else ()
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.MAX_ITER = 6
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.WARMUP_ITERS = 2
    cfg.SOLVER.CHECKPOINT_PERIOD = 3
    cfg.TEST.EVAL_PERIOD = 0
    cfg.TEST.DETECTIONS_PER_IMAGE = 20
    cfg.SEED = 7
    cfg.OUTPUT_DIR = str(output_dir)
    return cfg


def write_cfg(cfg, path):
    """Dump ``cfg`` to a YAML file that ``train_net.py --config-file`` can read."""
    with open(path, "w") as f:
        f.write(cfg.dump())
    return str(path)
