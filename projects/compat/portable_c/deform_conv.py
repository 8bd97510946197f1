"""Deformable convolution v1 and modulated v2 for the portable ``detectron2._C``.

The five functions below have the names, argument order and in-place output semantics of the
compiled operators that Detectron2 v0.6's ``detectron2/layers/deform_conv.py`` calls. The
arithmetic is ``torchvision.ops.deform_conv2d`` (forward) and ``torch.autograd`` through it
(backward: the forward is recomputed on detached leaves and ``torch.autograd.grad`` is called with
``grad_output``), so they run on every device torchvision supports, CPU and CUDA alike.

Argument conventions, as v0.6's Python passes them:

* v1 (``deform_conv_*``): kernel, stride, padding and dilation come **width first**
  (``kW, kH, dW, dH, padW, padH, dilationW, dilationH``); ``kW == weight.size(3)``.
* v2 (``modulated_deform_conv_*``): **height first**
  (``kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w``).

Layout. The compiled kernels (``deformable_im2col`` / ``modulated_deformable_im2col``) read, for
deformable group ``g`` and kernel position ``(i, j)`` of a ``kH x kW`` kernel, the row offset at
channel ``g * 2*kH*kW + 2*(i*kW + j)`` and the column offset at the next channel, and the v2
modulation at mask channel ``g * kH*kW + i*kW + j``. Input channels are split into
``deformable_group`` consecutive blocks, one per group. Sampling is bilinear at
``(h_out*stride_h - pad_h + i*dilation_h + dy, w_out*stride_w - pad_w + j*dilation_w + dx)``,
zero when the point lies at or beyond one pixel outside the image, and each of the four
neighbours outside the image contributes zero. ``torchvision.ops.deform_conv2d`` uses exactly this
layout (``2*offset_groups*kh*kw`` channels of ``(dy, dx)`` pairs, mask ``offset_groups*kh*kw``),
the same sampling rule, and the same ``(C_out, C_in / groups, kH, kW)`` weight, so offsets and
masks produced for the compiled operators need no reordering.

Buffers. ``columns`` and ``ones`` are scratch space of the compiled im2col implementation; they
are accepted and left untouched. ``im2col_step`` only decides how many images the compiled code
unfolds at once; the result does not depend on it, so it is validated (it must divide the batch,
as the compiled code requires) and otherwise ignored: torchvision does its own batching.

Outputs follow the compiled code: ``output`` is overwritten; ``grad_input`` is accumulated into
(the compiled col2im adds), ``grad_offset`` and ``grad_mask`` are overwritten, ``grad_weight``
(times ``scale`` for v1) and ``grad_bias`` are accumulated into.

This module imports nothing from the project: it is installed as ``detectron2/_C/deform_conv.py``.
"""

import logging

import torch
from torchvision.ops import deform_conv2d

logger = logging.getLogger(__name__)

__all__ = [
    "deform_conv_forward",
    "deform_conv_backward_input",
    "deform_conv_backward_filter",
    "modulated_deform_conv_forward",
    "modulated_deform_conv_backward",
]


