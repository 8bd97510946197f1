"""Config keys of PointRend: Detectron2's own PointRend keys, so its published YAMLs work.

The adder only adds what is missing: it never re-creates a subtree and never overwrites a value,
so it is idempotent and keeps the keys other adders (or Detectron2's own PointRend adder) put
under the same nodes.
"""

import logging

from detectron2.config import CfgNode as CN

logger = logging.getLogger(__name__)

__all__ = ["add_pointrend_config"]


def _add_missing(node: CN, key: str, value) -> None:
    """Set ``node.<key>`` to ``value`` unless it exists; sub-nodes (``"A.B"``) are created only
    if missing."""
    *parents, leaf = key.split(".")
    for name in parents:
        if name not in node:
            setattr(node, name, CN())
        node = node[name]
    if leaf not in node:
        setattr(node, leaf, value)


# (key, default, meaning). Keys that exist already (Detectron2's, another adder's) are kept.
_POINTREND_KEYS = (
    # -- data (semantic segmentation recipes) --
    (
        "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA",
        1.0,
        "retry random crops until no single category covers more than this fraction",
    ),
    ("INPUT.COLOR_AUG_SSD", False, "SSD's color augmentation for semantic segmentation training"),
    # -- coarse mask head (instance) --
    ("MODEL.ROI_MASK_HEAD.IN_FEATURES", ("p2",), "feature maps the coarse head samples"),
    ("MODEL.ROI_MASK_HEAD.FC_DIM", 1024, "width of the coarse head's FC layers"),
    ("MODEL.ROI_MASK_HEAD.NUM_FC", 2, "number of FC layers of the coarse head"),
    ("MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION", 7, "side of the coarse mask prediction"),
    ("MODEL.ROI_MASK_HEAD.POINT_HEAD_ON", False, "refine the coarse mask with the point head"),
    # Detectron2 has MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK already; added only if missing.
    ("MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", False, "one coarse mask and point logit per box"),
    # -- point head --
    ("MODEL.POINT_HEAD.NAME", "RenderPointHead", "name in POINTREND_POINT_HEAD_REGISTRY"),
    ("MODEL.POINT_HEAD.NUM_CLASSES", 80, "must equal ROI_HEADS / SEM_SEG_HEAD NUM_CLASSES"),
    ("MODEL.POINT_HEAD.IN_FEATURES", ("p2",), "fine-grained feature maps sampled at the points"),
    ("MODEL.POINT_HEAD.TRAIN_NUM_POINTS", 14 * 14, "points per box/image in training"),
    ("MODEL.POINT_HEAD.OVERSAMPLE_RATIO", 3, "k: oversampling of training points"),
    ("MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO", 0.75, "beta: share of uncertain training points"),
    ("MODEL.POINT_HEAD.SUBDIVISION_STEPS", 5, "adaptive subdivision steps at inference"),
    ("MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", 28 * 28, "points re-predicted per step"),
    ("MODEL.POINT_HEAD.FC_DIM", 256, "width of the point MLP"),
    ("MODEL.POINT_HEAD.NUM_FC", 3, "hidden layers of the point MLP"),
    ("MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK", False, "one point logit per point (not per class)"),
    ("MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER", True, "re-concatenate coarse logits every layer"),
    ("MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME", "SemSegFPNHead", "coarse semantic head"),
    # -- implicit PointRend --
    ("MODEL.IMPLICIT_POINTREND.IMAGE_FEATURE_ENABLED", True, "feed fine features to the MLP"),
    ("MODEL.IMPLICIT_POINTREND.POS_ENC_ENABLED", True, "feed Fourier position encodings"),
    ("MODEL.IMPLICIT_POINTREND.PARAMS_L2_REGULARIZER", 0.00001, "weight of loss_l2"),
)


def _add_missing_from(cfg: CN, adder) -> None:
    """Run ``adder`` on a copy of ``cfg`` and add to ``cfg`` only the keys it lacks."""
    scratch = cfg.clone()
    adder(scratch)

    def merge(dst: CN, src: CN) -> None:
        for key, value in src.items():
            if key not in dst:
                setattr(dst, key, value)
            elif isinstance(value, CN) and isinstance(dst[key], CN):
                merge(dst[key], value)

    merge(cfg, scratch)


def add_pointrend_config(cfg: CN) -> CN:
    """Add PointRend's keys to ``cfg`` in place (only the missing ones) and return it.

    Keys (Detectron2 PointRend's names and defaults):

    * ``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA`` (1.0), ``INPUT.COLOR_AUG_SSD`` (False): used by
      semantic-segmentation recipes.
    * ``MODEL.ROI_MASK_HEAD.IN_FEATURES`` (``("p2",)``): maps the coarse head samples its 14 x 14
      (``POOLER_RESOLUTION``) RoI grid from; ``FC_DIM`` (1024), ``NUM_FC`` (2): its FC layers;
      ``OUTPUT_SIDE_RESOLUTION`` (7): side of the coarse mask; ``POINT_HEAD_ON`` (False): refine
      with the point head; ``CLS_AGNOSTIC_MASK`` (Detectron2's key): class-agnostic coarse mask
      *and* point predictions.
    * ``MODEL.POINT_HEAD.*``: ``NAME`` (``"RenderPointHead"``, in
      :data:`pointrend.point_head.POINTREND_POINT_HEAD_REGISTRY`), ``NUM_CLASSES``,
      ``IN_FEATURES``, ``TRAIN_NUM_POINTS`` (196), ``OVERSAMPLE_RATIO`` (k = 3),
      ``IMPORTANCE_SAMPLE_RATIO`` (beta = 0.75), ``SUBDIVISION_STEPS`` (5),
      ``SUBDIVISION_NUM_POINTS`` (784), ``FC_DIM`` (256), ``NUM_FC`` (3), ``CLS_AGNOSTIC_MASK``
      (point head only), ``COARSE_PRED_EACH_LAYER`` (True), ``COARSE_SEM_SEG_HEAD_NAME``
      (``"SemSegFPNHead"``: the coarse head of :class:`pointrend.RenderSemSegHead`).
    * ``MODEL.IMPLICIT_POINTREND.*``: ``IMAGE_FEATURE_ENABLED`` (True), ``POS_ENC_ENABLED``
      (True), ``PARAMS_L2_REGULARIZER`` (1e-5).

    * DeepLab's keys (``MODEL.SEM_SEG_HEAD.ASPP_*``, ``PROJECT_*``, ``LOSS_TYPE``,
      ``MODEL.RESNETS.STEM_TYPE``, ``RES5_MULTI_GRID``, ``SOLVER.POLY_LR_*``, ...), added only where
      missing from ``detectron2.projects.deeplab.add_deeplab_config``, so that PointRend on
      DeepLabV3+ (``COARSE_SEM_SEG_HEAD_NAME: DeepLabV3PlusHead``) configs load.

    Note that a YAML written for Detectron2's PointRend names its classes
    (``PointRendMaskHead``, ``StandardPointHead``, ...); this project's are ``RenderMaskHead``,
    ``RenderPointHead``, ... (see ``pointrend/__init__.py``).
    """
    for key, value, _meaning in _POINTREND_KEYS:
        _add_missing(cfg, key, value)
    try:
        from detectron2.projects.deeplab import add_deeplab_config
    except ImportError:  # a Detectron2 without its DeepLab project: DeepLab configs won't load
        logger.debug("detectron2.projects.deeplab is unavailable; DeepLab keys not added")
    else:
        _add_missing_from(cfg, add_deeplab_config)
    return cfg
