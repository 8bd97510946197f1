"""Config keys of BlendMask, named and defaulted as in the published configs, which load here.

The adder only adds what is missing (:func:`projects.config.add_missing_keys`). FCOS's keys
(``MODEL.FCOS.*``) are shared and belong to :func:`projects.modeling.config.add_modeling_config`;
the semantic target of the basis module's auxiliary loss is the shared instance-derived one
(``INPUT.INSTANCE_SEM_SEG.*``, :func:`projects.data.config.add_data_config`), so no side files
are needed.
"""

from detectron2.config import CfgNode as CN

from projects.config import add_missing_keys

__all__ = ["BLENDMASK_KEYS", "add_blendmask_config"]

# (key, default, meaning)
BLENDMASK_KEYS = (
    ("MODEL.BLENDMASK.ATTN_SIZE", 14, "M: side of each base's attention map per box"),
    ("MODEL.BLENDMASK.TOP_INTERP", "bilinear", "how attentions are resized M -> R"),
    ("MODEL.BLENDMASK.BOTTOM_RESOLUTION", 56, "R: side of the RoI-pooled bases and the masks"),
    ("MODEL.BLENDMASK.POOLER_TYPE", "ROIAlignV2", "pooler of the bases"),
    ("MODEL.BLENDMASK.POOLER_SAMPLING_RATIO", 1, "sampling ratio of the pooler"),
    ("MODEL.BLENDMASK.POOLER_SCALES", (0.25,), "scale of the bases (1 / their stride)"),
    ("MODEL.BLENDMASK.INSTANCE_LOSS_WEIGHT", 1.0, "weight of loss_mask"),
    ("MODEL.BLENDMASK.VISUALIZE", False, "also return the bases (and the semantic logits)"),
    ("MODEL.BASIS_MODULE.NAME", "ProtoNet", "name in BASIS_MODULE_REGISTRY"),
    ("MODEL.BASIS_MODULE.NUM_BASES", 4, "K: number of bases"),
    ("MODEL.BASIS_MODULE.LOSS_ON", False, "the auxiliary semantic loss"),
    (
        "MODEL.BASIS_MODULE.ANN_SET",
        "coco",
        "the original's side-file set; unused (targets derived)",
    ),
    ("MODEL.BASIS_MODULE.CONVS_DIM", 128, "channels of the basis module"),
    ("MODEL.BASIS_MODULE.IN_FEATURES", ["p3", "p4", "p5"], "levels fused (at the first)"),
    ("MODEL.BASIS_MODULE.NORM", "SyncBN", "norm of the basis module's convs"),
    ("MODEL.BASIS_MODULE.NUM_CONVS", 3, "convs of the tower before the x2 upsampling"),
    ("MODEL.BASIS_MODULE.COMMON_STRIDE", 8, "stride of the semantic logits"),
    ("MODEL.BASIS_MODULE.NUM_CLASSES", 80, "thing classes of the semantic head (+1 background)"),
    ("MODEL.BASIS_MODULE.LOSS_WEIGHT", 0.3, "weight of loss_basis_sem"),
)


def add_blendmask_config(cfg: CN) -> CN:
    """Add BlendMask's keys to ``cfg`` in place (only the missing ones) and return it.

    * ``MODEL.BLENDMASK.*``: the blender: ``ATTN_SIZE`` (M = 14), ``TOP_INTERP``
      (``"bilinear"``), ``BOTTOM_RESOLUTION`` (R = 56), ``POOLER_TYPE`` (``"ROIAlignV2"``),
      ``POOLER_SAMPLING_RATIO`` (1), ``POOLER_SCALES`` (``(0.25,)``), ``INSTANCE_LOSS_WEIGHT``
      (1.0), ``VISUALIZE`` (False).
    * ``MODEL.BASIS_MODULE.*``: ``NAME`` (``"ProtoNet"``, in
      :data:`blendmask.basis_module.BASIS_MODULE_REGISTRY`), ``NUM_BASES`` (K = 4), ``LOSS_ON``
      (False; the Base config turns it on), ``CONVS_DIM`` (128), ``IN_FEATURES`` (P3-P5),
      ``NORM`` (``"SyncBN"``: plain BN in one process; the trainer makes it work over gloo
      too), ``NUM_CONVS`` (3), ``COMMON_STRIDE`` (8), ``NUM_CLASSES`` (80), ``LOSS_WEIGHT``
      (0.3). ``ANN_SET`` is kept so the published YAMLs load; nothing reads it, as the semantic
      targets come from the ground-truth masks (``INPUT.INSTANCE_SEM_SEG.ENABLED``).
    """
    add_missing_keys(cfg, {key: value for key, value, _meaning in BLENDMASK_KEYS})
    return cfg
