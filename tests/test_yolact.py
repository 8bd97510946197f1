"""YOLACT's pieces against direct computations written here: Fast NMS against a brute-force
loop, anchors, the matcher on hand-built boxes, OHEM counts, the area-normalised mask loss, the
checkpoint converter on the authors' key layouts (tests/fixtures/yolact), and the model on
empty, crowd-only and degenerate ground truth."""

import math
import os
import re

import pytest
import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, Boxes, Instances, pairwise_iou
from detectron2.utils.events import EventStorage

from tests.helpers.contract import build_tiny_model, tiny_cfg, toy_config_path
from yolact import decode_boxes, encode_boxes, fast_nms, make_anchors, standard_nms
from yolact.backbone import YolactFPN
from yolact.convert import convert_state_dict
from yolact.convert import main as convert_main
from yolact.losses import crop_masks, mask_loss_terms, ohem_negatives, semantic_targets
from yolact.matching import NEUTRAL, match_anchors

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "yolact")
TOY = toy_config_path("yolact.yaml")


# -- Fast NMS -----------------------------------------------------------------------------------
def _brute_force_fast_nms(boxes, scores, score_thresh, iou_thresh, top_k, max_det):
    """Fast NMS as loops: per class, candidates sorted, a box dropped when any better box of its
    class (kept or not) overlaps it more than the threshold."""
    candidates = [a for a in range(scores.shape[0]) if scores[a].max() > score_thresh]
    kept = []
    for c in range(scores.shape[1]):
        order = sorted(candidates, key=lambda a: -float(scores[a, c]))[:top_k]
        for j, a in enumerate(order):
            ious = [
                float(pairwise_iou(Boxes(boxes[b : b + 1]), Boxes(boxes[a : a + 1])))
                for b in order[:j]
            ]
            if all(v <= iou_thresh for v in ious):
                kept.append((float(scores[a, c]), c, a))
    kept.sort(key=lambda t: -t[0])
    return kept[:max_det]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_nms_equals_a_brute_force_loop(seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(40, 2, generator=g) * 60
    boxes = torch.cat([xy, xy + 10 + torch.rand(40, 2, generator=g) * 30], 1)
    scores = torch.rand(40, 3, generator=g) ** 3
    expected = _brute_force_fast_nms(boxes, scores, 0.3, 0.5, 12, 20)
    index, classes, out, valid = fast_nms(
        boxes, scores, score_thresh=0.3, iou_thresh=0.5, top_k=12, max_detections=20
    )
    got = [(float(s), int(c), int(a)) for s, c, a, v in zip(out, classes, index, valid) if v]
    assert [(c, a) for _, c, a in got] == [(c, a) for _, c, a in expected]
    assert torch.allclose(
        torch.tensor([s for s, _, _ in got]), torch.tensor([s for s, _, _ in expected])
    )
    assert len(got) > 5  # the case is not trivial


def test_a_suppressed_box_still_suppresses_in_fast_nms_only():
    # A overlaps B (IoU 0.67), B overlaps C (0.67), A and C barely (0.33)
    boxes = torch.tensor([[0.0, 0, 30, 10], [5, 0, 35, 10], [10, 0, 40, 10]])
    scores = torch.tensor([[0.9], [0.8], [0.7]])
    index, _, _, valid = fast_nms(
        boxes, scores, score_thresh=0.05, iou_thresh=0.5, top_k=200, max_detections=100
    )
    assert index[valid].tolist() == [0]  # C is dropped by B, which A dropped
    index, _, _, valid = standard_nms(
        boxes, scores, score_thresh=0.05, iou_thresh=0.5, max_detections=100
    )
    assert sorted(index[valid].tolist()) == [0, 2]


def test_fast_nms_has_no_second_threshold_and_keeps_top_k_per_class():
    boxes = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [100, 100, 110, 110]])
    scores = torch.tensor([[0.9, 0.01], [0.02, 0.03], [0.8, 0.6]])
    index, classes, out, valid = fast_nms(
        boxes, scores, score_thresh=0.05, iou_thresh=0.5, top_k=200, max_detections=100
    )
    pairs = {(int(a), int(c)) for a, c, v in zip(index, classes, valid) if v}
    # anchor 1 is no candidate (best 0.03); anchor 0's class 1 (0.01) is, as anchor 0 is one
    assert pairs == {(0, 0), (2, 0), (0, 1), (2, 1)}
    index, classes, _, valid = fast_nms(
        boxes, scores, score_thresh=0.05, iou_thresh=0.5, top_k=1, max_detections=100
    )
    assert {(int(a), int(c)) for a, c, v in zip(index, classes, valid) if v} == {(0, 0), (2, 1)}


