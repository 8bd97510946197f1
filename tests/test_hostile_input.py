"""Hostile and odd input end to end: mapper, model, evaluator and demo, for every toy config.

1. Property-based (hypothesis): generated annotations of a real image file (boxes outside the
   image, degenerate / collinear / bow-tie / huge / non-finite polygons, RLEs of the wrong size or
   with run lengths that do not add up, missing or bad category ids, both box modes, crowds) go
   through ``InstanceDatasetMapper`` in both ``DATALOADER.BAD_ANNOTATIONS`` modes and both mask
   formats. Each case must end in valid instances or in :class:`BadAnnotationError` naming the
   first bad annotation's id and the file; which one is decided by the generator's own
   bookkeeping of what it made, not by asking the code under test. Fewer generated cases then go
   through the model of every toy config (hostile label maps for the semantic ones): finite
   ``loss_*`` in training, outputs of the input's size in inference.
2. Odd images (1x1, 16x4000, 4000x4000, L, RGBA, P, I;16, EXIF-rotated JPEG) through the mappers,
   a training step and inference of every toy config, its evaluator and the demo.

Every case is counted in :data:`OUTCOMES` by stage, setting and outcome (a valid result, the
documented error, or for label maps without a labelled pixel the documented skip); the last test
prints a one-line summary (visible with ``-s``) and checks that the generated cases reached both
ends.
"""

import collections
import glob
import json
import math
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import SemSegEvaluator
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, BoxMode, PolygonMasks, polygons_to_bitmask
from detectron2.utils.events import EventStorage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from learning import REPO
from projects.data.annotations import ANNOTATION_STATS, BadAnnotationError
from projects.data.augmentations import ResizeShortestEdge
from projects.data.image_io import ImageSizeError, read_image_robust
from projects.data.mapper_registry import build_dataset_mapper
from projects.data.mappers import InstanceDatasetMapper
from projects.demo import Predictor, metadata_for, run_on_images
from projects.engine.setup import load_config
from projects.evaluation.coco_boundary import COCOBoundaryEvaluator

H, W = 24, 32  # the image the generated annotations belong to
NUM_CLASSES = 3  # of the mapper-level property test
MASK_FORMATS = ("polygon", "bitmask")
TOY_CONFIGS = sorted(
    os.path.basename(p)
    for p in glob.glob(os.path.join(REPO, "configs", "toy", "*.yaml"))
    if not os.path.basename(p).startswith("Base-") and os.path.basename(p) != "bars.yaml"
)
# A CPU-sized model of each toy config (channels, proposals and points cut; 48-px images). The
# mask head's CONV_DIM must not exceed the FPN channels: PointRend's coarse head (as Detectron2's
# ConvFCHead) only reduces wider inputs.
TINY_OPTS = [
    "INPUT.MIN_SIZE_TRAIN", "(48,)",
    "INPUT.MAX_SIZE_TRAIN", "64",
    "INPUT.MIN_SIZE_TEST", "48",
    "INPUT.MAX_SIZE_TEST", "64",
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "100",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "20",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
    "MODEL.ROI_MASK_HEAD.FC_DIM", "64",
    "MODEL.POINT_HEAD.FC_DIM", "32",
    "MODEL.POINT_HEAD.TRAIN_NUM_POINTS", "196",
    "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", "784",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
    "TEST.DETECTIONS_PER_IMAGE", "2",
]  # fmt: skip

# (stage, setting, outcome) -> number of cases
OUTCOMES = collections.Counter()
VALID, DOCUMENTED_ERROR, SKIPPED = "valid", "documented error", "skipped (no labelled pixel)"
NAN, INF = float("nan"), float("inf")


def _tiny_cfg(config_name, output_dir, *opts):
    path = os.path.join(REPO, "configs", "toy", config_name)
    cfg = load_config(path, TINY_OPTS + ["OUTPUT_DIR", str(output_dir), *opts], freeze=False)
    cfg.freeze()
    return cfg


