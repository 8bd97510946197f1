"""FLOPs per box of a PointRend mask head, and of Mask R-CNN's 4-conv head at the same output size.

PointRend's paper (Kirillov et al., CVPR 2020, Table 1) compares per-box mask-head FLOPs at
224 x 224 output: about 0.9 GFLOPs for PointRend's coarse head + point head with adaptive
subdivision, about 34 GFLOPs for Mask R-CNN's default 4-conv head if it predicted at 224 x 224 (the
paper, like fvcore, counts a multiply-add as one FLOP). Here both are counted with fvcore: the
PointRend head alone on the FPN features of one image with one box, the 4-conv head on a
``(1, C, 112, 112)`` RoI feature (4 convs + x2 deconv + predictor -> 224 x 224).
"""

import logging
from typing import Dict, List

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead
from detectron2.structures import Boxes, Instances
from fvcore.nn import FlopCountAnalysis
from torch import nn

from .flop_handles import EXTRA_FLOP_HANDLES

logger = logging.getLogger(__name__)

__all__ = [
    "PAPER_MASK_RCNN_HEAD_224_GFLOPS",
    "PAPER_POINTREND_HEAD_224_GFLOPS",
    "conv_mask_head_flops",
    "is_point_rend_mask_head",
    "point_rend_mask_head_flops",
]

PAPER_POINTREND_HEAD_224_GFLOPS = 0.9
PAPER_MASK_RCNN_HEAD_224_GFLOPS = 34.0


def _analysis(module: nn.Module, inputs: tuple) -> FlopCountAnalysis:
    analysis = FlopCountAnalysis(module, inputs).set_op_handle(**EXTRA_FLOP_HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis


def is_point_rend_mask_head(model: nn.Module) -> bool:
    """Whether ``model.roi_heads.mask_head`` is the project's ``RenderMaskHead`` (with a point
    head; without one the head is a coarse 7 x 7 predictor with nothing to subdivide)."""
    head = getattr(getattr(model, "roi_heads", None), "mask_head", None)
    if head is None:
        return False
    try:
        from pointrend import RenderMaskHead  # a method package: imported lazily
    except ImportError:
        return False
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
        model: a Detectron2 ``GeneralizedRCNN`` whose ROI heads hold a ``RenderMaskHead``.
        image: ``(3, H, W)`` input image; its FPN features feed the head.
        box_fraction: the one box is centred and spans this fraction of each image side (the count
            does not depend on the box: every box gets the same number of points).

    Returns:
        dict: ``gflops_per_box`` (total), ``coarse_head``, ``point_head``, ``sampling`` (the rest:
        bilinear feature sampling and upsampling), ``output_side`` (M of the M x M mask),
        ``point_evaluations`` per box, and the paper's reference numbers.
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
        analysis = _analysis(wrapper, maps + (box,))
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


@torch.no_grad()
def conv_mask_head_flops(
    in_channels: int, num_classes: int, conv_dim: int = 256, num_conv: int = 4, output_side=224
) -> Dict[str, object]:
    """GFLOPs per box of Mask R-CNN's conv head (``num_conv`` 3x3 convs, x2 deconv, 1x1
    predictor) predicting ``output_side`` x ``output_side`` masks, counted with fvcore.

    Returns:
        dict: ``gflops_per_box``, ``output_side``, ``num_conv``, ``conv_dim``, and the paper's
        reference number for 224 x 224.
    """
    side = output_side // 2
    head = MaskRCNNConvUpsampleHead(
        ShapeSpec(channels=in_channels, height=side, width=side),
        num_classes=num_classes,
        conv_dims=[conv_dim] * (num_conv + 1),
    ).eval()
    layers = nn.Sequential(*head.children())  # the tensor path of its layers(), in order
    x = torch.zeros(1, in_channels, side, side)
    out_side = layers(x).shape[-1]
    return {
        "gflops_per_box": _analysis(layers, (x,)).total() / 1e9,
        "output_side": int(out_side),
        "num_conv": num_conv,
        "conv_dim": conv_dim,
        "paper_gflops_per_box_224": PAPER_MASK_RCNN_HEAD_224_GFLOPS,
    }
