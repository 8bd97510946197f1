"""Postprocessing of full-image instance masks (YOLACT, FastInst, Mask2Former-style models).

Detectron2's ``detector_postprocess`` pastes per-box (M x M) masks into their boxes. Methods that
predict one mask per instance over the whole image, at some stride of the padded network input,
need a different procedure, the one their originals use:

1. upsample the (N, H', W') masks to the padded input size (Hp, Wp) (bilinear),
2. crop the unpadded input size (h, w) from the top-left corner (Detectron2's ``ImageList``
   pads at the bottom and right),
3. resize to the requested output (height, width) (bilinear),
4. threshold.

With ``single_resize`` (YOLACT), steps 1-3 are one bilinear resize of the padded masks to the
output scale, of which the top-left output-sized part is kept: for an unpadded input, the
authors' one resize straight to the output.

Bilinear steps use ``align_corners=False`` and no antialiasing (as ``F.interpolate`` does by
default, and as Mask2Former and YOLACT resize their masks).

Boxes are derived from the binary masks (:func:`mask_boxes`: tight boxes, pixel-corner
convention of ``BitMasks.get_bounding_boxes``). An empty mask has no box: the tensor core returns
a ``nonempty`` flag, and :func:`full_image_detector_postprocess` drops such instances, so no
all-zero box ever reaches the evaluation (Mask2Former's junk box AP).

Two layers:

* tensors in, tensors out (:func:`resize_full_image_masks`, :func:`mask_boxes`,
  :func:`full_image_masks_postprocess`): no data-dependent Python control flow (the chunk loop
  depends on shapes only), for export;
* :func:`full_image_detector_postprocess`: the ``Instances`` wrapper a meta-architecture's
  ``inference`` calls per image.

Memory: the bilinear intermediates are float tensors of (n, Hp, Wp) and (n, height, width). For
100 detections at 800 x 1333 that is over 400 MB each in float32, so instances are resized in
chunks of at most :func:`default_chunk_size` (a budget of :data:`CHUNK_ELEMENTS` elements per
intermediate); only the boolean output holds every instance at full size.
"""

from typing import Optional, Tuple

import torch
from detectron2.structures import Boxes, Instances
from torch.nn import functional as F

__all__ = [
    "CHUNK_ELEMENTS",
    "default_chunk_size",
    "full_image_detector_postprocess",
    "full_image_masks_postprocess",
    "mask_boxes",
    "resize_full_image_masks",
]

# Element budget of one bilinear intermediate per chunk: 2**25 float32 values are 128 MB, so
# 100 detections padded to 800 x 1344 go through in 4 chunks of 31 (peak extra memory about
# 2 x 128 MB plus the 102 MiB boolean output).
CHUNK_ELEMENTS = 1 << 25


def _pair(value, name):
    try:
        pair = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} must be two positive integers (height, width), got {value!r}")
    return pair