def _check(op, input, weight, offset, mask, kernel_hw, group, deformable_group, im2col_step=None):
    """Validate shapes like the compiled ``shape_check`` does, with errors naming the culprit.

    Args:
        op (str): name of the public function, for error messages.
        input (Tensor): (N, C_in, H, W).
        weight (Tensor): (C_out, C_in / group, kH, kW).
        offset (Tensor): (N, 2 * deformable_group * kH * kW, H_out, W_out).
        mask (Tensor or None): (N, deformable_group * kH * kW, H_out, W_out).
        kernel_hw (tuple[int, int]): (kH, kW) as the caller passed them.
        group (int): convolution groups.
        deformable_group (int): offset groups.
        im2col_step (int or None): images unfolded at once by the compiled code.
    """
    where = f"detectron2._C.{op}"
    if input.dim() != 4:
        raise ValueError(f"{where}: input must be 4-D (N, C, H, W), got shape {tuple(input.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"{where}: weight must be 4-D, got shape {tuple(weight.shape)}")
    k_h, k_w = int(kernel_hw[0]), int(kernel_hw[1])
    if tuple(weight.shape[2:]) != (k_h, k_w):
        raise ValueError(
            f"{where}: kernel size (kH={k_h}, kW={k_w}) does not match weight of shape "
            f"{tuple(weight.shape)} (expected weight.size(2) == kH and weight.size(3) == kW)"
        )
    if group < 1 or deformable_group < 1:
        raise ValueError(
            f"{where}: group={group} and deformable_group={deformable_group} must be >= 1"
        )
    n, c_in = input.shape[:2]
    if c_in != weight.size(1) * group or weight.size(0) % group != 0:
        raise ValueError(
            f"{where}: input has {c_in} channels and weight shape {tuple(weight.shape)}, which "
            f"does not fit group={group} (need C_in == weight.size(1) * group, C_out % group == 0)"
        )
    if c_in % deformable_group != 0:
        raise ValueError(
            f"{where}: input channels {c_in} are not divisible by "
            f"deformable_group={deformable_group}"
        )
    expected = 2 * deformable_group * k_h * k_w
    if offset.dim() != 4 or offset.size(0) != n or offset.size(1) != expected:
        raise ValueError(
            f"{where}: offset of shape {tuple(offset.shape)} does not match (N={n}, "
            f"2 * deformable_group * kH * kW = {expected}, H_out, W_out)"
        )
    if mask is not None:
        expected = deformable_group * k_h * k_w
        if mask.dim() != 4 or mask.size(0) != n or mask.size(1) != expected:
            raise ValueError(
                f"{where}: mask of shape {tuple(mask.shape)} does not match (N={n}, "
                f"deformable_group * kH * kW = {expected}, H_out, W_out)"
            )
        if mask.shape[2:] != offset.shape[2:]:
            raise ValueError(
                f"{where}: mask spatial size {tuple(mask.shape[2:])} differs from offset's "
                f"{tuple(offset.shape[2:])}"
            )
    if im2col_step is not None and (im2col_step < 1 or n % im2col_step != 0):
        raise ValueError(
            f"{where}: im2col_step={im2col_step} must be >= 1 and divide batch size {n}"
        )


def _conv(input, weight, offset, mask, bias, stride, padding, dilation):
    """Deformable convolution (v2 when ``mask`` is given), all pairs in (h, w) order.

    Returns:
        Tensor: (N, C_out, H_out, W_out).
    """
    return deform_conv2d(
        input,
        offset,
        weight,
        bias=bias,
        stride=stride,
        padding=padding,
        dilation=dilation,
        mask=mask,
    )


def _grads(grad_output, tensors, wanted, stride, padding, dilation):
    """Gradients of the deformable convolution with respect to some of its tensors.

    Args:
        grad_output (Tensor): (N, C_out, H_out, W_out).
        tensors (dict[str, Tensor or None]): ``input``, ``weight``, ``offset``, ``mask``, ``bias``.
        wanted (list[str]): names to differentiate with respect to.
        stride, padding, dilation (tuple[int, int]): (h, w) pairs.

    Returns:
        list[Tensor]: one gradient per name in ``wanted``, shaped like that tensor.
    """
    with torch.enable_grad():
        leaves = {
            name: None if t is None else t.detach().requires_grad_(name in wanted)
            for name, t in tensors.items()
        }
        out = _conv(stride=stride, padding=padding, dilation=dilation, **leaves)
        grads = torch.autograd.grad(
            out, [leaves[name] for name in wanted], grad_output, allow_unused=True
        )
    return [torch.zeros_like(leaves[n]) if g is None else g for n, g in zip(wanted, grads)]


def _write(dst, src):
    """Overwrite ``dst`` with ``src``, resizing ``dst`` if the caller passed a scratch shape."""
    if dst.shape != src.shape:
        dst.resize_(src.shape)
    dst.copy_(src)


def deform_conv_forward(
    input,
    weight,
    offset,
    output,
    columns,
    ones,
    kW,
    kH,
    dW,
    dH,
    padW,
    padH,
    dilationW,
    dilationH,
    group,
    deformable_group,
    im2col_step,
):
    """Deformable convolution v1 forward, written into ``output``.

    Args:
        input (Tensor): (N, C_in, H, W).
        weight (Tensor): (C_out, C_in / group, kH, kW).
        offset (Tensor): (N, 2 * deformable_group * kH * kW, H_out, W_out), (dy, dx) pairs.
        output (Tensor): (N, C_out, H_out, W_out), overwritten.
        columns, ones (Tensor): scratch buffers of the compiled code; unused.
        kW, kH, dW, dH, padW, padH, dilationW, dilationH (int): width first.
        group (int): convolution groups.
        deformable_group (int): offset groups.
        im2col_step (int): must divide N; does not change the result.

    Returns:
        int: 1, like the compiled function.
    """
    _check(
        "deform_conv_forward",
        input,
        weight,
        offset,
        None,
        (kH, kW),
        group,
        deformable_group,
        im2col_step,
    )
    out = _conv(input, weight, offset, None, None, (dH, dW), (padH, padW), (dilationH, dilationW))
    _write(output, out)
    return 1


def deform_conv_backward_input(
    input,
    offset,
    gradOutput,
    gradInput,
    gradOffset,
    weight,
    columns,
    kW,
    kH,
    dW,
    dH,
    padW,
    padH,
    dilationW,
    dilationH,
    group,
    deformable_group,
    im2col_step,
):
    """Deformable convolution v1: gradients of the input (added) and the offset (overwritten).

    Args:
        input (Tensor): (N, C_in, H, W).
        offset (Tensor): (N, 2 * deformable_group * kH * kW, H_out, W_out).
        gradOutput (Tensor): (N, C_out, H_out, W_out).
        gradInput (Tensor): like ``input``; the gradient is added to it.
        gradOffset (Tensor): like ``offset``; overwritten with the gradient.
        weight (Tensor): (C_out, C_in / group, kH, kW).
        columns (Tensor): scratch buffer of the compiled code; unused.
        kW, kH, dW, dH, padW, padH, dilationW, dilationH (int): width first.
        group, deformable_group, im2col_step (int): as in :func:`deform_conv_forward`.

    Returns:
        int: 1, like the compiled function.
    """
    _check(
        "deform_conv_backward_input",
        input,
        weight,
        offset,
        None,
        (kH, kW),
        group,
        deformable_group,
        im2col_step,
    )
    g_input, g_offset = _grads(
        gradOutput,
        {"input": input, "weight": weight, "offset": offset, "mask": None, "bias": None},
        ["input", "offset"],
        (dH, dW),
        (padH, padW),
        (dilationH, dilationW),
    )
    gradInput.add_(g_input)
    _write(gradOffset, g_offset)
    return 1


def deform_conv_backward_filter(
    input,
    offset,
    gradOutput,
    gradWeight,
    columns,
    ones,
    kW,
    kH,
    dW,
    dH,
    padW,
    padH,
    dilationW,
    dilationH,
    group,
    deformable_group,
    scale,
    im2col_step,
):
    """Deformable convolution v1: ``gradWeight += scale * dL/dweight``.

    Args:
        input (Tensor): (N, C_in, H, W).
        offset (Tensor): (N, 2 * deformable_group * kH * kW, H_out, W_out).
        gradOutput (Tensor): (N, C_out, H_out, W_out).
        gradWeight (Tensor): (C_out, C_in / group, kH, kW); the scaled gradient is added to it.
        columns, ones (Tensor): scratch buffers of the compiled code; unused.
        kW, kH, dW, dH, padW, padH, dilationW, dilationH (int): width first.
        group, deformable_group (int): as in :func:`deform_conv_forward`.
        scale (float): factor applied to the gradient before accumulation.
        im2col_step (int): must divide N; does not change the result.

    Returns:
        int: 1, like the compiled function.
    """
    _check(
        "deform_conv_backward_filter",
        input,
        gradWeight,
        offset,
        None,
        (kH, kW),
        group,
        deformable_group,
        im2col_step,
    )
    (g_weight,) = _grads(
        gradOutput,
        {"input": input, "weight": gradWeight, "offset": offset, "mask": None, "bias": None},
        ["weight"],
        (dH, dW),
        (padH, padW),
        (dilationH, dilationW),
    )
    gradWeight.add_(g_weight, alpha=scale)
    return 1


def modulated_deform_conv_forward(
    input,
    weight,
    bias,
    ones,
    offset,
    mask,
    output,
    columns,
    kernel_h,
    kernel_w,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    dilation_h,
    dilation_w,
    group,
    deformable_group,
    with_bias,
):
    """Modulated deformable convolution (v2) forward, written into ``output``.

    Args:
        input (Tensor): (N, C_in, H, W).
        weight (Tensor): (C_out, C_in / group, kernel_h, kernel_w).
        bias (Tensor): (C_out,); ignored unless ``with_bias``.
        ones, columns (Tensor): scratch buffers of the compiled code; unused.
        offset (Tensor): (N, 2 * deformable_group * kernel_h * kernel_w, H_out, W_out).
        mask (Tensor): (N, deformable_group * kernel_h * kernel_w, H_out, W_out).
        output (Tensor): (N, C_out, H_out, W_out), overwritten.
        kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w (int):
            height first.
        group, deformable_group (int): convolution and offset groups.
        with_bias (bool): whether ``bias`` is added.
    """
    _check(
        "modulated_deform_conv_forward",
        input,
        weight,
        offset,
        mask,
        (kernel_h, kernel_w),
        group,
        deformable_group,
    )
    out = _conv(
        input,
        weight,
        offset,
        mask,
        bias if with_bias else None,
        (stride_h, stride_w),
        (pad_h, pad_w),
        (dilation_h, dilation_w),
    )
    _write(output, out)


def modulated_deform_conv_backward(
    input,
    weight,
    bias,
    ones,
    offset,
    mask,
    columns,
    grad_input,
    grad_weight,
    grad_bias,
    grad_offset,
    grad_mask,
    grad_output,
    kernel_h,
    kernel_w,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    dilation_h,
    dilation_w,
    group,
    deformable_group,
    with_bias,
):
    """Modulated deformable convolution (v2) backward.

    ``grad_input``, ``grad_weight`` and (if ``with_bias``) ``grad_bias`` are added to;
    ``grad_offset`` and ``grad_mask`` are overwritten, as in the compiled code.

    Args:
        input, weight, bias, offset, mask (Tensor): as in :func:`modulated_deform_conv_forward`.
        ones, columns (Tensor): scratch buffers of the compiled code; unused.
        grad_input, grad_weight, grad_bias, grad_offset, grad_mask (Tensor): shaped like
            ``input``, ``weight``, ``bias``, ``offset``, ``mask``.
        grad_output (Tensor): (N, C_out, H_out, W_out).
        kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w (int):
            height first.
        group, deformable_group (int): convolution and offset groups.
        with_bias (bool): whether ``bias`` took part in the forward (then ``grad_bias`` is filled).
    """
    _check(
        "modulated_deform_conv_backward",
        input,
        weight,
        offset,
        mask,
        (kernel_h, kernel_w),
        group,
        deformable_group,
    )
    g_input, g_weight, g_offset, g_mask = _grads(
        grad_output,
        {"input": input, "weight": weight, "offset": offset, "mask": mask, "bias": None},
        ["input", "weight", "offset", "mask"],
        (stride_h, stride_w),
        (pad_h, pad_w),
        (dilation_h, dilation_w),
    )
    grad_input.add_(g_input)
    grad_weight.add_(g_weight)
    _write(grad_offset, g_offset)
    _write(grad_mask, g_mask)
    if with_bias:
        # The bias is added once per output pixel: its gradient is the sum over (N, H_out, W_out).
        grad_bias.add_(grad_output.sum(dim=(0, 2, 3)).to(grad_bias.dtype))
