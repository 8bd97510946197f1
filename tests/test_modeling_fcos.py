"""FCOS (projects.modeling.fcos) against independent computations written here: locations,
target assignment on hand-built boxes (level, centre sampling, smallest-area tie-break), IoU /
GIoU and centerness targets, the loss normalisers, and inference (decoding, thresholds,
class-aware NMS, top-k)."""

import math

import pytest
import torch
from detectron2.structures import Boxes, ImageList, Instances

from projects.modeling.fcos import (
    FCOS,
    FCOSHead,
    assign_targets,
    centerness_targets,
    compute_locations,
    iou_loss,
    ltrb_iou,
    size_ranges,
)


def test_locations_are_stride_centres_row_major():
    loc = compute_locations(2, 3, 8)
    assert loc.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]


def test_size_ranges_bound_each_level():
    assert size_ranges([64, 128]) == [(-1.0, 64.0), (64.0, 128.0), (128.0, 1e8)]


def _reference_assignment(locs, strides, ranges, boxes, classes, k, center, radius):
    """Per location, by plain loops: the smallest-area box whose (centre region, clipped) holds
    the location and whose largest side distance lies in the level's range."""
    labels, dists, index = [], [], []
    for (x, y), s, (lo, hi) in zip(locs.tolist(), strides.tolist(), ranges.tolist()):
        best, best_area = None, math.inf
        for g, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
            d = (x - x0, y - y0, x1 - x, y1 - y)
            if center:
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                r = radius * s
                rx0, ry0 = max(cx - r, x0), max(cy - r, y0)
                rx1, ry1 = min(cx + r, x1), min(cy + r, y1)
                inside = min(x - rx0, y - ry0, rx1 - x, ry1 - y) > 0
            else:
                inside = min(d) > 0
            area = (x1 - x0) * (y1 - y0)
            if inside and lo <= max(d) <= hi and area < best_area:
                best, best_area = g, area
        labels.append(k if best is None else int(classes[best]))
        index.append(best)
        dists.append(
            None
            if best is None
            else [x - boxes[best, 0], y - boxes[best, 1], boxes[best, 2] - x, boxes[best, 3] - y]
        )
    return labels, dists, index


def _levels(sizes, strides, soi):
    locs, level_strides, level_ranges = [], [], []
    for (h, w), s, r in zip(sizes, strides, size_ranges(soi)):
        loc = compute_locations(h, w, s)
        locs.append(loc)
        level_strides.append(torch.full((len(loc),), float(s)))
        level_ranges.append(torch.tensor(r).expand(len(loc), 2))
    return torch.cat(locs), torch.cat(level_strides), torch.cat(level_ranges)


@pytest.mark.parametrize("center", [True, False])
def test_assignment_matches_a_per_location_loop(center):
    locs, strides, ranges = _levels([(16, 16), (8, 8), (4, 4)], [8, 16, 32], [40, 80])
    boxes = torch.tensor(
        [
            [10.0, 12.0, 50.0, 44.0],
            [20.0, 20.0, 120.0, 110.0],
            [0.0, 0.0, 127.0, 127.0],
            [30.0, 30.0, 46.0, 40.0],
        ]
    )
    classes = torch.tensor([2, 0, 1, 3])
    labels, dist, gt_index = assign_targets(
        locs, strides, ranges, boxes, classes, 5, center_sample=center, radius=1.5
    )
    ref_labels, ref_dist, ref_index = _reference_assignment(
        locs, strides, ranges, boxes, classes, 5, center, 1.5
    )
    assert labels.tolist() == ref_labels
    pos = [i for i, g in enumerate(ref_index) if g is not None]
    assert len(pos) > 10 and len(set(labels[pos].tolist())) >= 3  # several boxes, levels
    assert gt_index[pos].tolist() == [ref_index[i] for i in pos]
    assert torch.allclose(dist[pos], torch.tensor([ref_dist[i] for i in pos]))


