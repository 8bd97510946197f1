"""YOLACT (Bolya et al., "YOLACT: Real-time Instance Segmentation", ICCV 2019) and YOLACT++
("YOLACT++: Better Real-time Instance Segmentation", TPAMI 2020).

Importing this package registers:

* ``META_ARCH_REGISTRY``: ``Yolact``
* ``BACKBONE_REGISTRY``: ``build_yolact_resnet_fpn_backbone``

The authors' checkpoints load after conversion (:mod:`yolact.convert`). Config keys:
:func:`add_yolact_config`; its declaration for the shared tools: :data:`YOLACT`
(:mod:`projects.methods`).
"""

from .anchors import decode_boxes, encode_boxes, make_anchors
from .backbone import YolactFPN, build_yolact_resnet_fpn_backbone
from .config import add_yolact_config
from .heads import MaskIoUNet, PredictionHead, ProtoNet
from .inference import fast_nms, standard_nms
from .meta_arch import Yolact
from .method import YOLACT

__all__ = [
    "MaskIoUNet",
    "PredictionHead",
    "ProtoNet",
    "YOLACT",
    "Yolact",
    "YolactFPN",
    "add_yolact_config",
    "build_yolact_resnet_fpn_backbone",
    "decode_boxes",
    "encode_boxes",
    "fast_nms",
    "make_anchors",
    "standard_nms",
]
