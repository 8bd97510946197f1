"""fvcore FLOP handles for the ops it does not know: deformable convolution, RoIAlign, grid_sample.

Convention (fvcore's): one multiply-add counts as one FLOP. A bilinear sample reads 4 neighbours
and weighs each, so it counts 4 FLOPs per sampled value.

* Deformable convolution (v1 and modulated v2), as traced from Detectron2's ``DeformConv`` /
  ``ModulatedDeformConv`` (``torchvision::deform_conv2d`` with the portable ``detectron2._C``,
  ``prim::PythonOp._DeformConv`` / ``._ModulatedDeformConv`` with a compiled one): a plain
  convolution of the same shape, plus one bilinear sample (4) of every input value each output
  position reads (``C_in * kh * kw`` per output position), plus 1 per such value for the
  modulation mask of v2.
* ``torchvision::roi_align``: 4 per sample point of every output value; ``sampling_ratio`` points
  per bin side, or, when adaptive (``<= 0``, the value depends on box sizes that a trace does not
  hold), 2 x 2 points per bin, which is what an FPN's level assignment gives a canonical box.
* ``aten::grid_sampler``: per output value (channels included), 4 (bilinear), 0 (nearest) or 16
  (bicubic).
* ``aten::embedding_bag`` (a weighted gather, e.g. bilinear sampling as rows): one per gathered
  value (indices x row width).
* ``aten::addmm_``: as fvcore's ``aten::addmm``.
"""

import logging
from typing import Any, Dict, List

import numpy as np
from fvcore.nn.jit_handles import addmm_flop_jit, conv_flop_count, get_shape

logger = logging.getLogger(__name__)

__all__ = [
    "BILINEAR_TAPS",
    "EXTRA_FLOP_HANDLES",
    "deform_conv_flop_count",
    "deform_conv_flop_jit",
    "embedding_bag_flop_jit",
    "grid_sample_flop_jit",
    "roi_align_flop_jit",
]

BILINEAR_TAPS = 4
# RoIAlign with an adaptive sampling ratio: points per bin side assumed for a FLOP count.
ADAPTIVE_ROI_ALIGN_SAMPLES_PER_SIDE = 2
# aten::grid_sampler's interpolation_mode argument -> taps per output value.
_GRID_SAMPLE_TAPS = {0: 4, 1: 0, 2: 16}


def _constant(value):
    """The Python value of a traced constant input, or None when it is not a constant."""
    try:
        return value.toIValue()
    except Exception:  # not a constant in the graph
        return None


def deform_conv_flop_count(
    input_shape: List[int], weight_shape: List[int], output_shape: List[int], modulated: bool
) -> int:
    """FLOPs of a deformable convolution.

    Args:
        input_shape: ``(N, C_in, H, W)``.
        weight_shape: ``(C_out, C_in / groups, kh, kw)``.
        output_shape: ``(N, C_out, H_out, W_out)``.
        modulated: v2 (a mask multiplies every sampled value).

    Returns:
        int: conv MACs + ``N * H_out * W_out * C_in * kh * kw * (4 + modulated)``.
    """
    conv = conv_flop_count(list(input_shape), list(weight_shape), list(output_shape), False)
    batch, channels = input_shape[0], input_shape[1]
    kh, kw = weight_shape[2], weight_shape[3]
    positions = batch * int(np.prod(output_shape[2:]))
    sampled = positions * channels * kh * kw
    return int(conv + sampled * (BILINEAR_TAPS + int(modulated)))


def deform_conv_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """Handle for ``torchvision::deform_conv2d``: ``(input, weight, offset, mask, bias, stride_h,
    stride_w, pad_h, pad_w, dil_h, dil_w, groups, offset_groups, use_mask)``."""
    use_mask = _constant(inputs[13]) if len(inputs) > 13 else None
    if use_mask is None:  # not a constant: a mask of real size means modulated
        mask_shape = get_shape(inputs[3])
        use_mask = bool(mask_shape) and int(np.prod(mask_shape)) > 0
    return deform_conv_flop_count(
        get_shape(inputs[0]), get_shape(inputs[1]), get_shape(outputs[0]), bool(use_mask)
    )


def _python_deform_conv_handle(weight_index: int, modulated: bool):
    """Handle for Detectron2's ``_DeformConv`` (tensors ``input, offset, weight``) or
    ``_ModulatedDeformConv`` (``input, offset, mask, weight, bias``) autograd functions."""

    def handle(inputs: List[Any], outputs: List[Any]) -> int:
        return deform_conv_flop_count(
            get_shape(inputs[0]),
            get_shape(inputs[weight_index]),
            get_shape(outputs[0]),
            modulated,
        )

    return handle


def roi_align_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """Handle for ``torchvision::roi_align``: ``(input, rois, spatial_scale, pooled_h, pooled_w,
    sampling_ratio, aligned)`` -> ``(R, C, pooled_h, pooled_w)``."""
    ratio = _constant(inputs[5]) if len(inputs) > 5 else None
    if ratio is None or ratio <= 0:
        ratio = ADAPTIVE_ROI_ALIGN_SAMPLES_PER_SIDE
    return int(np.prod(get_shape(outputs[0]))) * ratio * ratio * BILINEAR_TAPS


def grid_sample_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """Handle for ``aten::grid_sampler``: ``(input, grid, interpolation_mode, padding_mode,
    align_corners)`` -> ``(N, C, H_out, W_out)``: taps per output value (channels included)."""
    mode = _constant(inputs[2]) if len(inputs) > 2 else None
    taps = _GRID_SAMPLE_TAPS.get(mode, BILINEAR_TAPS)
    return int(np.prod(get_shape(outputs[0]))) * taps


def embedding_bag_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """Handle for ``aten::embedding_bag``: ``(weight (V, D), indices, offsets, ...)``: one
    multiply-add per gathered value."""
    return int(np.prod(get_shape(inputs[1]))) * int(get_shape(inputs[0])[1])


EXTRA_FLOP_HANDLES: Dict[str, Any] = {
    "aten::addmm_": addmm_flop_jit,
    "aten::embedding_bag": embedding_bag_flop_jit,
    "torchvision::deform_conv2d": deform_conv_flop_jit,
    "prim::PythonOp._DeformConv": _python_deform_conv_handle(2, modulated=False),
    "prim::PythonOp._ModulatedDeformConv": _python_deform_conv_handle(3, modulated=True),
    "torchvision::roi_align": roi_align_flop_jit,
    "aten::grid_sampler": grid_sample_flop_jit,
}
