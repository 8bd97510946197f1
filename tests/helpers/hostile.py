"""Shared pieces of the hostile-input tests (``test_hostile_*.py``): tiny models of every toy
config, hypothesis strategies that generate hostile annotations and label maps together with the
generator's own record of what it made, what a valid mapper output is, and :data:`OUTCOMES`, the
count of every case by stage, setting and outcome (a valid result, the documented error, or for
label maps without a labelled pixel the documented skip).
"""

import collections
import os

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.structures import BitMasks, BoxMode, PolygonMasks, polygons_to_bitmask
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image

from projects.data.annotations import BadAnnotationError
from tests.helpers.contract import contract_names
from tests.helpers.contract import tiny_cfg as contract_tiny_cfg
from tests.helpers.contract import toy_config_path

H, W = 24, 32  # the image the generated annotations belong to
NUM_CLASSES = 3  # of the mapper-level property test
MASK_FORMATS = ("polygon", "bitmask")
# The toy configs of every registered method, each run as the CPU-sized model its
# TEST_CONTRACT.TINY_OPTS declares (tests/helpers/contract.py).
TOY_CONFIGS = contract_names()

# (stage, setting, outcome) -> number of cases
OUTCOMES = collections.Counter()
VALID, DOCUMENTED_ERROR, SKIPPED = "valid", "documented error", "skipped (no labelled pixel)"
NAN, INF = float("nan"), float("inf")