def _build(cfg):
    torch.manual_seed(0)
    return build_model(cfg)


def _is_semantic(cfg):
    return cfg.MODEL.META_ARCHITECTURE == "SemanticSegmentor"


@pytest.fixture(autouse=True)
def fresh_stats():
    ANNOTATION_STATS.clear()
    yield
    ANNOTATION_STATS.clear()


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    """A real H x W PNG the generated annotations belong to."""
    path = tmp_path_factory.mktemp("hostile") / "hostile_image.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (H, W, 3), dtype=np.uint8)).save(path)
    return str(path)


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


def _run_lengths(mask):
    """Uncompressed COCO RLE counts of an (h, w) mask (column-major, starting with zeros)."""
    flat = np.asarray(mask, dtype=np.uint8).reshape(-1, order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    return [0] + runs if flat[0] else runs


def _rle(mask, form):
    if form == "list":
        return {"size": list(mask.shape), "counts": _run_lengths(mask)}
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


def _first_bad(records):
    return next((r["id"] for r in records if r["error_bad"]), None)


def _check_mapped(mapper, dataset_dict, records, num_classes, mask_format, mode, file_name):
    """Map and check against the records; returns (outcome, mapper output or None)."""
    first_bad = _first_bad(records)
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
    assert len(out["instances"]) >= sum(r["sure"] for r in things)
    return VALID, out


# ---------------------------------------------------------------------------------------------
# 1a. The mapper: both modes, both mask formats
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["filter", "error"])
@pytest.mark.parametrize("mask_format", MASK_FORMATS)
@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # fresh_stats: once per test is what it is for
    ],
)
@given(
    data=annotation_lists(NUM_CLASSES),
    short_edge=st.sampled_from([12, 24, 40]),
    flip=st.booleans(),
)
def test_mapper_gives_valid_instances_or_names_the_bad_annotation(
    image_file, mask_format, mode, data, short_edge, flip
):
    annos, records = data
    mapper = InstanceDatasetMapper(
        True,
        augmentations=[
            ResizeShortestEdge((short_edge,), 1000, "choice"),
            T.RandomFlip(prob=1.0 if flip else 0.0),
        ],
        image_format="RGB",
        num_classes=NUM_CLASSES,
        instance_mask_format=mask_format,
        bad_annotations=mode,
    )
    dataset_dict = {"file_name": image_file, "height": H, "width": W, "annotations": annos}
    outcome, _ = _check_mapped(
        mapper, dataset_dict, records, NUM_CLASSES, mask_format, mode, image_file
    )
    OUTCOMES["mapper", f"{mode}/{mask_format}", outcome] += 1


# ---------------------------------------------------------------------------------------------
# 1b. The model of every toy config
# ---------------------------------------------------------------------------------------------
def _assert_finite_losses(losses):
    assert losses and all(k.startswith("loss_") for k in losses), sorted(losses)
    for name, value in losses.items():
        assert torch.isfinite(value).all(), f"{name} = {value}"


def _assert_output_size(output, height, width, cfg):
    if _is_semantic(cfg):
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        assert output["sem_seg"].shape == (num_classes, height, width)
        assert torch.isfinite(output["sem_seg"]).all()
        return
    instances = output["instances"]
    assert tuple(instances.image_size) == (height, width)
    assert instances.pred_masks.shape[1:] == (height, width)
    box = instances.pred_boxes.tensor
    assert torch.isfinite(box).all() and torch.isfinite(instances.scores).all()


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


def _label_image(labels, pil_mode):
    """A PIL image storing ``labels`` as they are (``fromarray`` re-quantizes "P" images)."""
    if pil_mode != "P":
        return Image.fromarray(labels, mode=pil_mode)
    image = Image.frombytes("P", labels.shape[::-1], np.ascontiguousarray(labels).tobytes())
    image.putpalette(list(np.random.RandomState(0).randint(0, 256, 768)))
    return image