def test_hand_built_boxes_go_to_the_level_of_their_size_and_their_centre():
    locs, strides, ranges = _levels([(16, 16), (8, 8)], [8, 16], [64])
    # small box (largest distance < 64 from its centre): level 0; big box: level 1
    boxes = torch.tensor([[8.0, 8.0, 40.0, 40.0], [0.0, 0.0, 128.0, 128.0]])
    labels, dist, _ = assign_targets(locs, strides, ranges, boxes, torch.tensor([0, 1]), 2)
    level = torch.cat([torch.zeros(256), torch.ones(64)])
    # level 0, location (20, 20) (index 2 * 16 + 2): inside the small box's centre region
    assert labels[2 * 16 + 2] == 0 and dist[2 * 16 + 2].tolist() == [12, 12, 20, 20]
    # the big box's centre (64, 64) is at level 1 only: locations (56, 56) .. (72, 72)
    big = (labels == 1).nonzero().squeeze(1)
    assert len(big) and bool((level[big] == 1).all())
    assert {tuple(locs[i].tolist()) for i in big} == {(56, 56), (56, 72), (72, 56), (72, 72)}
    # a location inside the small box but 1.5 strides away from its centre is negative...
    far = 4 * 16 + 1  # (12, 36): inside [8, 40] x [8, 40]; centre (24, 24), radius 12
    assert labels[far] == 2
    # ... and positive without centre sampling
    labels_all, _, _ = assign_targets(
        locs, strides, ranges, boxes, torch.tensor([0, 1]), 2, center_sample=False
    )
    assert labels_all[far] == 0


def test_overlapping_boxes_give_a_location_to_the_smaller_one():
    locs, strides, ranges = _levels([(8, 8)], [16], [])
    boxes = torch.tensor([[0.0, 0.0, 128.0, 128.0], [40.0, 40.0, 88.0, 88.0]])
    labels, _, gt_index = assign_targets(
        locs, strides, ranges, boxes, torch.tensor([0, 1]), 2, center_sample=False
    )
    centre = 3 * 8 + 3  # (56, 56): inside both
    assert labels[centre] == 1 and gt_index[centre] == 1


def test_no_boxes_means_all_background():
    locs, strides, ranges = _levels([(4, 4)], [8], [])
    labels, dist, _ = assign_targets(
        locs, strides, ranges, torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.long), 3
    )
    assert (labels == 3).all() and (dist == 0).all()


def test_iou_giou_of_distances_equal_those_of_the_boxes():
    torch.manual_seed(0)
    pred = torch.rand(50, 4) * 10 + 0.1
    target = torch.rand(50, 4) * 10 + 0.1
    iou, giou = ltrb_iou(pred, target)
    for p, t, i, g in zip(pred.tolist(), target.tolist(), iou.tolist(), giou.tolist()):
        # both boxes around the point (0, 0)
        a = (-p[0], -p[1], p[2], p[3])
        b = (-t[0], -t[1], t[2], t[3])
        iw = min(a[2], b[2]) - max(a[0], b[0])
        ih = min(a[3], b[3]) - max(a[1], b[1])
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        enclosing = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
        assert i == pytest.approx((inter + 1) / (union + 1), rel=1e-5)
        assert g == pytest.approx(
            (inter + 1) / (union + 1) - (enclosing - union) / enclosing, rel=1e-4, abs=1e-6
        )
    assert iou_loss(iou, giou, "giou") == pytest.approx(float((1 - giou).sum()), rel=1e-6)
    assert iou_loss(iou, giou, "iou", weight=torch.full((50,), 2.0)) == pytest.approx(
        float(-2 * torch.log(iou).sum()), rel=1e-6
    )
    with pytest.raises(ValueError, match="LOC_LOSS_TYPE"):
        iou_loss(iou, giou, "smooth_l1")