def derandomized(max_examples):
    """The suite's hypothesis settings: the same cases on every run (CI is deterministic), no
    deadline (models on the CPU), fixtures reset per test rather than per case."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,  # fresh_annotation_stats: once per test
        ],
    )


def tiny_cfg(config_name, output_dir, *opts):
    return contract_tiny_cfg(toy_config_path(config_name), output_dir, *opts)


# ---------------------------------------------------------------------------------------------
# Generated annotations. Each comes with the generator's record of what it made: whether
# "error" mode must reject it, whether "filter" mode must drop it, whether it surely gives an
# instance (a box and a solid mask of at least 4 pixels inside the image).
# ---------------------------------------------------------------------------------------------
def _coord(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


HUGE = st.one_of(_coord(1e9, 1e15), _coord(-1e15, -1e9))
NON_FINITE = st.sampled_from([NAN, INF, -INF])


@st.composite
def boxes(draw, clean):
    """(bbox, bbox_mode, bad, inside): ``bad`` if it has no positive area or is malformed.
    ``clean`` boxes have a positive area (inside, outside, across or far from the image)."""
    kinds = ["inside", "inside", "outside", "partial", "huge"]
    kind = draw(st.sampled_from(kinds + ([] if clean else ["empty", "nonfinite"])))
    mode = draw(st.sampled_from([BoxMode.XYXY_ABS, BoxMode.XYWH_ABS]))
    if kind == "inside":
        x0, y0 = draw(_coord(0, W - 4)), draw(_coord(0, H - 4))
        w, h = draw(_coord(1, W - x0)), draw(_coord(1, H - y0))
    elif kind == "outside":
        x0 = draw(st.one_of(_coord(W, W + 100), _coord(-200, -100)))
        y0, w, h = draw(_coord(-50, 80)), draw(_coord(1, 99)), draw(_coord(1, 50))
    elif kind == "partial":
        x0, y0 = draw(_coord(-20, W)), draw(_coord(-20, H))
        w, h = draw(_coord(1, 60)), draw(_coord(1, 60))
    elif kind == "huge":  # sides 0, negative, or positive beyond float32's rounding (x0 + w > x0)
        x0, y0 = draw(st.one_of(HUGE, _coord(-10, 40))), draw(st.one_of(HUGE, _coord(-10, 40)))
        side = _coord(1e-5, 1e6)
        if not clean:
            side = st.one_of(st.just(0.0), _coord(-1e6, -1e-5), side)
        w, h = draw(side) * max(1.0, abs(x0)), draw(side) * max(1.0, abs(y0))
    elif kind == "empty":
        x0, y0 = draw(_coord(0, W)), draw(_coord(0, H))
        w, h = draw(st.sampled_from([(0.0, 5.0), (5.0, 0.0), (-3.0, 5.0), (5.0, -2.0)]))
    else:
        x0, y0, w, h = 2.0, 2.0, 10.0, 8.0
    numbers = [x0, y0, w, h] if mode == BoxMode.XYWH_ABS else [x0, y0, x0 + w, y0 + h]
    if kind == "nonfinite":
        numbers[draw(st.integers(0, 3))] = draw(NON_FINITE)
    bad = kind == "nonfinite" or not (w > 0 and h > 0)
    if not clean and draw(st.integers(0, 9)) == 0:  # malformed
        malformed = [[1.0, 2.0, 3.0], numbers + [1.0], [[1.0, 2.0], [3.0]], None]
        bad, numbers = True, draw(st.sampled_from(malformed))
    return numbers, mode, bad, kind == "inside" and not bad


@st.composite
def polygons(draw, clean):
    """(flat polygon, kind): kind "ok" (finite, >= 3 points), "short" (< 3 points or an odd
    number of coordinates) or "nonfinite"; "solid" ok ones are rectangles of >= 4 x 4 pixels
    inside the image. ``clean`` ones are "ok" or "solid"."""
    kinds = ["solid", "solid", "free", "collinear", "bowtie", "huge"]
    kind = draw(st.sampled_from(kinds + ([] if clean else ["short", "odd", "nan"])))
    if kind == "solid":
        x0, y0 = draw(_coord(0, W - 4)), draw(_coord(0, H - 4))
        x1, y1 = draw(_coord(x0 + 4, W)), draw(_coord(y0 + 4, H))
        return [x0, y0, x1, y0, x1, y1, x0, y1], "solid"
    if kind == "collinear":
        x0, y0, dx, dy = (draw(_coord(-10, 40)) for _ in range(4))
        ts = draw(st.lists(_coord(-2, 2), min_size=3, max_size=5))
        return [v for t in ts for v in (x0 + t * dx, y0 + t * dy)], "ok"
    if kind == "bowtie":
        x0, y0 = draw(_coord(-5, W)), draw(_coord(-5, H))
        x1, y1 = draw(_coord(x0, x0 + 30)), draw(_coord(y0, y0 + 30))
        return [x0, y0, x1, y1, x0, y1, x1, y0], "ok"
    point = _coord(-10, 45) if kind != "huge" else st.one_of(HUGE, _coord(-10, 45))
    if kind == "short":
        count = draw(st.integers(1, 5))
    else:  # odd: 7, 9, 11 or 13 numbers; else 6 to 12 (3 to 6 points)
        count = draw(st.integers(3, 6)) * 2 + (kind == "odd")
    coords = [draw(point) for _ in range(count)]
    if kind == "nan":
        coords[draw(st.integers(0, count - 1))] = draw(NON_FINITE)
        return coords, "nonfinite"
    return coords, "short" if kind in ("short", "odd") else "ok"


def run_lengths(mask):
    """Uncompressed COCO RLE counts of an (h, w) mask (column-major, starting with zeros)."""
    flat = np.asarray(mask, dtype=np.uint8).reshape(-1, order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    return [0] + runs if flat[0] else runs


def _rle(mask, form):
    if form == "list":
        return {"size": list(mask.shape), "counts": run_lengths(mask)}
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "size": list(mask.shape),
        "counts": rle["counts"].decode() if form == "str" else rle["counts"],
    }


@st.composite
def segmentations(draw, clean):
    """(segmentation or "absent", error_bad, filter_dropped, solid); ``clean``: polygons of
    clean kinds or a valid RLE."""
    kinds = ["polygons"] * 3 + ["rle"]
    kind = draw(
        st.sampled_from(kinds + ([] if clean else ["empty", "rle_size", "rle_runs", "none"]))
    )
    if kind == "polygons":
        polys = draw(st.lists(polygons(clean), min_size=1, max_size=3))
        poly_kinds = [k for _, k in polys]
        nonfinite = "nonfinite" in poly_kinds
        usable = [k for k in poly_kinds if k in ("ok", "solid")]
        return (
            [p for p, _ in polys],
            nonfinite or "short" in poly_kinds,
            nonfinite or not usable,
            "solid" in poly_kinds,
        )
    if kind == "empty":
        return [], True, True, False
    if kind == "none":
        return draw(st.sampled_from([None, "absent"])), True, True, False
    form = draw(st.sampled_from(["str", "bytes", "list"]))
    if kind == "rle":
        mask = np.zeros((H, W), dtype=bool)
        solid = draw(st.booleans())
        if solid:
            x0, y0 = draw(st.integers(0, W - 4)), draw(st.integers(0, H - 4))
            mask[y0 : y0 + draw(st.integers(4, H - y0)), x0 : x0 + draw(st.integers(4, W - x0))] = 1
        return _rle(mask, form), False, False, solid
    if kind == "rle_size":  # consistent RLE of another size than the image
        h, w = draw(st.sampled_from([(H + 1, W), (H, W - 3), (W, H), (1, 1)]))
        return _rle(np.ones((h, w), dtype=bool), form), True, True, False
    # run lengths that do not add up to H x W
    h, w = draw(st.sampled_from([(H, W + 1), (H - 1, W), (1, 1)]))
    rle = _rle(np.eye(h, w, dtype=bool), form)
    rle["size"] = [H, W]
    return rle, True, True, False


CATEGORIES_BAD = [None, "absent", -1, 1.5, "1", True, False, NAN]


@st.composite
def annotation_lists(draw, num_classes):
    """A list of annotations plus the record of what each is (see the section comment)."""
    annos, records = [], []
    for i in range(draw(st.integers(0, 3))):
        clean = draw(st.booleans())  # else every part is drawn from the hostile mix
        if not clean and draw(st.booleans()):
            cat = draw(st.sampled_from(CATEGORIES_BAD + [num_classes, num_classes + 7]))
            cat_bad = True
        else:
            cat = draw(st.integers(0, num_classes - 1))
            cat = draw(st.sampled_from([cat, float(cat), np.int64(cat)]))
            cat_bad = False
        bbox, mode, box_bad, inside = draw(boxes(clean))
        segm, segm_error, segm_dropped, solid = draw(segmentations(clean))
        crowd = draw(st.integers(0, 5)) == 0
        anno = {"id": 100 + i, "bbox": bbox, "bbox_mode": mode, "iscrowd": int(crowd)}
        if cat != "absent":
            anno["category_id"] = cat
        if segm != "absent":
            anno["segmentation"] = segm
        annos.append(anno)
        records.append(
            {
                "id": anno["id"],
                "crowd": crowd,
                "error_bad": cat_bad or box_bad or segm_error,
                "dropped": cat_bad or box_bad or segm_dropped,
                "sure": inside and solid and not (cat_bad or box_bad or segm_dropped),
            }
        )
    return annos, records


# ---------------------------------------------------------------------------------------------
# What a valid mapper output is
# ---------------------------------------------------------------------------------------------
def assert_valid_instances(out, num_classes, mask_format):
    """``instances`` of ``out`` are usable: finite boxes of positive area inside the
    (transformed) image, classes in range, masks of the image's size."""
    height, width = out["image"].shape[1:]
    instances = out["instances"]
    assert tuple(instances.image_size) == (height, width)
    n = len(instances)
    box = instances.gt_boxes.tensor
    assert box.shape == (n, 4) and torch.isfinite(box).all()
    assert (box[:, 0] >= 0).all() and (box[:, 1] >= 0).all()
    assert (box[:, 2] <= width).all() and (box[:, 3] <= height).all()
    assert (box[:, 2] > box[:, 0]).all() and (box[:, 3] > box[:, 1]).all()
    classes = instances.gt_classes
    assert classes.dtype == torch.int64 and classes.shape == (n,)
    assert ((classes >= 0) & (classes < num_classes)).all()
    masks = instances.gt_masks
    if mask_format == "bitmask":
        assert isinstance(masks, BitMasks)
        assert masks.tensor.shape == (n, height, width) and masks.tensor.dtype == torch.bool
        return
    assert isinstance(masks, PolygonMasks) and len(masks) == n
    side = max(height, width)
    for polys in masks.polygons:
        for poly in polys:  # bounded before rasterizing: pycocotools crashes on ~1e9
            assert poly.size >= 6 and poly.size % 2 == 0 and np.isfinite(poly).all()
            assert (poly >= -2 * side).all() and (poly <= 3 * side).all(), poly
        assert polygons_to_bitmask(polys, height, width).shape == (height, width)


