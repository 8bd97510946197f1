"""Full-image mask postprocessing (projects.modeling.postprocessing) against per-instance cv2
resizes and per-instance np.nonzero boxes, Detectron2's detector_postprocess on the same input,
and the COCO evaluation fed with its output."""

import math

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import BitMasks, Boxes, Instances, polygons_to_bitmask

from projects.evaluation.coco_boundary import COCOBoundaryEvaluator
from projects.modeling import (
    CHUNK_ELEMENTS,
    default_chunk_size,
    full_image_detector_postprocess,
    full_image_masks_postprocess,
    mask_boxes,
    resize_full_image_masks,
)
from tests.helpers.tiny_coco import register_tiny_coco, write_tiny_coco

# Pixels whose reference value lies this close to the threshold may fall either way (float
# rounding differs between cv2 and torch, and between CPUs); they are left out of comparisons.
MARGIN = 1e-4

# (image_size (h, w), padded_size (Hp, Wp), mask size (H', W'), output (height, width))
CASES = {
    "stride4-upscale-landscape": ((60, 84), (64, 96), (16, 24), (90, 126)),
    "stride8-downscale-portrait": ((100, 75), (104, 80), (13, 10), (50, 37)),
    "stride1-same-size": ((30, 40), (32, 48), (32, 48), (30, 40)),
    "stride2-odd-padding": ((30, 45), (33, 47), (17, 24), (70, 20)),
    "stride4-no-padding-square": ((56, 56), (56, 56), (14, 14), (120, 80)),
}


def _reference(masks, image_size, padded_size, output_size):
    """Per-instance cv2 bilinear: up to the padded input, crop, resize. (N, height, width)."""
    (h, w), (hp, wp), (height, width) = image_size, padded_size, output_size
    out = np.zeros((len(masks), height, width), np.float32)
    for i, m in enumerate(np.asarray(masks, np.float32)):
        up = cv2.resize(m, (wp, hp), interpolation=cv2.INTER_LINEAR)
        out[i] = cv2.resize(up[:h, :w], (width, height), interpolation=cv2.INTER_LINEAR)
    return out


def _assert_matches(binary, soft, threshold):
    """``binary`` equals ``soft > threshold`` wherever soft is not within MARGIN of it."""
    binary = binary.numpy()
    clear = np.abs(soft - threshold) > MARGIN
    assert clear.mean() > 0.999  # the comparison covers nearly every pixel
    assert (binary[clear] == (soft > threshold)[clear]).all()