class _Models(dict):
    def __repr__(self):  # hypothesis prints the arguments of a failing case
        return f"<tiny models of {sorted(self)}>"


@pytest.fixture(scope="module")
def hostile_models(tmp_path_factory):
    """config name -> (cfg of each mode, model), built once."""
    out = _Models()
    for name in TOY_CONFIGS:
        root = tmp_path_factory.mktemp(name.replace(".yaml", ""))
        cfgs = {
            mode: _tiny_cfg(name, root, "DATALOADER.BAD_ANNOTATIONS", mode)
            for mode in ("filter", "error")
        }
        out[name] = cfgs, _build(cfgs["filter"])
    return out


@pytest.mark.parametrize("config_name", TOY_CONFIGS)
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # fresh_stats: once per test is what it is for
    ],
)
@given(data=st.data())
def test_model_on_hostile_input(hostile_models, image_file, tmp_path_factory, config_name, data):
    cfgs, model = hostile_models[config_name]
    mode = data.draw(st.sampled_from(["filter", "error"]), label="mode")
    cfg = cfgs[mode]
    dataset_dict = {"file_name": image_file, "height": H, "width": W, "image_id": 1}
    if _is_semantic(cfg):
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        labels, pil_mode, kind = data.draw(label_maps(num_classes), label="label map")
        label_file = str(tmp_path_factory.mktemp("labels") / "hostile_label.png")
        _label_image(labels, pil_mode).save(label_file)
        dataset_dict["sem_seg_file_name"] = label_file
        records = None
    else:
        num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        annos, records = data.draw(annotation_lists(num_classes), label="annotations")
        dataset_dict["annotations"] = annos
    train_mapper = build_dataset_mapper(cfg, is_train=True)

    if records is not None:
        mask_format = cfg.INPUT.MASK_FORMAT
        outcome, out = _check_mapped(
            train_mapper, dataset_dict, records, num_classes, mask_format, mode, image_file
        )
        batch = [out] if outcome == VALID else None
    else:
        batch, outcome = _map_label_map(train_mapper, dataset_dict, labels, kind, mode, cfg)
    if batch is not None:
        model.train()
        with EventStorage():
            _assert_finite_losses(model(batch))
        model.eval()
        with torch.no_grad():
            test_input = build_dataset_mapper(cfg, is_train=False)(dataset_dict)
            _assert_output_size(model([test_input])[0], H, W, cfg)
    OUTCOMES["model", f"{config_name}/{mode}", outcome] += 1


def _map_label_map(mapper, dataset_dict, labels, kind, mode, cfg):
    """Map a dict with a generated label map; returns (batch or None, outcome)."""
    num_classes, ignore = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
    out_of_range = ((labels >= num_classes) & (labels != ignore)).any()
    label_name = os.path.basename(dataset_dict["sem_seg_file_name"])
    try:
        out = mapper(dataset_dict)
    except ImageSizeError as e:
        assert kind == "size" and label_name in str(e)
        return None, DOCUMENTED_ERROR
    except BadAnnotationError as e:
        assert mode == "error" and out_of_range, f"unexpected error: {e}"
        assert label_name in str(e) and os.path.basename(dataset_dict["file_name"]) in str(e)
        return None, DOCUMENTED_ERROR
    assert kind != "size" and (mode == "filter" or not out_of_range)
    labelled = (labels < num_classes).any()
    if out is None:
        assert not labelled, "a label map with labelled pixels was skipped"
        return None, SKIPPED
    sem_seg = out["sem_seg"]
    assert sem_seg.shape == out["image"].shape[1:] and sem_seg.dtype == torch.int64
    assert (((sem_seg >= 0) & (sem_seg < num_classes)) | (sem_seg == ignore)).all()
    assert (sem_seg != ignore).any()
    return [out], VALID


