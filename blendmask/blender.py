"""BlendMask's blender: per box, the K bases RoI-pooled to R x R and blended with the box's
K x M x M attentions (bilinearly resized to R x R, softmax over K).

Shape shorthand: ``P`` boxes (positive locations in training, detections at inference), ``K``
bases, ``M`` the attention side, ``R`` the pooled side.
"""

from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes, Instances
from torch import Tensor
from torch.nn import functional as F

from projects.modeling.fcos import FCOSPositives

__all__ = ["Blender", "merge_bases"]


def merge_bases(rois: Tensor, attns: Tensor, attn_size: int, mode: str = "bilinear") -> Tensor:
    """Blend pooled bases with attentions.

    Args:
        rois: ``(P, K, R, R)`` the bases pooled in each box.
        attns: ``(P, K * M * M)`` each box's attentions (M = ``attn_size``).
        attn_size: M.
        mode: interpolation of the attentions from M x M to R x R (``F.interpolate``'s).

    Returns:
        Tensor: ``(P, R * R)`` mask logits: ``sum_k rois[:, k] * softmax_k(resize(attns))``.
    """
    num, k, height, width = rois.shape
    coeffs = attns.view(num, k, attn_size, attn_size)
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    coeffs = F.interpolate(coeffs, size=(height, width), mode=mode, **kwargs).softmax(dim=1)
    return (rois * coeffs).sum(dim=1).reshape(num, height * width)


class Blender(torch.nn.Module):
    """Mask logits from bases and per-box attentions, and their loss (no parameters).

    Training: for every positive location of FCOS, the bases pooled in its *ground-truth* box,
    blended with its attentions; BCE against the box's mask cropped and resized to R x R,
    averaged per location, weighted by the location's centerness and divided by the box loss's
    normaliser. Inference: the same on the predicted boxes; ``pred_masks`` ``(D, 1, R, R)``
    probabilities, pasted into the image by the caller's ``detector_postprocess``.
    """

    @configurable
    def __init__(
        self,
        *,
        resolution: int = 56,
        attn_size: int = 14,
        num_bases: int = 4,
        pooler_scales=(0.25,),
        sampling_ratio: int = 1,
        pooler_type: str = "ROIAlignV2",
        top_interp: str = "bilinear",
    ):
        """
        Args:
            resolution: R.
            attn_size: M.
            num_bases: K.
            pooler_scales: scale of the bases (1 / stride).
            sampling_ratio, pooler_type: of the pooler.
            top_interp: interpolation of the attentions.
        """
        super().__init__()
        self.resolution = resolution
        self.attn_size = attn_size
        self.attn_len = num_bases * attn_size * attn_size
        self.top_interp = top_interp
        self.pooler = ROIPooler(
            output_size=resolution,
            scales=tuple(pooler_scales),
            sampling_ratio=sampling_ratio,
            pooler_type=pooler_type,
            canonical_level=2,
        )

    @classmethod
    def from_config(cls, cfg):
        b = cfg.MODEL.BLENDMASK
        return {
            "resolution": b.BOTTOM_RESOLUTION,
            "attn_size": b.ATTN_SIZE,
            "num_bases": cfg.MODEL.BASIS_MODULE.NUM_BASES,
            "pooler_scales": b.POOLER_SCALES,
            "sampling_ratio": b.POOLER_SAMPLING_RATIO,
            "pooler_type": b.POOLER_TYPE,
            "top_interp": b.TOP_INTERP,
        }

    def losses(
        self, bases: List[Tensor], positives: FCOSPositives, gt_instances: List[Instances]
    ) -> Dict[str, Tensor]:
        """``{"loss_mask": ...}`` (see the class docstring).

        Args:
            bases: ``[(N, K, H / 4, W / 4)]``.
            positives: FCOS's positives with ``top_feats`` (the attentions).
            gt_instances: per image ``gt_boxes`` and ``gt_masks``.
        """
        attns = positives.top_feats
        if len(positives) == 0:  # no positive anywhere: a zero that keeps the graph connected
            return {"loss_mask": attns.sum() * 0 + sum(b.sum() for b in bases) * 0}
        rois = self.pooler(bases, [inst.gt_boxes for inst in gt_instances])
        # index_select, not rois[gt_inds]: many rows share a box, and the backward of advanced
        # indexing accumulates them in a nondeterministic order on the CPU
        rois = rois.index_select(0, positives.gt_inds)
        logits = merge_bases(rois.float(), attns.float(), self.attn_size, self.top_interp)
        targets = cat(
            [
                inst.gt_masks.crop_and_resize(inst.gt_boxes.tensor, self.resolution).to(
                    device=logits.device
                )
                for inst in gt_instances
                if len(inst) > 0
            ],
            dim=0,
        )[positives.gt_inds]
        per_pixel = F.binary_cross_entropy_with_logits(
            logits, targets.view(len(positives), -1).float(), reduction="none"
        )
        loss = (per_pixel.mean(dim=1) * positives.ctrness_targets).sum() / positives.loss_denorm
        return {"loss_mask": loss}

    def inference(self, bases: List[Tensor], detections: List[Instances]) -> List[Instances]:
        """Adds ``pred_masks`` ``(D, 1, R, R)`` (probabilities) to each image's detections
        (which carry ``pred_boxes`` and ``top_feats``); returns them."""
        boxes: List[Boxes] = [d.pred_boxes for d in detections]
        rois = self.pooler(bases, boxes)  # (sum D, K, R, R); empty when there is no detection
        attns = cat([d.top_feats for d in detections], dim=0)
        masks = merge_bases(rois, attns, self.attn_size, self.top_interp).sigmoid()
        masks = masks.view(-1, 1, self.resolution, self.resolution)
        begin = 0
        for d in detections:
            d.pred_masks = masks[begin : begin + len(d)]
            begin += len(d)
        return detections
