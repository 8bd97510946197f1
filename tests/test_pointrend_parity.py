"""Parity with Detectron2's own PointRend (detectron2.projects.point_rend): same parameters, same
losses and the same predictions from the same weights, input and seed."""

import pytest
import torch
from detectron2.utils.events import EventStorage

from tests.helpers.pointrend_fixtures import (
    NUM_CLASSES,
    build,
    d2_instance_cfg,
    d2_semantic_cfg,
    instance_cfg,
    instance_inputs,
    semantic_cfg,
    semantic_inputs,
)


def _same_state_dict_layout(ours, theirs):
    sd_ours, sd_theirs = ours.state_dict(), theirs.state_dict()
    assert sorted(sd_ours) == sorted(sd_theirs)
    wrong = {
        k: (sd_ours[k].shape, v.shape) for k, v in sd_theirs.items() if sd_ours[k].shape != v.shape
    }
    assert not wrong
    result = ours.load_state_dict(sd_theirs, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def _losses(model, inputs, seed):
    model.train()
    torch.manual_seed(seed)
    with EventStorage():
        return {k: v.detach() for k, v in model(inputs).items()}


def _predict(model, inputs, seed):
    model.eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(inputs)


@pytest.mark.parametrize("implicit", [False, True], ids=["pointrend", "implicit"])
def test_instance_parity_with_detectron2(implicit):
    ours, theirs = build(instance_cfg(implicit)), build(d2_instance_cfg(implicit))
    _same_state_dict_layout(ours, theirs)

    for seed in (1, 2):
        ours_losses = _losses(ours, instance_inputs(), seed)
        theirs_losses = _losses(theirs, instance_inputs(), seed)
        assert set(ours_losses) == set(theirs_losses)
        assert "loss_mask_point" in ours_losses
        for k in theirs_losses:
            torch.testing.assert_close(ours_losses[k], theirs_losses[k], rtol=0, atol=1e-6)

    # Gradients agree too (the point loss trains the point head).
    ours.train(), theirs.train()
    grads = []
    for model in (ours, theirs):
        model.zero_grad()
        torch.manual_seed(3)
        with EventStorage():
            sum(model(instance_inputs()).values()).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert any("point_head" in n for n in grads[1]) or implicit
    for name, grad in grads[1].items():
        torch.testing.assert_close(grads[0][name], grad, rtol=1e-5, atol=1e-6)

    ours_out, theirs_out = _predict(ours, instance_inputs(), 4), _predict(
        theirs, instance_inputs(), 4
    )
    for a, b in zip(ours_out, theirs_out):
        a, b = a["instances"], b["instances"]
        assert len(a) == len(b) > 0
        torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-6)
        assert torch.equal(a.pred_classes, b.pred_classes)
        assert a.pred_masks.shape == b.pred_masks.shape
        assert torch.equal(a.pred_masks, b.pred_masks)


def test_instance_mask_logits_equal_detectron2(monkeypatch):
    """The subdivision output itself (before thresholding) agrees, not only the binary masks:
    our inference computes the point head in another order (own class only, projected maps,
    blocks of rows), so equal up to float rounding."""
    import detectron2.projects.point_rend.mask_head as d2_mask_head

    import pointrend.mask_head as our_mask_head

    ours, theirs = build(instance_cfg()), build(d2_instance_cfg())
    ours.load_state_dict(theirs.state_dict())
    exact = build(instance_cfg())
    exact.load_state_dict(theirs.state_dict())
    exact.roi_heads.mask_head.point_head.exact = True
    captured = []
    for model, module in ((ours, our_mask_head), (theirs, d2_mask_head), (exact, our_mask_head)):
        model.eval()
        store = []
        inference = module.mask_rcnn_inference

        def capture(logits, instances, store=store, inference=inference):
            store.append(logits)
            return inference(logits, instances)

        monkeypatch.setattr(module, "mask_rcnn_inference", capture)
        with torch.no_grad():
            model(instance_inputs())
        captured.append(store[0])
    ours_logits, theirs_logits, exact_logits = captured
    classes = torch.cat([x["instances"].pred_classes for x in _predict(ours, instance_inputs(), 0)])
    assert ours_logits.shape == (len(classes), 1, 224, 224)
    assert theirs_logits.shape == (len(classes), NUM_CLASSES, 224, 224)
    theirs_own = theirs_logits[torch.arange(len(classes)), classes].unsqueeze(1)
    torch.testing.assert_close(ours_logits, theirs_own, rtol=1e-4, atol=1e-5)
    # point_head.exact: Detectron2's computation order, bit for bit.
    assert torch.equal(exact_logits, theirs_own)


def test_semantic_parity_with_detectron2():
    ours, theirs = build(semantic_cfg()), build(d2_semantic_cfg())
    _same_state_dict_layout(ours, theirs)
    for seed in (1, 2):
        ours_losses = _losses(ours, semantic_inputs(), seed)
        theirs_losses = _losses(theirs, semantic_inputs(), seed)
        assert set(ours_losses) == set(theirs_losses) == {"loss_sem_seg", "loss_sem_seg_point"}
        for k in theirs_losses:
            torch.testing.assert_close(ours_losses[k], theirs_losses[k], rtol=0, atol=1e-6)
    ours_out, theirs_out = _predict(ours, semantic_inputs(), 4), _predict(
        theirs, semantic_inputs(), 4
    )
    for a, b, x in zip(ours_out, theirs_out, semantic_inputs()):
        assert a["sem_seg"].shape == (3, x["height"], x["width"])
        # Inference samples and multiplies in another order than Detectron2: float rounding.
        torch.testing.assert_close(a["sem_seg"], b["sem_seg"], rtol=1e-5, atol=1e-5)
