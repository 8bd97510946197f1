"""Boundary AP beside mask AP: a :class:`COCOEvaluator` that also reports the ``"boundary"`` task.

Boundary AP is COCO mask AP with the IoU of every (detection, ground truth) pair replaced by
``min(mask IoU, boundary IoU)`` (see :mod:`projects.evaluation.boundary`). Matching, crowd
handling, area ranges (by mask area) and the AP computation are COCO's.

The ground truth is checked when the evaluator is built: pycocotools rasterizes polygons with
C integer arithmetic and crashes the process (or hangs) on non-finite coordinates or coordinates
far outside the image, so such an annotation raises :class:`GroundTruthError` naming it instead.
"""

import contextlib
import io
import itertools
import json
import logging
import os

import numpy as np
from detectron2.config import CfgNode
from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.fast_eval_api import COCOeval_opt
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from .boundary import boundary_rle, dilation_radius, pairwise_boundary_iou
from .coco_backend import resolve_coco_backend

logger = logging.getLogger(__name__)

__all__ = [
    "GroundTruthError",
    "check_ground_truth_polygons",
    "BoundaryIoUMixin",
    "BoundaryCOCOeval",
    "BoundaryCOCOevalOpt",
    "COCOBoundaryEvaluator",
    "evaluate_boundary_on_coco",
    "coco_eval_stats",
]

BOUNDARY_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# Ground-truth polygon vertices may lie this many image sizes outside the image (see the module).
POLYGON_MARGIN = 1.0
_KNOWN_TASKS = ("bbox", "segm", "keypoints", "boundary")


class BoundaryIoUMixin:
    """``computeIoU`` giving ``min(mask IoU, boundary IoU)``; runs a COCOeval's ``"segm"`` path.

    Mixed into pycocotools' ``COCOeval`` and Detectron2's ``COCOeval_opt`` as is; a COCOeval that
    keeps its annotations elsewhere (faster-coco-eval) overrides :meth:`_instances`.
    Ground-truth boundaries are kept in ``gt_boundary_cache`` keyed by
    ``(annotation id, dilation_ratio)``, so a cache shared across evaluations of the same
    ground truth computes each of them once.
    """

    def __init__(self, coco_gt, coco_dt, dilation_ratio=0.02, gt_boundary_cache=None):
        super().__init__(coco_gt, coco_dt, "segm")
        dilation_radius(1, 1, dilation_ratio)  # validates the ratio
        self.dilation_ratio = float(dilation_ratio)
        self.gt_boundary_cache = {} if gt_boundary_cache is None else gt_boundary_cache

    def _gt_boundary(self, gt, rle):
        key = (gt["id"], self.dilation_ratio)
        boundary = self.gt_boundary_cache.get(key)
        if boundary is None:
            boundary = boundary_rle(rle, self.dilation_ratio)
            self.gt_boundary_cache[key] = boundary
        return boundary

    def _instances(self, imgId, catId):  # noqa: N803 (pycocotools' names)
        """``(ground truths, detections, key of their RLE)`` of one image and category (all
        categories unless ``params.useCats``), as pycocotools' ``_prepare`` left them."""
        p = self.params
        if p.useCats:
            return self._gts[imgId, catId], self._dts[imgId, catId], "segmentation"
        gts = [g for c in p.catIds for g in self._gts[imgId, c]]
        dts = [d for c in p.catIds for d in self._dts[imgId, c]]
        return gts, dts, "segmentation"

    def computeIoU(self, imgId, catId):  # noqa: N802,N803 (pycocotools' names)
        gts, dts, key = self._instances(imgId, catId)
        if len(gts) == 0 or len(dts) == 0:
            return []
        order = np.argsort([-d["score"] for d in dts], kind="mergesort")
        dts = [dts[i] for i in order[: self.params.maxDets[-1]]]
        iscrowd = [int(g.get("iscrowd", 0)) for g in gts]
        gt_boundaries = [None if c else self._gt_boundary(g, g[key]) for g, c in zip(gts, iscrowd)]
        return pairwise_boundary_iou(
            [d[key] for d in dts],
            [g[key] for g in gts],
            iscrowd,
            self.dilation_ratio,
            gt_boundaries=gt_boundaries,
        )


class BoundaryCOCOeval(BoundaryIoUMixin, COCOeval):
    """pycocotools' COCOeval (official matching and accumulation) computing boundary AP."""


class BoundaryCOCOevalOpt(BoundaryIoUMixin, COCOeval_opt):
    """Detectron2's fast COCOeval (compiled matching and accumulation) computing boundary AP."""