def test_fast_nms_with_no_candidate_gives_no_valid_detection():
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 4)
    scores = torch.full((4, 3), 0.01)
    _, _, _, valid = fast_nms(
        boxes, scores, score_thresh=0.05, iou_thresh=0.5, top_k=200, max_detections=100
    )
    assert not valid.any()


# -- anchors and box coding ------------------------------------------------------------------------
def test_anchor_counts_and_coordinates_at_550():
    sizes = [(69, 69), (35, 35), (18, 18), (9, 9), (5, 5)]
    scales = [[24.0], [48.0], [96.0], [192.0], [384.0]]
    anchors = make_anchors(sizes, (550, 550), scales, [1, 0.5, 2], square=True)
    assert anchors.shape == (19248, 4)  # the authors' count at 550
    cell = 550 / 69
    assert torch.allclose(anchors[0], torch.tensor([cell / 2, cell / 2, 24.0, 24.0]))
    r = math.sqrt(0.5)
    assert torch.allclose(anchors[1, 2:], torch.tensor([24 * r, 24 * r]))  # square: h = w
    assert torch.allclose(anchors[2, 2:], torch.tensor([24 / r, 24 / r]))
    # cell (row 0, column 1), then the last cell of P7
    assert torch.allclose(anchors[3, :2], torch.tensor([1.5 * cell, cell / 2]))
    assert torch.allclose(anchors[-1], torch.tensor([4.5 * 110, 4.5 * 110, 384 / r, 384 / r]))
    plus = make_anchors(
        sizes, (550, 550), [[s[0] * 2 ** (j / 3) for j in range(3)] for s in scales], [1, 0.5, 2]
    )
    assert plus.shape == (19248 * 3, 4)
    s1 = 24 * 2 ** (1 / 3)
    assert torch.allclose(plus[4, 2:], torch.tensor([s1 * r, s1 / r]))  # scale 1, ratio 1/2


def test_box_coding_round_trips_and_uses_the_ssd_variances():
    anchors = torch.tensor([[50.0, 40.0, 20.0, 10.0]])
    boxes = torch.tensor([[42.0, 36.0, 62.0, 50.0]])
    deltas = encode_boxes(boxes, anchors)
    expected = torch.tensor(
        [[(52 - 50) / 2.0, (43 - 40) / 1.0, math.log(1.0) / 0.2, math.log(1.4) / 0.2]]
    )
    assert torch.allclose(deltas, expected, atol=1e-5)
    assert torch.allclose(decode_boxes(deltas, anchors), boxes, atol=1e-4)


def test_the_fpn_keeps_the_authors_level_sizes_at_550():
    cfg = tiny_cfg(TOY, "/tmp/unused")
    model = build_tiny_model(cfg)
    assert isinstance(model.backbone, YolactFPN) and model.backbone.size_divisibility == 0
    with torch.no_grad():
        feats = model.backbone(torch.zeros(1, 3, 550, 550))
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [
        (69, 69),
        (35, 35),
        (18, 18),
        (9, 9),
        (5, 5),
    ]