# ---------------------------------------------------------------------------------------------
# Regressions of the bugs the generated cases found
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask_format", ["polygon", "bitmask"])
def test_huge_polygon_coordinates_are_clipped_not_rasterized(image_file, mask_format):
    """pycocotools crashed the process (1e9) or took minutes (1e8) on such polygons."""
    mapper = InstanceDatasetMapper(
        True, augmentations=[], image_format="RGB", instance_mask_format=mask_format
    )
    triangle = [-1e12, -1e12, 1e12, -5.0, -3.0, 1e12]  # covers the whole image
    anno = {
        "id": 1,
        "category_id": 0,
        "bbox": [0.0, 0.0, W, H],
        "bbox_mode": BoxMode.XYXY_ABS,
        "segmentation": [triangle],
    }
    out = mapper({"file_name": image_file, "height": H, "width": W, "annotations": [anno]})
    assert_valid_instances(out, 1, mask_format)
    masks = out["instances"].gt_masks
    mask = masks.tensor[0] if mask_format == "bitmask" else masks.polygons[0]
    if mask_format == "polygon":
        mask = torch.from_numpy(polygons_to_bitmask(mask, H, W))
    assert mask.all()


def test_uncompressed_rle_with_bitmasks(image_file):
    """Detectron2 decoded only compressed RLE: a TypeError without the annotation's name."""
    mask = np.zeros((H, W), dtype=bool)
    mask[3:9, 5:20] = True
    mapper = InstanceDatasetMapper(
        True, augmentations=[], image_format="RGB", instance_mask_format="bitmask"
    )
    anno = {
        "id": 1,
        "category_id": 0,
        "bbox": [5.0, 3.0, 15.0, 6.0],
        "bbox_mode": BoxMode.XYWH_ABS,
        "segmentation": {"size": [H, W], "counts": _run_lengths(mask)},
    }
    out = mapper({"file_name": image_file, "height": H, "width": W, "annotations": [anno]})
    assert torch.equal(out["instances"].gt_masks.tensor[0], torch.from_numpy(mask))


def test_rle_whose_runs_do_not_add_up_is_rejected_not_decoded(image_file):
    """pycocotools decodes such an RLE into uninitialised memory (a random mask)."""
    anno = {
        "id": 7,
        "category_id": 0,
        "bbox": [5.0, 3.0, 15.0, 6.0],
        "bbox_mode": BoxMode.XYWH_ABS,
        "segmentation": {"size": [H, W], "counts": [10, 5]},
    }
    d = {"file_name": image_file, "height": H, "width": W, "annotations": [anno]}
    mapper = InstanceDatasetMapper(
        True, augmentations=[], image_format="RGB", instance_mask_format="bitmask"
    )
    assert len(mapper(dict(d, annotations=[dict(anno)]))["instances"]) == 0
    assert ANNOTATION_STATS["malformed RLE"] == 1
    mapper.bad_annotations = "error"
    with pytest.raises(BadAnnotationError, match=r"id=7 of image .*hostile_image\.png.*run length"):
        mapper(d)


def _semantic_mapper(mode="filter", num_classes=3, augmentations=()):
    return InstanceDatasetMapper(
        True,
        augmentations=list(augmentations),
        image_format="RGB",
        use_instance_mask=False,
        use_instances=False,
        require_sem_seg_file=True,
        sem_seg_num_classes=num_classes,
        bad_annotations=mode,
    )


def test_label_map_values_outside_the_classes(image_file, tmp_path):
    """Cross-entropy failed with a bare "Target 10 is out of bounds" deep in the model."""
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[:, :5] = 255
    labels[:3, 10:] = 7
    path = tmp_path / "labels_7.png"
    Image.fromarray(labels).save(path)
    d = {"file_name": image_file, "height": H, "width": W, "sem_seg_file_name": str(path)}
    out = _semantic_mapper()(dict(d))
    expected = labels.astype(np.int64)
    expected[expected == 7] = 255
    np.testing.assert_array_equal(out["sem_seg"].numpy(), expected)
    assert ANNOTATION_STATS["label-map values outside the classes"] == 1
    with pytest.raises(BadAnnotationError, match=r"labels_7\.png.*hostile_image\.png.*\[7\]"):
        _semantic_mapper("error")(dict(d))


