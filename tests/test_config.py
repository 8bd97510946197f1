"""projects.config: every key has one owner; adders only add what is missing, so they commute;
every method's adder runs once; half-created method folders are not packages."""

import sys

import pytest
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg as d2_get_cfg

from projects.config import (
    add_all_configs,
    add_missing_from,
    add_missing_keys,
    get_cfg,
    method_config_adders,
    shared_config_adders,
    shared_config_keys,
)
from tests.helpers.config_check import (
    check_adders_commute,
    check_adders_keep_config,
    config_files,
    config_owner,
)

SHARED_ADDERS = shared_config_adders()
TOY_INSTANCE = "configs/toy/mask_rcnn.yaml"  # belongs to no method (the yardstick)
POINTREND_FILES = (
    "configs/toy/pointrend.yaml",
    "configs/PointRend/pointrend_rcnn_R_50_FPN_1x_coco.yaml",
)


def _leaves(node, prefix=""):
    """Independent flattening: {dotted key: value} of a CfgNode's leaves."""
    out = {}
    for key, value in node.items():
        if isinstance(value, CN):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


# ------------------------------------------------------------------------- add_missing_keys
def test_add_missing_keys_adds_only_missing_keys_and_nodes():
    cfg = CN()
    cfg.A = CN()
    cfg.A.KEPT = 1
    cfg.A.OTHER = "other adder's"
    node = cfg.A
    default = [1, 2]
    add_missing_keys(cfg, {"A.KEPT": 99, "A.NEW": default, "B.C.D": "x"})
    assert cfg.A is node  # the node was completed, not re-created
    assert _leaves(cfg) == {"A.KEPT": 1, "A.OTHER": "other adder's", "A.NEW": [1, 2], "B.C.D": "x"}
    cfg.A.NEW.append(3)
    assert default == [1, 2]  # the config holds a copy of the default


def test_add_missing_keys_names_the_key_whose_path_hits_a_value():
    cfg = CN()
    cfg.A = CN()
    cfg.A.B = 5
    with pytest.raises(TypeError, match=r"'A\.B\.C'.*A\.B is a value"):
        add_missing_keys(cfg, {"A.B.C": 1})


def test_add_missing_from_keeps_existing_values_and_excluded_keys():
    def assigning_adder(cfg):  # like Detectron2's adders: assigns, re-creates a node
        cfg.A.KEPT = 99
        cfg.A.NEW = 2
        cfg.A.EXCLUDED = 3
        cfg.B = CN()
        cfg.B.C = 4

    cfg = CN()
    cfg.A = CN()
    cfg.A.KEPT = 1
    cfg.B = CN()
    cfg.B.OTHER = 0
    add_missing_from(cfg, assigning_adder, exclude={"A.EXCLUDED"})
    assert _leaves(cfg) == {"A.KEPT": 1, "A.NEW": 2, "B.OTHER": 0, "B.C": 4}


# ------------------------------------------------------------------------- one owner per key
def test_shared_config_keys_are_the_keys_the_shared_adders_add():
    defaults = set(_leaves(d2_get_cfg()))
    cfg = d2_get_cfg()
    for _name, adder in SHARED_ADDERS:
        adder(cfg)
    assert shared_config_keys() == set(_leaves(cfg)) - defaults
    assert {"SOLVER.POLY_LR_POWER", "INPUT.COLOR_AUG_SSD"} <= shared_config_keys()


def test_each_key_is_added_by_one_adder_only():
    defaults = set(_leaves(d2_get_cfg()))
    added = {}
    for name, adder in SHARED_ADDERS + method_config_adders():
        cfg = d2_get_cfg()
        adder(cfg)
        for key in set(_leaves(cfg)) - defaults:
            added.setdefault(key, []).append(name)
    shared_by_several = {key: names for key, names in added.items() if len(names) > 1}
    assert not shared_by_several


# ------------------------------------------------------------------------- order and repetition
def test_every_adder_is_idempotent_and_order_independent():
    check_adders_commute(SHARED_ADDERS + method_config_adders())


def test_order_check_catches_two_adders_of_one_key_with_different_defaults():
    def add_fake_config(cfg):  # adds a key the engine owns: whoever runs first sets it
        add_missing_keys(cfg, {"SOLVER.OPTIMIZER": "ADAMW"})

    with pytest.raises(AssertionError, match=r"SOLVER\.OPTIMIZER: '(SGD|ADAMW)' -> '(ADAMW|SGD)'"):
        check_adders_commute(SHARED_ADDERS + [("add_fake_config", add_fake_config)])


