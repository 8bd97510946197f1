"""FLOPs of a module on tensor inputs, and of Mask R-CNN's conv mask head at any output size.

A method's mask-head counter (``Method.head_flops``, see :mod:`projects.methods`) builds on
these: :func:`module_flops` counts a tensor-in module with the shared op handles, and
:func:`conv_mask_head_flops` gives the per-box cost of Detectron2's default 4-conv head if it
predicted masks of the same side, the comparison papers make (PointRend's Table 1: about 34
GFLOPs at 224 x 224; a multiply-add counts as one FLOP, as in fvcore).
"""

import logging
from typing import Callable, Dict, Optional

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead
from fvcore.nn import FlopCountAnalysis
from torch import nn

from .flop_handles import EXTRA_FLOP_HANDLES

logger = logging.getLogger(__name__)

__all__ = ["PAPER_MASK_RCNN_HEAD_224_GFLOPS", "conv_mask_head_flops", "module_flops"]

# Mask R-CNN's 4-conv head predicting 224 x 224 masks, per box (PointRend paper, Table 1).
PAPER_MASK_RCNN_HEAD_224_GFLOPS = 34.0


def module_flops(
    module: nn.Module, inputs: tuple, extra_handles: Optional[Dict[str, Callable]] = None
) -> FlopCountAnalysis:
    """fvcore's analysis of ``module(*inputs)`` (tensor inputs) with the shared op handles
    (:data:`~projects.evaluation.flop_handles.EXTRA_FLOP_HANDLES`) and ``extra_handles``.

    Returns:
        fvcore.nn.FlopCountAnalysis: call ``.total()`` / ``.by_module()`` / ``.by_operator()``;
        warnings about unsupported ops and uncalled modules are off.
    """
    analysis = FlopCountAnalysis(module, inputs)
    analysis.set_op_handle(**{**EXTRA_FLOP_HANDLES, **(extra_handles or {})})
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis


@torch.no_grad()
def conv_mask_head_flops(
    in_channels: int, num_classes: int, conv_dim: int = 256, num_conv: int = 4, output_side=224
) -> Dict[str, object]:
    """GFLOPs per box of Mask R-CNN's conv head (``num_conv`` 3x3 convs, x2 deconv, 1x1
    predictor) predicting ``output_side`` x ``output_side`` masks, counted with fvcore on a
    ``(1, in_channels, output_side / 2, output_side / 2)`` RoI feature.

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
        "gflops_per_box": module_flops(layers, (x,)).total() / 1e9,
        "output_side": int(out_side),
        "num_conv": num_conv,
        "conv_dim": conv_dim,
        "paper_gflops_per_box_224": PAPER_MASK_RCNN_HEAD_224_GFLOPS,
    }
