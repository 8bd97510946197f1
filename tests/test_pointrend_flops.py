"""PointRend's mask-head FLOP counter (pointrend/flops.py), which its Method declares as
``head_flops`` for the benchmark."""

import pytest
import torch
from detectron2.modeling import build_model
from torch import nn

import pointrend
from pointrend.flops import count_point_rend_head_flops, point_rend_mask_head_flops
from projects.engine.setup import load_config
from projects.methods import get_method, resolve_config
from tests.helpers.pointrend_fixtures import instance_cfg
from tests.helpers.tiny_coco import tiny_mask_rcnn_cfg


def _point_head_flops_per_point(head):
    """Multiply-adds of the point MLP (1x1 Conv1d layers) for one point."""
    return sum(
        m.in_channels * m.out_channels
        for m in head.point_head.modules()
        if isinstance(m, nn.Conv1d)
    )


def test_point_rend_mask_head_flops_per_box():
    torch.manual_seed(0)
    model = build_model(instance_cfg()).eval()
    result = point_rend_mask_head_flops(model, torch.rand(3, 64, 96) * 255)
    head = model.roi_heads.mask_head
    evaluations = head.subdivision_init_resolution**2 + (
        head.subdivision_steps * head.subdivision_num_points
    )
    assert result["point_evaluations"] == evaluations
    assert result["point_head"] * 1e9 == pytest.approx(
        evaluations * _point_head_flops_per_point(head)
    )
    assert result["output_side"] == head.subdivision_init_resolution * 2**head.subdivision_steps
    assert result["coarse_head"] > 0 and result["sampling"] > 0
    parts = result["coarse_head"] + result["point_head"] + result["sampling"]
    assert parts == pytest.approx(result["gflops_per_box"])


def test_the_declared_counter_is_none_for_a_model_without_a_point_rend_head(tmp_path):
    assert pointrend.POINTREND.head_flops is count_point_rend_head_flops
    cfg = tiny_mask_rcnn_cfg(tmp_path, "toy_train", "")
    model = build_model(cfg).eval()
    assert count_point_rend_head_flops(cfg, model, torch.rand(3, 48, 64) * 255) is None


def test_published_config_costs_0_929_gflops_per_box_against_33_9_for_the_conv_head():
    """The README's numbers (paper: 0.9 and 34), for the benchmark config PointRend declares."""
    method = get_method("PointRend")
    (declared,) = method.benchmark_configs
    cfg = load_config(resolve_config(declared.config), ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    result = method.head_flops(cfg, model, torch.rand(3, 64, 96) * 255)  # any size: per box
    head = model.roi_heads.mask_head
    # 5 steps from 7 x 7, 784 points each: the first two (14 x 14, 28 x 28 <= 784 points) are a
    # dense 28 x 28 evaluation, then 3 steps of 784 points.
    assert result["output_side"] == 224 and result["point_evaluations"] == 28 * 28 + 3 * 784
    per_point = (256 + 80) * 256 * 3 + (256 + 80) * 80  # 3 FC layers, predictor; coarse logits
    assert _point_head_flops_per_point(head) == per_point  # concatenated to every layer
    assert result["point_head"] * 1e9 == pytest.approx(3136 * per_point)
    assert round(result["gflops_per_box"], 3) == 0.929
    conv = result["conv_head_same_output"]
    assert conv["output_side"] == 224 and round(conv["gflops_per_box"], 1) == 33.9
