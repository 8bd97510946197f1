"""Dataset registration: users' COCO-format sets (Python and config-only) and the builtin ones."""

import json

import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from pycocotools import mask as mask_util

from projects.data.datasets import (
    ensure_datasets_registered,
    parse_coco_format_name,
    register_all_datasets,
    register_coco_dataset,
)


@pytest.fixture
def tiny_coco(tmp_path):
    """Two images, categories with ids 3 and 9, one polygon and one RLE instance."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(images / name)
    square = np.zeros((20, 30), np.uint8)
    square[5:10, 4:12] = 1
    rle = mask_util.encode(np.asfortranarray(square))
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 20, "width": 30},
            {"id": 2, "file_name": "b.png", "height": 20, "width": 30},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 9,
                "segmentation": [[2, 2, 8, 2, 8, 6, 2, 6]],
                "area": 24,
                "bbox": [2, 2, 6, 4],
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 2,
                "category_id": 3,
                "segmentation": {"size": [20, 30], "counts": rle["counts"].decode()},
                "area": 40,
                "bbox": [4, 5, 8, 5],
                "iscrowd": 0,
            },
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 9, "name": "dog"}],
    }
    json_file = tmp_path / "train.json"
    json_file.write_text(json.dumps(coco))
    return str(json_file), str(images)


@pytest.fixture
def cleanup():
    names = []
    yield names
    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_register_coco_dataset_loads(tiny_coco, cleanup):
    json_file, image_root = tiny_coco
    cleanup.append("user_tiny")
    register_coco_dataset("user_tiny", json_file, image_root)
    dicts = DatasetCatalog.get("user_tiny")
    meta = MetadataCatalog.get("user_tiny")
    assert meta.evaluator_type == "coco"
    assert list(meta.thing_classes) == ["cat", "dog"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 9: 1}
    assert [d["file_name"].endswith(n) for d, n in zip(dicts, ("a.png", "b.png"))] == [True, True]
    assert [d["annotations"][0]["category_id"] for d in dicts] == [1, 0]
    assert isinstance(dicts[0]["annotations"][0]["segmentation"], list)
    assert isinstance(dicts[1]["annotations"][0]["segmentation"], dict)

    register_coco_dataset("user_tiny", json_file, image_root)  # same files: no-op
    with pytest.raises(ValueError, match="user_tiny"):
        register_coco_dataset("user_tiny", json_file, str(tiny_coco[1]) + "/..")


def test_missing_files_are_named(tmp_path, tiny_coco):
    json_file, image_root = tiny_coco
    missing_json = str(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        register_coco_dataset("user_missing", missing_json, image_root)
    with pytest.raises(FileNotFoundError, match="no_images"):
        register_coco_dataset("user_missing", json_file, str(tmp_path / "no_images"))
    assert "user_missing" not in DatasetCatalog.list()


def test_coco_format_name_from_config(tiny_coco, cleanup):
    json_file, image_root = tiny_coco
    name = f"coco_format:{json_file}:{image_root}"
    cleanup.append(name)
    cfg = get_cfg()
    cfg.merge_from_list(["DATASETS.TRAIN", f"('{name}',)"])
    assert ensure_datasets_registered(cfg.DATASETS.TRAIN) == [name]
    assert ensure_datasets_registered(cfg.DATASETS.TRAIN) == []
    assert len(DatasetCatalog.get(name)) == 2
    assert MetadataCatalog.get(name).json_file == json_file


def test_bad_names_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="coco_format:<json_file>:<image_root>"):
        parse_coco_format_name("coco_format:only_one_path")
    with pytest.raises(KeyError, match="not_a_dataset"):
        ensure_datasets_registered(["not_a_dataset"])
    missing = str(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        ensure_datasets_registered([f"coco_format:{missing}:{tmp_path}"])


def test_builtin_coco_and_toy_are_registered(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_all_datasets()
    register_all_datasets()  # idempotent
    names = set(DatasetCatalog.list())
    for name in ("toy_train", "toy_val", "toy_sem_seg_train", "toy_sem_seg_val"):
        assert name in names
    assert MetadataCatalog.get("toy_val").evaluator_type == "coco"
    assert MetadataCatalog.get("toy_sem_seg_val").evaluator_type == "sem_seg"
    for name in ("coco_2017_train", "coco_2017_val", "coco_2017_train_panoptic"):
        assert name in names
    coco = MetadataCatalog.get("coco_2017_train")
    assert coco.json_file.endswith("coco/annotations/instances_train2017.json")
    assert coco.evaluator_type == "coco"
    assert "coco_2017_train_panoptic_stuffonly" in names
