"""Odd images (1x1, 16x4000, 4000x4000, L, RGBA, P, I;16, EXIF-rotated JPEG) through the mappers,
a training step and inference of every toy config, its evaluator and the demo.
"""

import json
import math
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import SemSegEvaluator
from detectron2.utils.events import EventStorage
from PIL import Image

from projects.data.augmentation_registry import recipe_input_size_keys
from projects.data.image_io import read_image_robust
from projects.data.mapper_registry import build_dataset_mapper
from projects.demo import Predictor, metadata_for, run_on_images
from projects.evaluation.coco_boundary import COCOBoundaryEvaluator
from tests.helpers.contract import (
    assert_finite_losses,
    assert_output_size,
    build_tiny_model,
    input_size_bound,
    is_semantic,
)
from tests.helpers.hostile import (
    OUTCOMES,
    TOY_CONFIGS,
    VALID,
    H,
    W,
    print_outcomes,
    tiny_cfg,
)

# ANNOTATION_STATS are counted per test (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("fresh_annotation_stats")


# ---------------------------------------------------------------------------------------------
# 2. Odd images: mapper, training step, inference, evaluator, demo
# ---------------------------------------------------------------------------------------------
def _odd_image_specs():
    """name -> (writer(path), (height, width) as displayed)."""
    rng = np.random.RandomState(3)

    def rgb(h, w):
        return rng.randint(0, 255, (h, w, 3), dtype=np.uint8)

    def png(array, mode=None):
        return lambda path: Image.fromarray(array, mode=mode).save(path)

    def palette(path):
        image = Image.fromarray((np.arange(H * W).reshape(H, W) % 4).astype(np.uint8), mode="P")
        image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 250, 250, 0] + [0] * 756)
        image.save(path)

    def exif_jpeg(path):
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display: stored H x W, shown W x H
        Image.fromarray(rgb(H, W)).save(path, exif=exif.tobytes(), quality=95)

    big = np.full((4000, 4000, 3), 90, dtype=np.uint8)
    big[1000:3000, 1500:2500] = (200, 40, 40)
    deep = (np.arange(H * W).reshape(H, W) * 85).astype(np.uint16)  # 0 .. 65195
    rgba = np.dstack([rgb(H, W), np.linspace(0, 255, W, dtype=np.uint8)[None].repeat(H, 0)])
    return {
        "one_pixel.png": (png(rgb(1, 1)), (1, 1)),
        "thin_16x4000.png": (png(rgb(16, 4000)), (16, 4000)),
        "big_4000x4000.png": (png(big), (4000, 4000)),
        "gray_L.png": (png(rgb(H, W)[..., 0], "L"), (H, W)),
        "rgba.png": (png(rgba, "RGBA"), (H, W)),
        "palette_P.png": (palette, (H, W)),
        "depth_I16.png": (png(deep), (H, W)),
        "exif_rotated.jpg": (exif_jpeg, (W, H)),
    }


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    """Odd image files with one annotation each, registered as a COCO dataset and a semantic
    one (label maps of the displayed size). Returns a dict of names and paths."""
    root = tmp_path_factory.mktemp("odd_images")
    image_dir = root / "images"
    image_dir.mkdir()
    images, annotations, sem_dicts = [], [], []
    sizes = {}
    for image_id, (name, (write, (h, w))) in enumerate(sorted(_odd_image_specs().items()), 1):
        write(image_dir / name)
        sizes[name] = (h, w)
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        x0, y0, x1, y1 = w / 4, h / 4, max(w * 3 / 4, w / 4 + 0.5), max(h * 3 / 4, h / 4 + 0.5)
        if (h, w) == (1, 1):
            x0, y0, x1, y1 = 0.0, 0.0, 1.0, 1.0
        annotations.append(
            {
                "id": image_id,
                "image_id": image_id,
                "category_id": 1 + image_id % 4,  # classes every toy instance config has
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0),
                "iscrowd": 0,
                "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
            }
        )
        labels = np.zeros((h, w), dtype=np.uint8)
        labels[int(y0) : int(math.ceil(y1)), int(x0) : int(math.ceil(x1))] = 1 + image_id % 9
        labels[-1:, :] = 255
        if (h, w) == (1, 1):
            labels[:] = 3
        label_file = root / f"label_{name}.png"
        Image.fromarray(labels).save(label_file)
        sem_dicts.append(
            {
                "file_name": str(image_dir / name),
                "sem_seg_file_name": str(label_file),
                "height": h,
                "width": w,
                "image_id": image_id,
            }
        )
    categories = [{"id": k, "name": f"class_{k}"} for k in range(1, 5)]
    json_file = root / "odd.json"
    json_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    coco_name, sem_name = f"hostile_odd_coco_{id(root)}", f"hostile_odd_sem_seg_{id(root)}"
    register_coco_instances(coco_name, {}, str(json_file), str(image_dir))
    DatasetCatalog.register(sem_name, lambda: [dict(d) for d in sem_dicts])
    MetadataCatalog.get(sem_name).set(
        stuff_classes=[f"class_{k}" for k in range(10)],
        ignore_label=255,
        evaluator_type="sem_seg",
    )
    return {
        "root": root,
        "files": [str(image_dir / name) for name in sorted(sizes)],
        "sizes": sizes,
        "coco": coco_name,
        "sem_seg": sem_name,
    }


