"""Boundary IoU and boundary AP: the metric against a plain pixel-loop definition, and the
evaluator's ``"boundary"`` task on a small COCO json (perfect, empty, dilated predictions)."""

import contextlib
import io
import json
import math
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg as d2_get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO

import projects.evaluation.coco_boundary as coco_boundary
from projects.evaluation.boundary import (
    boundary_iou,
    boundary_rle,
    dilation_radius,
    mask_to_boundary,
    pairwise_boundary_iou,
)
from projects.evaluation.coco_boundary import (
    BoundaryCOCOeval,
    COCOBoundaryEvaluator,
    GroundTruthError,
    coco_eval_stats,
    evaluate_boundary_on_coco,
)
from projects.evaluation.config import add_evaluation_config

# ----------------------------------------------------------------------------- plain reference


def plain_boundary(mask, r):
    """Mask pixels whose chessboard distance to a background pixel or to the outside of the
    image (the rows -1 and H, the columns -1 and W) is at most r, by explicit loops."""
    h, w = mask.shape
    out = np.zeros((h, w), dtype=bool)
    for i in range(h):
        for j in range(w):
            if not mask[i, j]:
                continue
            dist = min(i + 1, j + 1, h - i, w - j)
            for y in range(h):
                for x in range(w):
                    if not mask[y, x]:
                        dist = min(dist, max(abs(y - i), abs(x - j)))
            out[i, j] = dist <= r
    return out


def plain_iou(a, b):
    inter = union = 0
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            inter += bool(a[i, j]) and bool(b[i, j])
            union += bool(a[i, j]) or bool(b[i, j])
    return inter / union if union else 0.0


def _small_masks():
    """Hand-built (16, 20) masks: diagonal 25.6, so ratios .04/.08/.12 give r = 1/2/3."""
    h, w = 16, 20
    ring = np.zeros((h, w), bool)
    ring[2:14, 3:17] = True
    ring[6:10, 8:12] = False  # a hole
    pixel = np.zeros((h, w), bool)
    pixel[7, 9] = True  # a one-pixel object
    corner = np.zeros((h, w), bool)
    corner[:9, 11:] = True  # cut by the top and right image borders
    yy, xx = np.mgrid[:h, :w]
    blob = ((yy - 8) / 6.0) ** 2 + ((xx - 9) / 7.5) ** 2 <= 1
    shifted = np.roll(blob, (1, 2), axis=(0, 1))
    return {"ring": ring, "pixel": pixel, "corner": corner, "blob": blob, "shifted": shifted}


def _rle(mask):
    return mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))


# ----------------------------------------------------------------------------- the metric


def test_dilation_radius_is_a_fraction_of_the_diagonal_and_at_least_one():
    assert dilation_radius(30, 40, 0.1) == 5  # diagonal 50
    assert dilation_radius(30, 40, 0.3) == 15
    assert dilation_radius(30, 40, 0.02) == 1
    assert dilation_radius(30, 40, 0.0) == 1
    with pytest.raises(ValueError, match="dilation_ratio must be >= 0, got -0.1"):
        dilation_radius(30, 40, -0.1)


@pytest.mark.parametrize("ratio,r", [(0.04, 1), (0.08, 2), (0.12, 3)])
def test_mask_to_boundary_matches_plain_definition(ratio, r):
    assert dilation_radius(16, 20, ratio) == r
    for name, mask in _small_masks().items():
        got = mask_to_boundary(mask.astype(np.uint8), ratio)
        assert got.dtype == bool and got.shape == mask.shape
        np.testing.assert_array_equal(got, plain_boundary(mask, r), err_msg=name)


def test_boundary_special_cases():
    masks = _small_masks()
    # a one-pixel object is all boundary; the hole's rim is boundary; border pixels count
    np.testing.assert_array_equal(mask_to_boundary(masks["pixel"], 0.04), masks["pixel"])
    ring_b = mask_to_boundary(masks["ring"], 0.04)
    assert ring_b[5, 9] and ring_b[10, 9] and not ring_b[4, 9]
    corner_b = mask_to_boundary(masks["corner"], 0.04)
    assert corner_b[0, 15] and corner_b[4, 19] and not corner_b[4, 15]
    assert not mask_to_boundary(np.zeros((5, 6), bool)).any()
    with pytest.raises(ValueError, match=r"\(H, W\) mask, got an array of shape \(2, 5, 6\)"):
        mask_to_boundary(np.zeros((2, 5, 6), bool))