def evaluate_boundary_on_coco(
    coco_gt,
    coco_results,
    *,
    dilation_ratio=0.02,
    use_fast_impl=True,
    img_ids=None,
    max_dets_per_image=None,
    gt_boundary_cache=None,
    backend="pycocotools",
):
    """Run the boundary-AP COCO evaluation of COCO-format mask results.

    Args:
        coco_gt (COCO): ground truth (pycocotools'; or faster-coco-eval's with that backend).
        coco_results (list[dict]): non-empty COCO results with ``image_id``, ``category_id``
            (dataset ids), ``score`` and RLE ``segmentation``. Not modified.
        dilation_ratio (float): boundary width as a fraction of the image diagonal.
        use_fast_impl (bool): with the ``"pycocotools"`` backend, Detectron2's fast matching
            (``COCOeval_opt``) instead of pycocotools'.
        img_ids (list[int] or None): images to evaluate; all by default.
        max_dets_per_image (list[int] or None): COCOeval ``maxDets`` (at least 3, AP uses the
            last); ``[1, 10, 100]`` by default.
        gt_boundary_cache (dict or None): ground-truth boundary cache to reuse across calls.
        backend (str): ``"pycocotools"`` or ``"faster_coco_eval"`` (resolve ``"auto"`` with
            :func:`~projects.evaluation.coco_backend.resolve_coco_backend`): who matches and
            accumulates; the IoUs are the project's Boundary IoU either way.

    Returns:
        COCOeval: evaluated and accumulated; read its numbers with :func:`coco_eval_stats`.
    """
    if backend not in ("pycocotools", "faster_coco_eval"):
        raise ValueError(f"backend must be 'pycocotools' or 'faster_coco_eval', got {backend!r}")
    if len(coco_results) == 0:
        raise ValueError("evaluate_boundary_on_coco needs at least one result")
    results = []
    for r in coco_results:
        if "segmentation" not in r:
            raise ValueError(
                f"boundary AP needs predicted masks, but a result of image {r.get('image_id')} "
                "has no 'segmentation'"
            )
        # Without a box, loadRes takes the mask area, so area ranges follow masks (as segm AP).
        results.append({k: v for k, v in r.items() if k != "bbox"})
    if max_dets_per_image is None:
        max_dets_per_image = [1, 10, 100]
    if len(max_dets_per_image) < 3:
        raise ValueError(f"max_dets_per_image needs at least 3 values, got {max_dets_per_image}")
    if backend == "faster_coco_eval":
        from .faster_coco import BoundaryCOCOevalFaster, as_faster_coco

        coco_gt, eval_cls = as_faster_coco(coco_gt), BoundaryCOCOevalFaster
    else:
        eval_cls = BoundaryCOCOevalOpt if use_fast_impl else BoundaryCOCOeval
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_dt = coco_gt.loadRes(results)
        coco_eval = eval_cls(coco_gt, coco_dt, dilation_ratio, gt_boundary_cache)
        coco_eval.params.maxDets = list(max_dets_per_image)
        if img_ids is not None:
            coco_eval.params.imgIds = img_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


def coco_eval_stats(coco_eval):
    """COCO's AP, AP50, AP75, APs, APm, APl of an accumulated COCOeval, at its largest maxDets.

    The same averages as ``COCOeval.summarize`` (without printing): the mean of the valid
    (> -1) precisions; -1 where nothing is valid.

    Returns:
        dict[str, float]: metric name -> value in [0, 1] or -1.
    """
    p = coco_eval.params
    precision = coco_eval.eval["precision"]  # (T iou thresholds, R recalls, K, A areas, M dets)

    def mean_valid(s):
        s = s[s > -1]
        return float(np.mean(s)) if s.size else -1.0

    def area(label):
        return p.areaRngLbl.index(label)

    t50 = np.flatnonzero(np.isclose(p.iouThrs, 0.5))
    t75 = np.flatnonzero(np.isclose(p.iouThrs, 0.75))
    return {
        "AP": mean_valid(precision[:, :, :, area("all"), -1]),
        "AP50": mean_valid(precision[t50][:, :, :, area("all"), -1]),
        "AP75": mean_valid(precision[t75][:, :, :, area("all"), -1]),
        "APs": mean_valid(precision[:, :, :, area("small"), -1]),
        "APm": mean_valid(precision[:, :, :, area("medium"), -1]),
        "APl": mean_valid(precision[:, :, :, area("large"), -1]),
    }


class GroundTruthError(ValueError):
    """A ground-truth annotation that the evaluation cannot use; the message names it."""