def test_16_bit_label_map_is_resized(image_file, tmp_path):
    """Detectron2 resized it with torch, which has no nearest resize of int32 (NotImplementedError
    naming no file)."""
    labels = (np.arange(H * W).reshape(H, W) % 3).astype(np.uint16)
    labels[0, 0] = 1000  # not a class: ignored
    path = tmp_path / "deep_labels.png"
    Image.fromarray(labels).save(path)
    d = {"file_name": image_file, "height": H, "width": W, "sem_seg_file_name": str(path)}
    out = _semantic_mapper(augmentations=[ResizeShortestEdge((2 * H,), 1000, "choice")])(d)
    expected = labels.astype(np.int64)
    expected[0, 0] = 255
    np.testing.assert_array_equal(out["sem_seg"].numpy(), np.kron(expected, np.ones((2, 2))))


def test_label_map_without_labelled_pixels_is_skipped(image_file, tmp_path, caplog):
    """Its cross-entropy (Detectron2's SemSegFPNHead too) is a NaN loss."""
    path = tmp_path / "all_ignored.png"
    Image.fromarray(np.full((H, W), 255, dtype=np.uint8)).save(path)
    d = {"file_name": image_file, "height": H, "width": W, "sem_seg_file_name": str(path)}
    with caplog.at_level("WARNING", logger="projects.data.mappers"):
        assert _semantic_mapper()(d) is None
    assert ANNOTATION_STATS["training images without labelled pixels"] == 1
    assert any("all_ignored.png" in r.getMessage() for r in caplog.records)


def test_pointrend_semantic_losses_are_finite_without_labelled_pixels(tmp_path):
    """Nothing labelled in the batch (or at the sampled points): zero losses, not NaN."""
    cfg = _tiny_cfg("pointrend_semseg.yaml", tmp_path)
    model = _build(cfg).train()
    image = torch.rand(3, 48, 64) * 255
    batch = [{"image": image, "sem_seg": torch.full((48, 64), 255), "height": 48, "width": 64}]
    with EventStorage():
        losses = model(batch)
    _assert_finite_losses(losses)
    assert sum(losses.values()) == 0
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_resize_of_a_thin_image_keeps_one_pixel():
    """Detectron2 resized 16 x 4000 to 0 x 64 ("height and width must be > 0")."""
    image = np.zeros((16, 4000, 3), dtype=np.uint8)
    transform = ResizeShortestEdge((48,), 64, "choice").get_transform(image)
    assert transform.apply_image(image).shape == (1, 64, 3)
    tall = np.zeros((4000, 16, 3), dtype=np.uint8)
    assert ResizeShortestEdge((48,), 64, "choice").get_transform(tall).apply_image(tall).shape == (
        64,
        1,
        3,
    )