def _random_logits(num, mask_size, seed=0):
    return torch.from_numpy(np.random.RandomState(seed).randn(num, *mask_size).astype(np.float32))


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_per_instance_cv2_resize(case):
    image_size, padded_size, mask_size, output_size = CASES[case]
    logits = _random_logits(5, mask_size)
    binary = resize_full_image_masks(logits, image_size, padded_size, output_size, threshold=0.0)
    assert binary.shape == (5,) + output_size and binary.dtype == torch.bool
    _assert_matches(binary, _reference(logits, image_size, padded_size, output_size), 0.0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_probabilities_match_per_instance_cv2_resize(case):
    image_size, padded_size, mask_size, output_size = CASES[case]
    probs = _random_logits(4, mask_size, seed=1).sigmoid()
    binary = resize_full_image_masks(probs, image_size, padded_size, output_size, threshold=0.5)
    _assert_matches(binary, _reference(probs, image_size, padded_size, output_size), 0.5)


def _single_reference(masks, image_size, padded_size, output_size):
    """Per-instance cv2 bilinear in one resize: the padded masks to the output's scale, then
    the top-left output-sized part. (N, height, width)."""
    (h, w), (hp, wp), (height, width) = image_size, padded_size, output_size
    size = (int(round(wp * width / w)), int(round(hp * height / h)))
    out = np.zeros((len(masks), height, width), np.float32)
    for i, m in enumerate(np.asarray(masks, np.float32)):
        out[i] = cv2.resize(m, size, interpolation=cv2.INTER_LINEAR)[:height, :width]
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_single_resize_matches_one_per_instance_cv2_resize(case):
    image_size, padded_size, mask_size, output_size = CASES[case]
    probs = _random_logits(4, mask_size, seed=3).sigmoid()
    binary = resize_full_image_masks(
        probs, image_size, padded_size, output_size, threshold=0.5, single_resize=True
    )
    assert binary.shape == (4,) + output_size
    _assert_matches(binary, _single_reference(probs, image_size, padded_size, output_size), 0.5)
    if image_size == padded_size:  # unpadded: straight to the output, unlike the two steps
        direct = cv2.resize(np.asarray(probs[0]), output_size[::-1], interpolation=cv2.INTER_LINEAR)
        _assert_matches(binary[:1], direct[None], 0.5)
        two_steps = resize_full_image_masks(
            probs, image_size, padded_size, output_size, threshold=0.5
        )
        assert (two_steps != binary).any()


@pytest.mark.parametrize("chunk_size", [1, 2, 7, None])
def test_chunks_match_reference_and_bound_the_batch(monkeypatch, chunk_size):
    image_size, padded_size, mask_size, output_size = CASES["stride4-upscale-landscape"]
    logits = _random_logits(7, mask_size, seed=2)
    batches = []
    interpolate = torch.nn.functional.interpolate

    def recording_interpolate(x, *args, **kwargs):
        batches.append(x.shape[0])
        return interpolate(x, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "interpolate", recording_interpolate)
    binary = resize_full_image_masks(
        logits, image_size, padded_size, output_size, threshold=0.0, chunk_size=chunk_size
    )
    _assert_matches(binary, _reference(logits, image_size, padded_size, output_size), 0.0)
    expected_chunk = 7 if chunk_size is None else chunk_size  # default: everything fits
    assert max(batches) == min(expected_chunk, 7)
    assert sum(batches) == 2 * 7  # two resizes per instance, each instance once


def test_default_chunk_bounds_intermediates_at_coco_test_size():
    # 100 detections of an 800 x 1333 image padded to 800 x 1344 (size divisibility 32).
    padded, output = (800, 1344), (800, 1333)
    chunk = default_chunk_size(padded, output)
    assert chunk * 800 * 1344 <= CHUNK_ELEMENTS  # each float intermediate within the budget
    assert CHUNK_ELEMENTS * 4 <= 128 * 2**20  # which is at most 128 MB of float32
    assert 1 < chunk < 100  # chunked, in a handful of chunks
    assert math.ceil(100 / chunk) <= 4


def test_zero_instances_give_empty_outputs_at_the_output_size():
    image_size, padded_size, mask_size, output_size = CASES["stride8-downscale-portrait"]
    masks, boxes, nonempty = full_image_masks_postprocess(
        torch.zeros((0,) + mask_size), image_size, padded_size, output_size, threshold=0.0
    )
    assert masks.shape == (0,) + output_size and boxes.shape == (0, 4) and nonempty.shape == (0,)
    results = Instances(
        image_size,
        pred_masks=torch.zeros((0,) + mask_size),
        scores=torch.zeros(0),
        pred_classes=torch.zeros(0, dtype=torch.int64),
    )
    out = full_image_detector_postprocess(
        results, *output_size, padded_size=padded_size, mask_threshold=0.0
    )
    assert len(out) == 0 and out.image_size == output_size
    assert out.pred_masks.shape == (0,) + output_size and out.pred_boxes.tensor.shape == (0, 4)
    assert instances_to_coco_json(out, 1) == []


def test_bool_masks_at_stride_1_come_back_unchanged():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 7, 11] = True
    out = resize_full_image_masks(masks, (10, 12), (10, 12), (10, 12), threshold=0.5)
    assert torch.equal(out, masks)