# -- matching ------------------------------------------------------------------------------------
def test_matcher_thresholds_forced_matches_and_crowds():
    anchors = torch.tensor(
        [
            [0.0, 0, 10, 10],  # IoU 0.64 with gt 0: positive
            [2.0, 0, 12, 10],  # 0.47: neutral
            [6.0, 0, 16, 10],  # 0.18: negative
            [40.0, 40, 60, 60],  # the best (0.25) of gt 1: forced positive
            [80.0, 80, 90, 90],  # inside the crowd box: neutral
            [150.0, 150, 160, 160],  # nothing: negative
        ]
    )
    gt = torch.tensor([[0.0, 0, 10, 8], [30.0, 30, 70, 70]])
    gt[0, 3] = 6.4  # IoU(anchor 0, gt 0) = 0.64
    labels, matched = match_anchors(
        anchors, gt, torch.tensor([2, 0]), torch.tensor([[75.0, 75, 95, 95]]), 0.5, 0.4, 0.7
    )
    assert labels.tolist() == [3, NEUTRAL, 0, 1, NEUTRAL, 0]
    assert matched[0] == 0 and matched[3] == 1
    labels, _ = match_anchors(anchors, gt, torch.tensor([2, 0]), None, 0.5, 0.4, 0.7)
    assert labels[4] == 0  # no crowd: a plain negative


def test_two_boxes_never_share_their_forced_anchor():
    anchors = torch.tensor([[0.0, 0, 20, 20], [0.0, 0, 40, 40]])
    gt = torch.tensor([[0.0, 0, 18, 18], [0.0, 0, 19, 19]])  # both prefer anchor 0
    labels, matched = match_anchors(anchors, gt, torch.tensor([0, 1]), None, 0.5, 0.4, 1.0)
    assert sorted(matched.tolist()) == [0, 1] and (labels > 0).all()


def test_matcher_on_no_ground_truth_is_all_background_but_crowds():
    anchors = torch.tensor([[0.0, 0, 10, 10], [50.0, 50, 60, 60]])
    labels, _ = match_anchors(
        anchors,
        torch.zeros(0, 4),
        torch.zeros(0, dtype=torch.long),
        torch.tensor([[45.0, 45, 65, 65]]),
        0.5,
        0.4,
        0.7,
    )
    assert labels.tolist() == [0, NEUTRAL]


# -- losses ---------------------------------------------------------------------------------------
def test_ohem_selects_three_negatives_per_positive_of_the_highest_background_loss():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 30, 4, generator=g)
    labels = torch.zeros(2, 30, dtype=torch.long)
    labels[0, [3, 7]] = 2
    labels[0, [1, 2]] = NEUTRAL
    neg = ohem_negatives(logits, labels, 3)
    assert neg[0].sum() == 6 and neg[1].sum() == 0  # no positive, no negative
    assert not neg[0, [1, 2, 3, 7]].any()
    bg = torch.logsumexp(logits[0], -1) - logits[0, :, 0]
    candidates = [a for a in range(30) if labels[0, a] == 0]
    hardest = sorted(candidates, key=lambda a: -float(bg[a]))[:6]
    assert sorted(neg[0].nonzero()[:, 0].tolist()) == sorted(hardest)
    labels[1, :28] = 1  # 28 positives: 84 negatives asked, 2 exist
    assert ohem_negatives(logits, labels, 3)[1].sum() == 2


def test_mask_loss_equals_a_direct_per_pixel_computation():
    g = torch.Generator().manual_seed(0)
    protos = torch.relu(torch.randn(16, 20, 6, generator=g))
    coefs = torch.tanh(torch.randn(3, 6, generator=g))
    boxes = torch.tensor([[8.0, 4, 40, 30], [0, 0, 79, 63], [30.5, 20.2, 33.1, 22.7]])
    targets = (torch.rand(3, 16, 20, generator=g) > 0.5).float()
    scale = (16 / 64, 20 / 80)
    loss, parts = mask_loss_terms(protos, coefs, targets, boxes, scale, max_masks=100)
    expected = 0.0
    for n in range(3):
        x0, y0, x1, y1 = (boxes[n] * torch.tensor([scale[1], scale[0]] * 2)).tolist()
        total = 0.0
        for r in range(16):
            for c in range(20):
                inside = max(x0 - 1, 0) <= c < min(x1 + 1, 20) and max(y0 - 1, 0) <= r < min(
                    y1 + 1, 16
                )
                p = torch.sigmoid(protos[r, c] @ coefs[n]) if inside else torch.tensor(0.0)
                total += float(F.binary_cross_entropy(p.clamp(0, 1), targets[n, r, c]))
        expected += total / ((x1 - x0) * (y1 - y0))
    assert math.isclose(float(loss), expected, rel_tol=1e-4)


