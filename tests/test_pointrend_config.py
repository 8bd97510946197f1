"""add_pointrend_config: Detectron2 PointRend's keys, added only where missing."""

import pytest
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.projects import point_rend as d2_point_rend
from detectron2.projects.deeplab import add_deeplab_config

from pointrend import add_pointrend_config
from projects.config import add_projects_config
from projects.config import get_cfg as project_get_cfg
from projects.data.augmentations import PhotometricDistortion
from projects.data.mappers import SemanticDatasetMapper


def _flatten(node, prefix=""):
    out = {}
    for key, value in node.items():
        if isinstance(value, CN):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_adds_detectron2_pointrend_keys():
    ours, theirs = add_pointrend_config(get_cfg()), get_cfg()
    d2_point_rend.add_pointrend_config(theirs)
    for node in ("POINT_HEAD", "IMPLICIT_POINTREND"):
        assert set(ours.MODEL[node]) == set(theirs.MODEL[node])
    for key in ("FC_DIM", "NUM_FC", "OUTPUT_SIDE_RESOLUTION", "IN_FEATURES", "POINT_HEAD_ON"):
        assert ours.MODEL.ROI_MASK_HEAD[key] == theirs.MODEL.ROI_MASK_HEAD[key]
    assert ours.MODEL.POINT_HEAD.NAME == "RenderPointHead"  # ours, not Detectron2's class
    for key in (
        "TRAIN_NUM_POINTS",
        "OVERSAMPLE_RATIO",
        "IMPORTANCE_SAMPLE_RATIO",
        "SUBDIVISION_STEPS",
    ):
        assert ours.MODEL.POINT_HEAD[key] == theirs.MODEL.POINT_HEAD[key]
    assert "ASPP_CHANNELS" in ours.MODEL.SEM_SEG_HEAD  # DeepLab coarse heads can be configured


def test_adds_only_model_keys_and_leaves_the_shared_ones_to_their_owners():
    defaults = set(_flatten(get_cfg()))
    added = set(_flatten(add_pointrend_config(get_cfg()))) - defaults
    assert added and all(key.startswith("MODEL.") for key in added), sorted(added)
    # Detectron2's PointRend and DeepLab data / solver keys come from projects' adders
    for key in (
        "INPUT.COLOR_AUG_SSD",
        "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA",
        "SOLVER.POLY_LR_POWER",
    ):
        assert key not in added


def test_with_the_shared_keys_every_detectron2_pointrend_and_deeplab_key_exists():
    theirs = get_cfg()
    d2_point_rend.add_pointrend_config(theirs)
    add_deeplab_config(theirs)
    ours = add_pointrend_config(add_projects_config(get_cfg()))
    assert set(_flatten(theirs)) <= set(_flatten(ours))
    assert ours.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA == 1.0 and ours.INPUT.COLOR_AUG_SSD is False
    assert ours.SOLVER.POLY_LR_POWER == 0.9 and ours.SOLVER.POLY_LR_CONSTANT_ENDING == 0.0


def test_idempotent():
    cfg = add_pointrend_config(get_cfg())
    once = cfg.dump()
    add_pointrend_config(cfg)
    assert cfg.dump() == once


def test_does_not_clobber_existing_keys():
    cfg = get_cfg()
    cfg.MODEL.POINT_HEAD = CN()  # another adder created the node first, with its own key
    cfg.MODEL.POINT_HEAD.OTHER_METHOD_KEY = "kept"
    cfg.MODEL.POINT_HEAD.NUM_CLASSES = 7
    cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = True
    cfg.MODEL.ROI_MASK_HEAD.FC_DIM = 99
    cfg.MODEL.SEM_SEG_HEAD.ASPP_CHANNELS = 17
    add_pointrend_config(cfg)
    assert cfg.MODEL.POINT_HEAD.OTHER_METHOD_KEY == "kept"
    assert cfg.MODEL.POINT_HEAD.NUM_CLASSES == 7
    assert cfg.MODEL.POINT_HEAD.FC_DIM == 256  # missing keys are still added
    assert cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK is True
    assert cfg.MODEL.ROI_MASK_HEAD.FC_DIM == 99
    assert cfg.MODEL.SEM_SEG_HEAD.ASPP_CHANNELS == 17

    after_d2 = get_cfg()  # Detectron2's own PointRend adder ran first: all its values survive
    d2_point_rend.add_pointrend_config(after_d2)
    before = _flatten(after_d2)
    after = _flatten(add_pointrend_config(after_d2))
    assert {k: after[k] for k in before} == before
    assert after["MODEL.POINT_HEAD.NAME"] == "StandardPointHead"