@pytest.mark.parametrize("ratio,r", [(0.04, 1), (0.12, 3)])
def test_boundary_iou_matches_plain_definition(ratio, r):
    masks = _small_masks()
    pairs = [("blob", "shifted"), ("ring", "blob"), ("pixel", "blob"), ("corner", "shifted")]
    for a, b in pairs:
        expected = plain_iou(plain_boundary(masks[a], r), plain_boundary(masks[b], r))
        assert boundary_iou(masks[a], masks[b], ratio) == pytest.approx(expected), (a, b)
    assert boundary_iou(masks["ring"], masks["ring"], ratio) == 1.0
    assert (
        0
        < boundary_iou(masks["blob"], masks["shifted"], ratio)
        < plain_iou(masks["blob"], masks["shifted"])
    )
    with pytest.raises(ValueError, match="differ in shape"):
        boundary_iou(masks["ring"], masks["ring"][:8], ratio)


def test_pairwise_rle_helper_is_min_of_mask_and_boundary_iou_except_crowd():
    masks = _small_masks()
    hollow = plain_boundary(masks["blob"], 2)  # same boundary as the blob, a fraction of its area
    dts = [masks["shifted"], masks["ring"], masks["pixel"], hollow]
    gts = [masks["blob"], masks["corner"], masks["blob"]]
    iscrowd = [0, 0, 1]
    got = pairwise_boundary_iou([_rle(m) for m in dts], [_rle(m) for m in gts], iscrowd, 0.08)
    assert got.shape == (4, 3)
    # the mask IoU bounds a perfect boundary: the hollow blob is no match for the blob
    assert boundary_iou(hollow, masks["blob"], 0.08) == 1.0
    assert got[3, 0] == pytest.approx(hollow.sum() / masks["blob"].sum())
    for i, d in enumerate(dts):
        for j, g in enumerate(gts):
            if iscrowd[j]:  # crowd: intersection over detection area, mask only
                expected = np.count_nonzero(d & g) / np.count_nonzero(d)
            else:
                expected = min(
                    plain_iou(d, g), plain_iou(plain_boundary(d, 2), plain_boundary(g, 2))
                )
            assert got[i, j] == pytest.approx(expected), (i, j)
    # precomputed ground-truth boundaries give the same matrix
    cached = [boundary_rle(_rle(g), 0.08) for g in gts]
    again = pairwise_boundary_iou(
        [_rle(m) for m in dts], [_rle(m) for m in gts], iscrowd, 0.08, gt_boundaries=cached
    )
    np.testing.assert_array_equal(again, got)
    assert pairwise_boundary_iou([], [_rle(gts[0])], [0]).shape == (0, 1)


# ----------------------------------------------------------------------------- boundary AP

H, W = 64, 80  # diagonal 102.4: the default ratio 0.02 gives a 2-pixel boundary


def _gt_masks():
    """Per image: list of (category_id, (H, W) bool mask)."""
    yy, xx = np.mgrid[:H, :W]
    square = np.zeros((H, W), bool)
    square[10:40, 8:38] = True
    ring = np.zeros((H, W), bool)
    ring[12:52, 44:76] = True
    ring[24:40, 54:66] = False
    ellipse = ((yy - 30) / 18.0) ** 2 + ((xx - 28) / 22.0) ** 2 <= 1
    border_box = np.zeros((H, W), bool)
    border_box[30:, 55:] = True
    small = np.zeros((H, W), bool)
    small[20:26, 60:66] = True
    return {
        1: [(1, square), (2, ring)],
        2: [(2, ellipse), (1, border_box)],
        3: [(1, small), (2, ellipse)],
    }


def _write_dataset(root):
    images, annotations = [], []
    for image_id, objects in _gt_masks().items():
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": H, "width": W})
        for cat, mask in objects:
            rle = _rle(mask)
            x, y, w, h = mask_util.toBbox(rle).tolist()
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                    "area": float(mask.sum()),
                    "bbox": [x, y, w, h],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": 1, "name": "box"}, {"id": 2, "name": "blob"}]
    path = root / "boundary_coco.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return str(path)


DATASET = "evaluation_boundary_tiny"


def _register(json_path):
    if DATASET not in DatasetCatalog.list():
        register_coco_instances(DATASET, {}, json_path, os.path.dirname(json_path))
        DatasetCatalog.get(DATASET)  # fills thing_classes and the category id mapping


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    _register(_write_dataset(tmp_path_factory.mktemp("boundary_coco")))
    return DATASET


