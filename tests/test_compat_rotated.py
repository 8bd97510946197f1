"""Rotated-box operators of the portable ``detectron2._C`` (projects/compat/portable_c/rotated.py).

Every operator is compared with a plain reference written here from Detectron2's documented
semantics (scalar Python loops, one pair / one sample at a time), and exercised through the v0.6
callers: ``detectron2.structures.pairwise_iou_rotated``, ``detectron2.layers.nms_rotated`` /
``batched_nms_rotated`` (via ``torch.ops.detectron2.nms_rotated``) and
``detectron2.layers.ROIAlignRotated``.
"""

import math
from pathlib import Path

import detectron2._C as installed_C
import numpy as np
import pytest
import torch
import torchvision
from detectron2.layers import ROIAlignRotated, batched_nms_rotated
from detectron2.layers import nms_rotated as d2_nms_rotated
from detectron2.layers.roi_align_rotated import roi_align_rotated
from detectron2.structures import RotatedBoxes, pairwise_iou_rotated

# The portable operators, tested through their own module whichever detectron2._C is installed
# (an official build compiles its own); the tests through detectron2.layers run the installed ones.
from projects.compat import portable_c

REPO_FILE = (
    Path(__file__).resolve().parent.parent / "projects" / "compat" / "portable_c" / "rotated.py"
)


# ----------------------------------------------------------------------------- references


def ref_corners(box):
    """Corners of one box from the formula in RotatedBoxes' docstring (scalar Python)."""
    xc, yc, w, h, angle = [float(v) for v in box]
    theta = math.radians(angle)
    out = []
    for x, y in ((xc - w / 2, yc - h / 2), (xc + w / 2, yc - h / 2)):
        out.append(
            (
                math.sin(theta) * (y - yc) + math.cos(theta) * (x - xc) + xc,
                math.cos(theta) * (y - yc) - math.sin(theta) * (x - xc) + yc,
            )
        )
    for x, y in ((xc + w / 2, yc + h / 2), (xc - w / 2, yc + h / 2)):
        out.append(
            (
                math.sin(theta) * (y - yc) + math.cos(theta) * (x - xc) + xc,
                math.cos(theta) * (y - yc) - math.sin(theta) * (x - xc) + yc,
            )
        )
    return out


def signed_area(poly):
    return 0.5 * sum(
        poly[i][0] * poly[(i + 1) % len(poly)][1] - poly[(i + 1) % len(poly)][0] * poly[i][1]
        for i in range(len(poly))
    )


def ref_intersection(poly, clip):
    """Area of the intersection of two convex polygons (scalar Sutherland-Hodgman)."""
    if signed_area(poly) < 0:
        poly = poly[::-1]
    if signed_area(clip) < 0:
        clip = clip[::-1]
    out = list(poly)
    for k in range(len(clip)):
        (ax, ay), (bx, by) = clip[k], clip[(k + 1) % len(clip)]

        def side(p):
            return (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax)

        src, out = out, []
        for i, cur in enumerate(src):
            prev = src[i - 1]
            s_cur, s_prev = side(cur), side(prev)
            if (s_cur >= 0) != (s_prev >= 0):
                t = s_prev / (s_prev - s_cur)
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if s_cur >= 0:
                out.append(cur)
        if not out:
            return 0.0
    return abs(signed_area(out))


def ref_iou(box1, box2):
    area1, area2 = float(box1[2]) * float(box1[3]), float(box2[2]) * float(box2[3])
    if area1 <= 0 or area2 <= 0:
        return 0.0
    inter = ref_intersection(ref_corners(box1), ref_corners(box2))
    return inter / (area1 + area2 - inter)


def sampled_iou(box1, box2, steps=600):
    """IoU by counting points of a dense grid inside both boxes (tests the angle convention)."""

    def inside(box, x, y):
        xc, yc, w, h, angle = [float(v) for v in box]
        theta = math.radians(angle)
        # Inverse of the documented rotation: box-local offsets of the point.
        dx = math.cos(theta) * (x - xc) - math.sin(theta) * (y - yc)
        dy = math.sin(theta) * (x - xc) + math.cos(theta) * (y - yc)
        return (np.abs(dx) <= w / 2) & (np.abs(dy) <= h / 2)

    lo = [min(float(b[k]) - math.hypot(b[2], b[3]) / 2 for b in (box1, box2)) for k in (0, 1)]
    hi = [max(float(b[k]) + math.hypot(b[2], b[3]) / 2 for b in (box1, box2)) for k in (0, 1)]
    x, y = np.meshgrid(np.linspace(lo[0], hi[0], steps), np.linspace(lo[1], hi[1], steps))
    in1, in2 = inside(box1, x, y), inside(box2, x, y)
    return (in1 & in2).sum() / max((in1 | in2).sum(), 1)