# ---------------------------------------------------------------------------------------------
# 2. Odd images: mapper, training step, inference, evaluator, demo
# ---------------------------------------------------------------------------------------------
def _odd_image_specs():
    """name -> (writer(path), (height, width) as displayed)."""
    rng = np.random.RandomState(3)

    def rgb(h, w):
        return rng.randint(0, 255, (h, w, 3), dtype=np.uint8)

    def png(array, mode=None):
        return lambda path: Image.fromarray(array, mode=mode).save(path)

    def palette(path):
        image = Image.fromarray((np.arange(H * W).reshape(H, W) % 4).astype(np.uint8), mode="P")
        image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 250, 250, 0] + [0] * 756)
        image.save(path)

    def exif_jpeg(path):
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display: stored H x W, shown W x H
        Image.fromarray(rgb(H, W)).save(path, exif=exif.tobytes(), quality=95)

    big = np.full((4000, 4000, 3), 90, dtype=np.uint8)
    big[1000:3000, 1500:2500] = (200, 40, 40)
    deep = (np.arange(H * W).reshape(H, W) * 85).astype(np.uint16)  # 0 .. 65195
    rgba = np.dstack([rgb(H, W), np.linspace(0, 255, W, dtype=np.uint8)[None].repeat(H, 0)])
    return {
        "one_pixel.png": (png(rgb(1, 1)), (1, 1)),
        "thin_16x4000.png": (png(rgb(16, 4000)), (16, 4000)),
        "big_4000x4000.png": (png(big), (4000, 4000)),
        "gray_L.png": (png(rgb(H, W)[..., 0], "L"), (H, W)),
        "rgba.png": (png(rgba, "RGBA"), (H, W)),
        "palette_P.png": (palette, (H, W)),
        "depth_I16.png": (png(deep), (H, W)),
        "exif_rotated.jpg": (exif_jpeg, (W, H)),
    }


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    """Odd image files with one annotation each, registered as a COCO dataset and a semantic
    one (label maps of the displayed size). Returns a dict of names and paths."""
    root = tmp_path_factory.mktemp("odd_images")
    image_dir = root / "images"
    image_dir.mkdir()
    images, annotations, sem_dicts = [], [], []
    sizes = {}
    for image_id, (name, (write, (h, w))) in enumerate(sorted(_odd_image_specs().items()), 1):
        write(image_dir / name)
        sizes[name] = (h, w)
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        x0, y0, x1, y1 = w / 4, h / 4, max(w * 3 / 4, w / 4 + 0.5), max(h * 3 / 4, h / 4 + 0.5)
        if (h, w) == (1, 1):
            x0, y0, x1, y1 = 0.0, 0.0, 1.0, 1.0
        annotations.append(
            {
                "id": image_id,
                "image_id": image_id,
                "category_id": 1 + image_id % 7,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0),
                "iscrowd": 0,
                "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
            }
        )
        labels = np.zeros((h, w), dtype=np.uint8)
        labels[int(y0) : int(math.ceil(y1)), int(x0) : int(math.ceil(x1))] = 1 + image_id % 9
        labels[-1:, :] = 255
        if (h, w) == (1, 1):
            labels[:] = 3
        label_file = root / f"label_{name}.png"
        Image.fromarray(labels).save(label_file)
        sem_dicts.append(
            {
                "file_name": str(image_dir / name),
                "sem_seg_file_name": str(label_file),
                "height": h,
                "width": w,
                "image_id": image_id,
            }
        )
    categories = [{"id": k, "name": f"class_{k}"} for k in range(1, 8)]
    json_file = root / "odd.json"
    json_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    coco_name, sem_name = f"hostile_odd_coco_{id(root)}", f"hostile_odd_sem_seg_{id(root)}"
    register_coco_instances(coco_name, {}, str(json_file), str(image_dir))
    DatasetCatalog.register(sem_name, lambda: [dict(d) for d in sem_dicts])
    MetadataCatalog.get(sem_name).set(
        stuff_classes=[f"class_{k}" for k in range(10)],
        ignore_label=255,
        evaluator_type="sem_seg",
    )
    return {
        "root": root,
        "files": [str(image_dir / name) for name in sorted(sizes)],
        "sizes": sizes,
        "coco": coco_name,
        "sem_seg": sem_name,
    }


# The 4000 x 4000 image goes through every config's mappers and training step (resized to 48 px).
# Inference gives outputs of its full size (K x 4000 x 4000 floats for a semantic model) and
# evaluating or drawing them takes seconds: only these configs run inference on it, and only the
# instance ones evaluate it (Detectron2's SemSegEvaluator takes 5 s on 16 M pixels).
BIG_INFERENCE = ("mask_rcnn.yaml", "pointrend.yaml", "pointrend_semseg.yaml")
# The demo reads every image the same way whatever the config: all odd images for one config, the
# odd sizes (and the EXIF rotation, which swaps them) for the others.
DEMO_ALL_IMAGES = "mask_rcnn.yaml"
DEMO_SOME_IMAGES = ("one_pixel.png", "thin_16x4000.png", "exif_rotated.jpg")


