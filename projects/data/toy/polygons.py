"""Exact conversion of a binary mask to COCO polygons (and RLE).

COCO rasterises a polygon whose vertices lie on integer pixel corners to exactly the pixels it
encloses, so tracing the pixel edges of a mask gives polygons that decode back to the same mask.
COCO polygons cannot hold holes (several polygons are *unioned*), so a mask with holes is first cut
into hole-free pieces by vertical cuts through each hole; the union of the pieces' outlines is the
mask again. :func:`mask_to_polygons` verifies the round trip and returns None when it does not hold,
so the caller can store that instance as RLE instead.
"""

import logging

import numpy as np
from pycocotools import mask as mask_util
from scipy import ndimage

logger = logging.getLogger(__name__)

_EIGHT_CONNECTED = np.ones((3, 3), bool)


def encode_rle(mask):
    """Compressed COCO RLE of a (H, W) bool mask, JSON-ready (``counts`` is a str)."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


def decode_segmentation(segmentation, height, width):
    """Decode a COCO segmentation (polygons or RLE) to a (height, width) bool mask."""
    if isinstance(segmentation, list):
        rles = mask_util.frPyObjects(segmentation, height, width)
        rle = mask_util.merge(rles)
    elif isinstance(segmentation["counts"], list):
        rle = mask_util.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation, counts=segmentation["counts"].encode())
    return mask_util.decode(rle).astype(bool)


def _first_hole(mask):
    """Pixels (bool array) of one enclosed background region of ``mask``, or None."""
    padded = np.pad(~mask, 1, constant_values=True)
    labels, count = ndimage.label(padded, structure=_EIGHT_CONNECTED)
    if count <= 1:
        return None
    outside = labels[0, 0]
    for index in range(1, count + 1):
        if index != outside:
            return (labels == index)[1:-1, 1:-1]
    return None


def _hole_free_pieces(mask):
    """Cut ``mask`` by vertical lines through its holes until no piece has a hole."""
    pending, pieces = [mask], []
    while pending:
        piece = pending.pop()
        hole = _first_hole(piece)
        if hole is None:
            pieces.append(piece)
            continue
        columns = np.nonzero(hole.any(axis=0))[0]
        cut = int(columns[len(columns) // 2])
        left, right = piece.copy(), piece.copy()
        left[:, cut:] = False
        right[:, :cut] = False
        pending.extend(p for p in (left, right) if p.any())
    return pieces


def _boundary_edges(mask):
    """Directed pixel edges between ``mask`` and its outside (clockwise around each pixel).

    Returns:
        dict: start corner (x, y) -> list of (end corner, pixel index).
    """
    height, width = mask.shape
    padded = np.pad(mask, 1)
    inside = padded[1:-1, 1:-1]
    neighbours = {
        "top": padded[:-2, 1:-1],
        "right": padded[1:-1, 2:],
        "bottom": padded[2:, 1:-1],
        "left": padded[1:-1, :-2],
    }
    # (start corner, end corner) offsets relative to the pixel's top-left corner.
    corners = {
        "top": ((0, 0), (1, 0)),
        "right": ((1, 0), (1, 1)),
        "bottom": ((1, 1), (0, 1)),
        "left": ((0, 1), (0, 0)),
    }
    edges = {}
    for side, neighbour in neighbours.items():
        ys, xs = np.nonzero(inside & ~neighbour)
        (sx, sy), (ex, ey) = corners[side]
        for y, x in zip(ys.tolist(), xs.tolist()):
            edges.setdefault((x + sx, y + sy), []).append(((x + ex, y + ey), y * width + x))
    return edges


def _trace_loops(mask):
    """Closed outlines (arrays of corners, collinear corners removed) of a hole-free mask.

    Returns:
        list[np.ndarray] or None: (K, 2) int64 corner arrays; None if the edges do not chain.
    """
    edges = _boundary_edges(mask)
    loops = []
    for start in list(edges):
        while edges[start]:
            corner, pixel = edges[start].pop()
            first_pixel = pixel
            loop = [start]
            while True:
                options = edges.get(corner, [])
                # Where two pixels touch only diagonally, stay on the pixel we came along.
                same = [i for i, option in enumerate(options) if option[1] == pixel]
                if corner == start and (pixel == first_pixel or not same):
                    break
                if not options:
                    return None
                loop.append(corner)
                corner, pixel = options.pop(same[0] if same else 0)
            loops.append(_drop_collinear(loop))
    return loops


def _drop_collinear(loop):
    points = np.asarray(loop, dtype=np.int64)
    previous = np.roll(points, 1, axis=0)
    following = np.roll(points, -1, axis=0)
    d1, d2 = points - previous, following - points
    turn = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    return points[turn != 0]


def mask_to_polygons(mask):
    """COCO polygons (integer pixel-corner coordinates) whose union decodes exactly to ``mask``.

    Args:
        mask (np.ndarray): (H, W) bool, not empty.

    Returns:
        list[list[int]] or None: flat ``[x0, y0, x1, y1, ...]`` polygons, or None when the exact
        round trip does not hold (the caller then stores RLE).
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    y0, x0 = int(ys.min()), int(xs.min())
    crop = mask[y0 : int(ys.max()) + 1, x0 : int(xs.max()) + 1]
    polygons = []
    for piece in _hole_free_pieces(crop):
        loops = _trace_loops(piece)
        if loops is None:
            return None
        for loop in loops:
            if len(loop) < 3:
                return None
            shifted = loop + np.asarray([x0, y0])
            polygons.append(shifted.reshape(-1).tolist())
    decoded = decode_segmentation(polygons, *mask.shape)
    if not np.array_equal(decoded, mask):
        return None
    return polygons