def test_published_detectron2_pointrend_yaml_merges(tmp_path):
    """A YAML in the style of Detectron2's PointRend configs loads (its keys exist)."""
    path = tmp_path / "pointrend.yaml"
    path.write_text(
        "MODEL:\n  ROI_MASK_HEAD:\n    NAME: RenderMaskHead\n    FC_DIM: 1024\n    NUM_FC: 2\n"
        "    OUTPUT_SIDE_RESOLUTION: 7\n    IN_FEATURES: ['p2']\n    POINT_HEAD_ON: True\n"
        "    POOLER_TYPE: ''\n  POINT_HEAD:\n    FC_DIM: 256\n    NUM_FC: 3\n"
        "    IN_FEATURES: ['p2']\n"
        "  IMPLICIT_POINTREND:\n    PARAMS_L2_REGULARIZER: 0.00001\n"
        "INPUT:\n  MASK_FORMAT: bitmask\n  COLOR_AUG_SSD: True\n"
        "  CROP:\n    SINGLE_CATEGORY_MAX_AREA: 0.75\n"
    )
    cfg = project_get_cfg()
    cfg.merge_from_file(str(path))
    assert cfg.MODEL.ROI_MASK_HEAD.POINT_HEAD_ON and cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA == 0.75


CONFIGS = [
    ("Base-PointRend-RCNN-FPN.yaml", "RenderMaskHead"),
    ("pointrend_rcnn_R_50_FPN_1x_coco.yaml", "RenderMaskHead"),
    ("pointrend_rcnn_R_50_FPN_3x_coco.yaml", "RenderMaskHead"),
    ("pointrend_rcnn_R_101_FPN_3x_coco.yaml", "RenderMaskHead"),
    ("pointrend_rcnn_X_101_32x8d_FPN_3x_coco.yaml", "RenderMaskHead"),
    ("implicit_pointrend_R_50_FPN_1x_coco.yaml", "RenderImplicitMaskHead"),
    ("pointrend_semantic_R_101_FPN_1x_cityscapes.yaml", None),
    ("pointrend_semantic_deeplabv3plus_R_103_os16_cityscapes.yaml", None),
]


@pytest.mark.parametrize("name,mask_head", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_project_configs_load(name, mask_head):
    cfg = project_get_cfg()
    cfg.merge_from_file(f"configs/PointRend/{name}")
    if mask_head:
        assert cfg.MODEL.ROI_MASK_HEAD.NAME == mask_head
        assert cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE == ""
        assert cfg.INPUT.MASK_FORMAT == "bitmask"
        assert cfg.MODEL.POINT_HEAD.NUM_CLASSES == cfg.MODEL.ROI_HEADS.NUM_CLASSES
    else:
        assert cfg.MODEL.SEM_SEG_HEAD.NAME == "RenderSemSegHead"
        assert cfg.MODEL.POINT_HEAD.NUM_CLASSES == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        # Detectron2's semantic recipe: resize, crop of the resized image, [SSD colours], flip
        assert cfg.INPUT.DATASET_MAPPER_NAME == "SemanticDatasetMapper"
        augs = SemanticDatasetMapper.from_config(cfg, is_train=True)["augmentations"]
        expected = [T.ResizeShortestEdge, T.RandomCrop_CategoryAreaConstraint]
        expected += [PhotometricDistortion] if cfg.INPUT.COLOR_AUG_SSD else []
        expected += [T.RandomFlip]
        assert len(augs) == len(expected), augs
        assert all(isinstance(a, kind) for a, kind in zip(augs, expected)), augs
        crop = augs[1]
        assert tuple(crop.crop_aug.crop_size) == tuple(cfg.INPUT.CROP.SIZE) == (512, 1024)
        assert crop.single_category_max_area == cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA


def test_base_config_builds_the_pointrend_model():
    cfg = project_get_cfg()
    cfg.merge_from_file("configs/PointRend/pointrend_rcnn_R_50_FPN_1x_coco.yaml")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    model = build_model(cfg)
    head = model.roi_heads.mask_head
    assert type(head).__name__ == "RenderMaskHead" and model.roi_heads.mask_pooler is None
    assert head.coarse_head.prediction.out_features == 80 * 7 * 7
    assert head.point_head.fc1.in_channels == 256 + 80
    assert (head.subdivision_init_resolution, head.subdivision_steps) == (28, 3)
    # Pinned: Detectron2's PointRend R50-FPN mask branch has these parameter counts.
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(head.point_head) == (336 * 256 + 256) + 2 * (336 * 256 + 256) + (336 * 80 + 80)