def _dataset_dicts(odd_images, cfg):
    name = odd_images["sem_seg"] if _is_semantic(cfg) else odd_images["coco"]
    return name, DatasetCatalog.get(name)


@pytest.mark.parametrize("config_name", TOY_CONFIGS)
def test_odd_images_train_infer_and_evaluate(odd_images, tmp_path, config_name):
    cfg = _tiny_cfg(config_name, tmp_path)
    name, dicts = _dataset_dicts(odd_images, cfg)
    assert len(dicts) == len(odd_images["files"])
    model = _build(cfg)

    # mapper (training) and one training step on all odd images in one batch
    train_mapper = build_dataset_mapper(cfg, is_train=True)
    batch = [train_mapper(d) for d in dicts]
    for d, x in zip(dicts, batch):
        assert x is not None and x["image"].shape[0] == 3 and min(x["image"].shape[1:]) >= 1
        assert max(x["image"].shape[1:]) <= cfg.INPUT.MAX_SIZE_TRAIN, d["file_name"]
        if not _is_semantic(cfg):
            assert len(x["instances"]) == 1, d["file_name"]
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    with EventStorage():
        losses = model(batch)
    _assert_finite_losses(losses)
    sum(losses.values()).backward()
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())

    # mapper (test), inference at the input's size, the dataset's evaluator
    test_mapper = build_dataset_mapper(cfg, is_train=False)
    model.eval()
    if _is_semantic(cfg):
        evaluator = SemSegEvaluator(name, distributed=False, output_dir=str(tmp_path / "eval"))
    else:
        evaluator = COCOBoundaryEvaluator.from_config(
            cfg, name, output_dir=str(tmp_path / "eval"), distributed=False
        )
    inputs = [test_mapper(d) for d in dicts]
    for x in inputs:
        if "4000x4000" in x["file_name"]:
            assert x["image"].shape[1:] == (48, 48)
    if config_name not in BIG_INFERENCE:
        inputs = [x for x in inputs if "4000x4000" not in x["file_name"]]
    with torch.no_grad():
        outputs = model(inputs)  # one batch: the odd sizes padded together
    evaluator.reset()
    for x, output in zip(inputs, outputs):
        _assert_output_size(output, x["height"], x["width"], cfg)
        if not (_is_semantic(cfg) and "4000x4000" in x["file_name"]):
            evaluator.process([x], [output])
        OUTCOMES["odd image", config_name, VALID] += 1
    results = evaluator.evaluate()
    if _is_semantic(cfg):
        assert 0 <= results["sem_seg"]["mIoU"] <= 100
        return
    assert {"bbox", "segm", "boundary"} <= set(results)
    for task in ("bbox", "segm", "boundary"):
        assert all(math.isnan(v) or 0 <= v <= 100 for v in results[task].values()), task
    with open(tmp_path / "eval" / "coco_instances_results.json") as f:
        predictions = json.load(f)
    sizes = {d["image_id"]: [d["height"], d["width"]] for d in dicts}
    assert predictions and {p["image_id"] for p in predictions} <= set(sizes)
    for p in predictions:
        assert p["segmentation"]["size"] == sizes[p["image_id"]]


