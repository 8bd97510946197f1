"""Rotated-box operators of ``detectron2._C`` in plain PyTorch.

A rotated box is ``(x_ctr, y_ctr, width, height, angle_degrees)``. As Detectron2 documents it, the
angle turns the box counter-clockwise in image coordinates (y pointing down): the box-local offset
``(dx, dy)`` lands at ``(x_ctr + dx * cos + dy * sin, y_ctr - dx * sin + dy * cos)``.

* :func:`box_iou_rotated`: pairwise IoU. Pairs whose circumscribed circles overlap are clipped with
  Sutherland-Hodgman (one rectangle against the other's four edges, batched over pairs) and measured
  with the shoelace formula, in float64 (float32 where float64 is unavailable).
* :func:`nms_rotated`: greedy NMS, also registered as ``torch.ops.detectron2.nms_rotated`` (which
  ``detectron2.layers.nms_rotated`` calls) unless a compiled operator already holds that name.
* :func:`roi_align_rotated_forward` / :func:`roi_align_rotated_backward`: Detectron2's "aligned"
  rotated RoIAlign. Both are built from the same sparse list of bilinear sampling weights; the
  backward is the exact adjoint (transpose) of the forward, which is linear in the input.

This module imports only ``torch`` and the standard library: it is installed as
``detectron2/_C/rotated.py``.
"""

import logging
import math

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "box_iou_rotated",
    "nms_rotated",
    "roi_align_rotated_backward",
    "roi_align_rotated_forward",
]

# Boxes with width * height below this have IoU 0 with everything (as in Detectron2's kernel).
_MIN_AREA = 1e-14
# Memory bounds: pairs clipped at once, entries of a pairwise mask, bilinear samples per chunk and
# elements of a gathered (samples, channels) block.
_PAIR_CHUNK = 1 << 16
_MASK_CHUNK = 1 << 22
_SAMPLE_CHUNK = 1 << 18
_GATHER_CHUNK = 1 << 24
# Rows of the sorted boxes whose suppression masks are computed together in nms_rotated.
_NMS_BLOCK = 256


def _work_dtype(device):
    """float64 where the device supports it (everything but Apple's MPS), else float32."""
    return torch.float32 if device.type == "mps" else torch.float64


def _check_boxes(boxes, name):
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 5:
        shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(
            f"detectron2._C.rotated: {name} must be a (N, 5) tensor of "
            f"(x_ctr, y_ctr, w, h, angle_degrees), got {shape}"
        )


def _corners(boxes):
    """Corners of rotated boxes, in positive (counter-clockwise in x-right/y-up) vertex order.

    Args:
        boxes (Tensor): (P, 5) boxes.

    Returns:
        Tensor: (P, 4, 2) corners (x, y).
    """
    theta = boxes[:, 4] * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    half_w, half_h = boxes[:, 2] / 2, boxes[:, 3] / 2
    sx = boxes.new_tensor([1.0, -1.0, -1.0, 1.0])
    sy = boxes.new_tensor([1.0, 1.0, -1.0, -1.0])
    dx = sx[None, :] * half_w[:, None]
    dy = sy[None, :] * half_h[:, None]
    x = boxes[:, 0:1] + dx * cos[:, None] + dy * sin[:, None]
    y = boxes[:, 1:2] - dx * sin[:, None] + dy * cos[:, None]
    return torch.stack([x, y], dim=-1)


def _cross(ax, ay, bx, by):
    return ax * by - ay * bx


