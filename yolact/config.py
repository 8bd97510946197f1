"""Config keys of YOLACT and YOLACT++ (``MODEL.YOLACT.*``), defaulted as the authors' COCO configs.

The adder only adds what is missing (:func:`projects.config.add_missing_keys`). The data recipe is
the shared SSD one (``INPUT.AUGMENTATIONS_NAME "ssd"``, ``INPUT.SSD.*``); crowd boxes for the
matcher and the small-box filter are shared mapper keys (``INPUT.CROWD_BOXES``,
``INPUT.MIN_BOX_SIDE``, :func:`projects.data.config.add_data_config`).
"""

from detectron2.config import CfgNode as CN

from projects.config import add_missing_keys

__all__ = ["YOLACT_KEYS", "add_yolact_config"]

# (key, default, meaning)
YOLACT_KEYS = (
    ("MODEL.YOLACT.NUM_CLASSES", 80, "foreground classes (the classifier adds background)"),
    ("MODEL.YOLACT.NUM_PROTOTYPES", 32, "k: prototypes of the protonet and coefficients"),
    ("MODEL.YOLACT.PROTONET_DIM", 256, "channels of the protonet's convs"),
    ("MODEL.YOLACT.HEAD_DIM", 256, "channels of the prediction head's first conv"),
    (
        "MODEL.YOLACT.ANCHOR_SCALES",
        [[24.0], [48.0], [96.0], [192.0], [384.0]],
        "anchor sides in input pixels, one list per level (P3-P7)",
    ),
    ("MODEL.YOLACT.ASPECT_RATIOS", [1.0, 0.5, 2.0], "anchor aspect ratios (w / h)"),
    (
        "MODEL.YOLACT.SQUARE_ANCHORS",
        False,
        "every anchor square with the width of its ratio (the published YOLACT models' anchors)",
    ),
    ("MODEL.YOLACT.POS_IOU_THRESH", 0.5, "anchors at or above this IoU are positives"),
    ("MODEL.YOLACT.NEG_IOU_THRESH", 0.4, "anchors below this IoU are negatives"),
    ("MODEL.YOLACT.CROWD_IOU_THRESH", 0.7, "negatives covered more by a crowd box are neutral"),
    ("MODEL.YOLACT.NEG_POS_RATIO", 3, "hard negatives per positive in the class loss (OHEM)"),
    ("MODEL.YOLACT.CLASS_LOSS_WEIGHT", 1.0, "weight of loss_cls"),
    ("MODEL.YOLACT.BOX_LOSS_WEIGHT", 1.5, "weight of loss_box"),
    ("MODEL.YOLACT.MASK_LOSS_WEIGHT", 6.125, "weight of loss_mask"),
    ("MODEL.YOLACT.MASKS_TO_TRAIN", 100, "positives per image the mask loss samples at most"),
    ("MODEL.YOLACT.SEMANTIC_LOSS", True, "the auxiliary semantic loss on P3"),
    ("MODEL.YOLACT.SEMANTIC_LOSS_WEIGHT", 1.0, "weight of loss_semantic"),
    ("MODEL.YOLACT.SCORE_THRESH_TEST", 0.05, "candidates need a class score above this"),
    ("MODEL.YOLACT.NMS_TYPE", "fast", "fast (Fast NMS) or standard (per-class NMS)"),
    ("MODEL.YOLACT.NMS_TOP_K", 200, "candidates per class entering Fast NMS"),
    ("MODEL.YOLACT.NMS_THRESH", 0.5, "IoU above which a box is suppressed"),
    ("MODEL.YOLACT.MASK_IOU.ENABLED", False, "YOLACT++'s mask re-scoring net"),
    ("MODEL.YOLACT.MASK_IOU.LOSS_WEIGHT", 25.0, "weight of loss_maskiou"),
    (
        "MODEL.YOLACT.MASK_IOU.MIN_AREA",
        25,
        "ground-truth masks of at most this many prototype pixels do not train it",
    ),
)


def add_yolact_config(cfg: CN) -> CN:
    """Add YOLACT's keys to ``cfg`` in place (only the missing ones) and return it.

    :data:`YOLACT_KEYS` lists each ``MODEL.YOLACT.*`` key with its default and meaning. The
    backbone is ``build_yolact_resnet_fpn_backbone`` (``MODEL.FPN.IN_FEATURES``,
    ``MODEL.FPN.OUT_CHANNELS``; YOLACT++'s deformable blocks by ``MODEL.RESNETS.DEFORM_*``).
    The number of detections kept per image is Detectron2's ``TEST.DETECTIONS_PER_IMAGE``.
    """
    add_missing_keys(cfg, {key: value for key, value, _meaning in YOLACT_KEYS})
    return cfg
