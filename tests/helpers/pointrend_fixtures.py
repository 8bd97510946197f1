"""Shared helpers of the PointRend tests: tiny configs (ours and Detectron2's) and inputs.

(Named ``test_pointrend_*`` to live with the PointRend tests; it defines no tests itself.)
"""

import torch
from detectron2.config import get_cfg as d2_get_cfg
from detectron2.modeling import build_model
from detectron2.projects import point_rend as d2_point_rend
from detectron2.structures import BitMasks, Boxes, Instances

import pointrend

NUM_CLASSES = 3


def _tiny_rcnn(cfg):
    """Shrink a Mask R-CNN FPN config to a CPU-sized ResNet-18-ish model."""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 16
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32], [64], [128], [256]]
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 64
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 64
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 16
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = NUM_CLASSES
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 5
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 32
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    cfg.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES = True
    cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE = ""
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 16
    cfg.MODEL.ROI_MASK_HEAD.FC_DIM = 32
    cfg.MODEL.ROI_MASK_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION = 7
    cfg.MODEL.ROI_MASK_HEAD.IN_FEATURES = ["p2"]
    cfg.MODEL.ROI_MASK_HEAD.POINT_HEAD_ON = True
    cfg.MODEL.POINT_HEAD.NUM_CLASSES = NUM_CLASSES
    cfg.MODEL.POINT_HEAD.FC_DIM = 16
    cfg.MODEL.POINT_HEAD.NUM_FC = 3
    cfg.MODEL.POINT_HEAD.IN_FEATURES = ["p2"]
    cfg.INPUT.MASK_FORMAT = "bitmask"
    return cfg


def d2_instance_cfg(implicit=False):
    """Detectron2's own PointRend (``detectron2.projects.point_rend``), tiny."""
    cfg = d2_get_cfg()
    d2_point_rend.add_pointrend_config(cfg)
    _tiny_rcnn(cfg)
    cfg.MODEL.ROI_HEADS.NAME = "PointRendROIHeads"
    if implicit:
        _implicit(cfg)
        cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"  # PointRendROIHeads rejects implicit heads
        cfg.MODEL.ROI_MASK_HEAD.NAME = "ImplicitPointRendMaskHead"
        cfg.MODEL.POINT_HEAD.NAME = "ImplicitPointHead"
    else:
        cfg.MODEL.ROI_MASK_HEAD.NAME = "PointRendMaskHead"
        cfg.MODEL.POINT_HEAD.NAME = "StandardPointHead"
    return cfg


def instance_cfg(implicit=False):
    """This project's PointRend, the same tiny model."""
    cfg = d2_get_cfg()
    pointrend.add_pointrend_config(cfg)
    _tiny_rcnn(cfg)
    cfg.MODEL.ROI_HEADS.NAME = "RenderROIHeads"
    if implicit:
        _implicit(cfg)
        cfg.MODEL.ROI_MASK_HEAD.NAME = "RenderImplicitMaskHead"
        cfg.MODEL.POINT_HEAD.NAME = "RenderImplicitPointHead"
    else:
        cfg.MODEL.ROI_MASK_HEAD.NAME = "RenderMaskHead"
        cfg.MODEL.POINT_HEAD.NAME = "RenderPointHead"
    return cfg


def _implicit(cfg):
    cfg.MODEL.POINT_HEAD.TRAIN_NUM_POINTS = 196
    cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS = 3
    cfg.MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS = 784


def _semantic(cfg, coarse_head):
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 16
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = NUM_CLASSES
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 16
    cfg.MODEL.SEM_SEG_HEAD.NORM = ""
    cfg.MODEL.POINT_HEAD.NUM_CLASSES = NUM_CLASSES
    cfg.MODEL.POINT_HEAD.FC_DIM = 16
    cfg.MODEL.POINT_HEAD.NUM_FC = 3
    cfg.MODEL.POINT_HEAD.IN_FEATURES = ["p2"]
    cfg.MODEL.POINT_HEAD.TRAIN_NUM_POINTS = 256
    cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS = 2
    cfg.MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS = 512
    cfg.MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER = False
    cfg.MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME = coarse_head
    return cfg


def d2_semantic_cfg():
    cfg = d2_get_cfg()
    d2_point_rend.add_pointrend_config(cfg)
    _semantic(cfg, "SemSegFPNHead")
    cfg.MODEL.SEM_SEG_HEAD.NAME = "PointRendSemSegHead"
    cfg.MODEL.POINT_HEAD.NAME = "StandardPointHead"
    return cfg


def semantic_cfg(coarse_head="SemSegFPNHead"):
    cfg = d2_get_cfg()
    pointrend.add_pointrend_config(cfg)
    _semantic(cfg, coarse_head)
    cfg.MODEL.SEM_SEG_HEAD.NAME = "RenderSemSegHead"
    cfg.MODEL.POINT_HEAD.NAME = "RenderPointHead"
    return cfg


def build(cfg):
    torch.manual_seed(0)
    return build_model(cfg)


def _blob_mask(h, w, cx, cy, rx, ry):
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1


def instance_inputs(with_gt=True, num_images=2, seed=0):
    """Two small images with 1-2 elliptic objects each (bitmask ground truth)."""
    g = torch.Generator().manual_seed(seed)
    sizes = [(64, 80), (72, 56)]
    inputs = []
    for i in range(num_images):
        h, w = sizes[i % 2]
        image = torch.rand(3, h, w, generator=g) * 255
        inst = Instances((h, w))
        masks = []
        if with_gt:
            for k in range(1 + i % 2):
                cx, cy = w * (0.3 + 0.4 * k), h * (0.45 + 0.1 * k)
                masks.append(_blob_mask(h, w, cx, cy, w * 0.2, h * 0.25))
        if masks:
            m = torch.stack(masks)
            inst.gt_masks = BitMasks(m)
            inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
            inst.gt_classes = torch.arange(len(masks), dtype=torch.int64) % NUM_CLASSES
        else:
            inst.gt_masks = BitMasks(torch.zeros(0, h, w, dtype=torch.bool))
            inst.gt_boxes = Boxes(torch.zeros(0, 4))
            inst.gt_classes = torch.zeros(0, dtype=torch.int64)
        inputs.append({"image": image, "instances": inst, "height": h, "width": w})
    return inputs


def semantic_inputs(num_images=2, seed=0):
    """Two small images with label maps (3 classes plus an ignored band)."""
    g = torch.Generator().manual_seed(seed)
    inputs = []
    for h, w in [(64, 64), (64, 48)][:num_images]:
        image = torch.rand(3, h, w, generator=g) * 255
        label = torch.zeros(h, w, dtype=torch.int64)
        label[_blob_mask(h, w, w * 0.4, h * 0.5, w * 0.25, h * 0.3)] = 1
        label[:, -8:] = 2
        label[:4] = 255
        inputs.append({"image": image, "sem_seg": label, "height": h, "width": w})
    return inputs