def random_boxes(n, generator, spread=20.0, size=10.0):
    ctr = torch.rand(n, 2, generator=generator, dtype=torch.float64) * spread
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * size + 0.5
    angle = torch.rand(n, 1, generator=generator, dtype=torch.float64) * 360 - 180
    return torch.cat([ctr, wh, angle], dim=1).float()


def ref_greedy_nms(boxes, scores, threshold):
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep, dropped = [], set()
    for pos, i in enumerate(order):
        if i in dropped:
            continue
        keep.append(i)
        for j in order[pos + 1 :]:
            if j not in dropped and ref_iou(boxes[i], boxes[j]) >= threshold:
                dropped.add(j)
    return keep


def ref_bilinear(image, y, x):
    """Detectron2's RoIAlign bilinear sample of a (H, W) list-of-lists image (scalar)."""
    height, width = len(image), len(image[0])
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    return (
        (1 - ly) * (1 - lx) * image[y_low][x_low]
        + (1 - ly) * lx * image[y_low][x_high]
        + ly * (1 - lx) * image[y_high][x_low]
        + ly * lx * image[y_high][x_high]
    )


def ref_roi_align_rotated(features, roi, scale, out_h, out_w, ratio):
    """One roi, all channels, one sample at a time: (C, out_h, out_w) nested lists."""
    batch, xc, yc, w, h, angle = [float(v) for v in roi]
    xc, yc, w, h = xc * scale - 0.5, yc * scale - 0.5, w * scale, h * scale
    theta = math.radians(angle)
    grid_h = ratio if ratio > 0 else math.ceil(h / out_h)
    grid_w = ratio if ratio > 0 else math.ceil(w / out_w)
    count = max(grid_h * grid_w, 1)
    result = []
    for image in features[int(batch)].tolist():
        rows = []
        for ph in range(out_h):
            row = []
            for pw in range(out_w):
                total = 0.0
                for iy in range(grid_h):
                    for ix in range(grid_w):
                        local_y = -h / 2 + (ph + (iy + 0.5) / grid_h) * h / out_h
                        local_x = -w / 2 + (pw + (ix + 0.5) / grid_w) * w / out_w
                        y = local_y * math.cos(theta) - local_x * math.sin(theta) + yc
                        x = local_y * math.sin(theta) + local_x * math.cos(theta) + xc
                        total += ref_bilinear(image, y, x)
                row.append(total / count)
            rows.append(row)
        result.append(rows)
    return result


# ----------------------------------------------------------------------------- install


def test_installed_module_is_the_repository_file():
    if not getattr(installed_C, "PORTABLE", False):
        pytest.skip(f"a compiled detectron2._C is installed ({installed_C.__file__})")
    installed = Path(installed_C.__file__).resolve().parent / "rotated.py"
    assert (
        installed.read_text() == REPO_FILE.read_text()
    ), f"{installed} differs from {REPO_FILE}: rerun tools/install_detectron2.py"


# ----------------------------------------------------------------------------- box_iou_rotated


def test_box_iou_rotated_matches_plain_clipping_on_random_boxes():
    gen = torch.Generator().manual_seed(0)
    boxes1, boxes2 = random_boxes(25, gen), random_boxes(20, gen)
    ious = portable_c.box_iou_rotated(boxes1, boxes2)
    assert ious.shape == (25, 20) and ious.dtype == torch.float32
    expected = torch.tensor([[ref_iou(a, b) for b in boxes2] for a in boxes1])
    assert (expected > 0.05).sum() > 20, "the random boxes should overlap often"
    torch.testing.assert_close(ious, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "box1, box2",
    [
        ([5, 3, 4, 2, 0], [6, 3.5, 4, 2, 30]),
        ([5, 3, 4, 2, 0], [5, 3, 4, 2, 90]),
        ([0, 0, 8, 2, 45], [1, 1, 8, 2, -45]),
        ([10, 10, 6, 3, 120], [11, 9, 2, 7, 10]),
        ([3, 4, 10, 10, 0], [3.5, 4.5, 2, 3, 33]),  # contained
    ],
)
def test_box_iou_rotated_matches_dense_sampling(box1, box2):
    value = portable_c.box_iou_rotated(torch.tensor([box1]), torch.tensor([box2]))[0, 0].item()
    assert value > 0
    assert value == pytest.approx(sampled_iou(box1, box2), abs=0.01)