def _clip_half_plane(poly, count, start, end, max_vertices):
    """One Sutherland-Hodgman step: keep the part of each polygon left of the line start->end.

    Args:
        poly (Tensor): (P, K, 2) vertices; only the first ``count`` of each row are used.
        count (Tensor): (P,) int64 number of vertices.
        start, end (Tensor): (P, 2) points of the clipping edge.
        max_vertices (int): vertex slots of the result.

    Returns:
        tuple[Tensor, Tensor]: (P, max_vertices, 2) clipped vertices and their (P,) count.
    """
    num_pairs, slots = poly.shape[:2]
    index = torch.arange(slots, device=poly.device)
    valid = index[None, :] < count[:, None]
    prev_index = torch.where(index[None, :] == 0, count[:, None] - 1, index[None, :] - 1)
    prev_index = prev_index.clamp(min=0)

    edge = end - start
    side = _cross(
        edge[:, None, 0],
        edge[:, None, 1],
        poly[..., 0] - start[:, None, 0],
        poly[..., 1] - start[:, None, 1],
    )
    prev_side = torch.gather(side, 1, prev_index)
    prev = torch.gather(poly, 1, prev_index[..., None].expand(-1, -1, 2))
    inside, prev_inside = side >= 0, prev_side >= 0

    crossing = valid & (inside != prev_inside)
    denom = torch.where(crossing, prev_side - side, torch.ones_like(side))
    t = (prev_side / denom)[..., None]
    meet = prev + t * (poly - prev)

    # Each input vertex emits [crossing point, itself], each only if present; compact stably.
    candidates = torch.stack([meet, poly], dim=2).reshape(num_pairs, 2 * slots, 2)
    emitted = torch.stack([crossing, valid & inside], dim=2).reshape(num_pairs, 2 * slots)
    order = torch.argsort((~emitted).to(torch.int8), dim=1, stable=True)[:, :max_vertices]
    clipped = torch.gather(candidates, 1, order[..., None].expand(-1, -1, 2))
    new_count = emitted.sum(dim=1).clamp(max=max_vertices)
    return clipped, new_count


def _polygon_area(poly, count):
    """Shoelace area of (P, K, 2) polygons with (P,) vertex counts, clamped at 0."""
    slots = poly.shape[1]
    index = torch.arange(slots, device=poly.device)
    valid = index[None, :] < count[:, None]
    next_index = torch.where(index[None, :] + 1 >= count[:, None], 0, index[None, :] + 1)
    nxt = torch.gather(poly, 1, next_index[..., None].expand(-1, -1, 2))
    terms = _cross(poly[..., 0], poly[..., 1], nxt[..., 0], nxt[..., 1])
    return (0.5 * torch.where(valid, terms, torch.zeros_like(terms)).sum(dim=1)).clamp(min=0)


def _paired_iou(boxes1, boxes2):
    """IoU of boxes1[i] with boxes2[i].

    Args:
        boxes1, boxes2 (Tensor): (P, 5) boxes in a floating dtype.

    Returns:
        Tensor: (P,) IoU, 0 where either box has (near) zero area.
    """
    # Shift each pair to its mid point: small coordinates keep the clipping precise.
    shift = (boxes1[:, :2] + boxes2[:, :2]) / 2
    boxes1 = torch.cat([boxes1[:, :2] - shift, boxes1[:, 2:]], dim=1)
    boxes2 = torch.cat([boxes2[:, :2] - shift, boxes2[:, 2:]], dim=1)
    area1 = boxes1[:, 2] * boxes1[:, 3]
    area2 = boxes2[:, 2] * boxes2[:, 3]
    usable = (area1 >= _MIN_AREA) & (area2 >= _MIN_AREA)

    poly = _corners(boxes1)
    clip = _corners(boxes2)
    count = torch.full((poly.shape[0],), 4, dtype=torch.int64, device=poly.device)
    for k in range(4):
        # Convex 4-gon against 4 half planes: at most 8 vertices; 2 spare slots per step absorb
        # rounding-level extra crossings.
        poly, count = _clip_half_plane(poly, count, clip[:, k], clip[:, (k + 1) % 4], 6 + 2 * k)
    inter = torch.minimum(_polygon_area(poly, count), torch.minimum(area1, area2).clamp(min=0))
    union = (area1 + area2 - inter).clamp(min=_MIN_AREA)
    return torch.where(usable, inter / union, torch.zeros_like(inter))


