"""The COCO evaluation backends: faster-coco-eval gives pycocotools' numbers, and the key that
chooses between them.

The predictions are the bundled toy val split's ground truth perturbed: shifted, eroded or dilated
masks, jittered boxes, wrong classes, duplicates, misses, false positives (one image holds more
than 100 of one class), a few crowd-free images without any prediction, and distinct scores. A
second ground truth marks some toy annotations as crowd. The reference numbers are pycocotools'
``COCOeval`` run here directly, or the evaluator with ``coco_backend="pycocotools"``.

``-m slow -k times`` prints the evaluation times of both backends on about 4,000 detections.
"""

import contextlib
import copy
import io
import json
import math
import os
import time

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
from pycocotools.cocoeval import COCOeval

import projects.data  # noqa: F401  (registers toy_val)
import projects.evaluation.coco_backend as coco_backend
from projects.evaluation.coco_backend import resolve_coco_backend
from projects.evaluation.coco_boundary import (
    COCOBoundaryEvaluator,
    GroundTruthError,
    coco_eval_stats,
    evaluate_boundary_on_coco,
)
from projects.evaluation.config import add_evaluation_config

needs_faster = pytest.mark.skipif(
    resolve_coco_backend("auto") != "faster_coco_eval",
    reason="faster-coco-eval >= 1.8 is not installed or cannot be imported "
    "(pip install 'faster-coco-eval>=1.8')",
)
TOY_VAL = "toy_val"
CROWD_VAL = "cocoeval_backends_toy_val_crowd"
REPEATS = 3  # of the timing test
STAT_NAMES = "AP AP50 AP75 APs APm APl AR1 AR10 AR100 ARs ARm ARl".split()  # COCOeval.stats

# ----------------------------------------------------------------------------- toy predictions


def _load_coco(json_file):
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        return COCO(json_file)


def _toy_val_json():
    DatasetCatalog.get(TOY_VAL)  # generates the toy set on first use
    return MetadataCatalog.get(TOY_VAL).json_file


