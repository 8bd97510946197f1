"""The toy-pretrained backbone (``toy-pretrained://R-18.pkl``): found when made for this recipe,
made again when stale, loaded by name into any model on Detectron2's ResNet-FPN, clear errors."""

import json
import os
import pickle

import pytest
import torch
from detectron2.utils.file_io import PathManager

from projects.engine import toy_pretrained
from projects.engine.checkpoint import ProjectCheckpointer
from tests.helpers.contract import build_tiny_model, tiny_cfg, toy_config_path


def _tiny_model(tmp_path, seed):
    return build_tiny_model(tiny_cfg(toy_config_path("mask_rcnn.yaml"), tmp_path), seed=seed)


def _write_weights(path, model):
    data = {
        "model": toy_pretrained.backbone_weights(model.state_dict()),
        "__author__": "test",
        "matching_heuristics": True,
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(data, f)


@pytest.fixture
def datasets_root(tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    return root


def test_backbone_weights_load_by_name_into_another_model(tmp_path):
    """What the pickle holds (``backbone.*`` without the prefix, matching heuristics on) loads into
    a freshly initialised model's backbone exactly, leaving its heads as they were."""
    source, target = _tiny_model(tmp_path, seed=1), _tiny_model(tmp_path, seed=2)
    heads_before = {k: v.clone() for k, v in target.state_dict().items() if "backbone" not in k}
    path = str(tmp_path / "R-18.pkl")
    _write_weights(path, source)
    ProjectCheckpointer(target).load(path)
    for key, value in source.state_dict().items():
        if key.startswith("backbone.") and not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(target.state_dict()[key], value, rtol=0, atol=0, msg=key)
    for key, value in heads_before.items():
        torch.testing.assert_close(target.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_handler_returns_the_made_file_when_its_stamp_matches(datasets_root, monkeypatch):
    path = os.path.join(toy_pretrained.pretrained_dir(), "R-18.pkl")
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"weights")
    with open(path + toy_pretrained.STAMP_SUFFIX, "w") as f:
        json.dump(toy_pretrained.recipe_stamp(), f)

    def no_training(*args):
        raise AssertionError("an up-to-date file must not be made again")

    monkeypatch.setattr(toy_pretrained, "_train", no_training)
    assert PathManager.get_local_path("toy-pretrained://R-18.pkl") == path
    with PathManager.open("toy-pretrained://R-18.pkl", "rb") as f:
        assert f.read() == b"weights"


def test_a_missing_or_stale_file_is_made_once(datasets_root, monkeypatch):
    made = []

    def fake_training(path, root, stamp):
        made.append(path)
        with open(path, "wb") as f:
            f.write(b"new")
        with open(path + toy_pretrained.STAMP_SUFFIX, "w") as f:
            json.dump(stamp, f)

    monkeypatch.setattr(toy_pretrained, "_train", fake_training)
    path = toy_pretrained.ensure_pretrained()
    assert made == [path] and toy_pretrained.ensure_pretrained() == path and len(made) == 1
    with open(path + toy_pretrained.STAMP_SUFFIX, "w") as f:  # another recipe made it
        json.dump({**toy_pretrained.recipe_stamp(), "config_sha1": "0" * 40}, f)
    toy_pretrained.ensure_pretrained()
    assert len(made) == 2


def test_the_stamp_follows_the_recipe(monkeypatch):
    before = toy_pretrained.recipe_stamp()
    monkeypatch.setattr(toy_pretrained, "RECIPE_OPTS", toy_pretrained.RECIPE_OPTS + ("SEED", "8"))
    assert toy_pretrained.recipe_stamp()["config_sha1"] != before["config_sha1"]


def test_keys_only_inference_reads_leave_the_stamp_alone(monkeypatch):
    before = toy_pretrained.recipe_stamp()
    opts = ("TEST.DETECTIONS_PER_IMAGE", "7", "TEST.AUG.ENABLED", "True")
    monkeypatch.setattr(toy_pretrained, "RECIPE_OPTS", toy_pretrained.RECIPE_OPTS + opts)
    assert toy_pretrained._recipe_config("").TEST.DETECTIONS_PER_IMAGE == 7
    assert toy_pretrained.recipe_stamp() == before


def test_a_method_package_s_keys_leave_the_stamp_alone(monkeypatch):
    """A method landing adds config keys the recipe never reads: the cached weights stay valid."""
    import projects.config as config

    before = toy_pretrained.recipe_stamp()

    def add_keys(cfg):
        config.add_missing_keys(cfg, {"MODEL.SOME_NEW_METHOD.WIDTH": 7})

    landed = config.method_config_adders()
    monkeypatch.setattr(config, "method_config_adders", lambda: landed + [("new", add_keys)])
    assert "SOME_NEW_METHOD" in toy_pretrained._recipe_config("").MODEL
    assert toy_pretrained.recipe_stamp() == before


def test_unknown_name_and_failed_training_are_clear_errors(datasets_root, monkeypatch):
    with pytest.raises(FileNotFoundError, match="R-50.pkl.*R-18.pkl"):
        PathManager.get_local_path("toy-pretrained://R-50.pkl")

    class Failed:
        returncode = 3

    monkeypatch.setattr(toy_pretrained.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(RuntimeError, match="exit code 3.*log.txt") as error:
        toy_pretrained.ensure_pretrained()
    kept = [n for n in os.listdir(toy_pretrained.pretrained_dir()) if n.startswith(".train-")]
    assert len(kept) == 1 and kept[0] in str(error.value), "the failed run's folder is kept"
    assert not os.path.exists(os.path.join(toy_pretrained.pretrained_dir(), "R-18.pkl"))
