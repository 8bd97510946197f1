"""PointRend's heads on their own: subdivision, uncertainty, batching, empty inputs, options."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import ROI_HEADS_REGISTRY, ROI_MASK_HEAD_REGISTRY, SEM_SEG_HEADS_REGISTRY
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.projects import point_rend as d2_point_rend  # noqa: F401  (both registered)
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

import pointrend
from pointrend import point_features
from pointrend.point_features import sample_features_at_points, sample_mask_labels_at_points
from pointrend.uncertainty import instance_mask_uncertainty, semantic_uncertainty
from projects.layers import regular_grid_point_coords
from tests.helpers.pointrend_fixtures import build, instance_cfg, instance_inputs

SHAPES = {"p2": ShapeSpec(channels=8, stride=4), "p3": ShapeSpec(channels=8, stride=8)}


def _head_cfg(**mask_opts):
    cfg = get_cfg()
    pointrend.add_pointrend_config(cfg)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = cfg.MODEL.POINT_HEAD.NUM_CLASSES = 3
    cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE = ""
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 8
    cfg.MODEL.ROI_MASK_HEAD.FC_DIM = 16
    cfg.MODEL.ROI_MASK_HEAD.POINT_HEAD_ON = True
    cfg.MODEL.POINT_HEAD.FC_DIM = 8
    for key, value in mask_opts.items():
        cfg.MODEL.ROI_MASK_HEAD[key] = value
    return cfg


def _features(num_images=2):
    torch.manual_seed(0)
    return {"p2": torch.randn(num_images, 8, 16, 16), "p3": torch.randn(num_images, 8, 8, 8)}


def _detections(counts=(3, 2)):
    out = []
    for n in counts:
        inst = Instances((64, 64))
        xy = torch.rand(n, 2) * 30
        inst.pred_boxes = Boxes(torch.cat([xy, xy + 10 + torch.rand(n, 2) * 20], dim=1))
        inst.pred_classes = torch.arange(n) % 3
        out.append(inst)
    return out


def test_registry_names_do_not_clash_with_detectron2():
    assert "RenderROIHeads" in ROI_HEADS_REGISTRY and "PointRendROIHeads" in ROI_HEADS_REGISTRY
    for name in ("RenderMaskHead", "RenderImplicitMaskHead", "PointRendMaskHead"):
        assert name in ROI_MASK_HEAD_REGISTRY
    assert (
        "RenderSemSegHead" in SEM_SEG_HEADS_REGISTRY
        and "PointRendSemSegHead" in SEM_SEG_HEADS_REGISTRY
    )
    assert {"RenderPointHead", "RenderImplicitPointHead"} <= {
        k for k, _ in pointrend.POINTREND_POINT_HEAD_REGISTRY
    }
    assert issubclass(pointrend.RenderROIHeads, StandardROIHeads)


def test_subdivision_reaches_224_with_3136_points_per_box():
    cfg = _head_cfg()  # defaults: 7 x 7 coarse, 5 steps of 784 points
    head = pointrend.RenderMaskHead(cfg, SHAPES).eval()
    calls = []
    forward_projected = head.point_head.forward_projected

    def counting(fine_term, coarse_terms, classes=None):
        out = forward_projected(fine_term, coarse_terms, classes)
        calls.append(tuple(out.shape))
        return out

    head.point_head.forward_projected = counting
    detections = _detections((3, 2))
    with torch.no_grad():
        head(_features(), detections)
    assert all(c[1] == 1 for c in calls)  # only each box's own class is predicted
    # Blocks of boxes per call; over the calls every one of the 5 boxes gets 28 * 28 grid
    # points + 3 steps of 784.
    assert sum(rows * points for rows, _, points in calls) == 5 * 3136
    assert {points for _, _, points in calls} == {784}
    for inst in detections:
        assert inst.pred_masks.shape == (len(inst), 1, 224, 224)


def test_subdivision_keeps_the_upsampled_value_where_certain():
    """Only the most uncertain cells are re-predicted; the others are the bilinear upsampling."""
    cfg = _head_cfg()
    cfg.MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS = 50
    cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS = 1
    head = pointrend.RenderMaskHead(cfg, SHAPES).eval()
    dets = _detections((2,))
    boxes, classes = [d.pred_boxes for d in dets], torch.cat([d.pred_classes for d in dets])
    features = _features(1)
    with torch.no_grad():
        coarse = head.coarse_head(head._roi_grid_features(features, boxes))
        refined = head.subdivide(features, boxes, coarse, classes)
        grid = regular_grid_point_coords(2, 7, torch.device("cpu"))
        first = head._point_logits(features, boxes, grid, coarse, classes).view(2, 1, 7, 7)
        upsampled = torch.nn.functional.interpolate(first, scale_factor=2, mode="bilinear")
    assert refined.shape == (2, 1, 14, 14)
    # (refined's first grid is computed in another order: equal up to rounding)
    changed = ((refined - upsampled).abs() > 1e-4).flatten(1).sum(dim=1)
    assert (changed <= 50).all() and (changed > 0).all()


def test_instance_uncertainty_is_minus_abs_of_own_class_logit():
    logits = torch.tensor([[[0.5, -2.0]], [[3.0, -0.25]]]).view(2, 2, 1, 1)  # (R=2, C=2, 1, 1)
    torch.testing.assert_close(
        instance_mask_uncertainty(logits, torch.tensor([1, 0])).flatten(),
        torch.tensor([-2.0, -3.0]),
    )
    agnostic = torch.tensor([-0.5, 1.5]).view(2, 1, 1)
    torch.testing.assert_close(
        instance_mask_uncertainty(agnostic, None).flatten(), torch.tensor([-0.5, -1.5])
    )


def test_semantic_uncertainty_is_gap_between_top_two_logits():
    logits = torch.tensor([[4.0, 1.0, 3.5], [0.0, -1.0, 2.0]]).T.reshape(1, 3, 1, 2)
    # location 0: top two 4.0, 3.5 -> -0.5; location 1: 2.0, 0.0 -> -2.0
    torch.testing.assert_close(semantic_uncertainty(logits).flatten(), torch.tensor([-0.5, -2.0]))
    assert semantic_uncertainty(logits).shape == (1, 1, 1, 2)


def test_point_features_batched_over_boxes(monkeypatch):
    """One grid_sample per image and map (never per box), equal to sampling box by box."""
    features = _features()
    dets = _detections((4, 3))
    boxes = [d.pred_boxes for d in dets]
    points = torch.rand(7, 11, 2)
    calls = []
    real = point_features.point_sample
    monkeypatch.setattr(
        point_features, "point_sample", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    out = sample_features_at_points([features["p2"], features["p3"]], [4, 8], boxes, points)
    assert out.shape == (7, 16, 11) and len(calls) == 2 * 2
    box = Boxes.cat(boxes).tensor
    for r in range(7):
        image = 0 if r < 4 else 1
        xy = points[r] * (box[r, 2:] - box[r, :2]) + box[r, :2]
        single = torch.nn.functional.grid_sample(
            features["p3"][image : image + 1],
            (2 * xy / 64 - 1).view(1, 1, -1, 2),
            align_corners=False,
        )
        torch.testing.assert_close(out[r, 8:], single.view(8, 11))


def test_mask_head_requires_unpooled_features():
    cfg = _head_cfg(POOLER_TYPE="ROIAlignV2")
    with pytest.raises(ValueError, match="POOLER_TYPE"):
        pointrend.RenderMaskHead(cfg, ShapeSpec(channels=8, height=14, width=14))
    cfg = _head_cfg(IN_FEATURES=["p4"])
    with pytest.raises(ValueError, match="ROI_MASK_HEAD.IN_FEATURES"):
        pointrend.RenderMaskHead(cfg, SHAPES)


def test_zero_detections_and_zero_ground_truth():
    head = pointrend.RenderMaskHead(_head_cfg(), SHAPES).eval()
    dets = _detections((0, 2))
    with torch.no_grad():
        head(_features(), dets)
    assert dets[0].pred_masks.shape == (0, 1, 224, 224) and dets[1].pred_masks.shape[0] == 2

    model = build(instance_cfg()).train()
    with EventStorage():
        losses = model(instance_inputs(with_gt=False))
        assert torch.isfinite(sum(losses.values()))
        assert losses["loss_mask"].item() == 0 and losses["loss_mask_point"].item() == 0
        sum(losses.values()).backward()
        model.zero_grad()
        mixed = instance_inputs()[:1] + instance_inputs(with_gt=False)[1:]
        assert losses.keys() == model(mixed).keys()


def test_polygon_ground_truth_is_rasterized_and_other_types_rejected():
    square = [[[8.0, 8.0, 40.0, 8.0, 40.0, 40.0, 8.0, 40.0]]]
    inst = Instances((48, 48), gt_classes=torch.tensor([0]), gt_masks=PolygonMasks(square))
    points = torch.tensor([[[20.0, 20.0], [4.0, 4.0], [44.0, 30.0], [30.0, 39.0]]])
    labels = sample_mask_labels_at_points([inst], points)
    bitmask = BitMasks.from_polygon_masks(PolygonMasks(square), 48, 48)
    inst.gt_masks = bitmask
    torch.testing.assert_close(labels, sample_mask_labels_at_points([inst], points))
    assert labels[0, :3].tolist() == [1.0, 0.0, 0.0]

    inst.gt_masks = bitmask.tensor  # a bare tensor: neither BitMasks nor PolygonMasks
    with pytest.raises(TypeError, match="INPUT.MASK_FORMAT"):
        sample_mask_labels_at_points([inst], points)

    inputs = instance_inputs()  # a whole model trains on polygon ground truth too
    for x in inputs:
        boxes = x["instances"].gt_boxes.tensor.tolist()
        x["instances"].gt_masks = PolygonMasks([[[a, b, c, b, c, d, a, d]] for a, b, c, d in boxes])
    with EventStorage():
        assert build(instance_cfg()).train()(inputs)["loss_mask_point"] > 0


def test_class_agnostic_option():
    cfg = _head_cfg(CLS_AGNOSTIC_MASK=True)
    head = pointrend.RenderMaskHead(cfg, SHAPES)
    assert head.coarse_head.output_shape == (1, 7, 7)
    assert head.point_head.predictor.out_channels == 1
    assert head.point_head.fc1.in_channels == 8 + 1
    head.eval()
    dets = _detections((2, 1))
    with torch.no_grad():
        head(_features(), dets)
    assert dets[0].pred_masks.shape == (2, 1, 224, 224)

    model_cfg = instance_cfg()
    model_cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = True
    with EventStorage():
        losses = build(model_cfg).train()(instance_inputs())
    assert torch.isfinite(losses["loss_mask"]) and torch.isfinite(losses["loss_mask_point"])


def test_coarse_only_without_point_head():
    head = pointrend.RenderMaskHead(_head_cfg(POINT_HEAD_ON=False), SHAPES).eval()
    assert head.point_head is None
    dets = _detections((2,))
    with torch.no_grad():
        head(_features(1), dets)
    assert dets[0].pred_masks.shape == (2, 1, 7, 7)


def test_old_checkpoint_layout_is_renamed():
    model = build(instance_cfg())
    state = model.state_dict()
    old = {
        k.replace("roi_heads.mask_head.point_head", "roi_heads.mask_point_head"): v
        for k, v in state.items()
    }
    old = {
        k.replace(
            "roi_heads.mask_head.coarse_head.fc", "roi_heads.mask_coarse_head.coarse_mask_fc"
        ): v
        for k, v in old.items()
    }
    assert any("mask_point_head" in k for k in old) and any("coarse_mask_fc" in k for k in old)
    fresh = build(instance_cfg())
    result = fresh.load_state_dict(old)  # no version metadata: an old checkpoint
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k])


@pytest.mark.parametrize("each_layer", [True, False], ids=["coarse-each-layer", "coarse-first"])
@pytest.mark.parametrize("num_classes", [4, 1], ids=["per-class", "agnostic"])
def test_point_head_inference_paths_equal_the_concatenation(each_layer, num_classes):
    """Inference computes the point head in blocks of rows, with weights split into fine and
    coarse columns, optionally the own class only, and from projected maps; every variant
    equals Detectron2's Conv1d-on-concatenation (the training path) up to rounding."""
    torch.manual_seed(0)
    head = pointrend.RenderPointHead(
        input_channels=24,
        coarse_pred_channels=num_classes,
        num_mask_classes=num_classes,
        fc_dims=[16, 16, 16],
        coarse_pred_each_layer=each_layer,
    )
    torch.nn.init.normal_(head.predictor.weight, std=0.3)
    fmap, coarse_maps = torch.randn(1, 24, 12, 15), torch.randn(5, num_classes, 7, 7)
    points = torch.rand(5, 3000, 2) * 1.2 - 0.1  # > ROW_BLOCK rows; some outside the boxes
    classes = torch.randint(0, num_classes, (5,))

    def sample(maps, image):
        grid = 2 * points.unsqueeze(2) - 1
        maps = maps.expand(5, -1, -1, -1) if image else maps
        return torch.nn.functional.grid_sample(maps, grid, align_corners=False).squeeze(3)

    fine, coarse = sample(fmap, True), sample(coarse_maps, False)
    reference = head(fine, coarse)  # autograd on: the concatenation
    assert reference.requires_grad and reference.shape == (5, num_classes, 3000)
    own = reference.gather(1, classes.view(-1, 1, 1).expand(-1, 1, 3000))
    with torch.no_grad():
        torch.testing.assert_close(head(fine, coarse), reference, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(head(fine, coarse, classes), own, rtol=1e-4, atol=1e-5)
        fine_term = sample(head.project_fine_features([fmap])[0], True)
        for cls, expected in ((None, reference), (classes, own)):
            terms = sample(head.project_coarse_logits(coarse_maps, cls), False)
            got = head.forward_projected(fine_term, terms, cls)
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        # No boxes: empty outputs of the right shape.
        assert head.forward_projected(fine_term[:0], terms[:0], classes[:0]).shape == (0, 1, 3000)
