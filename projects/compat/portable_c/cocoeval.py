"""The three ``detectron2._C`` entry points behind
``detectron2.evaluation.fast_eval_api.COCOeval_opt``.

``COCOeval_opt.evaluate`` converts pycocotools' per-(image, category) annotations into
``InstanceAnnotation`` objects, then calls ``COCOevalEvaluateImages``; ``accumulate`` hands that
result to ``COCOevalAccumulate`` and reshapes the ``precision``/``recall``/``scores`` it returns.
The result of ``COCOevalEvaluateImages`` is opaque to Python, so here it is simply pycocotools'
own ``evalImgs`` list, and both steps run pycocotools' ``evaluateImg`` / ``accumulate``: the numbers
are pycocotools' by construction. (The compiled version is faster, not different.)
"""

import contextlib
import io
from types import SimpleNamespace

import numpy as np
from pycocotools.cocoeval import COCOeval


class InstanceAnnotation:
    """One ground-truth or detected instance, as ``COCOeval_opt`` builds it.

    Args:
        id (int): annotation id.
        score (float): detection score (0 for ground truth).
        area (float): area used for the area-range filters.
        is_crowd (bool): crowd ground truth.
        ignore (bool): ground truth marked to be ignored.
    """

    __slots__ = ("id", "score", "area", "is_crowd", "ignore")

    def __init__(self, id, score, area, is_crowd, ignore):
        self.id = int(id)
        self.score = float(score)
        self.area = float(area)
        self.is_crowd = bool(is_crowd)
        self.ignore = bool(ignore)

    def as_coco_dict(self):
        """The fields pycocotools' ``evaluateImg`` reads."""
        return {
            "id": self.id,
            "score": self.score,
            "area": self.area,
            "iscrowd": int(self.is_crowd),
            "ignore": int(self.ignore),
        }

    def __repr__(self):
        return (
            f"InstanceAnnotation(id={self.id}, score={self.score}, area={self.area}, "
            f"is_crowd={self.is_crowd}, ignore={self.ignore})"
        )


def _bare_cocoeval(**attributes):
    """A ``COCOeval`` with only the attributes its ``evaluateImg`` / ``accumulate`` read."""
    evaluator = COCOeval.__new__(COCOeval)
    for name, value in attributes.items():
        setattr(evaluator, name, value)
    return evaluator


def COCOevalEvaluateImages(area_ranges, max_det, iou_thresholds, ious, gts, dts):
    """Match detections to ground truth per image, category and area range.

    Args:
        area_ranges (list[list[float]]): ``params.areaRng``, A ranges ``[lo, hi]``.
        max_det (int): largest ``params.maxDets``.
        iou_thresholds (array): ``params.iouThrs``, T thresholds.
        ious (list[list[array]]): ``ious[i][k]`` of shape (num_dt, num_gt) for image i, category k
            (an empty list when either side is empty).
        gts (list[list[list[InstanceAnnotation]]]): ground truth per image and category.
        dts (list[list[list[InstanceAnnotation]]]): detections per image and category.

    Returns:
        list: pycocotools' ``evalImgs`` (K x A x I entries, category-major, ``None`` where an image
        has neither ground truth nor detections), the input of :func:`COCOevalAccumulate`.
    """
    num_images = len(gts)
    num_cats = len(gts[0]) if num_images else 0
    evaluator = _bare_cocoeval(
        params=SimpleNamespace(useCats=1, iouThrs=np.asarray(iou_thresholds, dtype=np.float64)),
        _gts={},
        _dts={},
        ious={},
    )
    for i in range(num_images):
        for k in range(num_cats):
            evaluator._gts[i, k] = [g.as_coco_dict() for g in gts[i][k]]
            evaluator._dts[i, k] = [d.as_coco_dict() for d in dts[i][k]]
            evaluator.ious[i, k] = ious[i][k]
    return [
        evaluator.evaluateImg(i, k, list(area), max_det)
        for k in range(num_cats)
        for area in area_ranges
        for i in range(num_images)
    ]


def COCOevalAccumulate(params, eval_imgs):
    """Accumulate per-image results into precision/recall/score arrays.

    Args:
        params (pycocotools.cocoeval.Params): the parameters ``evaluate`` ran with.
        eval_imgs (list): the result of :func:`COCOevalEvaluateImages`.

    Returns:
        dict: ``params``, ``counts`` ([T, R, K, A, M]), ``date``, ``precision`` (T, R, K, A, M),
        ``recall`` (T, K, A, M) and ``scores`` (T, R, K, A, M), as pycocotools computes them.
    """
    evaluator = _bare_cocoeval(params=params, _paramsEval=params, evalImgs=eval_imgs, eval={})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        evaluator.accumulate()
    result = dict(evaluator.eval)
    result["counts"] = list(result["counts"])
    return result
