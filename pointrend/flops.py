"""FLOPs per box of PointRend's mask head (its ``Method.head_flops``, see :mod:`projects.methods`).

PointRend's paper (Kirillov et al., CVPR 2020, Table 1) compares per-box mask-head FLOPs at
224 x 224 output: about 0.9 GFLOPs for PointRend's coarse head + point head with adaptive
subdivision, about 34 GFLOPs for Mask R-CNN's default 4-conv head if it predicted at 224 x 224 (the
paper, like fvcore, counts a multiply-add as one FLOP). Here both are counted with fvcore: the
PointRend head alone on the FPN features of one image with one box, the 4-conv head on a
``(1, C, 112, 112)`` RoI feature (4 convs + x2 deconv + predictor -> 224 x 224,
:func:`projects.evaluation.mask_head_flops.conv_mask_head_flops`).
"""

import logging
from typing import Dict, List, Optional

import torch
from detectron2.structures import Boxes, Instances
from torch import nn

from projects.evaluation.mask_head_flops import conv_mask_head_flops, module_flops

from .mask_head import RenderMaskHead

logger = logging.getLogger(__name__)

__all__ = [
    "PAPER_POINTREND_HEAD_224_GFLOPS",
    "count_point_rend_head_flops",
    "is_point_rend_mask_head",
    "point_rend_mask_head_flops",
]

PAPER_POINTREND_HEAD_224_GFLOPS = 0.9


def is_point_rend_mask_head(model: nn.Module) -> bool:
    """Whether ``model.roi_heads.mask_head`` is a :class:`RenderMaskHead` with a point head
    (without one the head is a coarse 7 x 7 predictor with nothing to subdivide)."""
    head = getattr(getattr(model, "roi_heads", None), "mask_head", None)
    return isinstance(head, RenderMaskHead) and head.point_head is not None


class _OneImageMaskHead(nn.Module):
    """Tensor-in wrapper: ``(feature maps..., boxes (R, 4)) -> mask probabilities``."""

    def __init__(self, head: nn.Module, names: List[str], image_size):
        super().__init__()
        self.head = head
        self.names = list(names)
        self.image_size = tuple(image_size)

    def forward(self, *args):
        *maps, boxes = args
        instances = Instances(self.image_size)
        instances.pred_boxes = Boxes(boxes)
        instances.pred_classes = torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
        (instances,) = self.head(dict(zip(self.names, maps)), [instances])
        return instances.pred_masks


@torch.no_grad()
def point_rend_mask_head_flops(
    model: nn.Module, image: torch.Tensor, box_fraction: float = 0.5
) -> Dict[str, object]:
    """GFLOPs per box of ``model``'s PointRend mask head (inference, adaptive subdivision).

    Args:
        model: a Detectron2 ``GeneralizedRCNN`` whose ROI heads hold a :class:`RenderMaskHead`
            with a point head (:func:`is_point_rend_mask_head`).
        image: ``(3, H, W)`` input image; its FPN features feed the head.
        box_fraction: the one box is centred and spans this fraction of each image side (the count
            does not depend on the box: every box gets the same number of points).

    Returns:
        dict: ``gflops_per_box`` (total), ``coarse_head``, ``point_head``, ``sampling`` (the rest:
        bilinear feature sampling and upsampling), ``output_side`` (M of the M x M mask),
        ``point_evaluations`` per box, and the paper's reference number.
    """
    model.eval()
    head = model.roi_heads.mask_head
    images = model.preprocess_image([{"image": image.to(model.device)}])
    features = model.backbone(images.tensor)
    names = sorted(set(head.coarse_in_features) | set(head.point_in_features))
    height, width = images.image_sizes[0]
    half_w, half_h = width * box_fraction / 2, height * box_fraction / 2
    box = torch.tensor(
        [[width / 2 - half_w, height / 2 - half_h, width / 2 + half_w, height / 2 + half_h]],
        device=model.device,
    )
    wrapper = _OneImageMaskHead(head, names, (height, width))
    maps = tuple(features[name] for name in names)
    # The architecture's FLOPs, as the paper counts them: the point head on the concatenation
    # at every point, for every class. (This project's inference computes the same in fewer:
    # per-image projections, own class only; see pointrend.point_head.)
    exact = getattr(head.point_head, "exact", None)
    if exact is not None:
        head.point_head.exact = True
    try:
        output_side = wrapper(*maps, box).shape[-1]
        analysis = module_flops(wrapper, maps + (box,))
        by_module = analysis.by_module()
        total = analysis.total() / 1e9
    finally:
        if exact is not None:
            head.point_head.exact = exact
    coarse = by_module.get("head.coarse_head", 0) / 1e9
    point = by_module.get("head.point_head", 0) / 1e9
    steps = head.subdivision_steps
    evaluations = head.subdivision_init_resolution**2 + steps * head.subdivision_num_points
    return {
        "gflops_per_box": total,
        "coarse_head": coarse,
        "point_head": point,
        "sampling": total - coarse - point,
        "output_side": int(output_side),
        "point_evaluations": int(evaluations),
        "unsupported_ops": dict(analysis.unsupported_ops()),
        "paper_gflops_per_box_224": PAPER_POINTREND_HEAD_224_GFLOPS,
    }


def count_point_rend_head_flops(cfg, model: nn.Module, image: torch.Tensor) -> Optional[dict]:
    """PointRend's ``head_flops``: :func:`point_rend_mask_head_flops` and, as
    ``conv_head_same_output``, Mask R-CNN's 4-conv head (``cfg.MODEL.ROI_MASK_HEAD.CONV_DIM``
    wide, on the channels of the first map the coarse head reads) at the same output side.

    Returns:
        dict or None: None when the model has no PointRend mask head with a point head.
    """
    if not is_point_rend_mask_head(model):
        return None
    result = point_rend_mask_head_flops(model, image)
    feature = model.roi_heads.mask_head.coarse_in_features[0]
    result["conv_head_same_output"] = conv_mask_head_flops(
        model.backbone.output_shape()[feature].channels,
        cfg.MODEL.ROI_HEADS.NUM_CLASSES,
        cfg.MODEL.ROI_MASK_HEAD.CONV_DIM,
        output_side=result["output_side"],
    )
    return result
