"""demo.py: inputs (files, directories, globs), drawing, COCO JSON, unreadable and missing
inputs, the confidence threshold in every registered score key (a method installed from a
temporary folder: tests/test_method_contract.py)."""

import json
import logging

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from PIL import Image

import demo
from projects.config import get_cfg
from projects.demo import expand_inputs, set_confidence_threshold
from projects.methods import registered_methods
from tests.helpers.tiny_coco import tiny_mask_rcnn_cfg, write_cfg


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A config file and weights that fit it (random init: the demo does not care how good)."""
    root = tmp_path_factory.mktemp("demo")
    cfg = tiny_mask_rcnn_cfg(root / "out", "demo_unused_train", None)
    cfg.DATASETS.TRAIN = ()
    torch.manual_seed(0)
    model = build_model(cfg)
    weights = root / "model.pth"
    torch.save({"model": model.state_dict()}, weights)
    return write_cfg(cfg, root / "cfg.yaml"), str(weights)


@pytest.fixture()
def image_dir(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    rng = np.random.RandomState(0)
    Image.fromarray(rng.randint(0, 255, (60, 80, 3), dtype=np.uint8)).save(d / "good.png")
    (d / "corrupt.jpg").write_text("this is a text file, not a JPEG")
    return d


def test_expand_inputs_files_dirs_globs(image_dir):
    (image_dir / "notes.txt").write_text("ignored: not an image extension")
    assert [p.split("/")[-1] for p in expand_inputs([str(image_dir)])] == [
        "corrupt.jpg",
        "good.png",
    ]
    assert expand_inputs([str(image_dir / "*.png")]) == [str(image_dir / "good.png")]
    both = expand_inputs([str(image_dir / "good.png"), str(image_dir / "*.png")])
    assert both == [str(image_dir / "good.png")]  # de-duplicated
    with pytest.raises(FileNotFoundError, match="nope.png"):
        expand_inputs([str(image_dir / "nope.png")])


def test_directory_with_good_and_corrupt_image(tiny_model, image_dir, tmp_path, caplog):
    cfg_file, weights = tiny_model
    out_dir, json_file = tmp_path / "drawn", tmp_path / "pred.json"
    argv = [
        "--config-file",
        cfg_file,
        "--input",
        str(image_dir),
        "--output",
        str(out_dir),
        "--json",
        str(json_file),
        "--confidence-threshold",
        "0.0",
        "--opts",
        "MODEL.WEIGHTS",
        weights,
    ]
    with caplog.at_level(logging.WARNING):
        assert demo.main(argv) == 0
    drawn = sorted(p.name for p in out_dir.iterdir())
    assert drawn == ["good.png"]
    assert np.asarray(Image.open(out_dir / "good.png")).shape == (60, 80, 3)
    assert any(
        "corrupt.jpg" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
    )
    predictions = json.loads(json_file.read_text())
    assert [im["file_name"].split("/")[-1] for im in predictions["images"]] == ["good.png"]
    image_ids = {im["id"] for im in predictions["images"]}
    assert predictions["annotations"], "threshold 0 keeps every detection"
    for ann in predictions["annotations"]:
        assert ann["image_id"] in image_ids and ann["score"] >= 0.0 and "segmentation" in ann


def test_single_missing_file_is_an_error(tiny_model, tmp_path, caplog):
    cfg_file, weights = tiny_model
    missing = tmp_path / "missing.jpg"
    with caplog.at_level(logging.ERROR):
        code = demo.main(
            [
                "--config-file",
                cfg_file,
                "--input",
                str(missing),
                "--output",
                str(tmp_path / "o"),
                "--opts",
                "MODEL.WEIGHTS",
                weights,
            ]
        )
    assert code != 0
    assert any("missing.jpg" in r.getMessage() for r in caplog.records)


def test_single_input_to_output_file_and_threshold(tiny_model, image_dir, tmp_path):
    cfg_file, weights = tiny_model
    out_file, json_file = tmp_path / "one.jpg", tmp_path / "p.json"
    code = demo.main(
        [
            "--config-file",
            cfg_file,
            "--input",
            str(image_dir / "good.png"),
            "--output",
            str(out_file),
            "--json",
            str(json_file),
            "--confidence-threshold",
            "1.01",
            "--opts",
            "MODEL.WEIGHTS",
            weights,
        ]
    )
    assert code == 0 and out_file.is_file()
    assert json.loads(json_file.read_text())["annotations"] == []  # nothing scores above 1.01


def test_no_weights_is_an_error_not_random_weights(tiny_model, image_dir, tmp_path, caplog):
    cfg_file, _ = tiny_model
    with caplog.at_level(logging.ERROR):
        code = demo.main(["--config-file", cfg_file, "--input", str(image_dir / "good.png")])
    assert code != 0
    assert any("MODEL.WEIGHTS" in r.getMessage() for r in caplog.records)


def test_video_input_is_drawn_frame_by_frame(tiny_model, tmp_path):
    import cv2

    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (80, 60))
    rng = np.random.RandomState(1)
    for _ in range(3):
        writer.write(rng.randint(0, 255, (60, 80, 3), dtype=np.uint8))
    writer.release()
    cfg_file, weights = tiny_model
    out_dir = tmp_path / "video_out"
    code = demo.main(
        [
            "--config-file",
            cfg_file,
            "--video-input",
            str(video),
            "--output",
            str(out_dir),
            "--opts",
            "MODEL.WEIGHTS",
            weights,
        ]
    )
    assert code == 0
    drawn = cv2.VideoCapture(str(out_dir / "clip.mp4"))
    frames = 0
    while drawn.read()[0]:
        frames += 1
    assert frames == 3


def test_video_input_that_is_not_a_video_is_an_error(tiny_model, tmp_path, caplog):
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("not a video")
    cfg_file, weights = tiny_model
    argv = [
        "--config-file",
        cfg_file,
        "--video-input",
        str(bogus),
        "--opts",
        "MODEL.WEIGHTS",
        weights,
    ]
    with caplog.at_level(logging.ERROR):
        code = demo.main(argv)
    assert code != 0
    assert any("notes.mp4" in r.getMessage() for r in caplog.records)


def test_confidence_threshold_goes_to_every_registered_score_key_the_config_has():
    cfg = get_cfg()
    declared = {key for method in registered_methods() for key in method.score_threshold_keys}
    assert "MODEL.ROI_HEADS.SCORE_THRESH_TEST" in declared  # Detectron2's, as the yardstick's
    present = [k for k in declared if _get(cfg, k) is not None]
    assert len(present) >= 3
    before = {k: v for k, v in _items(cfg) if k not in declared}
    set_confidence_threshold(cfg, 0.37)
    assert cfg.is_frozen()
    assert all(_get(cfg, k) == 0.37 for k in present)
    assert {k: v for k, v in _items(cfg) if k not in declared} == before  # nothing else changed
    custom = get_cfg()
    set_confidence_threshold(custom, 0.9, keys=["MODEL.RETINANET.SCORE_THRESH_TEST", "NO.SUCH"])
    assert custom.MODEL.RETINANET.SCORE_THRESH_TEST == 0.9
    assert custom.MODEL.ROI_HEADS.SCORE_THRESH_TEST == get_cfg().MODEL.ROI_HEADS.SCORE_THRESH_TEST


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _items(cfg, prefix=""):
    for name, value in cfg.items():
        if isinstance(value, dict):
            yield from _items(value, f"{prefix}{name}.")
        else:
            yield prefix + name, value


@pytest.mark.parametrize(
    "config_name, expected_hw",
    [("yolact.yaml", (64, 64)), ("mask_rcnn.yaml", (48, 64))],
)
def test_the_predictor_resizes_as_the_config_recipe_tests(config_name, expected_hw, tmp_path):
    """YOLACT's recipe squashes every image to INPUT.SSD.SIZE squared; Detectron2's resizes the
    shortest edge (the tiny contract sizes: 64 and 48-64)."""
    from projects.demo import Predictor
    from tests.helpers.contract import build_tiny_model, tiny_cfg, toy_config_path

    cfg = tiny_cfg(toy_config_path(config_name), tmp_path).clone()
    weights = tmp_path / "random.pth"
    torch.save({"model": build_tiny_model(cfg).state_dict()}, weights)
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(weights)
    cfg.freeze()
    predictor = Predictor(cfg, confidence_threshold=0.0)
    seen = []
    forward = predictor.model.forward
    predictor.model.forward = lambda inputs: seen.append(inputs[0]["image"].shape) or forward(
        inputs
    )
    output = predictor(np.zeros((120, 160, 3), dtype=np.uint8))
    assert tuple(seen[0][1:]) == expected_hw
    assert output["instances"].image_size == (120, 160)
