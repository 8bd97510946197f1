"""Annotation checks every mapper runs, and their counters.

:func:`sanitize_annotations` (also run over a whole dataset by :func:`filter_dataset_dicts`, which a
trainer can call on the loaded dicts) finds missing, unknown, non-integer (booleans included) or
out-of-range category ids, missing / malformed / non-finite / zero-area / negative boxes,
non-finite polygons, polygons under 3 points (dropped; the annotation goes when none is left),
RLEs whose size differs from the image or whose run lengths do not add up to it (pycocotools would
decode uninitialised memory), and, when the model uses masks, annotations without a segmentation.
:func:`sanitize_label_map` finds label-map values that are neither a class nor the ignore value.
``DATALOADER.BAD_ANNOTATIONS``: ``"filter"`` drops them (label-map values become the ignore value),
counting each reason in :data:`ANNOTATION_STATS` and logging (first occurrences and periodic
summaries); ``"error"`` raises :class:`BadAnnotationError` naming the annotation id (or the label
map) and the image file.
"""

import collections
import copy
import logging
import numbers

import numpy as np
from detectron2.structures import BoxMode

logger = logging.getLogger(__name__)

__all__ = [
    "ANNOTATION_STATS",
    "BadAnnotationError",
    "filter_dataset_dicts",
    "log_annotation_summary",
    "sanitize_annotations",
    "sanitize_label_map",
]

# Reason -> number of annotations (or images, for image-level reasons) dropped in this process.
ANNOTATION_STATS = collections.Counter()
_WARN_FIRST_N = 10  # per reason, then only periodic summaries
_SUMMARY_EVERY = 1000


class BadAnnotationError(ValueError):
    """An invalid annotation; the message names its id and the image file."""


# ---------------------------------------------------------------------------------------------
# Annotation checks
# ---------------------------------------------------------------------------------------------
def _where(anno, file_name):
    return f"annotation id={anno.get('id', '<none>')} of image {file_name}"


def _as_floats(value):
    """``value`` as a flat float64 array, or None if it is not a (nested) sequence of numbers."""
    try:
        return np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None


def _rle_run_lengths(counts):
    """Run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``), or None if the
    string is malformed (a character outside '0'..'o', a truncated number, a negative run)."""
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError:
            return None
    runs, p = [], 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts) or not 48 <= counts[p] < 112:
                return None
            c = counts[p] - 48
            x |= (c & 0x1F) << 5 * k
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << 5 * k
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            return None
        runs.append(x)
    return runs


def _rle_problem(segm, image_hw):
    """The reason an RLE dict is unusable, or None."""
    if "counts" not in segm or "size" not in segm:
        return "malformed RLE: no 'counts' and 'size'"
    size = _as_floats(segm["size"])
    if size is None or size.size != 2 or not (np.isfinite(size).all() and (size > 0).all()):
        return f"malformed RLE: size {segm['size']!r} is not a positive (height, width)"
    if image_hw is not None and tuple(size) != tuple(image_hw):
        return f"RLE size mismatch: {list(segm['size'])} vs the image (h, w) {image_hw}"
    counts = segm["counts"]
    if isinstance(counts, (str, bytes)):
        runs = _rle_run_lengths(counts)
    else:
        runs = _as_floats(counts)
        if runs is not None and (np.ndim(counts) != 1 or (runs < 0).any() or (runs % 1).any()):
            runs = None
    if runs is None or np.sum(runs) != size[0] * size[1]:
        return "malformed RLE: its run lengths do not add up to height x width"
    return None


def _annotation_problem(anno, image_hw, num_classes, need_mask=False):
    """Return the reason ``anno`` is unusable (None if fine) and drop its degenerate polygons.

    Mutates ``anno["segmentation"]`` (list form) to remove polygons with fewer than 3 points.
    With ``need_mask``, an annotation without a segmentation is unusable.

    Returns:
        tuple[str or None, int]: the reason, and the number of degenerate polygons removed.
    """
    cat = anno.get("category_id")
    if cat is None:
        return "missing category_id", 0
    integral = isinstance(cat, numbers.Integral) or (
        isinstance(cat, numbers.Real) and float(cat).is_integer()
    )
    if isinstance(cat, bool) or not integral:
        return f"category_id not an integer: {cat!r}", 0
    if int(cat) < 0 or (num_classes is not None and int(cat) >= num_classes):
        return f"category_id out of range: {cat} not in the categories [0, {num_classes})", 0

    if "bbox" not in anno or "bbox_mode" not in anno:
        return "missing bbox or bbox_mode", 0
    box = _as_floats(anno["bbox"])
    if box is None or box.size != 4:
        return f"malformed bbox: {anno['bbox']!r} does not have 4 numbers", 0
    if not np.isfinite(box).all():
        return f"non-finite bbox: {box.tolist()}", 0
    x0, y0, x1, y1 = BoxMode.convert(box.tolist(), anno["bbox_mode"], BoxMode.XYXY_ABS)
    if not (x1 > x0 and y1 > y0):
        return f"zero-area or negative bbox: {box.tolist()}", 0

    segm = anno.get("segmentation")
    if segm is None:
        return ("missing segmentation (the model predicts masks)" if need_mask else None), 0
    if isinstance(segm, list):
        kept, dropped = [], 0
        for poly in segm:
            coords = _as_floats(poly)
            if coords is None:
                return "malformed polygon: not a list of numbers", 0
            if not np.isfinite(coords).all():
                return "non-finite polygon coordinates", 0
            if coords.size < 6 or coords.size % 2:
                dropped += 1
            else:
                kept.append(poly)
        anno["segmentation"] = kept
        if not kept:
            return "no polygon with at least 3 points", dropped
        return None, dropped
    if isinstance(segm, dict):
        return _rle_problem(segm, image_hw), 0
    if isinstance(segm, np.ndarray):
        if image_hw is not None and segm.shape[:2] != tuple(image_hw):
            return f"mask size mismatch: {segm.shape} vs the image (h, w) {image_hw}", 0
        return None, 0
    return f"unknown segmentation type: {type(segm).__name__}", 0