def _may_overlap(boxes1, boxes2):
    """(n, m) bool: the circumscribed circles of the boxes touch (a superset of overlaps)."""
    radius1 = 0.5 * torch.hypot(boxes1[:, 2], boxes1[:, 3])
    radius2 = 0.5 * torch.hypot(boxes2[:, 2], boxes2[:, 3])
    dist2 = (boxes1[:, None, 0] - boxes2[None, :, 0]) ** 2 + (
        boxes1[:, None, 1] - boxes2[None, :, 1]
    ) ** 2
    reach = radius1[:, None] + radius2[None, :]
    return dist2 <= reach * reach * (1 + 1e-6) + 1e-9


def _pairwise_iou(boxes1, boxes2):
    """Dense (n, m) IoU in the dtype of the inputs; only touching pairs are clipped."""
    n, m = boxes1.shape[0], boxes2.shape[0]
    ious = boxes1.new_zeros((n, m))
    if n == 0 or m == 0:
        return ious
    rows_per_chunk = max(1, _MASK_CHUNK // m)
    for row0 in range(0, n, rows_per_chunk):
        rows = boxes1[row0 : row0 + rows_per_chunk]
        pairs = _may_overlap(rows, boxes2).nonzero()
        for p0 in range(0, pairs.shape[0], _PAIR_CHUNK):
            i, j = pairs[p0 : p0 + _PAIR_CHUNK].unbind(dim=1)
            ious[row0 + i, j] = _paired_iou(rows[i], boxes2[j])
    return ious


def box_iou_rotated(boxes1, boxes2):
    """Pairwise IoU of rotated boxes (``detectron2._C.box_iou_rotated``).

    Args:
        boxes1 (Tensor): (N, 5) boxes (x_ctr, y_ctr, w, h, angle_degrees).
        boxes2 (Tensor): (M, 5) boxes on the same device.

    Returns:
        Tensor: (N, M) IoU in ``boxes1.dtype`` (float32 for non-floating input); 0 for pairs with a
        box of zero area.
    """
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    if boxes1.device != boxes2.device:
        raise ValueError(
            f"detectron2._C.box_iou_rotated: boxes1 is on {boxes1.device}, "
            f"boxes2 on {boxes2.device}"
        )
    out_dtype = boxes1.dtype if boxes1.is_floating_point() else torch.float32
    work = _work_dtype(boxes1.device)
    ious = _pairwise_iou(boxes1.detach().to(work), boxes2.detach().to(work))
    return ious.to(out_dtype)


def nms_rotated(boxes, scores, iou_threshold):
    """Greedy NMS of rotated boxes (``detectron2._C.nms_rotated``).

    Boxes are visited by decreasing score; a kept box suppresses every later box whose IoU with it
    is ``>= iou_threshold``.

    Args:
        boxes (Tensor): (N, 5) boxes (x_ctr, y_ctr, w, h, angle_degrees).
        scores (Tensor): (N,) scores.
        iou_threshold (float): IoU at or above which a lower-scored box is dropped.

    Returns:
        Tensor: int64 indices of the kept boxes, by decreasing score.
    """
    _check_boxes(boxes, "boxes")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"detectron2._C.nms_rotated: scores must have shape ({boxes.shape[0]},), "
            f"got {tuple(scores.shape)}"
        )
    num = boxes.shape[0]
    if num == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores.detach(), descending=True, stable=True)
    sorted_boxes = boxes.detach()[order].to(_work_dtype(boxes.device))
    threshold = float(iou_threshold)

    suppressed = torch.zeros(num, dtype=torch.bool)
    kept = []
    for start in range(0, num, _NMS_BLOCK):
        stop = min(start + _NMS_BLOCK, num)
        rows = (~suppressed[start:stop]).nonzero().flatten() + start
        if rows.numel() == 0:
            continue
        cols = (~suppressed[start:]).nonzero().flatten() + start
        rows_dev, cols_dev = rows.to(boxes.device), cols.to(boxes.device)
        over = _pairwise_iou(sorted_boxes[rows_dev], sorted_boxes[cols_dev]) >= threshold
        over = over.cpu()
        for r, row in enumerate(rows.tolist()):
            if suppressed[row]:
                continue
            kept.append(row)
            suppressed[cols[over[r] & (cols > row)]] = True
    keep_sorted = torch.tensor(kept, dtype=torch.int64, device=boxes.device)
    return order[keep_sorted]