def test_mask_loss_samples_at_most_max_masks_and_scales_the_sum_back():
    g = torch.Generator().manual_seed(1)
    protos = torch.relu(torch.randn(8, 8, 4, generator=g))
    coefs = torch.randn(10, 4, generator=g).tanh()
    boxes = torch.tensor([[0.0, 0, 32, 32]] * 10)
    targets = torch.zeros(10, 8, 8)
    full, _ = mask_loss_terms(protos, coefs[:1].expand(10, 4), targets, boxes, (0.25, 0.25), 100)
    sampled, parts = mask_loss_terms(
        protos, coefs[:1].expand(10, 4), targets, boxes, (0.25, 0.25), 4
    )
    assert parts["index"].shape == (4,)
    assert torch.allclose(full, sampled)  # identical positives: the scaled subset equals all


def test_semantic_targets_are_per_class_unions():
    masks = torch.zeros(3, 16, 16, dtype=torch.bool)
    masks[0, :8, :8] = True
    masks[1, 8:, 8:] = True
    masks[2, :8, 8:] = True
    target = semantic_targets([masks], [torch.tensor([1, 1, 0])], 3, (8, 8))
    assert target.shape == (1, 3, 8, 8)
    assert target[0, 1, :4, :4].all() and target[0, 1, 4:, 4:].all() and target[0, 0, :4, 4:].all()
    assert target[0, 2].sum() == 0 and target[0, 1].sum() == 32


def test_crop_covers_the_box_plus_one_pixel():
    inside = crop_masks(torch.zeros(1, 10, 10), torch.tensor([[8.0, 8, 24, 16]]), (0.25, 0.25))
    assert inside[0].nonzero()[:, 1].unique().tolist() == [1, 2, 3, 4, 5, 6]
    assert inside[0].nonzero()[:, 0].unique().tolist() == [1, 2, 3, 4]


# -- the model ------------------------------------------------------------------------------------
def _instances(boxes, classes, size=(64, 64)):
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    masks = torch.zeros(len(classes), *size, dtype=torch.bool)
    for m, (x0, y0, x1, y1) in zip(masks, inst.gt_boxes.tensor.long().tolist()):
        m[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)] = True
    inst.gt_masks = BitMasks(masks)
    return inst


def _batch(instances, crowds=None):
    g = torch.Generator().manual_seed(0)
    out = []
    for i, inst in enumerate(instances):
        d = {"image": (torch.rand(3, 64, 64, generator=g) * 255), "instances": inst}
        if crowds is not None:
            d["crowd_boxes"] = crowds[i]
        out.append(d)
    return out


@pytest.fixture(scope="module")
def tiny_model():
    return build_tiny_model(tiny_cfg(TOY, "/tmp/unused"))


def test_empty_crowd_only_and_degenerate_ground_truth_give_finite_losses(tiny_model):
    tiny_model.train()
    batch = _batch(
        [
            _instances([], []),  # nothing
            _instances([], []),  # only a crowd
            _instances([[30.2, 30.1, 30.6, 30.5]], [1]),  # crops to nothing at prototype size
        ],
        crowds=[torch.zeros(0, 4), torch.tensor([[0.0, 0, 40, 40]]), torch.zeros(0, 4)],
    )
    with EventStorage():
        losses = tiny_model(batch)
    assert set(losses) == {"loss_cls", "loss_box", "loss_mask", "loss_semantic"}
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in tiny_model.parameters() if p.grad is not None)
    tiny_model.zero_grad()
    with EventStorage():
        empty = tiny_model(_batch([_instances([], [])]))
    assert float(empty["loss_mask"]) == 0 and float(empty["loss_box"]) == 0


def test_no_detection_above_the_threshold_gives_empty_instances(tiny_model):
    tiny_model.eval()
    thresh = tiny_model.score_thresh
    tiny_model.score_thresh = 1.0
    try:
        with torch.no_grad():
            out = tiny_model([{"image": torch.zeros(3, 64, 64), "height": 50, "width": 70}])
    finally:
        tiny_model.score_thresh = thresh
    inst = out[0]["instances"]
    assert len(inst) == 0 and inst.image_size == (50, 70) and inst.pred_masks.shape == (0, 50, 70)