def check_ground_truth_polygons(coco_api, source="the ground truth", margin=POLYGON_MARGIN):
    """Raise if a ground-truth polygon has a vertex that pycocotools cannot rasterize.

    Args:
        coco_api (COCO): the loaded ground truth.
        source (str): its file, for the message.
        margin (float): vertices may lie up to ``margin`` times the image's width / height
            outside it (masks inside the image do not depend on how far out a polygon reaches).

    Raises:
        GroundTruthError: naming the annotation id, its image and ``source``.
    """
    for ann in coco_api.dataset.get("annotations", []):
        segm = ann.get("segmentation")
        if not isinstance(segm, list) or not segm:
            continue
        image = coco_api.imgs.get(ann.get("image_id"), {})
        width, height = image.get("width"), image.get("height")
        for polygon in segm:
            try:
                xy = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
            except (TypeError, ValueError):
                xy = None
            if xy is None or not np.isfinite(xy).all():
                problem = "a polygon that is not a list of finite x, y numbers"
            elif (
                width
                and height
                and (
                    (
                        np.abs(xy - [width / 2, height / 2])
                        > (0.5 + margin) * np.array([width, height])
                    )
                ).any()
            ):
                problem = (
                    f"polygon vertices more than {margin:g} image size(s) outside the "
                    f"{width}x{height} image (e.g. {xy[np.abs(xy).argmax() // 2].tolist()})"
                )
            else:
                continue
            raise GroundTruthError(
                f"Ground-truth annotation id={ann.get('id')} of image id={ann.get('image_id')} in "
                f"{source} has {problem}; pycocotools would crash on it. Fix or drop it."
            )


