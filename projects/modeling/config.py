"""Config keys of the shared model pieces (:mod:`projects.modeling`).

The adder only adds keys that are missing: a value set by Detectron2, another adder or a YAML
merged earlier is never overwritten, so calling it twice changes nothing.
"""

from projects.config import add_missing_keys

__all__ = ["FCOS_KEYS", "add_modeling_config"]

# (key, default, meaning): FCOS's keys, with the published configs' names and defaults.
FCOS_KEYS = (
    ("MODEL.FCOS.NUM_CLASSES", 80, "foreground classes of the classification branch"),
    ("MODEL.FCOS.IN_FEATURES", ["p3", "p4", "p5", "p6", "p7"], "FPN levels the head runs on"),
    ("MODEL.FCOS.FPN_STRIDES", [8, 16, 32, 64, 128], "stride of each level of IN_FEATURES"),
    ("MODEL.FCOS.PRIOR_PROB", 0.01, "initial foreground probability of the classifier"),
    ("MODEL.FCOS.INFERENCE_TH_TRAIN", 0.05, "score threshold of proposals made in training"),
    ("MODEL.FCOS.INFERENCE_TH_TEST", 0.05, "score threshold at inference"),
    ("MODEL.FCOS.NMS_TH", 0.6, "IoU threshold of the class-aware NMS"),
    ("MODEL.FCOS.PRE_NMS_TOPK_TRAIN", 1000, "candidates per level before NMS (training)"),
    ("MODEL.FCOS.PRE_NMS_TOPK_TEST", 1000, "candidates per level before NMS (inference)"),
    ("MODEL.FCOS.POST_NMS_TOPK_TRAIN", 100, "detections per image after NMS (training)"),
    ("MODEL.FCOS.POST_NMS_TOPK_TEST", 100, "detections per image after NMS (inference)"),
    ("MODEL.FCOS.TOP_LEVELS", 2, "extra levels on P5: 2 = P6 and P7, 1 = P6, 0 = none"),
    ("MODEL.FCOS.NORM", "GN", "norm of the towers: GN, NaiveGN, BN, SyncBN (per level), none"),
    ("MODEL.FCOS.USE_SCALE", True, "a learnable scale per level on the box regression"),
    ("MODEL.FCOS.BOX_QUALITY", "ctrness", "quality branch target: ctrness or iou"),
    ("MODEL.FCOS.THRESH_WITH_CTR", False, "threshold cls x ctrness (not cls) at inference"),
    ("MODEL.FCOS.LOSS_ALPHA", 0.25, "focal loss alpha"),
    ("MODEL.FCOS.LOSS_GAMMA", 2.0, "focal loss gamma"),
    ("MODEL.FCOS.LOSS_NORMALIZER_CLS", "fg", "cls loss divided by: fg, moving_fg or all"),
    ("MODEL.FCOS.LOSS_WEIGHT_CLS", 1.0, "weight of loss_fcos_cls"),
    ("MODEL.FCOS.SIZES_OF_INTEREST", [64, 128, 256, 512], "regression ranges between levels"),
    ("MODEL.FCOS.USE_RELU", True, "kept for the published YAMLs: the regression is always ReLU"),
    ("MODEL.FCOS.USE_DEFORMABLE", False, "the last conv of the cls and box towers deformable"),
    ("MODEL.FCOS.NUM_CLS_CONVS", 4, "convs of the classification tower"),
    ("MODEL.FCOS.NUM_BOX_CONVS", 4, "convs of the box tower"),
    ("MODEL.FCOS.NUM_SHARE_CONVS", 0, "convs of a tower shared by both, before them"),
    ("MODEL.FCOS.CENTER_SAMPLE", True, "positives only near the box centre"),
    ("MODEL.FCOS.POS_RADIUS", 1.5, "centre-sampling radius, in strides"),
    ("MODEL.FCOS.LOC_LOSS_TYPE", "giou", "box loss: iou, linear_iou or giou"),
    ("MODEL.FCOS.YIELD_PROPOSAL", False, "also return proposals in training"),
    ("MODEL.FCOS.YIELD_BOX_FEATURES", False, "also return the box towers' outputs"),
)


def add_modeling_config(cfg):
    """Add the keys of the shared model pieces to ``cfg`` in place, each only if missing.

    * ``MODEL.RESNETS.DEFORM_INTERVAL`` (1): in the stages that ``DEFORM_ON_PER_STAGE`` enables,
      block ``i`` (0-based within its stage) has a deformable conv iff ``i % DEFORM_INTERVAL ==
      0``. Read by ``build_resnet_deform_interval_backbone``,
      ``build_resnet_deform_interval_fpn_backbone`` and ``build_fcos_resnet_fpn_backbone``;
      the published BlendMask configs' key of the same meaning (their ``dcni3`` configs set 3).
      Detectron2's own builders ignore it.
    * ``MODEL.FCOS.*``: the FCOS detector (:class:`projects.modeling.fcos.FCOS`, a
      ``PROPOSAL_GENERATOR_REGISTRY`` entry) and its backbone
      (``build_fcos_resnet_fpn_backbone``, ``TOP_LEVELS``), with the published configs' names and
      defaults (:data:`FCOS_KEYS` says what each means).
    """
    add_missing_keys(cfg, {"MODEL.RESNETS.DEFORM_INTERVAL": 1})
    add_missing_keys(cfg, {key: value for key, value, _ in FCOS_KEYS})
    return cfg