def test_box_iou_rotated_special_cases():
    boxes = torch.tensor(
        [
            [5.0, 3.0, 4.0, 2.0, 0.0],
            [5.0, 3.0, 2.0, 4.0, 90.0],  # the same region as box 0
            [5.0, 3.0, 4.0, 2.0, 180.0],  # the same region as box 0
            [100.0, 100.0, 3.0, 3.0, 45.0],  # far from everything
            [5.0, 3.0, 0.0, 2.0, 0.0],  # zero width
            [5.0, 3.0, 0.0, 0.0, 30.0],  # a point
            [5.0, 3.0, 1.0, 1.0, 17.0],  # inside box 0
        ]
    )
    ious = portable_c.box_iou_rotated(boxes, boxes)
    assert torch.isfinite(ious).all()
    torch.testing.assert_close(ious[:3, :3], torch.ones(3, 3), atol=1e-5, rtol=0)
    assert ious[3, 3].item() == pytest.approx(1.0, abs=1e-6)
    assert (ious[3, :3] == 0).all() and (ious[:3, 3] == 0).all()
    assert (ious[4:6] == 0).all() and (ious[:, 4:6] == 0).all()
    assert ious[0, 6].item() == pytest.approx(1.0 / 8.0, abs=1e-6)
    torch.testing.assert_close(ious, ious.T)


def test_box_iou_rotated_axis_aligned_equals_torchvision():
    gen = torch.Generator().manual_seed(1)
    boxes1, boxes2 = random_boxes(30, gen), random_boxes(15, gen)
    boxes1[:, 4] = 0.0
    boxes2[:, 4] = 0.0
    # A box turned by 90 degrees with width and height swapped covers the same region.
    boxes2_turned = boxes2[:, [0, 1, 3, 2, 4]].clone()
    boxes2_turned[:, 4] = 90.0

    def xyxy(b):
        return torch.cat([b[:, :2] - b[:, 2:4] / 2, b[:, :2] + b[:, 2:4] / 2], dim=1)

    expected = torchvision.ops.box_iou(xyxy(boxes1), xyxy(boxes2))
    assert (expected > 0).any()
    torch.testing.assert_close(
        portable_c.box_iou_rotated(boxes1, boxes2), expected, atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        portable_c.box_iou_rotated(boxes1, boxes2_turned), expected, atol=1e-5, rtol=0
    )


def test_box_iou_rotated_symmetric_empty_and_dtype():
    gen = torch.Generator().manual_seed(2)
    boxes1, boxes2 = random_boxes(12, gen), random_boxes(9, gen)
    torch.testing.assert_close(
        portable_c.box_iou_rotated(boxes1, boxes2), portable_c.box_iou_rotated(boxes2, boxes1).T
    )
    assert portable_c.box_iou_rotated(boxes1[:0], boxes2).shape == (0, 9)
    assert portable_c.box_iou_rotated(boxes1, boxes2[:0]).shape == (12, 0)
    assert portable_c.box_iou_rotated(boxes1.double(), boxes2.double()).dtype == torch.float64
    with pytest.raises(ValueError, match="boxes1"):
        portable_c.box_iou_rotated(boxes1[:, :4], boxes2)


