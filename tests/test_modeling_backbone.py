"""The deform-interval ResNet / ResNet-FPN builders (projects/modeling/backbone).

Which blocks are deformable is checked against explicit lists and against the originals' parameter
lists (tests/fixtures: YOLACT++'s R-101 and R-50, AdelaiDet's BlendMask R-50); the state dict of an
R-50 with interval 3 against AdelaiDet's scheme written out here; interval 1 against Detectron2's
own builders; forward and backward on the CPU against Detectron2's plain ResNet.
"""

import re
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg as d2_get_cfg
from detectron2.layers import DeformConv, ModulatedDeformConv, ShapeSpec
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone
from detectron2.modeling.backbone.resnet import DeformBottleneckBlock, build_resnet_backbone

from projects.config import get_cfg
from projects.modeling import (
    add_modeling_config,
    build_resnet_deform_interval_backbone,
    build_resnet_deform_interval_fpn_backbone,
    deformable_block_flags,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
C3_TO_C5 = [False, True, True, True]


def _cfg(depth=50, interval=1, stages=C3_TO_C5, modulated=False, groups=1, tiny=False, **resnets):
    """A config for the builders; ``tiny`` shrinks the widths (stem 8, res2 16, bottleneck 4)."""
    cfg = get_cfg()
    r = cfg.MODEL.RESNETS
    r.DEPTH = depth
    r.DEFORM_INTERVAL = interval
    r.DEFORM_ON_PER_STAGE = list(stages)
    r.DEFORM_MODULATED = modulated
    r.DEFORM_NUM_GROUPS = groups
    r.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    if tiny:
        r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS, r.WIDTH_PER_GROUP = 8, 16, 4
    for key, value in resnets.items():
        r[key] = value
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.FPN.IN_FEATURES = list(r.OUT_FEATURES)
    return cfg


def _deformable_blocks(model):
    """Names (``"res3.0"``, ...) of the model's blocks that hold a deformable conv2."""
    return sorted(
        (name for name, m in model.named_modules() if isinstance(m, DeformBottleneckBlock)),
        key=_block_order,
    )


def _block_order(name):
    stage, index = name.split(".")
    return int(stage[3:]), int(index)


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _read_fixture(name):
    """(name, shape) rows of a tests/fixtures TSV (comment lines start with #)."""
    rows = []
    for line in (FIXTURES / name).read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split("\t")[:2]
            rows.append((key, tuple(int(s) for s in re.findall(r"\d+", shape))))
    return rows


@pytest.mark.parametrize(
    "interval, expected",
    [
        (
            1,
            ["res3.0", "res3.1", "res3.2", "res3.3"]
            + ["res4.0", "res4.1", "res4.2", "res4.3", "res4.4", "res4.5"]
            + ["res5.0", "res5.1", "res5.2"],
        ),
        (2, ["res3.0", "res3.2", "res4.0", "res4.2", "res4.4", "res5.0", "res5.2"]),
        (3, ["res3.0", "res3.3", "res4.0", "res4.3", "res5.0"]),
    ],
)
@pytest.mark.parametrize("modulated", [False, True])
def test_deformable_blocks_for_intervals_1_2_3_are_the_listed_ones(interval, expected, modulated):
    model = build_resnet_deform_interval_backbone(
        _cfg(interval=interval, modulated=modulated, tiny=True), ShapeSpec(channels=3)
    )
    assert _deformable_blocks(model) == expected
    conv_class = ModulatedDeformConv if modulated else DeformConv
    for name, block in model.named_modules():
        if re.fullmatch(r"res\d\.\d+", name):
            assert isinstance(block.conv2, conv_class) == (name in expected), name
            assert hasattr(block, "conv2_offset") == (name in expected), name


def test_deformable_block_flags_and_bad_intervals_name_the_key():
    assert deformable_block_flags(7, 3) == [True, False, False, True, False, False, True]
    assert deformable_block_flags(2, 5) == [True, False]
    for bad in (0, -3, 1.5, True, "3"):
        with pytest.raises(ValueError, match=r"MODEL\.RESNETS\.DEFORM_INTERVAL.*" + repr(bad)):
            deformable_block_flags(4, bad)
    with pytest.raises(ValueError, match="DEFORM_INTERVAL must be an integer >= 1.*got 0"):
        build_resnet_deform_interval_backbone(_cfg(interval=0, tiny=True), ShapeSpec(channels=3))


def _adelaidet_r50_shapes(interval, deform_stages, modulated, groups):
    """AdelaiDet's ``build_resnet_interval_backbone`` state dict for an R-50 with FrozenBN, written
    out from its scheme: Detectron2's bottleneck blocks, block ``i`` of an enabled stage
    deformable iff ``i % interval == 0`` (a ``conv2_offset`` conv with bias, ``3 * 9`` output
    channels per group when modulated, else ``2 * 9``)."""
    frozen_bn = ("weight", "bias", "running_mean", "running_var")

    def conv(name, out_ch, in_ch, k):
        entries = {f"{name}.weight": (out_ch, in_ch, k, k)}
        entries.update({f"{name}.norm.{p}": (out_ch,) for p in frozen_bn})
        return entries

    shapes = conv("stem.conv1", 64, 3, 7)
    in_ch, out_ch, width = 64, 256, 64
    for stage, num_blocks in zip((2, 3, 4, 5), (3, 4, 6, 3)):
        for i in range(num_blocks):
            block = f"res{stage}.{i}"
            if i == 0:
                shapes.update(conv(f"{block}.shortcut", out_ch, in_ch, 1))
            shapes.update(conv(f"{block}.conv1", width, in_ch if i == 0 else out_ch, 1))
            if deform_stages[stage - 2] and i % interval == 0:
                offset_ch = (27 if modulated else 18) * groups
                shapes[f"{block}.conv2_offset.weight"] = (offset_ch, width, 3, 3)
                shapes[f"{block}.conv2_offset.bias"] = (offset_ch,)
            shapes.update(conv(f"{block}.conv2", width, width, 3))
            shapes.update(conv(f"{block}.conv3", out_ch, width, 1))
        in_ch, out_ch, width = out_ch, out_ch * 2, width * 2
    return shapes


@pytest.mark.parametrize("modulated, groups", [(True, 1), (False, 2)])
def test_r50_interval_3_state_dict_is_adelaidets(modulated, groups):
    cfg = _cfg(interval=3, modulated=modulated, groups=groups)
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    model = build_resnet_deform_interval_backbone(cfg, ShapeSpec(channels=3))
    assert _shapes(model) == _adelaidet_r50_shapes(3, C3_TO_C5, modulated, groups)


def test_r50_without_deformable_stages_is_adelaidets_blendmask_bottom_up():
    """Names and shapes equal the ``backbone.bottom_up`` entries of AdelaiDet's BlendMask R_50_1x
    (built by its interval builder with the default interval 1)."""
    cfg = _cfg(stages=[False] * 4)
    cfg.MODEL.RESNETS.OUT_FEATURES = cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    model = build_resnet_deform_interval_fpn_backbone(cfg, ShapeSpec(channels=3)).bottom_up
    reference = {
        key[len("backbone.bottom_up.") :]: shape
        for key, shape in _read_fixture("adelaidet_blendmask_R_50_1x_bottom_up.tsv")
    }
    assert _shapes(model) == reference


@pytest.mark.parametrize(
    "fixture, depth, interval",
    [("yolact_plus_base_conv2.tsv", 101, 3), ("yolact_plus_resnet50_conv2.tsv", 50, 1)],
)
def test_deformable_blocks_are_yolact_plus_ones(fixture, depth, interval):
    """YOLACT++ (``use_dcn`` in C3-C5, ``dcn_interval``): its ``layers.k.i`` is our
    ``res{k+2}.i``; a block with ``conv2.conv_offset_mask`` must be deformable here, with an
    offset conv of the same shape (offsets and mask of one 3x3 DCNv2 group)."""
    rows = _read_fixture(fixture)
    offsets = {}
    for key, shape in rows:
        match = re.fullmatch(r"backbone\.layers\.(\d)\.(\d+)\.conv2\.conv_offset_mask\.weight", key)
        if match:
            offsets[f"res{int(match.group(1)) + 2}.{match.group(2)}"] = shape
    cfg = _cfg(depth=depth, interval=interval, modulated=True)
    model = build_resnet_deform_interval_backbone(cfg, ShapeSpec(channels=3))
    assert _deformable_blocks(model) == sorted(offsets, key=_block_order)
    assert len(offsets) == {101: 11, 50: 13}[depth]
    shapes = _shapes(model)
    for block, shape in offsets.items():
        assert shapes[f"{block}.conv2_offset.weight"] == shape, block


@pytest.mark.parametrize(
    "setting",
    [
        dict(depth=50, stages=C3_TO_C5, modulated=True),
        dict(depth=101, stages=[True, False, True, False], groups=2, RES5_DILATION=2, tiny=True),
        dict(depth=50, stages=[False] * 4, NUM_GROUPS=32, WIDTH_PER_GROUP=4, NORM="BN"),
        dict(depth=18, stages=[False] * 4, RES2_OUT_CHANNELS=64, OUT_FEATURES=["res3", "res4"]),
    ],
    ids=["r50_dcn_c3_c5", "tiny_r101_dilated_groups2", "x50_bn", "r18"],
)
def test_interval_1_equals_detectron2_builders(setting):
    """Same keys in the same order and the same shapes as ``build_resnet_backbone`` (which ignores
    DEFORM_INTERVAL), so its checkpoints load; with equal weights the outputs are equal too."""
    cfg = _cfg(interval=1, **setting)
    shape = ShapeSpec(channels=3)
    ours = build_resnet_deform_interval_backbone(cfg, shape)
    theirs = build_resnet_backbone(cfg, shape)
    assert list(_shapes(ours).items()) == list(_shapes(theirs).items())
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(1, 3, 32, 32)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        out, ref = ours(x), theirs(x)
    assert out.keys() == ref.keys() == set(cfg.MODEL.RESNETS.OUT_FEATURES)
    for name in out:
        torch.testing.assert_close(out[name], ref[name])
    assert ours.output_shape() == theirs.output_shape()


def test_interval_1_fpn_equals_detectron2s():
    cfg = _cfg(interval=1, modulated=True)
    shape = ShapeSpec(channels=3)
    ours = build_resnet_deform_interval_fpn_backbone(cfg, shape)
    theirs = build_resnet_fpn_backbone(cfg, shape)
    assert list(_shapes(ours).items()) == list(_shapes(theirs).items())
    assert ours.output_shape() == theirs.output_shape()


def test_freeze_at_freezes_like_detectron2():
    cfg = _cfg(interval=2, tiny=True)
    cfg.MODEL.BACKBONE.FREEZE_AT = 3  # stem, res2, res3
    model = build_resnet_deform_interval_backbone(cfg, ShapeSpec(channels=3))
    for name, p in model.named_parameters():
        assert p.requires_grad == name.startswith(("res4", "res5")), name


@pytest.mark.parametrize("modulated", [False, True])
def test_cpu_forward_with_zero_offsets_equals_plain_resnet_and_backward_reaches_offsets(modulated):
    """Detectron2 initialises the offset convs to zero, so before training the interval ResNet
    computes what the same ResNet without deformable blocks computes (modulation mask 0.5 is
    ``sigmoid(0)``: the modulated conv2 sees half its input, emulated by halving its weight in
    the plain copy). The backward pass on the CPU gives every parameter a finite gradient,
    the offset convs a non-zero one."""
    cfg = _cfg(interval=2, modulated=modulated, groups=2, tiny=True, NORM="BN")
    cfg.MODEL.FPN.OUT_CHANNELS = 8
    cfg.MODEL.BACKBONE.NAME = "build_resnet_deform_interval_fpn_backbone"
    torch.manual_seed(0)
    model = build_backbone(cfg).train().double()  # through the registry: MODEL.BACKBONE.NAME
    assert type(model).__name__ == "FPN"
    plain_cfg = cfg.clone()
    plain_cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False] * 4
    plain = build_resnet_deform_interval_fpn_backbone(plain_cfg, ShapeSpec(channels=3))
    plain.train().double()
    state = {k: v for k, v in model.state_dict().items() if "conv2_offset" not in k}
    if modulated:
        for block in _deformable_blocks(model.bottom_up):
            state[f"bottom_up.{block}.conv2.weight"] = state[f"bottom_up.{block}.conv2.weight"] / 2
    plain.load_state_dict(state)

    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)  # float64: BN on 2 images amplifies noise
    out, ref = model(x), plain(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "p2": (2, 8, 16, 16),
        "p3": (2, 8, 8, 8),
        "p4": (2, 8, 4, 4),
        "p5": (2, 8, 2, 2),
        "p6": (2, 8, 1, 1),
    }
    for name in out:
        torch.testing.assert_close(out[name], ref[name])

    sum(v.square().mean() for v in out.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    offset_grads = [
        m.conv2_offset.weight.grad for m in model.modules() if hasattr(m, "conv2_offset")
    ]
    assert len(offset_grads) == len(_deformable_blocks(model.bottom_up)) == 7
    assert all(g.abs().sum() > 0 for g in offset_grads)


def test_config_adder_adds_only_missing_key():
    cfg = d2_get_cfg()
    assert "DEFORM_INTERVAL" not in cfg.MODEL.RESNETS
    add_modeling_config(cfg)
    assert cfg.MODEL.RESNETS.DEFORM_INTERVAL == 1
    cfg.MODEL.RESNETS.DEFORM_INTERVAL = 3
    add_modeling_config(cfg)
    assert cfg.MODEL.RESNETS.DEFORM_INTERVAL == 3
    assert get_cfg().MODEL.RESNETS.DEFORM_INTERVAL == 1  # wired into projects' get_cfg
    cfg.merge_from_list(["MODEL.RESNETS.DEFORM_INTERVAL", "2"])
    assert cfg.MODEL.RESNETS.DEFORM_INTERVAL == 2


def test_config_errors_name_the_key():
    with pytest.raises(KeyError, match="DEFORM_INTERVAL is missing.*add_modeling_config"):
        build_resnet_deform_interval_backbone(d2_get_cfg(), ShapeSpec(channels=3))
    with pytest.raises(ValueError, match="R18 has no deformable blocks.*DEFORM_ON_PER_STAGE"):
        build_resnet_deform_interval_backbone(
            _cfg(depth=18, RES2_OUT_CHANNELS=64), ShapeSpec(channels=3)
        )
    with pytest.raises(ValueError, match="DEPTH must be one of.*got 77"):
        build_resnet_deform_interval_backbone(_cfg(depth=77), ShapeSpec(channels=3))
