"""Config keys of PointRend: Detectron2's own PointRend keys, so its published YAMLs work.

The adder only adds what is missing (:func:`projects.config.add_missing_keys`): it never
re-creates a subtree and never overwrites a value, so it is idempotent and keeps the keys other
adders (or Detectron2's own PointRend adder) put under the same nodes.
"""

import logging

from detectron2.config import CfgNode as CN

from projects.config import add_missing_from, add_missing_keys, shared_config_keys

logger = logging.getLogger(__name__)

__all__ = ["add_pointrend_config"]


# (key, default, meaning): PointRend's own keys. Keys that exist already (Detectron2's, another
# adder's) are kept.
_POINTREND_KEYS = (
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


def add_pointrend_config(cfg: CN) -> CN:
    """Add PointRend's keys to ``cfg`` in place (only the missing ones) and return it.

    Keys (Detectron2 PointRend's names and defaults):

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
      ``MODEL.RESNETS.STEM_TYPE``, ``RES5_MULTI_GRID``, ...), added only where missing from
      ``detectron2.projects.deeplab.add_deeplab_config``, so that PointRend on DeepLabV3+
      (``COARSE_SEM_SEG_HEAD_NAME: DeepLabV3PlusHead``) configs load. DeepLab's keys that
      ``projects`` owns (``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA``, ``SOLVER.POLY_LR_*``: see
      :func:`projects.config.shared_config_keys`) are left to their owner.

    The data keys of Detectron2's PointRend (``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA``,
    ``INPUT.COLOR_AUG_SSD``) are :func:`projects.data.config.add_data_config`'s; run
    :func:`projects.config.add_all_configs` (or ``projects.config.get_cfg()``) for a config that
    loads every YAML of ``configs/PointRend/``.

    Note that a YAML written for Detectron2's PointRend names its classes
    (``PointRendMaskHead``, ``StandardPointHead``, ...); this project's are ``RenderMaskHead``,
    ``RenderPointHead``, ... (see ``pointrend/__init__.py``).
    """
    add_missing_keys(cfg, {key: value for key, value, _meaning in _POINTREND_KEYS})
    try:
        from detectron2.projects.deeplab import add_deeplab_config
    except ImportError:  # a Detectron2 without its DeepLab project: DeepLab configs won't load
        logger.debug("detectron2.projects.deeplab is unavailable; DeepLab keys not added")
    else:
        add_missing_from(cfg, add_deeplab_config, exclude=shared_config_keys())
    return cfg