def test_config_errors_name_the_keys():
    with pytest.raises(ValueError, match="ANCHOR_SCALES"):
        build_tiny_model(
            tiny_cfg(TOY, "/tmp/unused", "MODEL.YOLACT.ANCHOR_SCALES", "[[24.0], [48.0]]")
        )
    with pytest.raises(ValueError, match="ANCHOR_SCALES"):
        build_tiny_model(
            tiny_cfg(
                TOY,
                "/tmp/unused",
                "MODEL.YOLACT.ANCHOR_SCALES",
                "[[24.0], [48.0, 60.0], [96.0], [192.0], [384.0]]",
            )
        )
    with pytest.raises(ValueError, match="NMS_TYPE"):
        build_tiny_model(tiny_cfg(TOY, "/tmp/unused", "MODEL.YOLACT.NMS_TYPE", "soft"))


PLUS_OPTS = (
    "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.RES2_OUT_CHANNELS", "256",
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, True, True, True]",
    "MODEL.RESNETS.DEFORM_MODULATED", "True",
    "MODEL.YOLACT.MASK_IOU.ENABLED", "True",
    "INPUT.SSD.SIZE", "256",
)  # fmt: skip


def test_yolact_plus_trains_its_offsets_and_rescoring_net_and_rescores_masks():
    model = build_tiny_model(tiny_cfg(TOY, "/tmp/unused", *PLUS_OPTS))
    offsets = [m for n, m in model.named_modules() if n.endswith("conv2_offset")]
    assert offsets and all(float(o.weight.abs().max()) == 0 for o in offsets)  # start at zero
    with torch.no_grad():  # a live last ReLU, so that every layer of the net gets a gradient
        model.maskiou_net.net[-2].bias.fill_(0.5)
    model.train()
    size = (256, 256)
    inst = _instances([[40, 40, 200, 180], [10, 100, 90, 250]], [0, 3], size)
    batch = [{"image": torch.rand(3, *size) * 255, "instances": inst}]
    with EventStorage():
        losses = model(batch)
    assert "loss_maskiou" in losses and float(losses["loss_maskiou"]) > 0
    sum(losses.values()).backward()
    assert all(float(o.weight.grad.abs().max()) > 0 for o in offsets)
    assert all(
        p.grad is not None and float(p.grad.abs().max()) > 0 for p in model.maskiou_net.parameters()
    )
    model.eval()
    with torch.no_grad():
        images = model.preprocess_image([{"image": batch[0]["image"]}])
        out = model.predict(images.tensor)
        det = model.detect(
            out["box_deltas"][0], out["cls_logits"][0], out["coefficients"][0],
            out["prototypes"][0], out["anchors"], size,
        )  # fmt: skip
        iou = model.maskiou_net(det["masks"][:, None]).gather(1, det["classes"][:, None])[:, 0]
    valid = det["valid"]
    assert valid.any()
    assert torch.allclose(det["mask_scores"][valid], (det["scores"] * iou)[valid])
    assert not torch.allclose(det["mask_scores"][valid], det["scores"][valid])


# -- the converter -------------------------------------------------------------------------------
def _fixture_state(name):
    state = {}
    with open(os.path.join(FIXTURES, name)) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            key, shape, dtype = line.rstrip("\n").split("\t")
            dims = tuple(int(d) for d in re.findall(r"\d+", shape))
            state[key] = torch.zeros(dims, dtype=getattr(torch, dtype))
    return state


CONVERSIONS = {
    "yolact_resnet50.tsv": "YOLACT/R_50_550.yaml",
    "yolact_base_resnet101.tsv": "YOLACT/R_101_550.yaml",
    "yolact_plus_resnet50.tsv": "YOLACT/plus_R_50_550.yaml",
    "yolact_plus_base.tsv": "YOLACT/plus_R_101_550.yaml",
}