# The 4000 x 4000 image goes through every config's mappers and training step (resized to 48 px).
# Inference gives outputs of its full size (K x 4000 x 4000 floats for a semantic model) and
# evaluating or drawing them takes seconds: only these configs run inference on it, and only the
# instance ones evaluate it (Detectron2's SemSegEvaluator takes 5 s on 16 M pixels).
BIG_INFERENCE = ("mask_rcnn.yaml", "pointrend.yaml", "pointrend_semseg.yaml")
# The demo reads every image the same way whatever the config: all odd images for one config, the
# odd sizes (and the EXIF rotation, which swaps them) for the others.
DEMO_ALL_IMAGES = "mask_rcnn.yaml"
DEMO_SOME_IMAGES = ("one_pixel.png", "thin_16x4000.png", "exif_rotated.jpg")


def _dataset_dicts(odd_images, cfg):
    name = odd_images["sem_seg"] if is_semantic(cfg) else odd_images["coco"]
    return name, DatasetCatalog.get(name)


@pytest.mark.parametrize("config_name", TOY_CONFIGS)
def test_odd_images_train_infer_and_evaluate(odd_images, tmp_path, config_name):
    cfg = tiny_cfg(config_name, tmp_path)
    name, dicts = _dataset_dicts(odd_images, cfg)
    assert len(dicts) == len(odd_images["files"])
    model = build_tiny_model(cfg)

    # mapper (training) and one training step on all odd images in one batch
    train_mapper = build_dataset_mapper(cfg, is_train=True)
    batch = [train_mapper(d) for d in dicts]
    for d, x in zip(dicts, batch):
        assert x is not None and x["image"].shape[0] == 3 and min(x["image"].shape[1:]) >= 1
        assert max(x["image"].shape[1:]) <= input_size_bound(cfg), d["file_name"]
        if not is_semantic(cfg):
            assert len(x["instances"]) == 1, d["file_name"]
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    with EventStorage():
        losses = model(batch)
    assert_finite_losses(losses)
    sum(losses.values()).backward()
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())

    # mapper (test), inference at the input's size, the dataset's evaluator
    test_mapper = build_dataset_mapper(cfg, is_train=False)
    model.eval()
    if is_semantic(cfg):
        evaluator = SemSegEvaluator(name, distributed=False, output_dir=str(tmp_path / "eval"))
    else:
        evaluator = COCOBoundaryEvaluator.from_config(
            cfg, name, output_dir=str(tmp_path / "eval"), distributed=False
        )
    inputs = [test_mapper(d) for d in dicts]
    for x in inputs:
        if "4000x4000" in x["file_name"]:  # shrunk to the test size, square kept square
            side = x["image"].shape[1]
            assert x["image"].shape[2] == side and side <= input_size_bound(cfg)
            if "INPUT.MIN_SIZE_TEST" in recipe_input_size_keys(cfg):
                assert side == cfg.INPUT.MIN_SIZE_TEST
    if config_name not in BIG_INFERENCE:
        inputs = [x for x in inputs if "4000x4000" not in x["file_name"]]
    with torch.no_grad():
        outputs = model(inputs)  # one batch: the odd sizes padded together
    evaluator.reset()
    for x, output in zip(inputs, outputs):
        assert_output_size(output, x["height"], x["width"], cfg)
        if not (is_semantic(cfg) and "4000x4000" in x["file_name"]):
            evaluator.process([x], [output])
        OUTCOMES["odd image", config_name, VALID] += 1
    results = evaluator.evaluate()
    if is_semantic(cfg):
        assert 0 <= results["sem_seg"]["mIoU"] <= 100
        return
    assert {"bbox", "segm", "boundary"} <= set(results)
    for task in ("bbox", "segm", "boundary"):
        assert all(math.isnan(v) or 0 <= v <= 100 for v in results[task].values()), task
    with open(tmp_path / "eval" / "coco_instances_results.json") as f:
        predictions = json.load(f)
    sizes = {d["image_id"]: [d["height"], d["width"]] for d in dicts}
    assert predictions and {p["image_id"] for p in predictions} <= set(sizes)
    for p in predictions:
        assert p["segmentation"]["size"] == sizes[p["image_id"]]


