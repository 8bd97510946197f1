"""The ``"faster_coco_eval"`` COCO backend (see :mod:`projects.evaluation.coco_backend`).

faster-coco-eval's ``COCO`` / ``COCOeval_faster`` mirror pycocotools' API: ``loadRes``,
``params``, ``evaluate``, ``accumulate``, ``summarize``, ``stats`` (the 12 COCO numbers) and
``eval["precision"]`` of shape (T, R, K, A, M), so Detectron2's result derivation reads them
unchanged. This module needs faster-coco-eval at import; the evaluator imports it only when that
backend is chosen.

faster-coco-eval writes into the annotation dicts it evaluates (``ignore``, ``rle``, ...), so its
ground truth is a deep copy of the pycocotools ground truth, and results are copied before
``loadRes``.
"""

import copy
import logging

from faster_coco_eval import COCO as FasterCOCO
from faster_coco_eval import COCOeval_faster

from .coco_boundary import BoundaryIoUMixin

logger = logging.getLogger(__name__)

__all__ = ["BoundaryCOCOevalFaster", "as_faster_coco", "evaluate_predictions_faster"]

_DEFAULT_MAX_DETS = [1, 10, 100]


def _quiet(*args, **kwargs):
    """faster-coco-eval's ``print_function``: its progress and summary lines go to debug."""
    logger.debug(" ".join(str(a) for a in args))


def as_faster_coco(coco_gt):
    """The ground truth as a faster-coco-eval ``COCO``.

    Args:
        coco_gt: a pycocotools ``COCO`` (deep-copied, so it is never modified) or a
            faster-coco-eval ``COCO`` (returned as is).

    Returns:
        faster_coco_eval.COCO
    """
    if isinstance(coco_gt, FasterCOCO):
        return coco_gt
    return FasterCOCO(copy.deepcopy(coco_gt.dataset), print_function=_quiet)


def _check_max_dets(max_dets_per_image):
    max_dets = list(_DEFAULT_MAX_DETS if max_dets_per_image is None else max_dets_per_image)
    if len(max_dets) < 3 or max_dets != sorted(max_dets):
        raise ValueError(
            f"max_dets_per_image must be at least 3 ascending values for faster-coco-eval, "
            f"got {max_dets}"
        )
    return max_dets


def _load_results(coco_gt, coco_results, drop_bbox):
    """``loadRes`` of shallow copies (faster-coco-eval adds keys to the dicts it loads)."""
    if drop_bbox:
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in coco_results]
    else:
        results = [dict(r) for r in coco_results]
    return coco_gt.loadRes(results)


def evaluate_predictions_faster(
    coco_gt, coco_results, iou_type, *, img_ids=None, max_dets_per_image=None
):
    """One COCO task with faster-coco-eval, as Detectron2's ``COCOEvaluator`` runs it.

    As there, ``segm`` results lose their ``bbox`` first, so area ranges follow mask areas.

    Args:
        coco_gt: ground truth, see :func:`as_faster_coco` (pass the converted one to reuse it).
        coco_results (list[dict]): non-empty COCO results (dataset category ids). Not modified.
        iou_type (str): ``"bbox"`` or ``"segm"``.
        img_ids (list[int] or None): images to evaluate; all by default.
        max_dets_per_image (list[int] or None): ascending COCOeval ``maxDets`` (at least 3;
            AP uses the last); ``[1, 10, 100]`` by default.

    Returns:
        COCOeval_faster: evaluated, accumulated and summarized (``stats`` holds 12 numbers).
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"faster-coco-eval backend evaluates 'bbox' and 'segm', got {iou_type!r}")
    if len(coco_results) == 0:
        raise ValueError("evaluate_predictions_faster needs at least one result")
    max_dets = _check_max_dets(max_dets_per_image)
    coco_gt = as_faster_coco(coco_gt)
    coco_dt = _load_results(coco_gt, coco_results, drop_bbox=iou_type == "segm")
    coco_eval = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=_quiet)
    coco_eval.params.maxDets = max_dets
    if img_ids is not None:
        coco_eval.params.imgIds = list(img_ids)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval


class BoundaryCOCOevalFaster(BoundaryIoUMixin, COCOeval_faster):
    """faster-coco-eval's matching and accumulation computing boundary AP with the project's
    Boundary IoU (not faster-coco-eval's own ``"boundary"`` type, see
    :mod:`projects.evaluation.coco_backend`). Runs its ``"segm"`` path, whose preparation
    rasterizes every annotation into an ``rle`` entry; the IoUs are computed from those."""

    def __init__(self, coco_gt, coco_dt, dilation_ratio=0.02, gt_boundary_cache=None):
        super().__init__(coco_gt, coco_dt, dilation_ratio, gt_boundary_cache)
        self.print_function = _quiet
        # faster-coco-eval would call computeIoU from a thread pool; the Boundary IoU is Python
        # holding the GIL, so threads gain nothing and would share the boundary cache.
        self.rle_iou_max_workers = 1

    def evaluate(self):
        """faster-coco-eval's ``evaluate``, refusing ``maxDets`` it would reorder."""
        _check_max_dets(self.params.maxDets)
        super().evaluate()

    def _instances(self, imgId, catId):  # noqa: N803 (pycocotools' names)
        p = self.params
        cat_ids = [catId] if p.useCats else p.catIds
        gts = self.gt_dataset.get_instances([imgId], cat_ids, bool(p.useCats))[0][0]
        dts = self.dt_dataset.get_instances([imgId], cat_ids, bool(p.useCats))[0][0]
        return gts, dts, "rle"
