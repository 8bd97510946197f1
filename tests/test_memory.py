"""Memory under load: inference and drawing over 150 small images in one process do not grow the
resident memory (no leak from caches, hooks or the visualizer).

Every toy config (one per landed method, plus the yardstick) runs with random weights at a small
test size through the demo's predictor and drawing. The resident set size after 150 images may
exceed the one after the first 50 (allocator warm-up done) by at most ``BOUND_MB``: a leak of a
drawing per image (a 96 x 128 RGB drawing is 37 KB, its matplotlib figure far more) or of the
model's outputs breaks it.
"""

import glob
import os

import numpy as np
import pytest
import torch

from projects.demo import Predictor, draw, metadata_for
from projects.engine.setup import load_config
from tests.helpers.learning import REPO

IMAGES = 150
WARMUP = 50
BOUND_MB = 25.0
TOY_CONFIGS = sorted(
    os.path.basename(p)
    for p in glob.glob(os.path.join(REPO, "configs", "toy", "*.yaml"))
    if not os.path.basename(p).startswith("Base-") and os.path.basename(p) != "bars.yaml"
)


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
@pytest.mark.parametrize("config_name", TOY_CONFIGS)
def test_inference_over_150_images_does_not_grow_memory(config_name, tmp_path):
    opts = [
        "INPUT.MIN_SIZE_TEST", "96",
        "INPUT.MAX_SIZE_TEST", "128",
        "TEST.DETECTIONS_PER_IMAGE", "5",
        "OUTPUT_DIR", str(tmp_path),
    ]  # fmt: skip
    cfg = load_config(os.path.join(REPO, "configs", "toy", config_name), opts, freeze=False)
    torch.manual_seed(0)
    from detectron2.modeling import build_model

    weights = tmp_path / "random.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    cfg.MODEL.WEIGHTS = str(weights)
    cfg.freeze()
    predictor = Predictor(cfg, confidence_threshold=0.0)
    metadata = metadata_for(cfg)
    rng = np.random.RandomState(0)
    images = [rng.randint(0, 255, (72, 96, 3), dtype=np.uint8) for _ in range(8)]
    drawn = 0
    for i in range(IMAGES):
        image = images[i % len(images)]
        output = predictor(image)
        drawing = draw(image[:, :, ::-1], output, metadata)
        drawn += int(drawing.shape[:2] == image.shape[:2])
        if i + 1 == WARMUP:
            after_warmup = _rss_mb()
    growth = _rss_mb() - after_warmup
    assert drawn == IMAGES
    assert (
        growth < BOUND_MB
    ), f"{config_name}: RSS grew {growth:.1f} MB over {IMAGES - WARMUP} images"