def test_order_check_catches_an_adder_that_is_not_idempotent():
    def add_fake_config(cfg):
        cfg.MODEL.RPN.IN_FEATURES = list(cfg.MODEL.RPN.IN_FEATURES) + ["p6"]

    with pytest.raises(
        AssertionError, match=r"(?s)add_fake_config run twice.*MODEL\.RPN\.IN_FEATURES"
    ):
        check_adders_commute(SHARED_ADDERS + [("add_fake_config", add_fake_config)])


# ------------------------------------------------------------------------- every YAML
@pytest.mark.parametrize("path", config_files())
def test_other_adders_leave_each_config_unchanged(path):
    adders = method_config_adders()
    owner = config_owner(path)
    if owner is not None and owner not in dict(adders):
        pytest.skip(f"{path}: method {owner} has not landed")
    check_adders_keep_config(path, adders)


def test_config_files_cover_the_toy_and_paper_configs():
    files = config_files()
    assert TOY_INSTANCE in files and "configs/toy/Base-toy-RCNN-FPN.yaml" in files
    assert set(POINTREND_FILES) <= set(files) and "configs/toy/bars.yaml" not in files


def test_config_owner_by_folder_and_method_declaration():
    assert config_owner("configs/PointRend/Base-RCNN-FPN.yaml") == "pointrend"
    assert config_owner("configs/BlendMask/R_50_1x.yaml") == "blendmask"
    assert config_owner("configs/toy/pointrend_semseg.yaml") == "pointrend"
    assert config_owner(TOY_INSTANCE) is None
    assert config_owner("configs/toy/Base-toy-RCNN-FPN.yaml") == "pointrend"  # its heir's owner
    with pytest.raises(LookupError, match="configs/Nope/ names no method"):
        config_owner("configs/Nope/x.yaml")
    with pytest.raises(LookupError, match="no method declares the toy config 'nope.yaml'"):
        config_owner("configs/toy/nope.yaml")


def _assigning_backbone_multiplier(cfg):
    add_missing_keys(cfg, {"MODEL.FAKE.DIM": 8})
    # Assigns instead of adding. (Not SOLVER.OPTIMIZER: the toy configs set it to ADAMW, so an
    # adder assigning ADAMW leaves their merged configs unchanged, rightly unnoticed.)
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1


def _recreating_roi_mask_head(cfg):
    cfg.MODEL.ROI_MASK_HEAD = CN()
    cfg.MODEL.ROI_MASK_HEAD.FAKE_DIM = 8


@pytest.mark.parametrize("path", (TOY_INSTANCE,) + POINTREND_FILES)
@pytest.mark.parametrize(
    "bad_adder,key",
    [
        (_assigning_backbone_multiplier, "SOLVER.BACKBONE_MULTIPLIER: 1.0 -> 0.1"),
        (_recreating_roi_mask_head, "MODEL.ROI_MASK_HEAD."),
    ],
    ids=["assigns-SOLVER.BACKBONE_MULTIPLIER", "recreates-ROI_MASK_HEAD"],
)
def test_config_check_names_the_key_a_bad_adder_changes(path, bad_adder, key):
    adders = method_config_adders() + [("fake", bad_adder)]
    with pytest.raises(AssertionError) as info:
        check_adders_keep_config(path, adders)
    message = str(info.value)
    assert path in message and key in message, message


@pytest.mark.parametrize("path", (TOY_INSTANCE,) + POINTREND_FILES)
def test_config_check_passes_an_adder_that_adds_its_own_keys(path):
    def add_fake_config(cfg):
        add_missing_keys(cfg, {"MODEL.FAKE.DIM": 8, "MODEL.ROI_MASK_HEAD.FAKE_DIM": 8})

    check_adders_keep_config(path, method_config_adders() + [("fake", add_fake_config)])


# ------------------------------------------------------------------------- add_all_configs
def test_pointrend_keys_are_added():
    cfg = get_cfg()
    assert cfg.MODEL.POINT_HEAD.NAME and cfg.TEST.BOUNDARY_EVAL.ENABLED


def test_empty_method_folder_is_skipped(tmp_path, monkeypatch):
    # a method of the list whose folder exists without __init__.py (a namespace package)
    import projects.config as config

    adders = config.METHOD_CONFIG_ADDERS + (("notyetmask", "add_notyetmask_config"),)
    monkeypatch.setattr(config, "METHOD_CONFIG_ADDERS", adders)
    (tmp_path / "notyetmask").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "notyetmask", raising=False)

    cfg = add_all_configs(d2_get_cfg())
    assert "NOTYETMASK" not in cfg.MODEL
    assert "notyetmask" not in dict(method_config_adders())
    assert "pointrend" in dict(method_config_adders())