def _np_boxes(masks):
    """Per-instance np.nonzero boxes in the pixel-corner convention; None for empty masks."""
    boxes = []
    for m in np.asarray(masks):
        ys, xs = np.nonzero(m)
        boxes.append(None if len(xs) == 0 else [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return boxes


def test_mask_boxes_match_per_instance_nonzero():
    rng = np.random.RandomState(3)
    masks = np.zeros((6, 23, 31), bool)
    masks[0] = rng.rand(23, 31) > 0.97  # scattered pixels
    masks[1, 5, 7] = True  # one pixel: [7, 5, 8, 6]
    masks[2, 3:20, 0:31] = True  # touches the left and right edges
    # masks[3] empty
    masks[4, 22, 30] = True  # the last pixel
    masks[5, 4:9, 10:12] = True
    masks[5, 15, 25] = True
    boxes, nonempty = mask_boxes(torch.from_numpy(masks))
    assert boxes.dtype == torch.float32 and boxes.shape == (6, 4)
    for box, flag, expected in zip(boxes.tolist(), nonempty.tolist(), _np_boxes(masks)):
        assert flag == (expected is not None)
        assert box == (expected if expected is not None else [0.0] * 4)
    assert boxes[1].tolist() == [7, 5, 8, 6]
    d2 = BitMasks(torch.from_numpy(masks)).get_bounding_boxes().tensor
    assert torch.equal(boxes[nonempty], d2[nonempty])  # Detectron2's convention


def _instances(image_size, logits):
    num = len(logits)
    return Instances(
        image_size,
        pred_masks=logits,
        scores=torch.linspace(0.9, 0.5, num),
        pred_classes=torch.arange(num) % 3,
    )


def test_empty_masks_are_dropped_and_boxes_come_from_masks():
    image_size, padded_size, mask_size, output_size = CASES["stride4-upscale-landscape"]
    logits = _random_logits(5, mask_size, seed=4)
    logits[1] = -1.0  # empty everywhere
    logits[3] = -1.0
    logits[3, -1, :] = 0.5  # positive in padding rows 61-63 only: empty after the crop
    results = _instances(image_size, logits)
    out = full_image_detector_postprocess(
        results, *output_size, padded_size=padded_size, mask_threshold=0.0
    )
    kept = [0, 2, 4]
    assert out.image_size == output_size and len(out) == 3
    assert torch.equal(out.scores, results.scores[kept])
    assert torch.equal(out.pred_classes, results.pred_classes[kept])
    soft = _reference(logits, image_size, padded_size, output_size)
    _assert_matches(out.pred_masks, soft[kept], 0.0)
    for box, expected in zip(out.pred_boxes.tensor.tolist(), _np_boxes(out.pred_masks)):
        assert box == expected
    assert (out.pred_boxes.area() > 0).all()  # no all-zero box
    _, _, nonempty = full_image_masks_postprocess(
        logits, image_size, padded_size, output_size, threshold=0.0
    )
    assert nonempty.tolist() == [True, False, True, False, True]
    uncropped = resize_full_image_masks(
        logits[3:4], padded_size, padded_size, padded_size, threshold=0.0
    )
    assert uncropped[0, 61:].all() and not uncropped[0, :61].any()


def test_given_boxes_are_scaled_and_clipped_when_not_from_masks():
    image_size, padded_size, mask_size, output_size = CASES["stride8-downscale-portrait"]
    results = _instances(image_size, _random_logits(2, mask_size, seed=5))
    results.pred_boxes = Boxes(torch.tensor([[10.0, 20.0, 50.0, 60.0], [-4.0, 0.0, 80.0, 90.0]]))
    out = full_image_detector_postprocess(
        results,
        *output_size,
        padded_size=padded_size,
        mask_threshold=0.0,
        boxes_from_masks=False,
    )
    sx, sy = 37 / 75, 50 / 100
    expected = [[10 * sx, 20 * sy, 50 * sx, 60 * sy], [0.0, 0.0, 37.0, 45.0]]
    assert torch.allclose(out.pred_boxes.tensor, torch.tensor(expected))
    assert results.pred_boxes.tensor[1, 0] == -4.0  # the input is not modified


def test_bad_input_raises_naming_the_problem():
    with pytest.raises(ValueError, match=r"\(N, H', W'\), got shape \(2, 1, 8, 8\)"):
        resize_full_image_masks(torch.zeros(2, 1, 8, 8), (8, 8), (8, 8), (8, 8), threshold=0.0)
    with pytest.raises(ValueError, match=r"image_size \(40, 8\) exceeds padded_size \(32, 8\)"):
        resize_full_image_masks(torch.zeros(2, 8, 2), (40, 8), (32, 8), (8, 8), threshold=0.0)
    with pytest.raises(ValueError, match="output_size must be two positive integers"):
        resize_full_image_masks(torch.zeros(2, 8, 8), (8, 8), (8, 8), (0, 8), threshold=0.0)
    with pytest.raises(ValueError, match="needs results.pred_masks"):
        full_image_detector_postprocess(
            Instances((8, 8), scores=torch.ones(1)), 8, 8, padded_size=(8, 8), mask_threshold=0.0
        )


def _iou(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return (a & b).sum() / (a | b).sum()


def test_detectron2_detector_postprocess_gets_full_image_masks_wrong():
    """Why the shared postprocess exists: Detectron2 pastes a full-image mask into the box."""
    truth = np.zeros((64, 64), bool)
    truth[16:40, 8:32] = True  # box [8, 16, 32, 40]
    logits = -torch.ones(1, 16, 16)  # stride 4 of the (unpadded) 64 x 64 input
    logits[0, 4:10, 2:8] = 1.0
    box = Boxes(torch.tensor([[8.0, 16.0, 32.0, 40.0]]))
    ours = full_image_detector_postprocess(
        Instances((64, 64), pred_masks=logits, pred_boxes=box, scores=torch.ones(1)),
        64,
        64,
        padded_size=(64, 64),
        mask_threshold=0.0,
    )
    assert _iou(ours.pred_masks[0], truth) > 0.99
    d2 = detector_postprocess(
        Instances((64, 64), pred_masks=logits.sigmoid()[:, None], pred_boxes=box.clone()), 64, 64
    )
    assert _iou(d2.pred_masks[0], truth) < 0.5  # silently pasted into the box: about 0.14
    with pytest.raises(IndexError):  # an (N, H, W) tensor
        detector_postprocess(Instances((64, 64), pred_masks=logits, pred_boxes=box.clone()), 64, 64)
    with pytest.raises(AssertionError, match="square"):  # non-square full-image masks
        detector_postprocess(
            Instances((64, 96), pred_masks=torch.zeros(1, 1, 16, 24), pred_boxes=box.clone()),
            64,
            96,
        )


def test_perfect_full_image_predictions_give_coco_ap_100(tmp_path):
    json_path, image_dir = write_tiny_coco(tmp_path)
    name = register_tiny_coco("postprocess_tiny_coco", json_path, image_dir)
    dicts = DatasetCatalog.get(name)
    evaluator = COCOBoundaryEvaluator(name, distributed=False)
    evaluator.reset()
    for d in dicts:
        height, width = d["height"], d["width"]
        gt = np.stack(
            [
                polygons_to_bitmask([np.asarray(p) for p in a["segmentation"]], height, width)
                for a in d["annotations"]
            ]
        )
        # The network saw the image at twice its size, padded to a multiple of 32; the masks
        # are at stride 2 of the padded input, i.e. one mask pixel per original pixel.
        image_size = (2 * height, 2 * width)
        padded = tuple(32 * math.ceil(s / 32) for s in image_size)
        logits = -torch.ones(len(gt), padded[0] // 2, padded[1] // 2)
        logits[:, :height, :width] = torch.from_numpy(gt).float() * 2 - 1
        results = Instances(
            image_size,
            pred_masks=logits,
            scores=torch.linspace(0.9, 0.8, len(gt)),
            pred_classes=torch.tensor([a["category_id"] for a in d["annotations"]]),
        )
        out = full_image_detector_postprocess(
            results, height, width, padded_size=padded, mask_threshold=0.0
        )
        assert torch.equal(out.pred_masks, torch.from_numpy(gt))
        assert len(instances_to_coco_json(out, d["image_id"])) == len(gt)
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": out}])
    metrics = evaluator.evaluate()
    for task in ("bbox", "segm", "boundary"):
        assert metrics[task]["AP"] == pytest.approx(100.0), task
