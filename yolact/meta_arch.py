"""YOLACT (Bolya et al., "YOLACT: Real-time Instance Segmentation", ICCV 2019) and YOLACT++
("YOLACT++: Better Real-time Instance Segmentation", TPAMI 2020): k prototypes from P3, k
coefficients per anchor, masks as their sigmoid-ed linear combination cropped by the box.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import BitMasks, Boxes, ImageList, Instances, PolygonMasks
from torch import Tensor, nn

from projects.modeling.fcos.losses import mean_over_processes
from projects.modeling.postprocessing import full_image_detector_postprocess

from .anchors import anchors_per_cell, decode_boxes, encode_boxes, level_sizes, make_anchors
from .heads import MaskIoUNet, PredictionHead, ProtoNet, xavier_init
from .inference import assemble_masks, fast_nms, standard_nms
from .losses import downsample_masks, mask_loss_terms, ohem_negatives, semantic_targets
from .matching import anchors_as_xyxy, match_anchors

__all__ = ["Yolact"]


def gt_masks_tensor(instances: Instances, padded_size: Tuple[int, int]) -> Tensor:
    """The ground-truth masks of one image as ``(G, Hp, Wp)`` bool over the padded input."""
    height, width = instances.image_size
    masks = instances.gt_masks
    if isinstance(masks, PolygonMasks):
        masks = BitMasks.from_polygon_masks(masks, height, width)
    tensor = masks.tensor if isinstance(masks, BitMasks) else torch.as_tensor(masks)
    tensor = tensor.bool()
    pad_h, pad_w = padded_size[0] - tensor.shape[-2], padded_size[1] - tensor.shape[-1]
    return F.pad(tensor, (0, pad_w, 0, pad_h))


@META_ARCH_REGISTRY.register()
class Yolact(nn.Module):
    """YOLACT / YOLACT++: ``forward(batched_inputs)`` returns the losses in training
    (``loss_cls``, ``loss_box``, ``loss_mask``, ``loss_semantic`` with
    ``MODEL.YOLACT.SEMANTIC_LOSS``, ``loss_maskiou`` with ``MODEL.YOLACT.MASK_IOU.ENABLED``) and
    ``[{"instances": Instances}]`` at inference: ``pred_boxes``, ``scores``, ``pred_classes``,
    ``pred_masks`` ``(D, H, W)`` at each input's ``height`` x ``width`` (and ``mask_scores``,
    class score x predicted IoU, with the re-scoring net).

    Called as ``Yolact(cfg)`` (``META_ARCH_REGISTRY``) or with the keyword arguments below.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        proto_net: nn.Module,
        prediction_head: PredictionHead,
        semantic_seg_conv: Optional[nn.Module],
        maskiou_net: Optional[MaskIoUNet],
        anchor_scales: Sequence[Sequence[float]],
        aspect_ratios: Sequence[float],
        square_anchors: bool,
        pixel_mean,
        pixel_std,
        pos_iou_thresh: float = 0.5,
        neg_iou_thresh: float = 0.4,
        crowd_iou_thresh: float = 0.7,
        neg_pos_ratio: float = 3,
        loss_weights: Optional[Dict[str, float]] = None,
        masks_to_train: int = 100,
        maskiou_min_area: float = 25,
        score_thresh: float = 0.05,
        nms_type: str = "fast",
        nms_top_k: int = 200,
        nms_thresh: float = 0.5,
        max_detections: int = 100,
    ):
        """
        Args:
            backbone: ResNet-FPN giving P3-P7 (``build_yolact_resnet_fpn_backbone``).
            proto_net: P3 -> prototypes ``(N, k, h, w)``.
            prediction_head: the head shared by every level.
            semantic_seg_conv: 1x1 conv P3 -> K semantic logits, or None (no semantic loss).
            maskiou_net: YOLACT++'s re-scoring net, or None.
            anchor_scales: anchor sides in pixels, one sequence per level.
            aspect_ratios: anchor aspect ratios.
            square_anchors: see :mod:`yolact.anchors`.
            pixel_mean, pixel_std: per-channel statistics of the input format.
            pos_iou_thresh, neg_iou_thresh, crowd_iou_thresh: see :mod:`yolact.matching`.
            neg_pos_ratio: OHEM's negatives per positive.
            loss_weights: weights of ``cls``, ``box``, ``mask``, ``semantic``, ``maskiou``.
            masks_to_train: positives per image in the mask loss at most.
            maskiou_min_area: ground-truth masks of at most this many prototype pixels do not
                train the re-scoring net.
            score_thresh, nms_type, nms_top_k, nms_thresh, max_detections: inference (see
                :mod:`yolact.inference`).
        """
        super().__init__()
        self.backbone = backbone
        self.proto_net = proto_net
        self.prediction_head = prediction_head
        self.semantic_seg_conv = semantic_seg_conv
        self.maskiou_net = maskiou_net
        self.anchor_scales = [list(map(float, s)) for s in anchor_scales]
        self.aspect_ratios = list(map(float, aspect_ratios))
        self.square_anchors = bool(square_anchors)
        self.pos_iou_thresh = pos_iou_thresh
        self.neg_iou_thresh = neg_iou_thresh
        self.crowd_iou_thresh = crowd_iou_thresh
        self.neg_pos_ratio = neg_pos_ratio
        weights = {"cls": 1.0, "box": 1.5, "mask": 6.125, "semantic": 1.0, "maskiou": 25.0}
        weights.update(loss_weights or {})
        self.loss_weights = weights
        self.masks_to_train = masks_to_train
        self.maskiou_min_area = maskiou_min_area
        if nms_type not in ("fast", "standard"):
            raise ValueError(
                f"MODEL.YOLACT.NMS_TYPE must be 'fast' or 'standard', got {nms_type!r}"
            )
        self.score_thresh = score_thresh
        self.nms_type = nms_type
        self.nms_top_k = nms_top_k
        self.nms_thresh = nms_thresh
        self.max_detections = max_detections
        self.in_features = list(backbone.output_shape())
        if len(self.anchor_scales) != len(self.in_features):
            raise ValueError(
                f"MODEL.YOLACT.ANCHOR_SCALES has {len(self.anchor_scales)} levels but the backbone "
                f"outputs {len(self.in_features)} ({self.in_features})"
            )
        num_anchors = anchors_per_cell(self.anchor_scales, self.aspect_ratios)
        if num_anchors != prediction_head.num_anchors:
            raise ValueError(
                f"the prediction head predicts {prediction_head.num_anchors} anchors per cell, "
                f"MODEL.YOLACT.ANCHOR_SCALES x ASPECT_RATIOS give {num_anchors}"
            )
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self._anchor_cache: Dict[tuple, Tensor] = {}

    @classmethod
    def from_config(cls, cfg):
        y = cfg.MODEL.YOLACT
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        channels = {s.channels for s in shapes.values()}
        if len(channels) != 1:
            raise ValueError("YOLACT's head is shared: every FPN level needs the same channels")
        in_channels = channels.pop()
        num_anchors = anchors_per_cell(y.ANCHOR_SCALES, y.ASPECT_RATIOS)
        semantic = None
        if y.SEMANTIC_LOSS:
            semantic = nn.Conv2d(in_channels, y.NUM_CLASSES, 1)
            xavier_init(semantic)
        return {
            "backbone": backbone,
            "proto_net": ProtoNet(in_channels, y.PROTONET_DIM, y.NUM_PROTOTYPES),
            "prediction_head": PredictionHead(
                in_channels, num_anchors, y.NUM_CLASSES, y.NUM_PROTOTYPES, y.HEAD_DIM
            ),
            "semantic_seg_conv": semantic,
            "maskiou_net": MaskIoUNet(y.NUM_CLASSES) if y.MASK_IOU.ENABLED else None,
            "anchor_scales": y.ANCHOR_SCALES,
            "aspect_ratios": y.ASPECT_RATIOS,
            "square_anchors": y.SQUARE_ANCHORS,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "pos_iou_thresh": y.POS_IOU_THRESH,
            "neg_iou_thresh": y.NEG_IOU_THRESH,
            "crowd_iou_thresh": y.CROWD_IOU_THRESH,
            "neg_pos_ratio": y.NEG_POS_RATIO,
            "loss_weights": {
                "cls": y.CLASS_LOSS_WEIGHT,
                "box": y.BOX_LOSS_WEIGHT,
                "mask": y.MASK_LOSS_WEIGHT,
                "semantic": y.SEMANTIC_LOSS_WEIGHT,
                "maskiou": y.MASK_IOU.LOSS_WEIGHT,
            },
            "masks_to_train": y.MASKS_TO_TRAIN,
            "maskiou_min_area": y.MASK_IOU.MIN_AREA,
            "score_thresh": y.SCORE_THRESH_TEST,
            "nms_type": y.NMS_TYPE,
            "nms_top_k": y.NMS_TOP_K,
            "nms_thresh": y.NMS_THRESH,
            "max_detections": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise and batch the images (padded at the bottom and right to the largest)."""
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def anchors(self, features: List[Tensor], padded_size: Tuple[int, int]) -> Tensor:
        """The anchors ``(A_total, 4)`` ``(cx, cy, w, h)`` of an input (cached per size)."""
        key = (tuple(level_sizes(features)), tuple(padded_size), features[0].device)
        if key not in self._anchor_cache:
            if len(self._anchor_cache) > 16:
                self._anchor_cache.clear()
            self._anchor_cache[key] = make_anchors(
                key[0],
                padded_size,
                self.anchor_scales,
                self.aspect_ratios,
                self.square_anchors,
                device=features[0].device,
            )
        return self._anchor_cache[key]

    def predict(self, images: Tensor) -> Dict[str, Tensor]:
        """The network on a normalised, padded batch ``(N, 3, Hp, Wp)``.

        Returns:
            dict: ``features`` (list of ``(N, C, H_l, W_l)``), ``prototypes`` ``(N, k, h, w)``,
            ``box_deltas`` ``(N, A, 4)``, ``cls_logits`` ``(N, A, K + 1)``, ``coefficients``
            ``(N, A, k)`` and ``anchors`` ``(A, 4)``.
        """
        feats = self.backbone(images)
        levels = [feats[f] for f in self.in_features]
        box_deltas, cls_logits, coefs = self.prediction_head(levels)
        return {
            "features": levels,
            "prototypes": self.proto_net(levels[0]),
            "box_deltas": box_deltas,
            "cls_logits": cls_logits,
            "coefficients": coefs,
            "anchors": self.anchors(levels, tuple(images.shape[-2:])),
        }

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: a list of the mapper's dicts: ``image`` ``(3, H, W)``; in training
                ``instances`` (``gt_boxes``, ``gt_classes``, ``gt_masks``) and optionally
                ``crowd_boxes`` (``(C, 4)`` XYXY, ``INPUT.CROWD_BOXES``); optionally ``height``
                and ``width`` of the output.

        Returns:
            Training: dict of losses. Inference: ``[{"instances": Instances}]`` per image.
        """
        images = self.preprocess_image(batched_inputs)
        out = self.predict(images.tensor)
        if not self.training:
            return self.inference(batched_inputs, images, out)
        gt = [x["instances"].to(self.device) for x in batched_inputs]
        crowds = [x.get("crowd_boxes") for x in batched_inputs]
        return self.losses(out, gt, crowds, tuple(images.tensor.shape[-2:]))

    # -- training ----------------------------------------------------------------------------
    def losses(
        self,
        out: Dict[str, Tensor],
        gt: List[Instances],
        crowds: List[Optional[Tensor]],
        padded_size: Tuple[int, int],
    ) -> Dict[str, Tensor]:
        """The losses of a batch (see :mod:`yolact.losses`)."""
        anchors = out["anchors"]
        anchor_boxes = anchors_as_xyxy(anchors)
        labels, matched = [], []
        for inst, crowd in zip(gt, crowds):
            if crowd is not None:
                crowd = (crowd.tensor if isinstance(crowd, Boxes) else crowd).to(self.device)
            lab, idx = match_anchors(
                anchor_boxes,
                inst.gt_boxes.tensor,
                inst.gt_classes,
                crowd,
                self.pos_iou_thresh,
                self.neg_iou_thresh,
                self.crowd_iou_thresh,
            )
            labels.append(lab)
            matched.append(idx)
        labels = torch.stack(labels)
        pos = labels > 0
        normaliser = max(mean_over_processes(pos.sum()), 1.0)
        w = self.loss_weights

        box_deltas, cls_logits = out["box_deltas"], out["cls_logits"]
        pos_deltas, pos_targets = [], []
        for i, inst in enumerate(gt):
            p = pos[i]
            pos_deltas.append(box_deltas[i][p])
            pos_targets.append(encode_boxes(inst.gt_boxes.tensor[matched[i][p]], anchors[p]))
        loss_box = F.smooth_l1_loss(
            torch.cat(pos_deltas).float(), torch.cat(pos_targets).float(), reduction="sum"
        )
        neg = ohem_negatives(cls_logits, labels, self.neg_pos_ratio)
        chosen = pos | neg
        loss_cls = F.cross_entropy(cls_logits[chosen].float(), labels[chosen], reduction="sum")
        losses = {
            "loss_cls": loss_cls * w["cls"] / normaliser,
            "loss_box": loss_box * w["box"] / normaliser,
        }

        protos = out["prototypes"]
        proto_size = tuple(protos.shape[-2:])
        scale = (proto_size[0] / padded_size[0], proto_size[1] / padded_size[1])
        masks_full = [gt_masks_tensor(inst, padded_size) for inst in gt]
        loss_mask = (protos.sum() + out["coefficients"].sum()) * 0.0
        iou_inputs, iou_targets, iou_classes = [], [], []
        for i, inst in enumerate(gt):
            p = pos[i]
            if not bool(p.any()):
                continue
            small = downsample_masks(masks_full[i], proto_size)
            gt_index = matched[i][p]
            term, parts = mask_loss_terms(
                protos[i].permute(1, 2, 0),
                out["coefficients"][i][p],
                small[gt_index],
                inst.gt_boxes.tensor[gt_index],
                scale,
                self.masks_to_train,
            )
            loss_mask = loss_mask + term
            if self.maskiou_net is not None:
                targets = parts["targets"]
                big = targets.sum(dim=(1, 2)) > self.maskiou_min_area
                probs = torch.sigmoid(parts["logits"].float()) * parts["inside"]
                binary = (probs > 0.5).float()
                inter = (binary * targets).sum(dim=(1, 2))
                union = binary.sum(dim=(1, 2)) + targets.sum(dim=(1, 2)) - inter
                iou_inputs.append(probs[big])
                iou_targets.append((inter / union.clamp(min=1e-6))[big])
                iou_classes.append(inst.gt_classes[gt_index[parts["index"]]][big])
        losses["loss_mask"] = loss_mask * w["mask"] / normaliser

        if self.semantic_seg_conv is not None:
            logits = self.semantic_seg_conv(out["features"][0]).float()
            targets = semantic_targets(
                masks_full, [inst.gt_classes for inst in gt], logits.shape[1], logits.shape[-2:]
            )
            bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
            per_image = bce / (logits.shape[-2] * logits.shape[-1]) / logits.shape[0]
            losses["loss_semantic"] = per_image * w["semantic"]

        if self.maskiou_net is not None:
            zero = sum(p.sum() for p in self.maskiou_net.parameters()) * 0.0
            if iou_inputs and sum(x.shape[0] for x in iou_inputs) > 0:
                pred = self.maskiou_net(torch.cat(iou_inputs)[:, None])
                cls = torch.cat(iou_classes).long()
                pred = pred.gather(1, cls[:, None])[:, 0]
                loss = F.smooth_l1_loss(pred.float(), torch.cat(iou_targets), reduction="sum")
                zero = zero + loss
            losses["loss_maskiou"] = zero * w["maskiou"] / normaliser
        return losses

    # -- inference ---------------------------------------------------------------------------
    def detect(
        self,
        box_deltas: Tensor,
        cls_logits: Tensor,
        coefficients: Tensor,
        prototypes: Tensor,
        anchors: Tensor,
        padded_size: Tuple[int, int],
    ) -> Dict[str, Tensor]:
        """One image's detections, tensors in and out.

        Args:
            box_deltas ``(A, 4)``, cls_logits ``(A, K + 1)``, coefficients ``(A, k)``,
            prototypes ``(k, h, w)``, anchors ``(A, 4)``: the network's outputs for the image.
            padded_size: ``(Hp, Wp)``.

        Returns:
            dict: ``boxes`` ``(D, 4)`` XYXY input pixels, ``scores`` ``(D,)``, ``classes``
            ``(D,)``, ``masks`` ``(D, h, w)`` probabilities at prototype resolution over the
            padded input, ``valid`` ``(D,)`` bool, and ``mask_scores`` ``(D,)`` (the scores
            times the predicted mask IoU with the re-scoring net, else the scores).
        """
        scores = F.softmax(cls_logits.float(), dim=-1)[:, 1:]
        boxes = decode_boxes(box_deltas.float(), anchors)
        if self.nms_type == "fast":
            index, classes, det_scores, valid = fast_nms(
                boxes,
                scores,
                score_thresh=self.score_thresh,
                iou_thresh=self.nms_thresh,
                top_k=self.nms_top_k,
                max_detections=self.max_detections,
            )
        else:
            index, classes, det_scores, valid = standard_nms(
                boxes,
                scores,
                score_thresh=self.score_thresh,
                iou_thresh=self.nms_thresh,
                max_detections=self.max_detections,
            )
        det_boxes = boxes[index]
        masks = assemble_masks(prototypes, coefficients[index], det_boxes, padded_size)
        mask_scores = det_scores
        if self.maskiou_net is not None:
            iou = self.maskiou_net(masks[:, None]).gather(1, classes[:, None])[:, 0]
            mask_scores = det_scores * iou
        return {
            "boxes": det_boxes,
            "scores": det_scores,
            "classes": classes,
            "masks": masks,
            "valid": valid,
            "mask_scores": mask_scores,
        }

    def inference(
        self, batched_inputs: List[Dict], images: ImageList, out: Dict[str, Tensor]
    ) -> List[Dict]:
        """Detections with full-image masks at each input's ``height`` x ``width``."""
        padded_size = tuple(images.tensor.shape[-2:])
        results = []
        for i, (inputs, size) in enumerate(zip(batched_inputs, images.image_sizes)):
            det = self.detect(
                out["box_deltas"][i],
                out["cls_logits"][i],
                out["coefficients"][i],
                out["prototypes"][i],
                out["anchors"],
                padded_size,
            )
            valid = det["valid"]
            inst = Instances(tuple(size))
            inst.pred_boxes = Boxes(det["boxes"][valid])
            inst.scores = det["scores"][valid]
            inst.pred_classes = det["classes"][valid]
            inst.pred_masks = det["masks"][valid]
            if self.maskiou_net is not None:
                inst.mask_scores = det["mask_scores"][valid]
            height = inputs.get("height", size[0])
            width = inputs.get("width", size[1])
            results.append(
                {
                    "instances": full_image_detector_postprocess(
                        inst,
                        height,
                        width,
                        padded_size=padded_size,
                        mask_threshold=0.5,
                        boxes_from_masks=False,
                        single_resize=True,
                    )
                }
            )
        return results