def _shift(mask, dy, dx):
    """``mask`` moved by (dy, dx) pixels, what leaves the image is lost."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = mask[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _morph(mask, k):
    """Dilated (k > 0) or eroded (k < 0) by a (2|k| + 1) square."""
    if k == 0:
        return mask
    op = cv2.dilate if k > 0 else cv2.erode
    kernel = np.ones((2 * abs(k) + 1,) * 2, np.uint8)
    return op(mask.astype(np.uint8), kernel).astype(bool)


def _result(image_id, category_id, raw_score, box_xywh, mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return {
        "image_id": image_id,
        "category_id": category_id,
        "score": raw_score,
        "bbox": [float(v) for v in box_xywh],
        "segmentation": rle,
    }


def _jitter_box(rng, bbox, h, w):
    x, y, bw, bh = bbox
    x0 = np.clip(x + rng.normal(0, 0.06) * bw, 0, w - 1)
    y0 = np.clip(y + rng.normal(0, 0.06) * bh, 0, h - 1)
    x1 = np.clip(x0 + bw * np.exp(rng.normal(0, 0.08)), x0 + 0.5, w)
    y1 = np.clip(y0 + bh * np.exp(rng.normal(0, 0.08)), y0 + 0.5, h)
    return [x0, y0, x1 - x0, y1 - y0]


def perturbed_predictions(coco_gt, seed=0, false_positives=2.0, duplicates=0.1, no_prediction=6):
    """COCO results (dataset category ids, RLE masks, XYWH boxes) made from ``coco_gt``.

    Scores are distinct: ``(rank + 1) / (N + 1)`` of a raw score that favours good detections.

    Args:
        coco_gt (COCO): ground truth.
        seed (int): random seed.
        false_positives (float): mean number of random false positives per image.
        duplicates (float): chance that a detected object gets a second detection.
        no_prediction (int): crowd-free images left without any prediction.

    Returns:
        tuple[list[dict], set[int]]: the results, and the images without predictions.
    """
    rng = np.random.default_rng(seed)
    cats = sorted(coco_gt.getCatIds())
    image_ids = sorted(coco_gt.getImgIds())
    crowd_free = [
        i for i in image_ids if not any(a["iscrowd"] for a in coco_gt.imgToAnns.get(i, []))
    ]
    skipped = {int(i) for i in rng.choice(crowd_free, size=no_prediction, replace=False)}
    # On one image, an exact detection of one of its objects ranks below 20 false positives of its
    # class and above 90 more: AR1 < AR10 < AR100, and maxDets=100 cuts 11 of them.
    target = next(
        a
        for i in image_ids
        if i not in skipped
        for a in coco_gt.imgToAnns.get(i, [])
        if not a["iscrowd"]
    )
    crowded_image = target["image_id"]
    results = []
    for image_id in image_ids:
        if image_id in skipped:
            continue
        h, w = coco_gt.imgs[image_id]["height"], coco_gt.imgs[image_id]["width"]
        for ann in coco_gt.imgToAnns.get(image_id, []):
            mask = coco_gt.annToMask(ann).astype(bool)
            if ann["iscrowd"]:
                if rng.random() < 0.7:  # a detection inside the crowd region: ignored by COCO
                    part = _morph(mask, -1) & (
                        np.arange(w)[None, :] < np.median(np.nonzero(mask)[1])
                    )
                    box = mask_util.toBbox(
                        mask_util.encode(np.asfortranarray(part.astype(np.uint8)))
                    )
                    results.append(_result(image_id, ann["category_id"], rng.random(), box, part))
                continue
            if ann is target:
                results.append(_result(image_id, ann["category_id"], 1.05, ann["bbox"], mask))
                continue
            if rng.random() < 0.12:
                continue  # missed
            for copy_index in range(1 + int(rng.random() < duplicates)):
                moved = _shift(mask, *rng.integers(-2, 3, size=2))
                moved = _morph(moved, int(rng.choice([-1, 0, 0, 1])))
                category = ann["category_id"] if rng.random() < 0.92 else int(rng.choice(cats))
                raw = rng.uniform(0.3, 1.0) * (0.6 if copy_index else 1.0)
                box = _jitter_box(rng, ann["bbox"], h, w)
                results.append(_result(image_id, category, raw, box, moved))
        yy, xx = np.mgrid[:h, :w]
        extra = 110 if image_id == crowded_image else 0
        for k in range(extra + rng.poisson(false_positives)):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(1, 4, size=2) if k < extra else rng.uniform(2, 30, size=2)
            blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            if not blob.any():
                continue
            if k < extra:
                category = target["category_id"]
                raw = rng.uniform(1.1, 1.2) if k < 20 else rng.uniform(-1.0, -0.5)
            else:
                category, raw = int(rng.choice(cats)), rng.uniform(0.0, 0.7)
            box = mask_util.toBbox(mask_util.encode(np.asfortranarray(blob.astype(np.uint8))))
            results.append(_result(image_id, category, raw, box, blob))
    ranks = np.argsort(np.argsort([r["score"] for r in results], kind="stable"), kind="stable")
    for r, rank in zip(results, ranks):
        r["score"] = float(np.float32((rank + 1) / (len(results) + 1)))
    return results, skipped


def _instances(results, h, w, contiguous):
    """The results of one image as a model's ``Instances`` (contiguous class ids, XYXY boxes)."""
    inst = Instances((h, w))
    boxes = torch.tensor([r["bbox"] for r in results], dtype=torch.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    inst.pred_boxes = Boxes(boxes)
    inst.scores = torch.tensor([r["score"] for r in results], dtype=torch.float32)
    inst.pred_classes = torch.tensor(
        [contiguous[r["category_id"]] for r in results], dtype=torch.long
    )
    masks = [mask_util.decode(r["segmentation"]).astype(bool) for r in results]
    inst.pred_masks = torch.as_tensor(np.stack(masks) if masks else np.zeros((0, h, w), bool))
    return inst


def _model_io(dataset_name, results, image_ids=None):
    """``(inputs, outputs)`` of every image of ``dataset_name`` (or of ``image_ids``): the images
    without results get empty ``Instances``, as a model that found nothing returns."""
    meta = MetadataCatalog.get(dataset_name)
    coco_gt = _load_coco(meta.json_file)
    by_image = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    inputs, outputs = [], []
    for image_id in sorted(coco_gt.getImgIds()) if image_ids is None else image_ids:
        h, w = coco_gt.imgs[image_id]["height"], coco_gt.imgs[image_id]["width"]
        inst = _instances(by_image.get(image_id, []), h, w, meta.thing_dataset_id_to_contiguous_id)
        inputs.append({"image_id": image_id, "height": h, "width": w})
        outputs.append({"instances": inst})
    return inputs, outputs


def _evaluate(evaluator, dataset_name, results, image_ids=None):
    evaluator.reset()
    inputs, outputs = _model_io(dataset_name, results, image_ids)
    for one_input, one_output in zip(inputs, outputs):
        evaluator.process([one_input], [one_output])
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its summary
        return evaluator.evaluate()


@pytest.fixture(scope="module")
def toy_val_json():
    return _toy_val_json()


@pytest.fixture(scope="module")
def crowd_val_json(toy_val_json, tmp_path_factory):
    """The toy val split with every 9th annotation marked crowd, registered as ``CROWD_VAL``."""
    with open(toy_val_json) as f:
        document = json.load(f)
    for ann in document["annotations"][::9]:
        ann["iscrowd"] = 1
    path = tmp_path_factory.mktemp("cocoeval_backends") / "toy_val_crowd.json"
    path.write_text(json.dumps(document))
    register_coco_instances(CROWD_VAL, {}, str(path), MetadataCatalog.get(TOY_VAL).image_root)
    DatasetCatalog.get(CROWD_VAL)  # fills thing_classes and the category id mapping
    return str(path)


@pytest.fixture(scope="module")
def ground_truths(toy_val_json, crowd_val_json):
    return {TOY_VAL: toy_val_json, CROWD_VAL: crowd_val_json}


@pytest.fixture(scope="module")
def predictions(ground_truths):
    """Per dataset name: (COCO results, images without predictions)."""
    return {
        name: perturbed_predictions(_load_coco(path), seed=k)
        for k, (name, path) in enumerate(sorted(ground_truths.items()))
    }


# ----------------------------------------------------------------------------- references


def _pycocotools_eval(json_file, results, iou_type):
    """pycocotools' COCOeval, run as the COCO API documents it (masks' areas for ``segm``)."""
    coco_gt = _load_coco(json_file)
    results = copy.deepcopy(results)
    if iou_type == "segm":
        for r in results:
            r.pop("bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def _assert_same_evaluation(faster, reference):
    """12 stats, and the precision (T, R, K, A, M) and recall (T, K, A, M) arrays, to 1e-6."""
    for name, got, want in zip(STAT_NAMES, faster.stats, reference.stats):
        assert got == pytest.approx(want, abs=1e-6), name
    assert len(faster.stats) == len(reference.stats) == 12
    for key in ("precision", "recall"):
        got, want = np.asarray(faster.eval[key]), np.asarray(reference.eval[key])
        assert got.shape == want.shape, key
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=key)


def test_toy_predictions_cover_the_cases_the_parity_tests_claim(ground_truths, predictions):
    coco_gt = _load_coco(ground_truths[CROWD_VAL])
    results, skipped = predictions[CROWD_VAL]
    assert 500 < len(results) < 2000
    assert len({r["score"] for r in results}) == len(results)  # no ties
    assert len(skipped) == 6 and not {r["image_id"] for r in results} & skipped
    assert all(not a["iscrowd"] for i in skipped for a in coco_gt.imgToAnns[i])
    crowd_ids = [a["id"] for a in coco_gt.dataset["annotations"] if a["iscrowd"]]
    assert len(crowd_ids) >= 40
    per_image_class = {}
    for r in results:
        key = (r["image_id"], r["category_id"])
        per_image_class[key] = per_image_class.get(key, 0) + 1
    assert max(per_image_class.values()) > 100  # maxDets=100 cuts


# ----------------------------------------------------------------------------- parity


@needs_faster
@pytest.mark.parametrize("dataset_name", [TOY_VAL, CROWD_VAL])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_faster_coco_eval_gives_pycocotools_12_stats_and_precisions(
    ground_truths, predictions, dataset_name, iou_type
):
    from projects.evaluation.faster_coco import as_faster_coco, evaluate_predictions_faster

    json_file = ground_truths[dataset_name]
    results, _ = predictions[dataset_name]
    before = copy.deepcopy(results)
    faster = evaluate_predictions_faster(as_faster_coco(_load_coco(json_file)), results, iou_type)
    assert results == before  # not modified
    reference = _pycocotools_eval(json_file, results, iou_type)
    _assert_same_evaluation(faster, reference)
    assert 0.05 < reference.stats[0] < 0.9  # neither trivial nor perfect
    assert reference.stats[6] < reference.stats[7] < reference.stats[8]  # AR1 < AR10 < AR100


@needs_faster
@pytest.mark.parametrize("dataset_name", [TOY_VAL, CROWD_VAL])
def test_boundary_ap_matched_by_faster_coco_eval_equals_pycocotools_matching(
    ground_truths, predictions, dataset_name
):
    json_file = ground_truths[dataset_name]
    results, _ = predictions[dataset_name]
    coco_gt = _load_coco(json_file)
    faster = evaluate_boundary_on_coco(coco_gt, results, backend="faster_coco_eval")
    reference = evaluate_boundary_on_coco(_load_coco(json_file), results, use_fast_impl=False)
    assert type(faster).__name__ == "BoundaryCOCOevalFaster"
    assert type(reference).__name__ == "BoundaryCOCOeval"
    with contextlib.redirect_stdout(io.StringIO()):
        faster.summarize()
        reference.summarize()
    _assert_same_evaluation(faster, reference)
    assert coco_eval_stats(faster) == pytest.approx(coco_eval_stats(reference), abs=1e-6)
    # Boundary AP is stricter than mask AP on the same (shifted, eroded) masks.
    segm = _pycocotools_eval(json_file, results, "segm")
    assert 0 < reference.stats[0] < segm.stats[0]


@needs_faster
def test_boundary_on_faster_coco_eval_keeps_the_project_boundary_where_its_own_differs():
    """225 x 300 (0.02 x diagonal = 7.5: the project rounds to 8 pixels, faster-coco-eval's own
    ``"boundary"`` type to 7) and 2-pixel-high images, with boxes shifted by 1..8 pixels."""
    images = [
        {"id": 1, "file_name": "1.png", "height": 225, "width": 300},
        {"id": 2, "file_name": "2.png", "height": 2, "width": 50},
    ]
    annotations, results = [], []
    for k in range(8):
        for image in images:
            h, w = image["height"], image["width"]
            gt, dt = np.zeros((h, w), bool), np.zeros((h, w), bool)
            if h > 2:
                y, x = 10 + 25 * k, 10 + 35 * k
                gt[y : y + 20, x : x + 30] = True
                dt[y : y + 20, x + k + 1 : x + k + 31] = True
            else:
                gt[k % 2 :, 6 * k : 6 * k + 4] = True
                dt[k % 2 :, 6 * k + k % 2 : 6 * k + 4 + k % 2] = True
                dt[:, 6 * k] |= k % 3 == 0
            r = _result(image["id"], 1, 0.9 - 0.01 * len(results), [0, 0, 0, 0], dt)
            results.append({k: v for k, v in r.items() if k != "bbox"})
            rle = _result(image["id"], 1, 0, [0, 0, 0, 0], gt)["segmentation"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image["id"],
                    "category_id": 1,
                    "segmentation": rle,
                    "area": float(gt.sum()),
                    "bbox": mask_util.toBbox(rle).tolist(),
                    "iscrowd": 0,
                }
            )
    document = {"images": images, "annotations": annotations, "categories": [{"id": 1}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = document
        coco_gt.createIndex()
    faster = evaluate_boundary_on_coco(coco_gt, results, backend="faster_coco_eval")
    reference = evaluate_boundary_on_coco(coco_gt, results, use_fast_impl=False)
    assert coco_eval_stats(faster) == pytest.approx(coco_eval_stats(reference), abs=1e-6)
    np.testing.assert_allclose(faster.eval["precision"], reference.eval["precision"], atol=1e-6)
    assert 0.2 < coco_eval_stats(reference)["AP"] < 0.8


@needs_faster
@pytest.mark.parametrize(
    "dataset_name, max_dets_per_image", [(TOY_VAL, None), (CROWD_VAL, 20)], ids=["100", "20"]
)
def test_evaluator_results_and_dumped_json_are_the_same_on_both_backends(
    predictions, tmp_path, dataset_name, max_dets_per_image
):
    results, _ = predictions[dataset_name]
    outcome = {}
    for backend in ("pycocotools", "faster_coco_eval"):
        evaluator = COCOBoundaryEvaluator(
            dataset_name,
            distributed=False,
            output_dir=str(tmp_path / backend),
            coco_backend=backend,
            max_dets_per_image=max_dets_per_image,
        )
        assert evaluator.coco_backend == backend
        (tmp_path / backend).mkdir()
        metrics = _evaluate(evaluator, dataset_name, results)
        with open(tmp_path / backend / "coco_instances_results.json") as f:
            outcome[backend] = (metrics, json.load(f))
    (reference, reference_json), (faster, faster_json) = outcome.values()
    assert faster_json == reference_json
    assert set(faster) == set(reference) == {"bbox", "segm", "boundary"}
    thing_classes = MetadataCatalog.get(dataset_name).thing_classes
    for task in reference:
        assert set(faster[task]) == set(reference[task]), task
        assert {f"AP-{name}" for name in thing_classes} <= set(reference[task])
        for key, want in reference[task].items():
            got = faster[task][key]
            if math.isnan(want):
                assert math.isnan(got), (task, key)
            else:  # percent: 1e-4 is 1e-6 of the COCO numbers
                assert got == pytest.approx(want, abs=1e-4), (task, key)
        assert 0 < reference[task]["AP"] < 90, task


# ----------------------------------------------------------------------------- edge cases


@needs_faster
def test_no_predictions_on_any_image_is_ap_0_on_faster_coco_eval(toy_val_json):
    outcome = {}
    for backend in ("pycocotools", "faster_coco_eval"):
        evaluator = COCOBoundaryEvaluator(
            TOY_VAL, tasks=("segm", "boundary"), distributed=False, coco_backend=backend
        )
        outcome[backend] = _evaluate(evaluator, TOY_VAL, [], image_ids=[1, 2])
    faster = outcome["faster_coco_eval"]
    assert set(faster) == {"segm", "boundary"}
    for task in ("segm", "boundary"):
        assert faster[task]["AP"] == 0.0 and faster[task]["AP50"] == 0.0, task
        assert faster[task] == pytest.approx(outcome["pycocotools"][task], nan_ok=True), task


def _distributed_worker(results, out_dir):
    from detectron2.utils import comm

    DatasetCatalog.get(TOY_VAL)  # spawned processes fill the toy metadata again
    rank = comm.get_rank()
    evaluator = COCOBoundaryEvaluator(TOY_VAL, distributed=True, coco_backend="faster_coco_eval")
    image_ids = sorted(_load_coco(MetadataCatalog.get(TOY_VAL).json_file).getImgIds())
    metrics = _evaluate(evaluator, TOY_VAL, results, image_ids=image_ids[rank::2])
    torch.save(metrics, os.path.join(out_dir, f"rank{rank}.pth"))


@pytest.mark.integration
@needs_faster
@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU (gloo) path")
def test_two_processes_on_faster_coco_eval_gather_to_rank0_like_one_pycocotools_process(
    predictions, tmp_path
):
    from projects.engine.launch import launch

    results, _ = predictions[TOY_VAL]
    launch(_distributed_worker, 2, dist_url="auto", args=(results, str(tmp_path)))
    rank0 = torch.load(tmp_path / "rank0.pth", weights_only=False)
    rank1 = torch.load(tmp_path / "rank1.pth", weights_only=False)
    assert rank1 == {}
    single = COCOBoundaryEvaluator(TOY_VAL, distributed=False, coco_backend="pycocotools")
    reference = _evaluate(single, TOY_VAL, results)
    assert set(rank0) == set(reference) == {"bbox", "segm", "boundary"}
    for task in reference:
        assert rank0[task] == pytest.approx(reference[task], abs=1e-4, nan_ok=True), task


@needs_faster
def test_ground_truth_polygon_pycocotools_cannot_rasterize_is_named_with_faster_coco_eval(
    tmp_path,
):
    image = {"id": 5, "file_name": "5.png", "height": 64, "width": 80}
    ann = {"id": 42, "image_id": 5, "category_id": 1, "area": 100.0, "bbox": [2, 2, 28, 18]}
    ann.update(iscrowd=0, segmentation=[[2.0, 2.0, 30.0, 2.0, 30.0, 20.0, 1e9, 20.0]])
    path = tmp_path / "gt.json"
    document = {"images": [image], "annotations": [ann], "categories": [{"id": 1, "name": "a"}]}
    path.write_text(json.dumps(document))
    register_coco_instances("cocoeval_backends_bad_gt", {}, str(path), str(tmp_path))
    with pytest.raises(GroundTruthError, match=f"annotation id=42 of image id=5 in {path}"):
        COCOBoundaryEvaluator(
            "cocoeval_backends_bad_gt", distributed=False, coco_backend="faster_coco_eval"
        )


# ----------------------------------------------------------------------------- backend choice


def test_unknown_backend_is_an_error_naming_the_key_and_the_known_backends():
    with pytest.raises(
        ValueError, match="'cocoapi'.*COCO_EVAL_BACKEND.*'auto', 'faster_coco_eval'"
    ):
        resolve_coco_backend("cocoapi")
    with pytest.raises(ValueError, match="'cocoapi'"):
        COCOBoundaryEvaluator(TOY_VAL, distributed=False, coco_backend="cocoapi")


@pytest.mark.parametrize(
    "version, reason", [(None, "not installed"), ((1, 7, 3), "1.7.3 is installed, 1.8")]
)
def test_without_usable_faster_coco_eval_auto_is_pycocotools_and_forcing_it_fails_early(
    toy_val_json, monkeypatch, version, reason
):
    monkeypatch.setattr(coco_backend, "faster_coco_eval_version", lambda: version)
    assert resolve_coco_backend("auto", tasks=("bbox", "segm")) == "pycocotools"
    assert COCOBoundaryEvaluator(TOY_VAL, distributed=False).coco_backend == "pycocotools"
    with pytest.raises(ImportError, match=f"COCO_EVAL_BACKEND.*{reason}"):
        COCOBoundaryEvaluator(TOY_VAL, distributed=False, coco_backend="faster_coco_eval")


@needs_faster
def test_auto_is_faster_coco_eval_except_for_keypoints_or_max_dets_below_10(toy_val_json):
    assert resolve_coco_backend("auto", tasks=("bbox", "segm")) == "faster_coco_eval"
    assert COCOBoundaryEvaluator(TOY_VAL, distributed=False).coco_backend == "faster_coco_eval"
    assert resolve_coco_backend("pycocotools", tasks=("segm",)) == "pycocotools"
    for kwargs in ({"tasks": ("keypoints",)}, {"max_dets_per_image": [1, 10, 5]}):
        assert resolve_coco_backend("auto", **kwargs) == "pycocotools", kwargs
        with pytest.raises(ValueError, match="COCO_EVAL_BACKEND"):
            resolve_coco_backend("faster_coco_eval", **kwargs)
    small = COCOBoundaryEvaluator(TOY_VAL, distributed=False, max_dets_per_image=5)
    assert small.coco_backend == "pycocotools"


def test_config_key_defaults_to_auto_is_kept_when_set_and_reaches_the_evaluator(toy_val_json):
    cfg = d2_get_cfg()
    add_evaluation_config(cfg)
    assert cfg.TEST.COCO_EVAL_BACKEND == "auto"
    cfg.TEST.COCO_EVAL_BACKEND = "pycocotools"
    add_evaluation_config(cfg)
    assert cfg.TEST.COCO_EVAL_BACKEND == "pycocotools"
    evaluator = COCOBoundaryEvaluator.from_config(cfg, TOY_VAL, distributed=False)
    assert evaluator.coco_backend == "pycocotools"
    del cfg.TEST["COCO_EVAL_BACKEND"]
    with pytest.raises(KeyError, match="COCO_EVAL_BACKEND.*add_evaluation_config"):
        COCOBoundaryEvaluator.from_config(cfg, TOY_VAL, distributed=False)


# ----------------------------------------------------------------------------- timing


@needs_faster
@pytest.mark.slow
def test_print_evaluation_times_of_both_backends_on_4000_detections(toy_val_json, capsys):
    """Prints (asserts nothing about) ``evaluate()`` wall times, the best of ``REPEATS`` fresh
    evaluators each (a first evaluation: faster-coco-eval's ground-truth copy and the boundary
    cache are built inside it); run with ``-m slow -k times``."""
    results, _ = perturbed_predictions(_load_coco(toy_val_json), seed=7, false_positives=11.5)
    backends = [
        ("pycocotools, use_fast_impl=True", "pycocotools", True),
        ("pycocotools, use_fast_impl=False", "pycocotools", False),
        ("faster_coco_eval", "faster_coco_eval", True),
    ]
    runs = []
    for tasks in (("bbox",), ("segm",), ("segm", "boundary")):
        for label, backend, fast in backends:
            evaluators = [
                COCOBoundaryEvaluator(
                    TOY_VAL,
                    tasks=tasks,
                    boundary="boundary" in tasks,
                    distributed=False,
                    coco_backend=backend,
                    use_fast_impl=fast,
                )
                for _ in range(REPEATS)
            ]
            for evaluator in evaluators:
                evaluator.reset()
            runs.append(("+".join(tasks), label, evaluators))
    inputs, _ = _model_io(TOY_VAL, [])
    by_image = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    contiguous = MetadataCatalog.get(TOY_VAL).thing_dataset_id_to_contiguous_id
    for one_input in inputs:  # one image's masks in memory at a time
        h, w = one_input["height"], one_input["width"]
        inst = _instances(by_image.get(one_input["image_id"], []), h, w, contiguous)
        for _, _, evaluators in runs:
            for evaluator in evaluators:
                evaluator.process([one_input], [{"instances": inst}])
    lines = [
        f"{len(results)} detections on {len(by_image)} toy val images, evaluate() takes "
        f"(best of {REPEATS}):"
    ]
    for tasks, label, evaluators in runs:
        seconds = []
        for evaluator in evaluators:
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                evaluator.evaluate()
            seconds.append(time.perf_counter() - start)
        lines.append(f"  {tasks:13s} {label:34s} {min(seconds):6.2f} s")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
