"""Deformable convolution of the portable ``detectron2._C`` (projects/compat/portable_c).

The operators are exercised through Detectron2 v0.6's own autograd Functions and layers
(``detectron2.layers.deform_conv``), so the argument order v0.6 uses is what is tested. Those
Functions only call ``detectron2._C`` for CUDA tensors (on the CPU, v0.6 runs ``DeformConv``'s
forward through torchvision and raises in every backward and in ``ModulatedDeformConv``). This
machine has no GPU, so the ``route_through_c`` fixture makes every tensor report ``is_cuda=True``
for the duration of a test, and gives the Functions the portable operators as their ``_C`` (the
installed one may be an official build's compiled module): they then take their ``_C`` branch with
CPU tensors (the portable operators only use ``tensor.device``). The fixture also counts the
``_C`` calls so a test cannot pass by bypassing the operators.
"""

import collections
import inspect
import types
from pathlib import Path

import detectron2._C as installed_C
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import DeformConv, ModulatedDeformConv, ShapeSpec
from detectron2.layers import deform_conv as d2_deform_conv
from detectron2.layers.deform_conv import deform_conv, modulated_deform_conv
from detectron2.modeling.backbone.resnet import DeformBottleneckBlock, build_resnet_backbone
from torchvision.ops import deform_conv2d

from projects.compat import portable_c

REPO_FILE = (
    Path(__file__).resolve().parent.parent / "projects" / "compat" / "portable_c" / "deform_conv.py"
)
OPS = (
    "deform_conv_forward",
    "deform_conv_backward_input",
    "deform_conv_backward_filter",
    "modulated_deform_conv_forward",
    "modulated_deform_conv_backward",
)


@pytest.fixture
def route_through_c(monkeypatch):
    """Send Detectron2's deformable Functions through the portable operators on the CPU; count the
    calls.

    The Functions' ``_C`` is replaced by the portable operators (``projects.compat.portable_c``,
    which the portable wheel installs as ``detectron2._C``), so a compiled ``_C`` of an official
    build, which runs on CUDA only, does not stop these tests.

    Yields:
        collections.Counter: ``_C`` function name -> number of calls.
    """
    calls = collections.Counter()
    ops = types.SimpleNamespace()
    for name in OPS:

        def counted(*args, _op=getattr(portable_c, name), _name=name):
            calls[_name] += 1
            return _op(*args)

        setattr(ops, name, counted)
    monkeypatch.setattr(d2_deform_conv, "_C", ops)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True), raising=False)
    yield calls


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _out_hw(hw, kernel, stride, padding, dilation):
    return tuple(
        (i + 2 * p - (d * (k - 1) + 1)) // s + 1
        for i, k, s, p, d in zip(hw, _pair(kernel), _pair(stride), _pair(padding), _pair(dilation))
    )


def _inputs(cfg, seed=0, offset_scale=1.5):
    """Random float64 input, offset and mask for a layer setting.

    Returns:
        tuple[Tensor, Tensor, Tensor]: x (N, C, H, W), offset (N, 2*dg*kh*kw, Ho, Wo),
        mask (N, dg*kh*kw, Ho, Wo) in (0, 1).
    """
    g = torch.Generator().manual_seed(seed)
    kh, kw = _pair(cfg["kernel"])
    n, hw = cfg["batch"], cfg["hw"]
    ho, wo = _out_hw(hw, cfg["kernel"], cfg["stride"], cfg["padding"], cfg["dilation"])
    dg = cfg["deformable_groups"]
    x = torch.randn(n, cfg["in_ch"], *hw, generator=g, dtype=torch.float64)
    offset = offset_scale * torch.randn(
        n, 2 * dg * kh * kw, ho, wo, generator=g, dtype=torch.float64
    )
    mask = torch.rand(n, dg * kh * kw, ho, wo, generator=g, dtype=torch.float64)
    return x, offset, mask


def _layer(cls, cfg, seed=1):
    torch.manual_seed(seed)
    layer = cls(
        cfg["in_ch"],
        cfg["out_ch"],
        cfg["kernel"],
        stride=cfg["stride"],
        padding=cfg["padding"],
        dilation=cfg["dilation"],
        groups=cfg["groups"],
        deformable_groups=cfg["deformable_groups"],
    ).double()
    if getattr(layer, "bias", None) is not None:
        torch.nn.init.normal_(layer.bias)  # v0.6 initialises it to 0: make it matter
    return layer