@pytest.mark.parametrize("config_name", TOY_CONFIGS)
def test_odd_images_through_the_demo(odd_images, tmp_path, config_name):
    cfg = _tiny_cfg(config_name, tmp_path).clone()
    weights = tmp_path / "random.pth"
    torch.save({"model": _build(cfg).state_dict()}, weights)
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(weights)
    cfg.DATASETS.TEST = (odd_images["sem_seg"] if _is_semantic(cfg) else odd_images["coco"],)
    cfg.freeze()
    files = odd_images["files"]
    if config_name != DEMO_ALL_IMAGES:
        files = [f for f in files if os.path.basename(f) in DEMO_SOME_IMAGES]
    predictor = Predictor(cfg, confidence_threshold=0.0)
    out_dir, json_file = tmp_path / "drawn", tmp_path / "predictions.json"
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
    drawn, skipped = run_on_images(predictor, files, str(out_dir), metadata, str(json_file), False)
    assert (drawn, skipped) == (len(files), [])
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        drawing = np.asarray(Image.open(out_dir / f"{stem}.png"))
        assert drawing.shape == odd_images["sizes"][os.path.basename(path)] + (3,), path
        OUTCOMES["demo", config_name, VALID] += 1
    if not _is_semantic(cfg):
        predictions = json.loads(json_file.read_text())
        assert [(im["height"], im["width"]) for im in predictions["images"]] == [
            odd_images["sizes"][os.path.basename(p)] for p in files
        ]


def test_demo_scales_16_bit_images_instead_of_clipping(odd_images, tmp_path):
    """Detectron2's read_image clipped 16-bit values above 255 (a white image)."""
    cfg = _tiny_cfg("mask_rcnn.yaml", tmp_path).clone()
    weights = tmp_path / "random.pth"
    torch.save({"model": _build(cfg).state_dict()}, weights)
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(weights)
    cfg.freeze()
    path = next(f for f in odd_images["files"] if f.endswith("depth_I16.png"))
    predictor = Predictor(cfg, confidence_threshold=1.01)  # draws nothing over the image
    run_on_images(predictor, [path], str(tmp_path / "one.png"), metadata_for(cfg), None, False)
    drawing = np.asarray(Image.open(tmp_path / "one.png")).astype(np.int64)
    expected = read_image_robust(path, "RGB").astype(np.int64)
    assert np.abs(drawing - expected).mean() < 2.0
    assert (expected < 200).mean() > 0.5  # the clipped reading would be white almost everywhere


# ---------------------------------------------------------------------------------------------
# Counts
# ---------------------------------------------------------------------------------------------
def test_zz_case_counts_summary():
    """Print how every counted case ended (visible with ``-s``) and check that the generated
    cases reached both ends: valid instances and documented errors in "error" mode, and a model
    that trained and predicted on some of them in every config."""
    mapper_settings = {f"{mode}/{fmt}" for mode in ("filter", "error") for fmt in MASK_FORMATS}
    model_configs = {setting.split("/")[0] for stage, setting, _ in OUTCOMES if stage == "model"}
    ran = {setting for stage, setting, _ in OUTCOMES if stage == "mapper"}
    if ran != mapper_settings or model_configs != set(TOY_CONFIGS):
        pytest.skip("the generated cases did not all run in this session (run the whole file)")
    by_setting = collections.defaultdict(dict)
    for (stage, setting, outcome), n in sorted(OUTCOMES.items()):
        by_setting[stage, setting][outcome] = n
    parts = [
        f"{stage}[{setting}]: " + ", ".join(f"{n} {o}" for o, n in counts.items())
        for (stage, setting), counts in by_setting.items()
    ]
    print(f"\nHOSTILE INPUT CASES ({sum(OUTCOMES.values())}): " + "; ".join(parts))
    for fmt in MASK_FORMATS:
        assert OUTCOMES["mapper", f"error/{fmt}", VALID] > 0
        assert OUTCOMES["mapper", f"error/{fmt}", DOCUMENTED_ERROR] > 0
    for config in TOY_CONFIGS:
        valid = sum(OUTCOMES["model", f"{config}/{mode}", VALID] for mode in ("filter", "error"))
        assert valid > 0, f"no generated case reached the model of {config}"