def _register_torch_op():
    """Register ``torch.ops.detectron2.nms_rotated`` unless an operator of that name exists."""
    try:
        torch.ops.detectron2.nms_rotated
        return None
    except (AttributeError, RuntimeError):
        pass
    library = torch.library.Library("detectron2", "FRAGMENT")
    library.define("nms_rotated(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.impl("nms_rotated", nms_rotated, "CompositeExplicitAutograd")
    return library


# Kept alive for the lifetime of the process: dropping the Library object unregisters the op.
_LIBRARY = _register_torch_op()


def _check_rois(rois, batch_size, spatial_scale):
    if rois.dim() != 2 or rois.shape[1] != 6:
        raise ValueError(
            "detectron2._C.roi_align_rotated: rois must be a (K, 6) tensor of "
            f"(batch_index, x_ctr, y_ctr, w, h, angle_degrees), got {tuple(rois.shape)}"
        )
    if rois.shape[0] == 0:
        return
    sizes = rois[:, 3:5] * spatial_scale
    if bool((sizes < 0).any()):
        bad = int((sizes < 0).any(dim=1).nonzero()[0])
        raise ValueError(
            f"detectron2._C.roi_align_rotated: roi {bad} has a negative size "
            f"{rois[bad, 3:5].tolist()}"
        )
    batch_index = rois[:, 0].long()
    if bool(((batch_index < 0) | (batch_index >= batch_size)).any()):
        raise ValueError(
            "detectron2._C.roi_align_rotated: roi batch indices must lie in "
            f"[0, {batch_size}), got {sorted(set(batch_index.tolist()))}"
        )


def _grid_sizes(rois, spatial_scale, pooled_height, pooled_width, sampling_ratio):
    """(K,) int64 sampling grid height and width per roi (adaptive when sampling_ratio <= 0)."""
    if sampling_ratio > 0:
        full = torch.full((rois.shape[0],), int(sampling_ratio), dtype=torch.int64)
        return full, full.clone()
    heights = (rois[:, 4] * spatial_scale / pooled_height).ceil().long().cpu()
    widths = (rois[:, 3] * spatial_scale / pooled_width).ceil().long().cpu()
    return heights, widths


def _roi_chunks(grid_h, grid_w, bins):
    """Split rois into chunks of similar grid size holding at most ~_SAMPLE_CHUNK samples.

    Yields:
        tuple[Tensor, int, int]: (k,) roi indices and the chunk's largest grid height and width.
    """
    order = torch.argsort(grid_h * grid_w, stable=True)
    heights, widths = grid_h[order].tolist(), grid_w[order].tolist()
    first, max_h, max_w = 0, 1, 1
    for pos in range(len(heights)):
        new_h, new_w = max(max_h, heights[pos]), max(max_w, widths[pos])
        if pos > first and (pos - first + 1) * bins * new_h * new_w > _SAMPLE_CHUNK:
            yield order[first:pos], max_h, max_w
            first, new_h, new_w = pos, max(1, heights[pos]), max(1, widths[pos])
        max_h, max_w = new_h, new_w
    if first < len(heights):
        yield order[first:], max_h, max_w


def _sampling_weights(rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, shape):
    """Sparse bilinear weights of rotated RoIAlign, chunk by chunk.

    The pooled output ``out`` (flattened to (K * ph * pw, C)) equals the sum over entries of
    ``weight * input_flat[in_index]`` accumulated at ``out_index``, where ``input_flat`` is the
    input as (B * H * W, C).

    Args:
        rois (Tensor): (K, 6) rois in the input's dtype and device.
        shape (tuple[int, int, int]): (B, H, W) of the input.

    Yields:
        tuple[Tensor, Tensor, Tensor]: out_index (E,), in_index (E,) int64 and weight (E,).
    """
    _, height, width = shape
    device, dtype = rois.device, rois.dtype
    bins = pooled_height * pooled_width
    grid_h_all, grid_w_all = _grid_sizes(
        rois, spatial_scale, pooled_height, pooled_width, sampling_ratio
    )
    for chunk, max_h, max_w in _roi_chunks(grid_h_all, grid_w_all, bins):
        roi = rois[chunk.to(device)]
        grid_h = grid_h_all[chunk].to(device)
        grid_w = grid_w_all[chunk].to(device)
        # "Aligned": pixel centres sit at integer coordinates after the half-pixel shift.
        center_x = roi[:, 1] * spatial_scale - 0.5
        center_y = roi[:, 2] * spatial_scale - 0.5
        roi_w, roi_h = roi[:, 3] * spatial_scale, roi[:, 4] * spatial_scale
        theta = roi[:, 5] * (math.pi / 180.0)
        cos, sin = torch.cos(theta), torch.sin(theta)
        bin_h, bin_w = roi_h / pooled_height, roi_w / pooled_width
        count = (grid_h * grid_w).clamp(min=1).to(dtype)

        iy = torch.arange(max_h, device=device, dtype=dtype)
        ix = torch.arange(max_w, device=device, dtype=dtype)
        py = torch.arange(pooled_height, device=device, dtype=dtype)
        px = torch.arange(pooled_width, device=device, dtype=dtype)
        # Box-local sample offsets from the centre: (k, ph, gh) and (k, pw, gw).
        local_y = (-roi_h / 2)[:, None, None] + bin_h[:, None, None] * (
            py[None, :, None] + (iy[None, None, :] + 0.5) / grid_h.clamp(min=1)[:, None, None]
        )
        local_x = (-roi_w / 2)[:, None, None] + bin_w[:, None, None] * (
            px[None, :, None] + (ix[None, None, :] + 0.5) / grid_w.clamp(min=1)[:, None, None]
        )
        # Broadcast to (k, ph, gh, pw, gw).
        ly_ = local_y[:, :, :, None, None]
        lx_ = local_x[:, None, None, :, :]
        cos_, sin_ = cos[:, None, None, None, None], sin[:, None, None, None, None]
        y = ly_ * cos_ - lx_ * sin_ + center_y[:, None, None, None, None]
        x = ly_ * sin_ + lx_ * cos_ + center_x[:, None, None, None, None]
        in_grid = (iy[None, :] < grid_h[:, None])[:, None, :, None, None] & (
            ix[None, :] < grid_w[:, None]
        )[:, None, None, None, :]
        valid = in_grid & (y >= -1.0) & (y <= height) & (x >= -1.0) & (x <= width)

        y = y.clamp(0, height - 1)
        x = x.clamp(0, width - 1)
        y_low, x_low = y.floor(), x.floor()
        frac_y, frac_x = y - y_low, x - x_low
        y_low, x_low = y_low.long(), x_low.long()
        y_high = (y_low + 1).clamp(max=height - 1)
        x_high = (x_low + 1).clamp(max=width - 1)

        base = roi[:, 0].long()[:, None, None, None, None] * (height * width)
        scale = valid.to(dtype) / count[:, None, None, None, None]
        out_bin = (
            chunk.to(device)[:, None, None, None, None] * bins
            + py.long()[None, :, None, None, None] * pooled_width
            + px.long()[None, None, None, :, None]
        )
        corners = [
            (y_low, x_low, (1 - frac_y) * (1 - frac_x)),
            (y_low, x_high, (1 - frac_y) * frac_x),
            (y_high, x_low, frac_y * (1 - frac_x)),
            (y_high, x_high, frac_y * frac_x),
        ]
        keep = valid.flatten()
        out_index = out_bin.expand_as(valid).flatten()[keep]
        for row, col, weight in corners:
            in_index = (base + row * width + col).flatten()[keep]
            yield out_index, in_index, (weight * scale).flatten()[keep]


def _accumulate(target, source, target_index, source_index, weight):
    """target[target_index] += weight * source[source_index], in bounded chunks (rows x C)."""
    step = max(1, _GATHER_CHUNK // max(1, source.shape[1]))
    for e0 in range(0, weight.shape[0], step):
        sl = slice(e0, e0 + step)
        values = source[source_index[sl]] * weight[sl, None]
        target.index_add_(0, target_index[sl], values)


def roi_align_rotated_forward(
    input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio
):
    """Rotated RoIAlign (``detectron2._C.roi_align_rotated_forward``).

    Each roi is split into ``pooled_height x pooled_width`` bins in its own rotated frame; each bin
    averages bilinear samples on a regular grid (``sampling_ratio`` per side, or
    ``ceil(roi_size / pooled_size)`` when ``sampling_ratio <= 0``). Samples beyond one pixel
    outside the feature map count as 0.

    Args:
        input (Tensor): (B, C, H, W) features.
        rois (Tensor): (K, 6) rois (batch_index, x_ctr, y_ctr, w, h, angle_degrees) in input
            coordinates before ``spatial_scale``.
        spatial_scale (float): feature size / input size.
        pooled_height, pooled_width (int): output size.
        sampling_ratio (int): samples per bin side; <= 0 for adaptive.

    Returns:
        Tensor: (K, C, pooled_height, pooled_width).
    """
    if input.dim() != 4:
        raise ValueError(
            f"detectron2._C.roi_align_rotated_forward: input must be (B, C, H, W), "
            f"got {tuple(input.shape)}"
        )
    batch, channels, height, width = input.shape
    _check_rois(rois, batch, spatial_scale)
    rois = rois.to(device=input.device, dtype=input.dtype)
    num_rois = rois.shape[0]
    flat_in = input.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
    flat_out = input.new_zeros((num_rois * pooled_height * pooled_width, channels))
    if num_rois > 0 and height > 0 and width > 0:
        for out_index, in_index, weight in _sampling_weights(
            rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, (batch, height, width)
        ):
            _accumulate(flat_out, flat_in, out_index, in_index, weight)
    out = flat_out.reshape(num_rois, pooled_height, pooled_width, channels)
    return out.permute(0, 3, 1, 2).contiguous()


def roi_align_rotated_backward(
    grad,
    rois,
    spatial_scale,
    pooled_height,
    pooled_width,
    batch_size,
    channels,
    height,
    width,
    sampling_ratio,
):
    """Gradient of :func:`roi_align_rotated_forward` with respect to its input.

    Args:
        grad (Tensor): (K, C, pooled_height, pooled_width) gradient of the output.
        rois (Tensor): (K, 6) rois as given to the forward.
        spatial_scale, pooled_height, pooled_width, sampling_ratio: as in the forward.
        batch_size, channels, height, width (int): shape of the forward's input.

    Returns:
        Tensor: (batch_size, channels, height, width) gradient of the input.
    """
    expected = (rois.shape[0], channels, pooled_height, pooled_width)
    if tuple(grad.shape) != expected:
        raise ValueError(
            f"detectron2._C.roi_align_rotated_backward: grad must have shape {expected}, "
            f"got {tuple(grad.shape)}"
        )
    _check_rois(rois, batch_size, spatial_scale)
    rois = rois.to(device=grad.device, dtype=grad.dtype)
    num_rois = rois.shape[0]
    flat_grad = grad.permute(0, 2, 3, 1).reshape(num_rois * pooled_height * pooled_width, channels)
    flat_in = grad.new_zeros((batch_size * height * width, channels))
    if num_rois > 0 and height > 0 and width > 0:
        for out_index, in_index, weight in _sampling_weights(
            rois,
            spatial_scale,
            pooled_height,
            pooled_width,
            sampling_ratio,
            (batch_size, height, width),
        ):
            _accumulate(flat_in, flat_grad, in_index, out_index, weight)
    grad_input = flat_in.reshape(batch_size, height, width, channels)
    return grad_input.permute(0, 3, 1, 2).contiguous()