def _setting(in_ch, out_ch, kernel, stride=1, padding=0, dilation=1, groups=1, dg=1, batch=2):
    return dict(
        in_ch=in_ch,
        out_ch=out_ch,
        kernel=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        deformable_groups=dg,
        batch=batch,
        hw=(7, 6),
    )


# ModulatedDeformConv in v0.6 takes int stride/padding/dilation only; DeformConv takes pairs too,
# and the asymmetric pairs catch a height/width swap in the v1 argument order.
SHARED = {
    "plain": _setting(4, 6, 3, padding=1),
    "groups2": _setting(4, 6, 3, padding=1, groups=2),
    "dgroups2": _setting(4, 6, 3, padding=1, dg=2),
    "groups2_dgroups2_stride2": _setting(4, 4, 3, stride=2, padding=1, groups=2, dg=2),
    "dilation2": _setting(4, 6, 3, padding=2, dilation=2, dg=2),
    "kernel3x1": _setting(4, 6, (3, 1), padding=1, groups=2, dg=2),
    "kernel1x3_batch1": _setting(2, 3, (1, 3), stride=2, batch=1),
}
V1_ONLY = {
    "asymmetric": _setting(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), dg=2),
}
V1 = {**SHARED, **V1_ONLY}


def _torchvision(layer, x, offset, mask=None):
    bias = getattr(layer, "bias", None)
    return deform_conv2d(
        x,
        offset,
        layer.weight,
        bias=bias,
        stride=_pair(layer.stride),
        padding=_pair(layer.padding),
        dilation=_pair(layer.dilation),
        mask=mask,
    )


def test_portable_package_is_installed_and_current():
    if not getattr(installed_C, "PORTABLE", False):
        pytest.skip(f"a compiled detectron2._C is installed ({installed_C.__file__})")
    for name in OPS:
        assert callable(getattr(installed_C, name)), name
    installed = Path(inspect.getsourcefile(installed_C.deform_conv_forward))
    assert installed.name == "deform_conv.py" and installed.parent.name == "_C"
    assert (
        installed.read_text() == REPO_FILE.read_text()
    ), f"{installed} differs from {REPO_FILE}: reinstall with tools/install_detectron2.py"


@pytest.mark.parametrize("name", sorted(V1))
def test_deform_conv_forward_matches_torchvision(route_through_c, name):
    cfg = V1[name]
    layer = _layer(DeformConv, cfg)
    x, offset, _ = _inputs(cfg)
    with torch.no_grad():
        out = layer(x, offset)
        expected = _torchvision(layer, x, offset)
    assert route_through_c["deform_conv_forward"] == 1
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(SHARED))
def test_modulated_deform_conv_forward_matches_torchvision(route_through_c, name):
    cfg = SHARED[name]
    layer = _layer(ModulatedDeformConv, cfg)
    x, offset, mask = _inputs(cfg)
    with torch.no_grad():
        out = layer(x, offset, mask)
        expected = _torchvision(layer, x, offset, mask)
    assert route_through_c["modulated_deform_conv_forward"] == 1
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def _grads_of(out, tensors, seed=3):
    g = torch.Generator().manual_seed(seed)
    grad_out = torch.randn(out.shape, generator=g, dtype=out.dtype)
    return torch.autograd.grad(out, tensors, grad_out)


@pytest.mark.parametrize("name", ["groups2_dgroups2_stride2", "asymmetric", "kernel3x1"])
def test_deform_conv_gradients_match_torchvision(route_through_c, name):
    cfg = V1[name]
    layer = _layer(DeformConv, cfg)
    x, offset, _ = _inputs(cfg)
    x.requires_grad_(True)
    offset.requires_grad_(True)
    ours = _grads_of(layer(x, offset), [x, offset, layer.weight])
    assert route_through_c["deform_conv_backward_input"] == 1
    assert route_through_c["deform_conv_backward_filter"] == 1
    theirs = _grads_of(_torchvision(layer, x, offset), [x, offset, layer.weight])
    for a, b, what in zip(ours, theirs, ("input", "offset", "weight")):
        assert a.abs().sum() > 0, what
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=what)


@pytest.mark.parametrize("name", ["groups2_dgroups2_stride2", "dilation2", "kernel3x1"])
def test_modulated_deform_conv_gradients_match_torchvision(route_through_c, name):
    cfg = SHARED[name]
    layer = _layer(ModulatedDeformConv, cfg)
    x, offset, mask = _inputs(cfg)
    for t in (x, offset, mask):
        t.requires_grad_(True)
    wrt = [x, offset, mask, layer.weight, layer.bias]
    ours = _grads_of(layer(x, offset, mask), wrt)
    assert route_through_c["modulated_deform_conv_backward"] == 1
    theirs = _grads_of(_torchvision(layer, x, offset, mask), wrt)
    for a, b, what in zip(ours, theirs, ("input", "offset", "mask", "weight", "bias")):
        assert a.abs().sum() > 0, what
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=what)