def _outputs(transform=lambda m: m, image_ids=None):
    """Model-style (inputs, outputs) with the ground truth, transformed, as predictions."""
    contiguous = MetadataCatalog.get(DATASET).thing_dataset_id_to_contiguous_id
    inputs, outputs = [], []
    for image_id, objects in _gt_masks().items():
        if image_ids is not None and image_id not in image_ids:
            continue
        masks = torch.as_tensor(np.stack([transform(m) for _, m in objects]))
        inst = Instances((H, W))
        inst.pred_masks = masks
        inst.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, W, H]] * len(objects)))
        inst.scores = torch.ones(len(objects))
        inst.pred_classes = torch.tensor([contiguous[c] for c, _ in objects])
        inputs.append({"image_id": image_id, "height": H, "width": W})
        outputs.append({"instances": inst})
    return inputs, outputs


def _evaluate(evaluator, transform=lambda m: m, image_ids=None):
    evaluator.reset()
    evaluator.process(*_outputs(transform, image_ids))
    return evaluator.evaluate()


def _dilate3(mask):
    return cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)


def test_perfect_predictions_score_100_and_empty_masks_0(dataset):
    evaluator = COCOBoundaryEvaluator(dataset, distributed=False)
    results = _evaluate(evaluator)
    assert set(results) == {"bbox", "segm", "boundary"}
    for key in ("AP", "AP50", "AP75", "AP-box", "AP-blob"):
        assert results["boundary"][key] == pytest.approx(100.0), key
        assert results["segm"][key] == pytest.approx(100.0), key
    results = _evaluate(evaluator, transform=np.zeros_like)
    assert results["boundary"]["AP"] == 0.0 and results["boundary"]["AP-box"] == 0.0


def test_no_predictions_on_any_image_is_ap_0_not_a_crash(dataset):
    evaluator = COCOBoundaryEvaluator(dataset, tasks=("segm", "boundary"), distributed=False)
    evaluator.reset()
    empty = Instances((H, W))
    empty.pred_boxes = Boxes(torch.zeros(0, 4))
    empty.scores = torch.zeros(0)
    empty.pred_classes = torch.zeros(0, dtype=torch.long)
    empty.pred_masks = torch.zeros(0, H, W, dtype=torch.bool)
    evaluator.process([{"image_id": 1}], [{"instances": empty}])
    results = evaluator.evaluate()
    # Ground truth was there to find and nothing was found: 0 (Detectron2 says NaN).
    for task in ("segm", "boundary"):
        assert results[task]["AP"] == 0.0 and results[task]["AP50"] == 0.0, task
        per_class = {k: v for k, v in results[task].items() if k.startswith("AP-")}
        assert per_class and all(v == 0.0 or math.isnan(v) for v in per_class.values())
        assert any(v == 0.0 for v in per_class.values())


def test_wrong_boundary_scores_much_lower_in_boundary_ap(dataset):
    results = _evaluate(COCOBoundaryEvaluator(dataset, distributed=False), _dilate3)
    mask_ap, boundary_ap = results["segm"]["AP"], results["boundary"]["AP"]
    assert mask_ap > 20
    assert boundary_ap < mask_ap - 20
    assert results["boundary"]["AP50"] < results["segm"]["AP50"]


def test_dilation_ratio_from_config_is_honoured(dataset):
    cfg = d2_get_cfg()
    add_evaluation_config(cfg)
    assert cfg.TEST.BOUNDARY_EVAL.ENABLED and cfg.TEST.BOUNDARY_EVAL.DILATION_RATIO == 0.02
    cfg.TEST.BOUNDARY_EVAL.DILATION_RATIO = 1.0  # boundary = whole mask: boundary AP = mask AP
    wide = COCOBoundaryEvaluator.from_config(cfg, dataset, distributed=False)
    assert wide.dilation_ratio == 1.0
    results = _evaluate(wide, _dilate3)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AP-box", "AP-blob"):
        assert results["boundary"][key] == pytest.approx(results["segm"][key], nan_ok=True), key
    cfg.TEST.BOUNDARY_EVAL.DILATION_RATIO = 0.02
    narrow = _evaluate(COCOBoundaryEvaluator.from_config(cfg, dataset, distributed=False), _dilate3)
    assert narrow["boundary"]["AP"] < results["boundary"]["AP"] - 20
    cfg.TEST.BOUNDARY_EVAL.ENABLED = False
    off = _evaluate(COCOBoundaryEvaluator.from_config(cfg, dataset, distributed=False))
    assert set(off) == {"bbox", "segm"}


def test_from_config_without_the_keys_is_a_clear_error(dataset):
    with pytest.raises(KeyError, match="add_evaluation_config"):
        COCOBoundaryEvaluator.from_config(d2_get_cfg(), dataset)
    with pytest.raises(ValueError, match="unknown evaluation tasks \\['mask'\\]"):
        COCOBoundaryEvaluator(dataset, tasks=("mask",))


