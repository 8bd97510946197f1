"""Learning-rate schedules: Detectron2's warm-up multi-step and cosine, plus warm-up poly."""

import logging

from detectron2.solver import build_lr_scheduler as d2_build_lr_scheduler
from detectron2.solver.lr_scheduler import LRMultiplier, WarmupParamScheduler
from fvcore.common.param_scheduler import ParamScheduler

logger = logging.getLogger(__name__)


class PolyParamScheduler(ParamScheduler):
    """``(1 - where) ** power``, floored at ``constant_ending`` when that is > 0.

    ``where`` is the fraction of training done, in [0, 1).
    """

    def __init__(self, power, constant_ending=0.0):
        if power < 0:
            raise ValueError(f"SOLVER.POLY_LR_POWER must be >= 0, got {power}")
        self._power = power
        self._constant_ending = constant_ending

    def __call__(self, where):
        value = (1.0 - where) ** self._power
        if self._constant_ending > 0:
            value = max(value, self._constant_ending)
        return value


class WarmupPolyLR(LRMultiplier):
    """Poly decay of every group's learning rate after a Detectron2-style warm-up.

    After warm-up the learning rate at iteration ``t`` is
    ``base_lr * max((1 - t / max_iter) ** power, constant_ending)`` (no floor when
    ``constant_ending`` is 0). Its state dict holds plain numbers only (as every ``LRMultiplier``).
    """

    def __init__(
        self,
        optimizer,
        max_iter,
        *,
        power=0.9,
        constant_ending=0.0,
        warmup_factor=0.001,
        warmup_iters=1000,
        warmup_method="linear",
        last_iter=-1,
    ):
        multiplier = WarmupParamScheduler(
            PolyParamScheduler(power, constant_ending),
            warmup_factor,
            min(warmup_iters / max_iter, 1.0),
            warmup_method,
        )
        super().__init__(optimizer, multiplier, max_iter, last_iter=last_iter)


def build_lr_scheduler(cfg, optimizer):
    """The schedule named by ``SOLVER.LR_SCHEDULER_NAME``.

    ``WarmupMultiStepLR`` and ``WarmupCosineLR`` are Detectron2's; ``WarmupPolyLR`` reads
    ``SOLVER.POLY_LR_POWER`` and ``SOLVER.POLY_LR_CONSTANT_ENDING``.
    """
    name = cfg.SOLVER.LR_SCHEDULER_NAME
    if name == "WarmupPolyLR":
        return WarmupPolyLR(
            optimizer,
            cfg.SOLVER.MAX_ITER,
            power=cfg.SOLVER.POLY_LR_POWER,
            constant_ending=cfg.SOLVER.POLY_LR_CONSTANT_ENDING,
            warmup_factor=cfg.SOLVER.WARMUP_FACTOR,
            warmup_iters=cfg.SOLVER.WARMUP_ITERS,
            warmup_method=cfg.SOLVER.WARMUP_METHOD,
        )
    if name in ("WarmupMultiStepLR", "WarmupCosineLR"):
        return d2_build_lr_scheduler(cfg, optimizer)
    raise ValueError(
        f"SOLVER.LR_SCHEDULER_NAME={name!r} is not one of "
        "WarmupMultiStepLR, WarmupCosineLR, WarmupPolyLR"
    )