def test_centerness_target():
    c = centerness_targets(torch.tensor([[1.0, 2.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0]]))
    assert c.tolist() == pytest.approx([math.sqrt(1 / 3), 1.0])
    assert centerness_targets(torch.zeros((0, 4))).shape == (0,)


def _fcos(**kwargs):
    head = FCOSHead(in_channels=32, num_levels=2, num_classes=3, norm="GN")
    defaults = dict(in_features=["p3", "p4"], strides=[8, 16], head=head, sizes_of_interest=[64])
    defaults.update(kwargs)
    return FCOS(**defaults)


def _focal(logits, targets, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(logits)
    pt = torch.where(targets > 0, p, 1 - p)
    weight = torch.where(targets > 0, torch.full_like(p, alpha), torch.full_like(p, 1 - alpha))
    return -(weight * (1 - pt) ** gamma * torch.log(pt.clamp(min=1e-12))).sum()


def test_losses_normalise_by_the_positives_and_the_centerness_sum():
    torch.manual_seed(0)
    fcos = _fcos().train()
    features = {"p3": torch.randn(3, 32, 16, 16), "p4": torch.randn(3, 32, 8, 8)}
    images = ImageList(torch.zeros(3, 3, 128, 128), [(128, 128)] * 3)
    gts = []
    for boxes, classes in (
        ([], []),  # an image without boxes first: the others' box indices must not shift
        ([[10.0, 10.0, 60.0, 50.0], [70.0, 20.0, 126.0, 120.0]], [0, 2]),
        ([[20.0, 30.0, 100.0, 90.0]], [1]),
    ):
        inst = Instances((128, 128))
        inst.gt_boxes = Boxes(torch.tensor(boxes).reshape(-1, 4))
        inst.gt_classes = torch.tensor(classes, dtype=torch.long)
        gts.append(inst)
    out, losses = fcos(images, features, gts, top_module=torch.nn.Conv2d(32, 5, 1))
    pos = out.positives
    assert set(pos.im_inds.tolist()) == {1, 2}
    assert set(pos.gt_inds[pos.im_inds == 1].tolist()) == {0, 1}
    assert set(pos.gt_inds[pos.im_inds == 2].tolist()) == {2}
    assert (pos.labels == torch.tensor([0, 2, 1])[pos.gt_inds]).all()
    assert pos.top_feats.shape == (len(pos), 5)
    assert pos.loss_denorm == pytest.approx(float(pos.ctrness_targets.sum()))
    # every loss recomputed from the head's outputs and the positives' rows
    logits, regs, ctrs, _, _ = fcos.fcos_head([features["p3"], features["p4"]])
    flat = lambda xs, c: torch.cat([x.permute(0, 2, 3, 1).reshape(-1, c) for x in xs])  # noqa
    labels = fcos.targets([compute_locations(16, 16, 8), compute_locations(8, 8, 16)], gts)[0]
    rows = (labels != 3).nonzero().squeeze(1)
    assert len(rows) == len(pos)
    one_hot = torch.zeros(len(labels), 3)
    one_hot[rows, labels[rows]] = 1.0
    n = len(rows)
    assert float(losses["loss_fcos_cls"]) == pytest.approx(
        float(_focal(flat(logits, 3), one_hot)) / n, rel=1e-4
    )
    _, giou = ltrb_iou(flat(regs, 4)[rows], pos.reg_targets)
    expected = ((1 - giou) * pos.ctrness_targets).sum() / pos.ctrness_targets.sum()
    assert float(losses["loss_fcos_loc"]) == pytest.approx(float(expected), rel=1e-5)
    ctr_logits = flat(ctrs, 1)[rows, 0]
    c = pos.ctrness_targets
    bce = -(
        c * torch.log(torch.sigmoid(ctr_logits))
        + (1 - c) * torch.log(1 - torch.sigmoid(ctr_logits))
    )
    assert float(losses["loss_fcos_ctr"]) == pytest.approx(float(bce.sum()) / n, rel=1e-4)


def test_inference_decodes_thresholds_and_keeps_classes_apart():
    fcos = _fcos(thresh_test=0.3, nms_thresh=0.5, post_nms_topk_test=10, thresh_with_ctr=True)
    fcos.eval()
    strides = [8, 16]
    logits = [torch.full((1, 3, 4, 4), -10.0), torch.full((1, 3, 2, 2), -10.0)]
    regs = [torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 2, 2)]
    ctrs = [torch.full((1, 1, 4, 4), 10.0), torch.full((1, 1, 2, 2), 10.0)]
    # location (1, 1) of level 0 at (12, 12): class 1 and class 2, the same box
    logits[0][0, 1, 1, 1] = 3.0
    logits[0][0, 2, 1, 1] = 2.0
    regs[0][0, :, 1, 1] = torch.tensor([1.0, 0.5, 2.0, 1.0])
    # location (1, 2) of level 0 at (20, 12): class 1, a box overlapping the first
    logits[0][0, 1, 1, 2] = 1.0
    regs[0][0, :, 1, 2] = torch.tensor([2.0, 0.5, 1.0, 1.0])
    # level 1, location (0, 0) at (8, 8): class 0 below the threshold once times ctr
    logits[1][0, 0, 0, 0] = -1.0
    ctrs[1][0, 0, 0, 0] = -5.0
    locations = [compute_locations(4, 4, 8), compute_locations(2, 2, 16)]
    (det,) = fcos.predict(logits, regs, ctrs, [], locations, [(32, 32)])
    scores_12 = torch.sigmoid(torch.tensor([3.0, 2.0])) * torch.sigmoid(torch.tensor(10.0))
    assert det.pred_classes.tolist() == [1, 2]  # the second class-1 box is suppressed
    assert det.scores.tolist() == pytest.approx(torch.sqrt(scores_12).tolist())
    assert det.pred_boxes.tensor[0].tolist() == [12 - 8, 12 - 4, 12 + 16, 12 + 8]
    assert det.fpn_levels.tolist() == [0, 0]
    fcos_all = _fcos(thresh_test=0.3, nms_thresh=0.0, post_nms_topk_test=2, thresh_with_ctr=True)
    (det,) = fcos_all.eval().predict(logits, regs, ctrs, [], locations, [(32, 32)])
    assert len(det) == 2 and det.scores[0] >= det.scores[1]  # no NMS: top 2 by score
    assert strides == fcos.strides

    # cls 0.5 passes a 0.3 threshold alone, not once multiplied by its centerness (0.0067)
    logits[1][0, 0, 0, 0] = 0.0
    for with_ctr, expected in ((True, 3), (False, 4)):
        f = _fcos(thresh_test=0.3, nms_thresh=0.0, post_nms_topk_test=10, thresh_with_ctr=with_ctr)
        (det,) = f.eval().predict(logits, regs, ctrs, [], locations, [(32, 32)])
        assert len(det) == expected, with_ctr
    # pre-NMS top-k per level: the best candidate of each level
    f = _fcos(thresh_test=0.3, nms_thresh=0.0, pre_nms_topk_test=1, thresh_with_ctr=False)
    (det,) = f.eval().predict(logits, regs, ctrs, [], locations, [(32, 32)])
    assert sorted(det.fpn_levels.tolist()) == [0, 1] and det.pred_classes.tolist() == [1, 0]


def test_inconsistent_levels_are_named():
    with pytest.raises(ValueError, match="FPN_STRIDES"):
        _fcos(strides=[8])
    with pytest.raises(ValueError, match="SIZES_OF_INTEREST"):
        _fcos(sizes_of_interest=[64, 128])
    with pytest.raises(ValueError, match="MODEL.FCOS.NORM"):
        FCOSHead(in_channels=32, num_levels=2, num_classes=3, norm="LN")