def test_ground_truth_boundaries_are_computed_once(dataset, monkeypatch):
    calls = []
    real = coco_boundary.boundary_rle
    monkeypatch.setattr(
        coco_boundary, "boundary_rle", lambda rle, ratio: calls.append(1) or real(rle, ratio)
    )
    evaluator = COCOBoundaryEvaluator(dataset, distributed=False)
    first = _evaluate(evaluator, _dilate3)
    num_gt = sum(len(objects) for objects in _gt_masks().values())
    assert len(calls) == num_gt
    second = _evaluate(evaluator, _dilate3)
    assert len(calls) == num_gt  # served from the evaluator's cache
    assert second["boundary"] == pytest.approx(first["boundary"], nan_ok=True)


def test_fast_and_official_matching_agree_and_stats_match_summarize(dataset):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(MetadataCatalog.get(dataset).json_file)
    results = []
    for image_id, objects in _gt_masks().items():
        for k, (cat, mask) in enumerate(objects):
            rle = _rle(_dilate3(mask) if k == 0 else mask)
            rle["counts"] = rle["counts"].decode()
            results.append(
                {"image_id": image_id, "category_id": cat, "score": 0.9, "segmentation": rle}
            )
    fast = evaluate_boundary_on_coco(coco_gt, results, use_fast_impl=True)
    slow = evaluate_boundary_on_coco(coco_gt, results, use_fast_impl=False)
    assert isinstance(slow, BoundaryCOCOeval)
    assert coco_eval_stats(fast) == pytest.approx(coco_eval_stats(slow))
    with contextlib.redirect_stdout(io.StringIO()):
        slow.summarize()
    stats = coco_eval_stats(slow)
    assert [stats[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")] == pytest.approx(
        list(slow.stats[:6])
    )
    assert 0 < stats["AP"] < 1


def _distributed_worker(json_path, out_dir):
    from detectron2.utils import comm

    _register(json_path)  # spawned processes start with empty catalogs
    rank = comm.get_rank()
    evaluator = COCOBoundaryEvaluator(DATASET, distributed=True)
    # each rank sees a different share of the images; rank 0 evaluates the gathered predictions
    results = _evaluate(evaluator, _dilate3, image_ids=[1, 3] if rank == 0 else [2])
    torch.save(results, f"{out_dir}/rank{rank}.pth")


@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU (gloo) path")
def test_two_processes_gather_to_rank0_like_one_process(dataset, tmp_path):
    from projects.engine.launch import launch

    json_path = MetadataCatalog.get(dataset).json_file
    launch(_distributed_worker, 2, dist_url="auto", args=(json_path, str(tmp_path)))
    rank0 = torch.load(tmp_path / "rank0.pth", weights_only=False)
    rank1 = torch.load(tmp_path / "rank1.pth", weights_only=False)
    assert rank1 == {}
    single = _evaluate(COCOBoundaryEvaluator(dataset, distributed=False), _dilate3)
    assert set(rank0) == {"bbox", "segm", "boundary"}
    for task in ("segm", "boundary"):
        assert rank0[task] == pytest.approx(single[task], nan_ok=True), task
    # the split matters: rank 0 alone would miss image 2's objects
    alone = _evaluate(COCOBoundaryEvaluator(dataset, distributed=False), _dilate3, [1, 3])
    assert alone["segm"]["AP"] != pytest.approx(single["segm"]["AP"])


@pytest.mark.parametrize("bad", [1e9, float("nan")])
def test_ground_truth_polygon_pycocotools_cannot_rasterize_is_named(tmp_path, bad):
    polygon = [2.0, 2.0, 30.0, 2.0, 30.0, 20.0, bad, 20.0]
    document = {
        "images": [{"id": 5, "file_name": "5.png", "height": H, "width": W}],
        "annotations": [
            {"id": 41, "image_id": 5, "category_id": 1, "segmentation": [polygon[:6] + [2, 20]]},
            {"id": 42, "image_id": 5, "category_id": 1, "segmentation": [polygon]},
        ],
        "categories": [{"id": 1, "name": "box"}],
    }
    for ann in document["annotations"]:
        ann.update(area=100.0, bbox=[2, 2, 28, 18], iscrowd=0)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(document))
    name = f"evaluation_boundary_bad_gt_{bad}"
    register_coco_instances(name, {}, str(path), str(tmp_path))
    with pytest.raises(GroundTruthError, match=f"annotation id=42 of image id=5 in {path}"):
        COCOBoundaryEvaluator(name, distributed=False)
    # Far outside but within one image size: rasterizable, accepted.
    polygon[6] = -W + 1.0
    path.write_text(json.dumps(document))
    name += "_ok"
    register_coco_instances(name, {}, str(path), str(tmp_path))
    COCOBoundaryEvaluator(name, distributed=False)