def _count(reason, message):
    ANNOTATION_STATS[reason] += 1
    if ANNOTATION_STATS[reason] <= _WARN_FIRST_N:
        logger.warning(f"Dropped {message}: {reason}")
    if sum(ANNOTATION_STATS.values()) % _SUMMARY_EVERY == 0:
        log_annotation_summary()


def sanitize_annotations(
    annos, *, file_name, image_hw=None, num_classes=None, mode="filter", need_mask=False
):
    """Check a list of annotations of one image.

    Args:
        annos (list[dict]): Detectron2 annotations (modified in place: degenerate polygons go).
        file_name (str): the image, for messages.
        image_hw (tuple[int, int] or None): image (height, width), to check RLE/mask sizes.
        num_classes (int or None): category ids must be in [0, num_classes) (when given).
        mode (str): ``"filter"`` (drop with a counted warning) or ``"error"``.
        need_mask (bool): an annotation without ``segmentation`` is invalid (the model uses
            masks).

    Returns:
        list[dict]: the valid annotations.

    Raises:
        BadAnnotationError: in ``"error"`` mode, naming the annotation id and ``file_name``.
    """
    if mode not in ("filter", "error"):
        raise ValueError(f"DATALOADER.BAD_ANNOTATIONS must be 'filter' or 'error', got {mode!r}")
    kept = []
    for anno in annos:
        reason, degenerate = _annotation_problem(anno, image_hw, num_classes, need_mask)
        if degenerate and (mode == "error" or reason is None):
            msg = f"{degenerate} polygon(s) with fewer than 3 points in {_where(anno, file_name)}"
            if mode == "error":
                raise BadAnnotationError(f"Invalid {msg}")
            _count("polygon with fewer than 3 points", msg)
        if reason is None:
            kept.append(anno)
        elif mode == "error":
            raise BadAnnotationError(f"Invalid {_where(anno, file_name)}: {reason}")
        else:
            _count(reason.split(":")[0], f"{_where(anno, file_name)}: {reason}")
    return kept


def sanitize_label_map(
    labels, *, file_name, label_file, num_classes, ignore_value=255, mode="filter"
):
    """Check that every value of a semantic label map is a class id or the ignore value.

    Args:
        labels (np.ndarray): (H, W) integer label map (not modified).
        file_name (str): the image, for messages.
        label_file (str): the label map, for messages.
        num_classes (int): class ids are [0, num_classes).
        ignore_value (int): the label of pixels without a class.
        mode (str): ``"filter"`` (other values become ``ignore_value``, with a counted warning)
            or ``"error"``.

    Returns:
        np.ndarray: ``labels``, or a copy with the invalid values set to ``ignore_value``.

    Raises:
        BadAnnotationError: in ``"error"`` mode, naming ``label_file`` and ``file_name``.
    """
    if mode not in ("filter", "error"):
        raise ValueError(f"DATALOADER.BAD_ANNOTATIONS must be 'filter' or 'error', got {mode!r}")
    invalid = ((labels < 0) | (labels >= num_classes)) & (labels != ignore_value)
    if not invalid.any():
        return labels
    values = np.unique(labels[invalid])
    shown = ", ".join(str(v) for v in values[:10]) + (", ..." if len(values) > 10 else "")
    reason = (
        f"values [{shown}] outside the classes [0, {num_classes}) and the ignore value "
        f"{ignore_value}"
    )
    where = f"label map {label_file} of image {file_name}"
    if mode == "error":
        raise BadAnnotationError(f"Invalid {where}: {reason}")
    _count("label-map values outside the classes", f"{where}: {reason}; they are ignored")
    labels = labels.copy()
    labels[invalid] = ignore_value
    return labels


def log_annotation_summary():
    """Log the counts of dropped annotations/images in this process."""
    if ANNOTATION_STATS:
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(ANNOTATION_STATS.items()))
        logger.info(f"Bad annotations dropped so far: {summary}")


def filter_dataset_dicts(dataset_dicts, *, num_classes=None, mode="filter", drop_empty=True):
    """Check every annotation of a dataset; drop images left without non-crowd annotations.

    Args:
        dataset_dicts (list[dict]): Detectron2 dataset dicts (not modified).
        num_classes (int or None): see :func:`sanitize_annotations`.
        mode (str): ``"filter"`` or ``"error"``.
        drop_empty (bool): drop images with no valid non-crowd annotation (empty lists and
            all-crowd images included).

    Returns:
        list[dict]: copies with invalid annotations removed.
    """
    out = []
    for d in dataset_dicts:
        d = copy.copy(d)
        hw = (d["height"], d["width"]) if "height" in d and "width" in d else None
        annos = [dict(a) for a in d.get("annotations", [])]
        d["annotations"] = sanitize_annotations(
            annos, file_name=d.get("file_name"), image_hw=hw, num_classes=num_classes, mode=mode
        )
        if drop_empty and not any(a.get("iscrowd", 0) == 0 for a in d["annotations"]):
            ANNOTATION_STATS["images without valid non-crowd annotations"] += 1
            continue
        out.append(d)
    logger.info(f"filter_dataset_dicts: kept {len(out)} of {len(dataset_dicts)} images.")
    log_annotation_summary()
    return out