def first_bad_id(records):
    return next((r["id"] for r in records if r["error_bad"]), None)


def check_mapped(
    mapper, dataset_dict, records, num_classes, mask_format, mode, file_name, may_drop=False
):
    """Map and check against the records; returns (outcome, mapper output or None).
    ``may_drop``: the mapper's augmentations may crop instances away (no lower bound on the
    instances kept)."""
    first_bad = first_bad_id(records)
    try:
        out = mapper(dataset_dict)
    except BadAnnotationError as e:
        assert mode == "error" and first_bad is not None, f"unexpected error: {e}"
        assert f"annotation id={first_bad} " in str(e) and os.path.basename(file_name) in str(e)
        return DOCUMENTED_ERROR, None
    assert mode == "filter" or first_bad is None, f"annotation id={first_bad} was not rejected"
    assert_valid_instances(out, num_classes, mask_format)
    things = [r for r in records if not r["crowd"] and not r["dropped"]]
    assert len(out["instances"]) <= len(things)
    if not may_drop:
        assert len(out["instances"]) >= sum(r["sure"] for r in things)
    return VALID, out


@st.composite
def label_maps(draw, num_classes):
    """(label map array, its PIL mode, kind): values drawn from classes, out-of-range values and
    the ignore value 255; kinds "mixed", "ignore" (all 255), "one" (a single labelled pixel),
    "outside" (only out-of-range values), "size" (not the image's size), "deep" (16-bit)."""
    kind = draw(st.sampled_from(["mixed", "mixed", "ignore", "one", "outside", "size", "deep"]))
    rng = np.random.RandomState(draw(st.integers(0, 2**16)))
    shape = (H + 1, W) if kind == "size" else (H, W)
    choices = list(range(num_classes)) + [255]
    if draw(st.booleans()) or kind == "outside":
        choices += [num_classes, 254]
    labels = rng.choice(choices, size=shape)
    if kind == "ignore":
        labels[:] = 255
    elif kind == "one":
        labels[:] = 255
        labels[rng.randint(H), rng.randint(W)] = rng.randint(num_classes)
    elif kind == "outside":
        labels = rng.choice([num_classes, 200, 254], size=shape)
    if kind == "deep":
        labels[0, 0] = 1000
        return labels.astype(np.uint16), None, kind
    return labels.astype(np.uint8), draw(st.sampled_from(["L", "P"])), kind


def label_image(labels, pil_mode):
    """A PIL image storing ``labels`` as they are (``fromarray`` re-quantizes "P" images)."""
    if pil_mode != "P":
        return Image.fromarray(labels, mode=pil_mode)
    image = Image.frombytes("P", labels.shape[::-1], np.ascontiguousarray(labels).tobytes())
    image.putpalette(list(np.random.RandomState(0).randint(0, 256, 768)))
    return image


def print_outcomes(stage):
    """Print how the counted cases of ``stage`` ended (visible with ``pytest -s``)."""
    counts = {key[1:]: n for key, n in sorted(OUTCOMES.items()) if key[0] == stage}
    parts = [f"{setting}: {n} {outcome}" for (setting, outcome), n in counts.items()]
    print(f"\nHOSTILE INPUT, {stage} ({sum(counts.values())} cases): " + "; ".join(parts))