def test_pairwise_iou_rotated_through_detectron2_structures():
    gen = torch.Generator().manual_seed(3)
    boxes1, boxes2 = random_boxes(8, gen), random_boxes(6, gen)
    ious = pairwise_iou_rotated(RotatedBoxes(boxes1), RotatedBoxes(boxes2))
    expected = torch.tensor([[ref_iou(a, b) for b in boxes2] for a in boxes1])
    torch.testing.assert_close(ious, expected, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- nms_rotated


def clustered_boxes(n, generator):
    """Boxes around a few centres so that NMS has plenty to suppress."""
    centres = torch.tensor([[10.0, 10.0], [30.0, 12.0], [18.0, 30.0]])
    pick = torch.randint(0, 3, (n,), generator=generator)
    boxes = random_boxes(n, generator, spread=4.0, size=8.0)
    boxes[:, :2] += centres[pick]
    return boxes


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_nms_rotated_matches_greedy_reference(threshold):
    gen = torch.Generator().manual_seed(4)
    boxes = clustered_boxes(40, gen)
    scores = torch.rand(40, generator=gen)
    keep = portable_c.nms_rotated(boxes, scores, threshold)
    expected = ref_greedy_nms(boxes, scores, threshold)
    assert keep.dtype == torch.int64
    assert 1 < len(expected) < 40
    assert keep.tolist() == expected
    assert d2_nms_rotated(boxes, scores, threshold).tolist() == expected


def test_nms_rotated_empty_and_registered_op():
    empty = portable_c.nms_rotated(torch.zeros(0, 5), torch.zeros(0), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64
    boxes = torch.tensor([[5.0, 5.0, 4.0, 2.0, 0.0], [5.0, 5.0, 2.0, 4.0, 90.0]])
    # Same region: the lower score is dropped; kept indices follow decreasing score.
    assert torch.ops.detectron2.nms_rotated(boxes, torch.tensor([0.2, 0.9]), 0.5).tolist() == [1]


def test_batched_nms_rotated_keeps_classes_apart():
    gen = torch.Generator().manual_seed(5)
    boxes = clustered_boxes(45, gen)
    boxes[:, :2] -= 20.0  # negative coordinates exercise batched_nms_rotated's offsets
    scores = torch.rand(45, generator=gen)
    classes = torch.randint(0, 3, (45,), generator=gen)
    keep = batched_nms_rotated(boxes, scores, classes, 0.3)
    expected = []
    for cls in range(3):
        members = (classes == cls).nonzero().flatten().tolist()
        local = ref_greedy_nms(boxes[members], scores[members], 0.3)
        expected += [members[i] for i in local]
    expected.sort(key=lambda i: -float(scores[i]))
    assert keep.tolist() == expected


# ----------------------------------------------------------------------------- roi_align_rotated


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_rotated_angle_zero_equals_torchvision_aligned(sampling_ratio):
    gen = torch.Generator().manual_seed(6)
    features = torch.randn(2, 3, 12, 14, generator=gen)
    rois = torch.tensor(
        [
            [0, 12.0, 10.0, 9.0, 7.0, 0.0],
            [1, 4.3, 5.1, 14.0, 3.5, 0.0],
            [1, 20.0, 18.0, 30.0, 25.0, 0.0],  # partly outside the map
            [0, 25.9, 2.0, 2.0, 4.0, 0.0],
        ]
    )
    out = portable_c.roi_align_rotated_forward(features, rois, 0.5, 3, 4, sampling_ratio)
    xyxy = torch.cat(
        [rois[:, :1], rois[:, 1:3] - rois[:, 3:5] / 2, rois[:, 1:3] + rois[:, 3:5] / 2], 1
    )
    expected = torchvision.ops.roi_align(
        features, xyxy, (3, 4), spatial_scale=0.5, sampling_ratio=sampling_ratio, aligned=True
    )
    assert out.shape == (4, 3, 3, 4)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_roi_align_rotated_quarter_turn_is_a_transpose():
    gen = torch.Generator().manual_seed(7)
    features = torch.randn(1, 2, 11, 13, generator=gen)
    roi = torch.tensor([[0, 6.2, 4.7, 5.0, 3.0, 90.0]])
    out = portable_c.roi_align_rotated_forward(features, roi, 1.0, 3, 4, 2)
    # Sample (local_y, local_x) of the turned roi reads the map at (y_c - local_x, x_c + local_y):
    # the unturned roi on the transposed map, mirrored along the pooled width.
    roi_t = torch.tensor([[0, 4.7, 6.2, 5.0, 3.0, 0.0]])
    out_t = portable_c.roi_align_rotated_forward(features.transpose(2, 3), roi_t, 1.0, 3, 4, 2)
    torch.testing.assert_close(out, out_t.flip(3), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, out_t, atol=1e-3)


@pytest.mark.parametrize("sampling_ratio", [0, 3])
def test_roi_align_rotated_matches_per_sample_reference(sampling_ratio):
    gen = torch.Generator().manual_seed(8)
    features = torch.randn(2, 2, 9, 10, generator=gen, dtype=torch.float64)
    rois = torch.tensor(
        [
            [0, 5.0, 4.0, 6.0, 3.0, 30.0],
            [1, 3.0, 7.5, 8.0, 5.0, -65.0],
            [1, 9.0, 1.0, 7.0, 9.0, 150.0],  # reaches past the map
        ],
        dtype=torch.float64,
    )
    out = portable_c.roi_align_rotated_forward(features, rois, 1.0, 2, 3, sampling_ratio)
    expected = torch.tensor(
        [ref_roi_align_rotated(features, roi, 1.0, 2, 3, sampling_ratio) for roi in rois],
        dtype=torch.float64,
    )
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=0)


def test_roi_align_rotated_backward_is_the_adjoint_of_forward():
    gen = torch.Generator().manual_seed(9)
    features = torch.randn(2, 3, 8, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 4.0, 3.0, 5.0, 4.0, 20.0], [1, 6.0, 5.0, 9.0, 3.0, -110.0], [1, 2, 2, 1.5, 2.5, 0]],
        dtype=torch.float64,
    )
    out = portable_c.roi_align_rotated_forward(features, rois, 1.0, 3, 3, 0)
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    (expected,) = torch.autograd.grad(out, features, grad)
    got = portable_c.roi_align_rotated_backward(grad, rois, 1.0, 3, 3, 2, 3, 8, 9, 0)
    assert got.shape == features.shape
    assert expected.abs().sum() > 0
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_roi_align_rotated_gradcheck_through_detectron2_layer():
    gen = torch.Generator().manual_seed(10)
    features = torch.randn(1, 2, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 3.0, 2.5, 4.0, 3.0, 35.0], [0, 4.0, 3.0, 6.0, 2.0, -80.0]], dtype=torch.float64
    )
    layer = ROIAlignRotated((2, 2), spatial_scale=1.0, sampling_ratio=2)
    assert torch.autograd.gradcheck(lambda x: layer(x, rois), (features,))
    # The functional form with a different spatial scale and adaptive sampling.
    assert torch.autograd.gradcheck(
        lambda x: roi_align_rotated(
            x, rois * torch.tensor([1, 2, 2, 2, 2, 1.0]).double(), (2, 3), 0.5, 0
        ),
        (features,),
    )


