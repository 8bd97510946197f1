"""``COCOeval_opt`` gives pycocotools' numbers, alone and inside COCOEvaluator.

With the portable operators (``projects.compat.portable_c``, the portable wheel's
``detectron2._C``) the numbers are pycocotools' bit for bit: they run its own matching and
accumulation. The compiled ``_C`` of an official build reimplements them in C++ and sums in
another order, so with it the numbers agree to ``COMPILED_ATOL``.
"""

import contextlib
import copy
import io
import json

import detectron2._C as installed_C
import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.evaluation import fast_eval_api
from detectron2.evaluation.fast_eval_api import COCOeval_opt
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from projects.compat import portable_c

#: Largest difference allowed between a compiled ``COCOeval_opt`` and pycocotools.
COMPILED_ATOL = 1e-6


@pytest.fixture(params=["portable", "installed"])
def evaluate_images_with(request, monkeypatch):
    """Which ``_C`` ``COCOeval_opt`` runs on; returns whether it must equal pycocotools exactly."""
    if request.param == "portable":
        monkeypatch.setattr(fast_eval_api, "_C", portable_c)
        return True
    return bool(getattr(installed_C, "PORTABLE", False))


def _assert_same(got, expected, exact):
    if exact:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=COMPILED_ATOL)


def _random_dataset(seed, num_images=12, num_cats=3):
    """Ground truth and perturbed detections (boxes and RLE masks) on small random images."""
    rng = np.random.RandomState(seed)
    images, annotations, detections = [], [], []
    ann_id = 1
    for image_id in range(1, num_images + 1):
        h, w = rng.randint(40, 90, size=2)
        images.append(
            {"id": image_id, "height": int(h), "width": int(w), "file_name": f"{image_id}.png"}
        )
        for _ in range(rng.randint(0, 6)):
            x0, y0 = rng.randint(0, w - 8), rng.randint(0, h - 8)
            bw, bh = rng.randint(3, w - x0), rng.randint(3, h - y0)
            mask = np.zeros((h, w), np.uint8, order="F")
            mask[y0 : y0 + bh, x0 : x0 + bw] = 1
            rle = mask_util.encode(mask)
            rle["counts"] = rle["counts"].decode()
            cat = int(rng.randint(1, num_cats + 1))
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [int(x0), int(y0), int(bw), int(bh)],
                    "area": int(bw * bh),
                    "iscrowd": int(rng.rand() < 0.1),
                    "segmentation": rle,
                }
            )
            ann_id += 1
            for _ in range(rng.randint(0, 3)):  # zero to two detections per object
                jitter = rng.randint(-3, 4, size=4)
                dx0 = int(np.clip(x0 + jitter[0], 0, w - 2))
                dy0 = int(np.clip(y0 + jitter[1], 0, h - 2))
                dbw = int(np.clip(bw + jitter[2], 1, w - dx0))
                dbh = int(np.clip(bh + jitter[3], 1, h - dy0))
                dmask = np.zeros((h, w), np.uint8, order="F")
                dmask[dy0 : dy0 + dbh, dx0 : dx0 + dbw] = 1
                drle = mask_util.encode(dmask)
                drle["counts"] = drle["counts"].decode()
                detections.append(
                    {
                        "image_id": image_id,
                        "category_id": (
                            cat if rng.rand() < 0.8 else int(rng.randint(1, num_cats + 1))
                        ),
                        "bbox": [dx0, dy0, dbw, dbh],
                        "score": float(rng.rand()),
                        "segmentation": drle,
                    }
                )
        for _ in range(rng.randint(0, 2)):  # false positives
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": int(rng.randint(1, num_cats + 1)),
                    "bbox": [1, 1, 5, 5],
                    "score": float(rng.rand()),
                    "segmentation": mask_util.encode(
                        np.asfortranarray(
                            np.pad(np.ones((5, 5), np.uint8), ((1, h - 6), (1, w - 6)))
                        )
                    ),
                }
            )
    for d in detections:
        if isinstance(d["segmentation"]["counts"], bytes):
            d["segmentation"]["counts"] = d["segmentation"]["counts"].decode()
    cats = [{"id": i, "name": f"c{i}"} for i in range(1, num_cats + 1)]
    return {"images": images, "annotations": annotations, "categories": cats}, detections


def _stats(evaluator_cls, gt_dict, detections, iou_type, use_cats):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt_dict)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        ev = evaluator_cls(coco_gt, coco_dt, iou_type)
        ev.params.useCats = use_cats
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("use_cats", [1, 0])
def test_cocoeval_opt_equals_pycocotools(iou_type, use_cats, evaluate_images_with):
    gt, dets = _random_dataset(seed=3)
    ref = _stats(COCOeval, gt, dets, iou_type, use_cats)
    opt = _stats(COCOeval_opt, gt, dets, iou_type, use_cats)
    assert ref.stats[0] > 0.05, "the fixture should give a non-trivial AP"
    _assert_same(opt.stats, ref.stats, evaluate_images_with)
    for key in ("precision", "recall", "scores"):
        _assert_same(opt.eval[key], ref.eval[key], evaluate_images_with)


def test_coco_evaluator_fast_and_slow_paths_agree(tmp_path, evaluate_images_with):
    """Detectron2's COCOEvaluator (fast path on by default) matches its pycocotools path."""
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Boxes, Instances

    gt, dets = _random_dataset(seed=5)
    json_file = tmp_path / "gt.json"
    json_file.write_text(json.dumps(gt))
    name = "test_cocoeval_portable_gt"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(
        json_file=str(json_file),
        thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(gt["categories"])},
    )

    results = {}
    for fast in (True, False):
        evaluator = COCOEvaluator(
            name, tasks=("bbox", "segm"), distributed=False, output_dir=None, use_fast_impl=fast
        )
        evaluator.reset()
        for image in gt["images"]:
            mine = [d for d in dets if d["image_id"] == image["id"]]
            inst = Instances((image["height"], image["width"]))
            boxes = torch.tensor([d["bbox"] for d in mine], dtype=torch.float32).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]
            inst.pred_boxes = Boxes(boxes)
            inst.scores = torch.tensor([d["score"] for d in mine], dtype=torch.float32)
            inst.pred_classes = torch.tensor([d["category_id"] - 1 for d in mine], dtype=torch.long)
            masks = [mask_util.decode(d["segmentation"]) for d in mine]
            inst.pred_masks = torch.from_numpy(
                np.stack(masks)
                if masks
                else np.zeros((0, image["height"], image["width"]), np.uint8)
            ).bool()
            evaluator.process([{"image_id": image["id"]}], [{"instances": inst}])
        results[fast] = evaluator.evaluate()
    assert results[True]["segm"]["AP"] > 5
    for task in ("bbox", "segm"):
        assert results[True][task].keys() == results[False][task].keys()
        fast, slow = (np.array(list(results[k][task].values())) for k in (True, False))
        # NaN (no objects in an area range) counts as equal to NaN here; AP is in percent
        if evaluate_images_with:
            np.testing.assert_array_equal(fast, slow)
        else:
            np.testing.assert_allclose(fast, slow, rtol=0, atol=100 * COMPILED_ATOL)
