"""Config keys of the evaluation (boundary AP)."""

from ..config import add_missing_keys


def add_evaluation_config(cfg):
    """Add the evaluation keys to ``cfg`` in place where they are missing (under ``cfg.TEST``
    only).

    Read by :meth:`projects.evaluation.coco_boundary.COCOBoundaryEvaluator.from_config`:

    * ``TEST.BOUNDARY_EVAL.ENABLED``: report boundary AP (task ``"boundary"``) beside mask AP.
    * ``TEST.BOUNDARY_EVAL.DILATION_RATIO``: boundary width as a fraction of the image diagonal
      (0.02 in the Boundary IoU paper for COCO); the width is at least one pixel.
    * ``TEST.COCO_EVAL_BACKEND``: which COCOeval runs, see :mod:`projects.evaluation.coco_backend`.
    """
    add_missing_keys(
        cfg,
        {
            "TEST.BOUNDARY_EVAL.ENABLED": True,
            "TEST.BOUNDARY_EVAL.DILATION_RATIO": 0.02,
            "TEST.COCO_EVAL_BACKEND": "auto",  # or "faster_coco_eval", "pycocotools"
        },
    )