class COCOBoundaryEvaluator(COCOEvaluator):
    """:class:`COCOEvaluator` that also reports boundary AP as the task ``"boundary"``.

    The results hold ``"boundary"`` (``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl`` and
    ``AP-<class>``, in percent, NaN where not computable) next to ``"bbox"`` and ``"segm"``
    whenever mask AP is evaluated. Boundary AP is computed in the parent's ``_eval_predictions``
    hook, i.e. on the main process after the parent's ``evaluate`` gathered the predictions of
    every rank; other ranks return ``{}`` as the parent does. Ground-truth boundaries are cached
    on the evaluator, so periodic evaluation computes them once. Ground-truth polygons that would
    crash pycocotools raise :class:`GroundTruthError` when the evaluator is built.

    The COCO matching and accumulation run on the backend chosen by ``coco_backend`` (see
    :mod:`projects.evaluation.coco_backend`): with ``"pycocotools"`` the parent's own evaluation,
    with ``"faster_coco_eval"`` the same steps on faster-coco-eval (results, the dumped
    ``coco_instances_results.json`` and the logged tables alike).
    """

    def __init__(
        self,
        dataset_name,
        tasks=None,
        distributed=True,
        output_dir=None,
        *,
        boundary=True,
        dilation_ratio=0.02,
        coco_backend="auto",
        **kwargs,
    ):
        """
        Args:
            dataset_name, distributed, output_dir, kwargs: as :class:`COCOEvaluator`
                (``max_dets_per_image``, ``use_fast_impl``, ``kpt_oks_sigmas``).
            tasks (tuple[str] or None): as :class:`COCOEvaluator`, and ``"boundary"`` may be
                listed (it implies ``boundary=True``; ``"segm"`` is then evaluated as well if no
                other task is listed). By default tasks are inferred from the predictions and
                boundary AP is reported when they carry masks.
            boundary (bool): report boundary AP alongside mask AP.
            dilation_ratio (float): boundary width as a fraction of the image diagonal.
            coco_backend (str): ``"auto"``, ``"faster_coco_eval"`` or ``"pycocotools"`` (see
                :mod:`projects.evaluation.coco_backend`); checked here, so a forced backend that
                is not installed fails before inference.
        """
        dilation_radius(1, 1, dilation_ratio)  # validates the ratio early
        parent_tasks, requested = tasks, False
        if tasks is not None and not isinstance(tasks, CfgNode):
            tasks = tuple(tasks)
            unknown = sorted(set(tasks) - set(_KNOWN_TASKS))
            if unknown:
                raise ValueError(f"unknown evaluation tasks {unknown}; known: {_KNOWN_TASKS}")
            boundary = bool(boundary) or "boundary" in tasks
            requested = "boundary" in tasks or "segm" in tasks
            parent_tasks = tuple(t for t in tasks if t != "boundary") or ("segm",)
        super().__init__(dataset_name, parent_tasks, distributed, output_dir, **kwargs)
        source = self._metadata.get("json_file", None) or f"dataset {dataset_name!r}"
        check_ground_truth_polygons(self._coco_api, source)
        self._boundary = bool(boundary)
        self._boundary_requested = requested
        self._dilation_ratio = float(dilation_ratio)
        self._gt_boundary_cache = {}
        self._coco_backend_name = coco_backend
        self._coco_backend = resolve_coco_backend(
            coco_backend, tasks=self._tasks, max_dets_per_image=self._max_dets_per_image
        )
        self._faster_coco_gt = None  # faster-coco-eval's copy of the ground truth, built once

    @classmethod
    def from_config(cls, cfg, dataset_name, output_dir=None, distributed=True, **kwargs):
        """Build from ``cfg.TEST.BOUNDARY_EVAL`` and ``cfg.TEST.COCO_EVAL_BACKEND`` (see
        :func:`projects.evaluation.config.add_evaluation_config`); ``kwargs`` go to ``__init__``."""
        for key in ("BOUNDARY_EVAL", "COCO_EVAL_BACKEND"):
            if key not in cfg.TEST:
                raise KeyError(
                    f"cfg.TEST.{key} is missing: add it with "
                    "projects.evaluation.config.add_evaluation_config(cfg) before merging a file"
                )
        node = cfg.TEST.BOUNDARY_EVAL
        return cls(
            dataset_name,
            distributed=distributed,
            output_dir=output_dir,
            boundary=node.ENABLED,
            dilation_ratio=node.DILATION_RATIO,
            coco_backend=cfg.TEST.COCO_EVAL_BACKEND,
            **kwargs,
        )

    @property
    def dilation_ratio(self):
        """Boundary width as a fraction of the image diagonal."""
        return self._dilation_ratio

    @property
    def coco_backend(self):
        """``"faster_coco_eval"`` or ``"pycocotools"``: the backend ``coco_backend`` resolved to
        for the known tasks (an inferred ``keypoints`` task sends ``"auto"`` to pycocotools)."""
        return self._coco_backend

    def _faster_coco_api(self):
        """faster-coco-eval's copy of the ground truth, made on first use."""
        if self._faster_coco_gt is None:
            from .faster_coco import as_faster_coco

            self._faster_coco_gt = as_faster_coco(self._coco_api)
        return self._faster_coco_gt

    def _eval_predictions(self, predictions, img_ids=None):
        """Evaluate the parent's tasks on the resolved backend, then boundary AP (main process,
        gathered predictions)."""
        # Shallow copies taken before the parent maps category ids back in place.
        results = [dict(r) for p in predictions for r in p["instances"]]
        backend = resolve_coco_backend(
            self._coco_backend_name,
            tasks=self._tasks or self._tasks_from_predictions(results),
            max_dets_per_image=self._max_dets_per_image,
        )
        faster = backend == "faster_coco_eval"
        if faster:
            self._unmap_category_ids(results)
            self._eval_predictions_faster(results, img_ids=img_ids)
        else:
            super()._eval_predictions(predictions, img_ids=img_ids)
        if not self._boundary or not self._do_evaluation:
            return
        if self._tasks is None:
            if not any("segmentation" in r for r in results):
                return  # no masks predicted: the parent infers box AP only
        elif not self._boundary_requested:
            return
        if not faster:
            self._unmap_category_ids(results)
        if len(results) == 0:
            coco_eval = None  # pycocotools cannot load empty results (the parent reports NaN)
        else:
            logger.info(f"Evaluating boundary AP (dilation ratio {self._dilation_ratio}) ...")
            coco_eval = evaluate_boundary_on_coco(
                self._faster_coco_api() if faster else self._coco_api,
                results,
                dilation_ratio=self._dilation_ratio,
                use_fast_impl=self._use_fast_impl,
                img_ids=img_ids,
                max_dets_per_image=self._max_dets_per_image,
                gt_boundary_cache=self._gt_boundary_cache,
                backend=backend,
            )
        self._results["boundary"] = self._boundary_results(
            coco_eval, self._metadata.get("thing_classes")
        )

    def _eval_predictions_faster(self, coco_results, img_ids=None):
        """The parent's ``_eval_predictions`` on faster-coco-eval: dump the results, evaluate
        each task, fill ``self._results``.

        Args:
            coco_results (list[dict]): the gathered results, dataset category ids. Not modified.
            img_ids (list[int] or None): images to evaluate; all by default.
        """
        from .faster_coco import evaluate_predictions_faster

        tasks = self._tasks or self._tasks_from_predictions(coco_results)
        if self._output_dir:
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            logger.info("Saving results to %s", file_path)
            with PathManager.open(file_path, "w") as f:
                f.write(json.dumps(coco_results))
        if not self._do_evaluation:
            logger.info("Annotations are not available for evaluation.")
            return
        logger.info("Evaluating predictions with faster-coco-eval ...")
        for task in sorted(tasks):
            coco_eval = None  # no results: see _derive_coco_results
            if len(coco_results) > 0:
                coco_eval = evaluate_predictions_faster(
                    self._faster_coco_api(),
                    coco_results,
                    task,
                    img_ids=img_ids,
                    max_dets_per_image=self._max_dets_per_image,
                )
            self._results[task] = self._derive_coco_results(
                coco_eval, task, class_names=self._metadata.get("thing_classes")
            )

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        if coco_eval is not None:
            return super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)
        metrics = (
            ("AP", "AP50", "AP75", "APm", "APl") if iou_type == "keypoints" else BOUNDARY_METRICS
        )
        return self._no_prediction_results(metrics, class_names)

    def _no_prediction_results(self, metrics, class_names=None):
        """Results when the model predicted nothing on any image (pycocotools cannot load an
        empty result list, and Detectron2 reports NaN): AP is 0 wherever there is ground truth
        to find, NaN only where there is none (COCOeval's convention), per class too."""
        annotations = [
            a for a in self._coco_api.dataset.get("annotations", []) if not a.get("iscrowd", 0)
        ]
        areas = np.array([a.get("area", 0.0) for a in annotations], dtype=np.float64)
        present = {
            "AP": areas.size > 0,
            "AP50": areas.size > 0,
            "AP75": areas.size > 0,
            "APs": bool((areas < 32**2).any()),
            "APm": bool(((areas >= 32**2) & (areas < 96**2)).any()),
            "APl": bool((areas >= 96**2).any()),
        }
        logger.warning("No predictions from the model: AP is 0 where there is ground truth")
        results = {m: 0.0 if present[m] else float("nan") for m in metrics}
        if class_names and len(class_names) > 1:
            with_gt = {a["category_id"] for a in annotations}
            category_ids = sorted(self._coco_api.getCatIds())
            for name, category_id in zip(class_names, category_ids):
                results[f"AP-{name}"] = 0.0 if category_id in with_gt else float("nan")
        return results

    def _unmap_category_ids(self, results):
        """Contiguous model class ids -> dataset category ids, in place."""
        mapping = getattr(self._metadata, "thing_dataset_id_to_contiguous_id", None)
        if mapping is None:
            return
        reverse = {v: k for k, v in mapping.items()}
        for r in results:
            if r["category_id"] not in reverse:
                raise ValueError(
                    f"a prediction of image {r['image_id']} has class {r['category_id']}, but "
                    f"dataset {self._metadata.name!r} has classes 0..{len(reverse) - 1}"
                )
            r["category_id"] = reverse[r["category_id"]]

    def _boundary_results(self, coco_eval, class_names=None):
        """Percent metrics (NaN where not computable) and per-class AP of the boundary run."""
        if coco_eval is None:
            return self._no_prediction_results(BOUNDARY_METRICS, class_names)
        stats = coco_eval_stats(coco_eval)
        results = {m: stats[m] * 100 if stats[m] >= 0 else float("nan") for m in BOUNDARY_METRICS}
        logger.info("Evaluation results for boundary: \n" + create_small_table(results))
        if class_names is None or len(class_names) <= 1:
            return results
        precision = coco_eval.eval["precision"]
        if precision.shape[2] != len(class_names):
            raise ValueError(
                f"{len(class_names)} thing_classes in the metadata of {self._metadata.name!r} "
                f"but {precision.shape[2]} categories in its COCO json"
            )
        per_class = []
        for k, name in enumerate(class_names):
            p = precision[:, :, k, 0, -1]
            p = p[p > -1]
            per_class.append((name, float(np.mean(p) * 100) if p.size else float("nan")))
        cols = min(6, 2 * len(per_class))
        flat = list(itertools.chain(*per_class))
        table = tabulate(
            itertools.zip_longest(*[flat[i::cols] for i in range(cols)]),
            tablefmt="pipe",
            floatfmt=".3f",
            headers=["category", "AP"] * (cols // 2),
            numalign="left",
        )
        logger.info("Per-category boundary AP: \n" + table)
        results.update({f"AP-{name}": ap for name, ap in per_class})
        return results