def test_roi_align_rotated_rejects_bad_rois():
    features = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="batch indices"):
        portable_c.roi_align_rotated_forward(
            features, torch.tensor([[1, 2, 2, 2, 2, 0.0]]), 1.0, 2, 2, 0
        )
    with pytest.raises(ValueError, match="negative size"):
        portable_c.roi_align_rotated_forward(
            features, torch.tensor([[0, 2, 2, -2, 2, 0.0]]), 1.0, 2, 2, 0
        )
    empty = portable_c.roi_align_rotated_forward(features, torch.zeros(0, 6), 1.0, 2, 2, 0)
    assert empty.shape == (0, 1, 2, 2)


def test_chunked_evaluation_gives_the_same_results(monkeypatch):
    """Memory-bounding chunks (pairs, mask rows, rois, gathers, NMS blocks) change no result."""
    gen = torch.Generator().manual_seed(11)
    boxes = clustered_boxes(30, gen)
    scores = torch.rand(30, generator=gen)
    features = torch.randn(2, 3, 10, 11, generator=gen, dtype=torch.float64)
    rois = torch.cat(
        [
            torch.randint(0, 2, (9, 1), generator=gen).double(),
            random_boxes(9, gen, 10, 12).double(),
        ],
        dim=1,
    )
    grad = torch.randn(9, 3, 2, 3, generator=gen, dtype=torch.float64)

    def run():
        return (
            portable_c.box_iou_rotated(boxes, boxes),
            portable_c.nms_rotated(boxes, scores, 0.3),
            portable_c.roi_align_rotated_forward(features, rois, 0.8, 2, 3, 0),
            portable_c.roi_align_rotated_backward(grad, rois, 0.8, 2, 3, 2, 3, 10, 11, 0),
        )

    whole = run()
    for name, value in [
        ("_PAIR_CHUNK", 7),
        ("_MASK_CHUNK", 50),
        ("_SAMPLE_CHUNK", 40),
        ("_GATHER_CHUNK", 20),
        ("_NMS_BLOCK", 4),
    ]:
        monkeypatch.setattr(portable_c.rotated, name, value)
    chunked = run()
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
