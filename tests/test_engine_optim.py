"""Optimizer param groups, gradient clipping and the WarmupPolyLR schedule."""

import pytest
import torch
from torch import nn

from projects.config import get_cfg
from projects.engine.lr_scheduler import build_lr_scheduler
from projects.engine.optimizer import build_optimizer, get_param_groups


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Sequential(nn.Conv2d(4, 4, 1), nn.GroupNorm(2, 4))
        self.query = nn.Embedding(5, 4)
        self.pos_embed = nn.Parameter(torch.zeros(1, 4))


def _cfg(**solver):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def _hyper_by_name(groups):
    return {n: (g["lr"], g["weight_decay"]) for g in groups for n in g["names"]}


def test_param_groups_norm_embed_backbone():
    hyper = _hyper_by_name(get_param_groups(_cfg(), _Net()))
    assert hyper["backbone.0.weight"] == pytest.approx((0.01, 1e-4))
    assert hyper["backbone.1.weight"] == pytest.approx((0.01, 0.0))  # BN, backbone
    assert hyper["backbone.1.bias"] == pytest.approx((0.01, 0.0))
    assert hyper["head.0.weight"] == pytest.approx((0.1, 1e-4))
    assert hyper["head.1.weight"] == pytest.approx((0.1, 0.0))  # GN
    assert hyper["query.weight"] == pytest.approx((0.1, 0.0))  # nn.Embedding
    assert hyper["pos_embed"] == pytest.approx((0.1, 0.0))  # "embed" parameter
    assert len(hyper) == len(list(_Net().parameters()))


def test_optimizer_param_groups_sgd_and_adamw():
    model = _Net()
    opt = build_optimizer(_cfg(), model)
    assert isinstance(opt, torch.optim.SGD)
    by_param = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    assert by_param[id(model.backbone[1].weight)] == pytest.approx((0.01, 0.0))
    assert by_param[id(model.head[0].weight)] == pytest.approx((0.1, 1e-4))
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    opt = build_optimizer(_cfg(OPTIMIZER="ADAMW", WEIGHT_DECAY_EMBED=0.5), model)
    assert isinstance(opt, torch.optim.AdamW)
    by_param = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert by_param[id(model.query.weight)] == 0.5


def test_unknown_optimizer_names_key():
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER='LAMB'"):
        build_optimizer(_cfg(OPTIMIZER="LAMB"), _Net())


@pytest.mark.parametrize("clip_type", ["full_model", "norm", "value"])
def test_gradient_clipping(clip_type):
    cfg = _cfg(BASE_LR=1.0, WEIGHT_DECAY=0.0, BACKBONE_MULTIPLIER=1.0)
    cfg.SOLVER.MOMENTUM = 0.0
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    a, b = nn.Parameter(torch.zeros(4)), nn.Parameter(torch.zeros(4))
    model = nn.Module()
    model.a, model.b = a, b
    opt = build_optimizer(cfg, model)
    a.grad, b.grad = torch.full((4,), 3.0), torch.full((4,), 4.0)
    opt.step()
    if clip_type == "value":
        assert torch.allclose(a, torch.full((4,), -0.5)) and torch.allclose(b, a)
    elif clip_type == "norm":  # each parameter's gradient norm is 0.5
        assert a.norm().item() == pytest.approx(0.5) and b.norm().item() == pytest.approx(0.5)
    else:  # the joint norm is 0.5, directions kept
        assert torch.cat([a, b]).norm().item() == pytest.approx(0.5)
        assert (b / a).mean().item() == pytest.approx(4 / 3)


def test_bad_clip_type_names_key():
    cfg = _cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "fullmodel"
    with pytest.raises(ValueError, match="CLIP_TYPE='fullmodel'"):
        build_optimizer(cfg, _Net())


def _lrs(cfg, n):
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=cfg.SOLVER.BASE_LR)
    sched = build_lr_scheduler(cfg, opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out, sched


def test_warmup_poly_lr_values():
    cfg = _cfg(LR_SCHEDULER_NAME="WarmupPolyLR", MAX_ITER=100, WARMUP_ITERS=0, POLY_LR_POWER=0.9)
    lrs, _ = _lrs(cfg, 100)
    for t in (0, 10, 50, 99):
        assert lrs[t] == pytest.approx(0.1 * (1 - t / 100) ** 0.9)
    cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.2
    lrs, _ = _lrs(cfg, 100)
    assert lrs[10] == pytest.approx(0.1 * 0.9**0.9)
    assert lrs[95] == pytest.approx(0.1 * 0.2)  # 0.05 ** 0.9 < 0.2: the floor


def test_warmup_poly_lr_warmup_and_state_dict():
    cfg = _cfg(LR_SCHEDULER_NAME="WarmupPolyLR", MAX_ITER=100, WARMUP_ITERS=10)
    cfg.SOLVER.WARMUP_FACTOR = 0.01
    lrs, sched = _lrs(cfg, 20)
    assert lrs[0] == pytest.approx(0.1 * 0.01)
    assert lrs[0] < lrs[5] < lrs[10]
    assert lrs[15] == pytest.approx(0.1 * (1 - 15 / 100) ** 0.9)
    state = sched.state_dict()
    assert state["last_epoch"] == 20
    assert all(isinstance(v, (int, float, list)) for v in state.values())


def test_unknown_scheduler_names_key():
    with pytest.raises(ValueError, match="LR_SCHEDULER_NAME='Poly'"):
        _lrs(_cfg(LR_SCHEDULER_NAME="Poly"), 1)