GRADCHECK = {
    "plain": dict(groups=1, dg=1, kernel=(2, 2), stride=1, padding=0, dilation=1),
    "groups2_dgroups2": dict(groups=2, dg=2, kernel=(3, 1), stride=1, padding=1, dilation=1),
    "stride2_dilation2": dict(groups=2, dg=1, kernel=(2, 2), stride=2, padding=1, dilation=2),
}


def _gradcheck_tensors(spec, modulated):
    cfg = _setting(
        4,
        2,
        spec["kernel"],
        spec["stride"],
        spec["padding"],
        spec["dilation"],
        spec["groups"],
        spec["dg"],
        batch=1,
    )
    cfg["hw"] = (4, 4)
    x, offset, mask = _inputs(cfg, offset_scale=0.7)
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(2, 4 // spec["groups"], *spec["kernel"], generator=g, dtype=torch.float64)
    bias = torch.randn(2, generator=g, dtype=torch.float64)
    tensors = [x, offset, mask, weight, bias] if modulated else [x, offset, weight]
    return [t.requires_grad_(True) for t in tensors]


@pytest.mark.parametrize("name", sorted(GRADCHECK))
def test_deform_conv_gradcheck(route_through_c, name):
    spec = GRADCHECK[name]
    args = (spec["stride"], spec["padding"], spec["dilation"], spec["groups"], spec["dg"])
    tensors = _gradcheck_tensors(spec, modulated=False)
    assert torch.autograd.gradcheck(lambda x, o, w: deform_conv(x, o, w, *args), tensors)
    assert route_through_c["deform_conv_backward_filter"] > 0


@pytest.mark.parametrize("name", sorted(GRADCHECK))
def test_modulated_deform_conv_gradcheck(route_through_c, name):
    spec = GRADCHECK[name]
    args = (spec["stride"], spec["padding"], spec["dilation"], spec["groups"], spec["dg"])
    tensors = _gradcheck_tensors(spec, modulated=True)
    assert torch.autograd.gradcheck(
        lambda x, o, m, w, b: modulated_deform_conv(x, o, m, w, b, *args), tensors
    )
    assert route_through_c["modulated_deform_conv_backward"] > 0


@pytest.mark.parametrize("name", ["groups2_dgroups2_stride2", "dilation2", "kernel3x1"])
def test_zero_offsets_reduce_to_conv2d(route_through_c, name):
    cfg = SHARED[name]
    x, offset, mask = _inputs(cfg)
    offset.zero_()
    mask.fill_(1.0)
    v1 = _layer(DeformConv, cfg)
    v2 = _layer(ModulatedDeformConv, cfg)
    conv = dict(
        stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"]
    )
    with torch.no_grad():
        torch.testing.assert_close(v1(x, offset), F.conv2d(x, v1.weight, **conv))
        torch.testing.assert_close(v2(x, offset, mask), F.conv2d(x, v2.weight, v2.bias, **conv))


def test_offset_and_mask_layout(route_through_c):
    """Channel 2k of a group's offsets moves rows, 2k+1 columns; masks are per group."""
    x = torch.arange(2 * 5 * 5, dtype=torch.float64).reshape(1, 2, 5, 5)
    weight = torch.eye(2, dtype=torch.float64).reshape(2, 2, 1, 1)  # identity 1x1 conv
    offset = torch.zeros(1, 4, 5, 5, dtype=torch.float64)
    offset[:, 0] = 1.0  # group 0 (channel 0): dy = +1
    offset[:, 3] = 0.5  # group 1 (channel 1): dx = +0.5
    mask = torch.ones(1, 2, 5, 5, dtype=torch.float64)
    mask[:, 1] = 3.0
    out = modulated_deform_conv(x, offset, mask, weight, None, 1, 0, 1, 1, 2)
    shifted_rows = F.pad(x[:, 0, 1:, :], (0, 0, 0, 1))  # sample x[h + 1, w], zero past the end
    half_col = 0.5 * (x[:, 1] + F.pad(x[:, 1, :, 1:], (0, 1)))  # between x[h, w] and x[h, w + 1]
    torch.testing.assert_close(out[:, 0], shifted_rows)
    torch.testing.assert_close(out[:, 1], 3.0 * half_col)
    assert route_through_c["modulated_deform_conv_forward"] == 1


def test_im2col_step_does_not_change_result(route_through_c):
    cfg = _setting(4, 6, 3, padding=1, dg=2, batch=4)
    layer = _layer(DeformConv, cfg)
    x, offset, _ = _inputs(cfg)
    args = (layer.stride, layer.padding, layer.dilation, 1, 2)
    with torch.no_grad():
        whole = deform_conv(x, offset, layer.weight, *args, 64)
        by_two = deform_conv(x, offset, layer.weight, *args, 2)
    torch.testing.assert_close(whole, by_two, rtol=1e-12, atol=1e-12)


def test_in_place_output_semantics():
    """backward_filter adds scale * grad; backward_input adds to grad_input, overwrites offset."""
    cfg = _setting(2, 3, (3, 2), padding=1, batch=1)
    x, offset, _ = _inputs(cfg)
    weight = torch.randn(3, 2, 3, 2, dtype=torch.float64)
    grad_out = torch.randn(1, 3, *_out_hw((7, 6), (3, 2), 1, 1, 1), dtype=torch.float64)
    ref = [t.detach().requires_grad_(True) for t in (x, offset, weight)]
    ref_grads = torch.autograd.grad(
        deform_conv2d(ref[0], ref[1], ref[2], padding=(1, 1)), ref, grad_out
    )
    empty = x.new_empty(0)
    conv = (2, 3, 1, 1, 1, 1, 1, 1, 1, 1)  # kW, kH, dW, dH, padW, padH, dilW, dilH, group, dg
    grad_weight = torch.ones_like(weight)
    portable_c.deform_conv_backward_filter(
        x, offset, grad_out, grad_weight, empty, empty, *conv, 0.5, 1
    )
    torch.testing.assert_close(grad_weight, 1.0 + 0.5 * ref_grads[2])
    grad_input, grad_offset = torch.ones_like(x), torch.full_like(offset, 7.0)
    portable_c.deform_conv_backward_input(
        x, offset, grad_out, grad_input, grad_offset, weight, empty, *conv, 1
    )
    torch.testing.assert_close(grad_input, 1.0 + ref_grads[0])
    torch.testing.assert_close(grad_offset, ref_grads[1])


def test_bad_arguments_name_the_fault():
    cfg = _setting(2, 3, (3, 1), padding=1, batch=1)
    x, offset, _ = _inputs(cfg)
    weight = torch.randn(3, 2, 3, 1, dtype=torch.float64)
    out, empty = x.new_empty(0), x.new_empty(0)
    # kH and kW swapped (v1 takes width first): weight is 3 (h) x 1 (w).
    with pytest.raises(ValueError, match="kH=1, kW=3"):
        portable_c.deform_conv_forward(
            x, weight, offset, out, empty, empty, 3, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1
        )
    with pytest.raises(ValueError, match="offset of shape"):
        portable_c.deform_conv_forward(
            x, weight, offset, out, empty, empty, 1, 3, 1, 1, 0, 1, 1, 1, 1, 2, 1
        )
    with pytest.raises(ValueError, match="im2col_step=3"):
        portable_c.deform_conv_forward(
            x, weight, offset, out, empty, empty, 1, 3, 1, 1, 0, 1, 1, 1, 1, 1, 3
        )


@pytest.mark.parametrize("modulated", [False, True])
def test_resnet_with_deformable_blocks(route_through_c, modulated):
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 8
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 16
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 4
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3"]
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, True, False, False]
    cfg.MODEL.RESNETS.DEFORM_MODULATED = modulated
    cfg.MODEL.RESNETS.DEFORM_NUM_GROUPS = 2
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    torch.manual_seed(0)
    model = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    blocks = [m for m in model.modules() if isinstance(m, DeformBottleneckBlock)]
    assert len(blocks) == 4  # every res3 block
    layer_cls = ModulatedDeformConv if modulated else DeformConv
    assert all(isinstance(b.conv2, layer_cls) for b in blocks)
    out = model(torch.randn(2, 3, 32, 32))["res3"]
    assert out.shape == (2, 32, 4, 4)
    out.square().mean().backward()
    prefix = "modulated_deform_conv" if modulated else "deform_conv"
    assert route_through_c[f"{prefix}_forward"] == 4
    assert route_through_c[f"{prefix}_backward" if modulated else f"{prefix}_backward_filter"] == 4
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # The offset branch starts at zero (v0.6 init) yet must receive a gradient through _C.
    assert all(b.conv2_offset.weight.grad.abs().sum() > 0 for b in blocks)
