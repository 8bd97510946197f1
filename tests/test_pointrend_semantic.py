"""Semantic PointRend: subdivision at inference, point loss, and DeepLabV3+ as the coarse head."""

import pytest
import torch
from detectron2.utils.events import EventStorage

from tests.helpers.pointrend_fixtures import NUM_CLASSES, build, semantic_cfg, semantic_inputs


def _deeplab_cfg():
    cfg = semantic_cfg("DeepLabV3PlusHead")
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res2", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.PROJECT_FEATURES = ["res2"]
    cfg.MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS = [8]
    cfg.MODEL.SEM_SEG_HEAD.ASPP_CHANNELS = 16
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 16
    cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 4
    cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = "cross_entropy"
    cfg.MODEL.POINT_HEAD.IN_FEATURES = ["res2"]
    return cfg


def _count_point_evaluations(model, inputs):
    calls = []
    hook = model.sem_seg_head.point_head.register_forward_hook(
        lambda m, i, o: calls.append(tuple(o.shape))
    )
    model.eval()
    with torch.no_grad():
        outputs = model(inputs)
    hook.remove()
    return calls, outputs


def test_semantic_subdivision_steps_and_points():
    model = build(semantic_cfg())  # 2 steps of 512 points, from stride 4 to stride 1
    coarse_side = 64 // 4
    inputs = semantic_inputs(num_images=1)
    calls, outputs = _count_point_evaluations(model, inputs)
    assert calls == [(1, NUM_CLASSES, 512), (1, NUM_CLASSES, 512)]
    assert outputs[0]["sem_seg"].shape == (NUM_CLASSES, 64, 64)
    features = model.backbone((inputs[0]["image"][None] - model.pixel_mean) / model.pixel_std)
    logits, _ = model.sem_seg_head(features)
    assert logits.shape[-2:] == (4 * coarse_side, 4 * coarse_side)


@pytest.mark.parametrize("steps", [0, 1])
def test_semantic_steps_short_of_stride_one_still_give_input_resolution(steps):
    """With fewer steps than log2(stride), the logits are upsampled to the input's resolution;
    with none, the output is the coarse head's own inference output (Semantic FPN alone)."""
    cfg = semantic_cfg()
    cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS = steps
    model = build(cfg).eval()
    inputs = semantic_inputs(num_images=1)
    calls, outputs = _count_point_evaluations(model, inputs)
    assert len(calls) == steps
    assert outputs[0]["sem_seg"].shape == (NUM_CLASSES, inputs[0]["height"], inputs[0]["width"])
    features = model.backbone((inputs[0]["image"][None] - model.pixel_mean) / model.pixel_std)
    with torch.no_grad():
        logits, _ = model.sem_seg_head(features)
        coarse_alone, _ = model.sem_seg_head.coarse_sem_seg_head(features)
    assert logits.shape == coarse_alone.shape == (1, NUM_CLASSES, 64, 64)
    if steps == 0:
        torch.testing.assert_close(logits, coarse_alone, rtol=0, atol=0)
    else:
        assert not torch.equal(logits, coarse_alone)


def test_semantic_steps_beyond_stride_one_are_refused():
    cfg = semantic_cfg()
    cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS = 3
    with pytest.raises(ValueError, match="SUBDIVISION_STEPS=3.*at most 2 steps"):
        build(cfg)


def test_semantic_training_losses_and_gradients():
    """(Ignoring label 255 is checked against Detectron2 in test_pointrend_parity: the inputs
    have an ignored band.)"""
    model = build(semantic_cfg()).train()
    with EventStorage():
        losses = model(semantic_inputs())
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_point"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.sem_seg_head.point_head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_pointrend_on_deeplabv3plus():
    model = build(_deeplab_cfg())
    assert type(model.sem_seg_head.coarse_sem_seg_head).__name__ == "DeepLabV3PlusHead"
    model.train()
    with EventStorage():
        losses = model(semantic_inputs())
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_point"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.sem_seg_head.point_head.predictor.weight.grad.abs().sum() > 0

    calls, outputs = _count_point_evaluations(model, semantic_inputs())
    assert len(calls) == 2  # two subdivision steps: stride 4 -> 2 -> 1
    for out, x in zip(outputs, semantic_inputs()):
        assert out["sem_seg"].shape == (NUM_CLASSES, x["height"], x["width"])
