"""projects.config: every method's adder runs once; half-created method folders are not packages."""

import sys

from projects.config import add_all_configs, get_cfg


def test_pointrend_keys_are_added():
    cfg = get_cfg()
    assert cfg.MODEL.POINT_HEAD.NAME and cfg.TEST.BOUNDARY_EVAL.ENABLED


def test_empty_method_folder_is_skipped(tmp_path, monkeypatch):
    (tmp_path / "blendmask").mkdir()  # no __init__.py: a namespace package, not a method
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "blendmask", raising=False)
    from detectron2.config import get_cfg as d2_get_cfg

    cfg = add_all_configs(d2_get_cfg())
    assert "BLENDMASK" not in cfg.MODEL