@pytest.mark.parametrize("fixture", sorted(CONVERSIONS))
def test_every_key_of_the_authors_checkpoints_maps_onto_the_model(fixture):
    from detectron2.modeling import build_model

    from projects.engine.setup import load_config

    state = _fixture_state(fixture)
    converted, report = convert_state_dict(state)
    assert report.unmapped == [] and report.fresh == []
    assert len(report.mapped) == len(state)
    cfg = load_config(
        os.path.join(os.path.dirname(TOY), "..", CONVERSIONS[fixture]), ["MODEL.DEVICE", "cpu"]
    )
    model = build_model(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    if "plus" in fixture:
        assert len(report.folded) == (13 if "resnet50" in fixture else 11)


def test_deformable_biases_fold_into_the_running_means():
    state = _fixture_state("yolact_plus_resnet50.tsv")
    state["backbone.layers.1.0.conv2.bias"] = torch.arange(128, dtype=torch.float32)
    state["backbone.layers.1.0.bn2.running_mean"] = torch.full((128,), 5.0)
    converted, _ = convert_state_dict(state)
    mean = converted["backbone.bottom_up.res3.0.conv2.norm.running_mean"]
    assert torch.equal(mean, 5.0 - torch.arange(128, dtype=torch.float32))
    assert "backbone.bottom_up.res3.0.conv2.bias" not in converted


def test_a_new_class_count_keeps_every_class_independent_weight():
    state = _fixture_state("yolact_plus_resnet50.tsv")
    converted, report = convert_state_dict(state, num_classes=4)
    assert sorted(report.fresh) == [
        "maskiou_net.maskiou_net.10.bias",
        "maskiou_net.maskiou_net.10.weight",
        "prediction_layers.0.conf_layer.bias",
        "prediction_layers.0.conf_layer.weight",
        "semantic_seg_conv.bias",
        "semantic_seg_conv.weight",
    ]
    assert len(converted) == len(state) - 6 - 13  # the folded biases are no keys of their own
    assert "prediction_head.mask_layer.weight" in converted
    same, report = convert_state_dict(state, num_classes=80)
    assert report.fresh == []


def test_the_converter_writes_a_loadable_checkpoint_and_names_bad_files(tmp_path, capsys):
    src = tmp_path / "yolact_resnet50_54_800000.pth"
    torch.save(_fixture_state("yolact_resnet50.tsv"), src)
    out = tmp_path / "converted.pth"
    assert convert_main(["--input", str(src), "--output", str(out)]) == 0
    loaded = torch.load(out, weights_only=True)
    assert "backbone.fpn_lateral5.weight" in loaded["model"] and not loaded["matching_heuristics"]
    other = tmp_path / "model_final.pth"  # a checkpoint of another method
    torch.save({"model": {"backbone.bottom_up.stem.conv1.weight": torch.zeros(1)}}, other)
    with pytest.raises(SystemExit, match="model_final.pth is not a checkpoint of the YOLACT"):
        convert_main(["--input", str(other), "--output", str(out)])
    with pytest.raises(SystemExit, match="missing.pth: no such file"):
        convert_main(["--input", str(tmp_path / "missing.pth"), "--output", str(out)])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="garbage.pth cannot be read"):
        convert_main(["--input", str(garbage), "--output", str(out)])


def test_a_padded_batch_of_two_shapes_trains_and_infers_at_each_size(tiny_model):
    tiny_model.train()
    a, b = _instances([[4, 4, 40, 30]], [1], (48, 64)), _instances(
        [[10, 10, 30, 60]], [2], (64, 40)
    )
    batch = [
        {"image": torch.rand(3, 48, 64) * 255, "instances": a},
        {"image": torch.rand(3, 64, 40) * 255, "instances": b},
    ]
    with EventStorage():
        losses = tiny_model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    tiny_model.eval()
    with torch.no_grad():
        out = tiny_model(
            [
                {"image": batch[0]["image"], "height": 96, "width": 128},
                {"image": batch[1]["image"], "height": 64, "width": 40},
            ]
        )
    assert out[0]["instances"].image_size == (96, 128) and out[1]["instances"].image_size == (
        64,
        40,
    )
    for o in out:
        inst = o["instances"]
        assert inst.pred_masks.shape[1:] == inst.image_size
        assert (inst.pred_boxes.tensor[:, 2] <= inst.image_size[1]).all()