def default_chunk_size(padded_size, output_size):
    """Number of instances resized at once so that no intermediate exceeds ``CHUNK_ELEMENTS``.

    Args:
        padded_size (tuple[int, int]): (Hp, Wp) padded network input size.
        output_size (tuple[int, int]): (height, width) of the output masks.

    Returns:
        int: at least 1.
    """
    (hp, wp), (height, width) = _pair(padded_size, "padded_size"), _pair(output_size, "output_size")
    return max(1, CHUNK_ELEMENTS // max(hp * wp, height * width))


def _single_resize_size(image_size, padded_size, output_size):
    """Size the padded masks are resized to so that their unpadded part becomes the output:
    (round(Hp height / h), round(Wp width / w)), which is the output size when unpadded."""
    return tuple(int(round(p * o / i)) for p, o, i in zip(padded_size, output_size, image_size))


def _resize_chunk(masks, image_size, padded_size, output_size, threshold, single_resize=False):
    """(n, H', W') float -> (n, height, width) bool; every step on the whole chunk."""
    if single_resize:
        size = _single_resize_size(image_size, padded_size, output_size)
        x = F.interpolate(masks[:, None], size=size, mode="bilinear", align_corners=False)
        return x[:, 0, : output_size[0], : output_size[1]] > threshold
    x = F.interpolate(masks[:, None], size=padded_size, mode="bilinear", align_corners=False)
    x = x[:, :, : image_size[0], : image_size[1]]
    x = F.interpolate(x, size=output_size, mode="bilinear", align_corners=False)
    return x[:, 0] > threshold


def resize_full_image_masks(
    masks: torch.Tensor,
    image_size: Tuple[int, int],
    padded_size: Tuple[int, int],
    output_size: Tuple[int, int],
    *,
    threshold: float,
    chunk_size: Optional[int] = None,
    single_resize: bool = False,
) -> torch.Tensor:
    """Binary output-size masks from full-image masks at a stride of the padded input.

    Args:
        masks (Tensor): (N, H', W') mask logits or probabilities covering the padded network
            input (Hp, Wp) at any stride (H' = Hp / stride, rounded however the network rounds;
            stride 1 included). Floating dtypes are used as they are, others (bool, integer)
            are converted to float32. N may be 0.
        image_size (tuple[int, int]): (h, w) unpadded network input size (``Instances.image_size``,
            ``ImageList.image_sizes[i]``); h <= Hp, w <= Wp.
        padded_size (tuple[int, int]): (Hp, Wp) padded network input size
            (``ImageList.tensor.shape[-2:]``).
        output_size (tuple[int, int]): (height, width) of the output (the dataset dict's
            ``height``/``width``).
        threshold (float): a pixel is foreground where the resized value is ``> threshold``.
            Compared in the input's own domain: 0.0 for logits (Mask2Former, FastInst), 0.5 for
            probabilities (YOLACT).
        chunk_size (int or None): instances resized at once; None: :func:`default_chunk_size`.
            For tracing, pass at least N to trace a single chunk.
        single_resize (bool): one bilinear resize instead of steps 1-3: the masks go to
            ``(round(Hp height / h), round(Wp width / w))`` and the top-left output-sized part
            is kept. Unpadded (``image_size == padded_size``) that is one resize straight to
            the output, as YOLACT resizes its masks; the default two steps are Mask2Former's.

    Returns:
        Tensor: (N, height, width) bool on the device of ``masks``.

    Raises:
        ValueError: ``masks`` is not 3-D, a size is not two positive integers, or ``image_size``
            exceeds ``padded_size``.
    """
    if masks.dim() != 3:
        raise ValueError(
            f"full-image masks must be (N, H', W'), got shape {tuple(masks.shape)} "
            "(per-box (N, 1, M, M) masks belong to Detectron2's detector_postprocess)"
        )
    image_size = _pair(image_size, "image_size")
    padded_size = _pair(padded_size, "padded_size")
    output_size = _pair(output_size, "output_size")
    if image_size[0] > padded_size[0] or image_size[1] > padded_size[1]:
        raise ValueError(
            f"image_size {image_size} exceeds padded_size {padded_size}: the unpadded input "
            "must fit in the padded one"
        )
    if chunk_size is None:
        chunk_size = default_chunk_size(padded_size, output_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if not masks.is_floating_point():
        masks = masks.float()
    num = masks.shape[0]
    out = torch.empty((num,) + output_size, dtype=torch.bool, device=masks.device)
    for start in range(0, num, chunk_size):
        stop = min(start + chunk_size, num)
        out[start:stop] = _resize_chunk(
            masks[start:stop], image_size, padded_size, output_size, threshold, single_resize
        )
    return out


def mask_boxes(masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Tight XYXY boxes of binary masks, and which masks are non-empty.

    Pixel-corner convention of Detectron2's ``BitMasks.get_bounding_boxes``: a mask whose only
    pixel is (x, y) has the box [x, y, x + 1, y + 1].

    Args:
        masks (Tensor): (N, H, W) bool (or 0/1) masks.

    Returns:
        tuple[Tensor, Tensor]: boxes (N, 4) float32 (x0, y0, x1, y1), all zero for empty masks
        (not a box: filter with the flag); nonempty (N,) bool.
    """
    masks = masks.bool()
    height, width = masks.shape[-2:]
    x_any = masks.any(dim=1)  # (N, W)
    y_any = masks.any(dim=2)  # (N, H)
    xs = torch.arange(width, device=masks.device)
    ys = torch.arange(height, device=masks.device)
    zero = torch.zeros((), dtype=xs.dtype, device=masks.device)
    x0 = torch.where(x_any, xs, zero + width).amin(dim=1)
    x1 = torch.where(x_any, xs + 1, zero).amax(dim=1)
    y0 = torch.where(y_any, ys, zero + height).amin(dim=1)
    y1 = torch.where(y_any, ys + 1, zero).amax(dim=1)
    nonempty = x_any.any(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float() * nonempty[:, None]
    return boxes, nonempty


def full_image_masks_postprocess(
    masks: torch.Tensor,
    image_size: Tuple[int, int],
    padded_size: Tuple[int, int],
    output_size: Tuple[int, int],
    *,
    threshold: float,
    chunk_size: Optional[int] = None,
    single_resize: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tensor core: binary output masks, their boxes and the non-empty flag.

    Arguments as :func:`resize_full_image_masks`.

    Returns:
        tuple[Tensor, Tensor, Tensor]: masks (N, height, width) bool; boxes (N, 4) float32 XYXY
        in output pixels (zero for empty masks); nonempty (N,) bool.
    """
    binary = resize_full_image_masks(
        masks,
        image_size,
        padded_size,
        output_size,
        threshold=threshold,
        chunk_size=chunk_size,
        single_resize=single_resize,
    )
    boxes, nonempty = mask_boxes(binary)
    return binary, boxes, nonempty


def full_image_detector_postprocess(
    results: Instances,
    output_height: int,
    output_width: int,
    *,
    padded_size: Tuple[int, int],
    mask_threshold: float,
    boxes_from_masks: bool = True,
    chunk_size: Optional[int] = None,
    single_resize: bool = False,
) -> Instances:
    """``detector_postprocess`` for full-image masks: the ``Instances`` at the output size.

    Args:
        results (Instances): one image's raw predictions; ``image_size`` is the unpadded network
            input (h, w); ``pred_masks`` (N, H', W') logits or probabilities over the padded
            input (see :func:`resize_full_image_masks`); usually ``scores`` (N,) and
            ``pred_classes`` (N,). Not modified.
        output_height, output_width (int): requested output size.
        padded_size (tuple[int, int]): (Hp, Wp) padded network input size.
        mask_threshold (float): see ``threshold`` of :func:`resize_full_image_masks` (0.0 for
            logits, 0.5 for probabilities).
        boxes_from_masks (bool): True: ``pred_boxes`` are the tight boxes of the output masks
            (any given boxes are replaced). False: the given ``pred_boxes`` (XYXY in input
            pixels, as a box head predicts them) are scaled to the output and clipped, as
            ``detector_postprocess`` does.
        chunk_size, single_resize: see :func:`resize_full_image_masks`.

    Returns:
        Instances: ``image_size`` (output_height, output_width); ``pred_masks``
        (N', height, width) bool, ``pred_boxes`` (Boxes), and every other field of ``results``
        as it was (not rescaled), for the N' <= N instances whose output mask is non-empty
        (empty ones are dropped: they have no box and no mask to evaluate).

    Raises:
        ValueError: ``results`` has no ``pred_masks``, or (``boxes_from_masks=False``) no
            ``pred_boxes``; see also :func:`resize_full_image_masks`.
    """
    if not results.has("pred_masks"):
        raise ValueError("full_image_detector_postprocess needs results.pred_masks (N, H', W')")
    if not boxes_from_masks and not results.has("pred_boxes"):
        raise ValueError("boxes_from_masks=False needs results.pred_boxes")
    output_size = (int(output_height), int(output_width))
    masks, boxes, nonempty = full_image_masks_postprocess(
        results.pred_masks,
        results.image_size,
        padded_size,
        output_size,
        threshold=mask_threshold,
        chunk_size=chunk_size,
        single_resize=single_resize,
    )
    fields = dict(results.get_fields())
    fields["pred_masks"] = masks
    if boxes_from_masks:
        fields["pred_boxes"] = Boxes(boxes)
    else:
        given = Boxes(results.pred_boxes.tensor.clone())
        given.scale(output_size[1] / results.image_size[1], output_size[0] / results.image_size[0])
        given.clip(output_size)
        fields["pred_boxes"] = given
    return Instances(output_size, **fields)[nonempty]
