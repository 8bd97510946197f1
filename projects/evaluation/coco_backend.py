"""Which COCOeval implementation runs the COCO matching and accumulation of the evaluation.

Chosen by ``cfg.TEST.COCO_EVAL_BACKEND`` (``coco_backend=`` of
:class:`~projects.evaluation.coco_boundary.COCOBoundaryEvaluator`):

* ``"faster_coco_eval"``: `faster-coco-eval <https://pypi.org/project/faster-coco-eval/>`_
  (version >= 1.8), a C++ reimplementation of pycocotools' COCOeval with the same results:
  ground-truth rasterization, IoUs, matching and accumulation of ``bbox`` and ``segm`` in C++
  (see :mod:`projects.evaluation.faster_coco`). An error if it is not installed.
* ``"pycocotools"``: Detectron2's own ``COCOEvaluator`` path, unchanged: its ``COCOeval_opt``
  (compiled, or the portable one of :mod:`projects.compat.portable_c`, which runs pycocotools'
  Python matching) when ``use_fast_impl``, pycocotools' ``COCOeval`` otherwise.
* ``"auto"`` (default): ``"faster_coco_eval"`` when it is installed and can run the evaluation,
  ``"pycocotools"`` otherwise.

faster-coco-eval cannot run an evaluation with the ``keypoints`` task (not wired here) or with a
``max_dets_per_image`` below 10 (it sorts ``maxDets``, so AP would be read at 10 detections where
Detectron2 reads it at the given number); ``"auto"`` then uses pycocotools.

Boundary AP keeps the project's Boundary IoU (:mod:`projects.evaluation.boundary`) with every
backend; faster-coco-eval only matches and accumulates it. Its own ``"boundary"`` IoU type computes
boundaries with another definition (its C++ ``toBoundary``, as of 1.8.0): the boundary width rounds
halves down where the project, like the Boundary IoU authors' code, rounds with Python's ``round``
(an image whose ``dilation_ratio * diagonal`` is 7.5, e.g. 225 x 300 at 0.02, gets 7 pixels instead
of 8), and on images 1 or 2 pixels high, where every mask pixel touches the image border and so is
boundary, it keeps only the pixels at the ends (4 of a 1 x 20 mask).
"""

import importlib.metadata
import logging
import re

logger = logging.getLogger(__name__)

__all__ = [
    "COCO_EVAL_BACKENDS",
    "FASTER_COCO_EVAL_MIN_VERSION",
    "faster_coco_eval_version",
    "resolve_coco_backend",
]

COCO_EVAL_BACKENDS = ("auto", "faster_coco_eval", "pycocotools")
# The oldest version the parity tests ran on (tests/test_evaluation_cocoeval_backends.py).
FASTER_COCO_EVAL_MIN_VERSION = (1, 8)


def faster_coco_eval_version():
    """The installed faster-coco-eval version as a tuple of ints, or None if not installed."""
    try:
        version = importlib.metadata.version("faster-coco-eval")
    except importlib.metadata.PackageNotFoundError:
        return None
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def _why_not_faster_coco_eval(tasks, max_dets_per_image):
    """``(exception type, reason)`` if faster-coco-eval cannot run this evaluation, else None."""
    version = faster_coco_eval_version()
    minimum = ".".join(map(str, FASTER_COCO_EVAL_MIN_VERSION))
    if version is None:
        return ImportError, f"it is not installed (pip install 'faster-coco-eval>={minimum}')"
    if version < FASTER_COCO_EVAL_MIN_VERSION:
        found = ".".join(map(str, version))
        return ImportError, f"version {found} is installed, {minimum} or newer is needed"
    try:
        import faster_coco_eval  # noqa: F401  (its compiled extension loads here)
    except ImportError as e:
        return ImportError, f"it is installed but cannot be imported ({e})"
    if tasks is not None and "keypoints" in tasks:
        return ValueError, "the keypoints task is evaluated with pycocotools only"
    if max_dets_per_image is not None and list(max_dets_per_image) != sorted(max_dets_per_image):
        return ValueError, (
            f"max_dets_per_image gives maxDets {list(max_dets_per_image)}, which faster-coco-eval "
            "would sort and so read AP at another number of detections"
        )
    return None


def resolve_coco_backend(name, *, tasks=None, max_dets_per_image=None):
    """The backend that evaluates: ``name`` with ``"auto"`` resolved.

    Args:
        name (str): one of :data:`COCO_EVAL_BACKENDS`.
        tasks (Iterable[str] or None): the COCO tasks to evaluate (``"bbox"``, ``"segm"``,
            ``"keypoints"``), None if not known yet.
        max_dets_per_image (list[int] or None): COCOeval ``maxDets`` of the evaluation.

    Returns:
        str: ``"faster_coco_eval"`` or ``"pycocotools"``.

    Raises:
        ValueError: ``name`` is unknown, or ``"faster_coco_eval"`` cannot run this evaluation.
        ImportError: ``"faster_coco_eval"`` is not installed (or too old).
    """
    if name not in COCO_EVAL_BACKENDS:
        raise ValueError(
            f"unknown COCO evaluation backend {name!r} (cfg.TEST.COCO_EVAL_BACKEND); "
            f"known: {list(COCO_EVAL_BACKENDS)}"
        )
    if name == "pycocotools":
        return name
    problem = _why_not_faster_coco_eval(tasks, max_dets_per_image)
    if problem is None:
        return "faster_coco_eval"
    error, reason = problem
    if name == "faster_coco_eval":
        raise error(
            f"COCO evaluation backend 'faster_coco_eval' (cfg.TEST.COCO_EVAL_BACKEND) cannot be "
            f"used: {reason}. Set it to 'auto' or 'pycocotools'."
        )
    logger.info("COCO evaluation with pycocotools, not faster-coco-eval: %s", reason)
    return "pycocotools"