@pytest.mark.integration
@pytest.mark.parametrize("config_name", TOY_CONFIGS)
def test_odd_images_through_the_demo(odd_images, tmp_path, config_name):
    cfg = tiny_cfg(config_name, tmp_path).clone()
    weights = tmp_path / "random.pth"
    torch.save({"model": build_tiny_model(cfg).state_dict()}, weights)
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(weights)
    cfg.DATASETS.TEST = (odd_images["sem_seg"] if is_semantic(cfg) else odd_images["coco"],)
    cfg.freeze()
    files = odd_images["files"]
    if config_name != DEMO_ALL_IMAGES:
        files = [f for f in files if os.path.basename(f) in DEMO_SOME_IMAGES]
    predictor = Predictor(cfg, confidence_threshold=0.0)
    out_dir, json_file = tmp_path / "drawn", tmp_path / "predictions.json"
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
    drawn, skipped = run_on_images(predictor, files, str(out_dir), metadata, str(json_file), False)
    assert (drawn, skipped) == (len(files), [])
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        drawing = np.asarray(Image.open(out_dir / f"{stem}.png"))
        assert drawing.shape == odd_images["sizes"][os.path.basename(path)] + (3,), path
        OUTCOMES["demo", config_name, VALID] += 1
    if not is_semantic(cfg):
        predictions = json.loads(json_file.read_text())
        assert [(im["height"], im["width"]) for im in predictions["images"]] == [
            odd_images["sizes"][os.path.basename(p)] for p in files
        ]


def test_demo_scales_16_bit_images_instead_of_clipping(odd_images, tmp_path):
    """Detectron2's read_image clipped 16-bit values above 255 (a white image)."""
    cfg = tiny_cfg("mask_rcnn.yaml", tmp_path).clone()
    weights = tmp_path / "random.pth"
    torch.save({"model": build_tiny_model(cfg).state_dict()}, weights)
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(weights)
    cfg.freeze()
    path = next(f for f in odd_images["files"] if f.endswith("depth_I16.png"))
    predictor = Predictor(cfg, confidence_threshold=1.01)  # draws nothing over the image
    run_on_images(predictor, [path], str(tmp_path / "one.png"), metadata_for(cfg), None, False)
    drawing = np.asarray(Image.open(tmp_path / "one.png")).astype(np.int64)
    expected = read_image_robust(path, "RGB").astype(np.int64)
    assert np.abs(drawing - expected).mean() < 2.0
    assert (expected < 200).mean() > 0.5  # the clipped reading would be white almost everywhere


@pytest.mark.integration
def test_zz_odd_image_case_counts():
    """Every odd image reached the end of every toy config's pipeline and of the demo."""
    stages = {(stage, setting) for stage, setting, _ in OUTCOMES}
    if not all(("odd image", c) in stages and ("demo", c) in stages for c in TOY_CONFIGS):
        pytest.skip("the odd-image tests did not all run in this session (run the whole file)")
    print_outcomes("odd image")
    print_outcomes("demo")
    assert all(outcome == VALID for stage, _, outcome in OUTCOMES if stage in ("odd image", "demo"))
