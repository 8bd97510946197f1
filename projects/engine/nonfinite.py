"""Training steps that stop on (or skip) a NaN / Inf loss, saying where it came from.

Detectron2's ``SimpleTrainer`` raises a bare ``FloatingPointError`` with the averaged loss values
after the backward pass. Here the losses are checked *before* the backward pass and the optimizer
step, so the weights are never touched by a non-finite step, and:

* ``SOLVER.NONFINITE_LOSS: "error"`` (default) raises :class:`NonFiniteLossError` naming the
  iteration, every non-finite loss term with its value, and the image ids (or file names) of the
  batch, gathered from every process. No checkpoint is written by the failing step, so
  ``last_checkpoint`` still names the last good one and ``--resume`` starts from it.
* ``"skip"`` drops the step (no backward, no optimizer step), logs a warning with the same
  information, counts it in the ``nonfinite_skips`` scalar, and goes on; after
  ``SOLVER.NONFINITE_MAX_SKIPS`` skips in one run it raises as ``"error"`` does.

Under AMP (:class:`GuardedAMPTrainer`, any device) the losses are checked the same way, before
the grad scaler sees them, so a skipped step leaves the weights and the scaler's state as they were.

With several processes the decision is taken together (an all-reduce of the flag), so every
process skips or raises at the same step and DDP never waits on a missing backward pass.
"""

import contextlib
import logging
import time
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from .amp import AMPPolicy

logger = logging.getLogger(__name__)

__all__ = [
    "NONFINITE_MODES",
    "GuardedAMPTrainer",
    "GuardedSimpleTrainer",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
]

NONFINITE_MODES = ("error", "skip")


class NonFiniteLossError(FloatingPointError):
    """A loss term was NaN or Inf; the message names the iteration, the terms and the images."""


def _image_names(data) -> List[str]:
    names = []
    for d in data if isinstance(data, (list, tuple)) else []:
        if isinstance(d, dict):
            name = d.get("image_id", d.get("file_name"))
            names.append(str(name) if name is not None else "?")
    return names


class NonFiniteLossGuard:
    """Checks a step's losses; see the module docstring.

    Args:
        mode: ``"error"`` or ``"skip"``.
        max_skips: skips allowed in one run before raising.
    """

    def __init__(self, mode: str = "error", max_skips: int = 100):
        if mode not in NONFINITE_MODES:
            raise ValueError(
                f"SOLVER.NONFINITE_LOSS must be one of {NONFINITE_MODES}, got {mode!r}"
            )
        self.mode = mode
        self.max_skips = max_skips
        self.skipped = 0

    def check(self, loss_dict: Dict[str, torch.Tensor], data, iteration: int) -> bool:
        """Returns True if the step can go on, False if it is to be skipped; raises
        :class:`NonFiniteLossError` otherwise."""
        if not self._any_nonfinite(loss_dict):
            return True
        bad = {
            k: float(v.detach().float().sum())
            for k, v in loss_dict.items()
            if not bool(torch.isfinite(v.detach()).all())
        }
        reports = comm.all_gather({"terms": bad, "images": _image_names(data)})
        terms = {}
        for report in reports:
            terms.update(report["terms"])
        images = [name for report in reports for name in report["images"]]
        message = (
            f"Non-finite loss at iteration {iteration}: "
            + ", ".join(f"{k}={v}" for k, v in sorted(terms.items()))
            + f"; images of the batch: {images}"
        )
        if self.mode == "skip" and self.skipped < self.max_skips:
            self.skipped += 1
            logger.warning(
                f"{message}. Skipped the step (SOLVER.NONFINITE_LOSS='skip'; "
                f"{self.skipped} of at most {self.max_skips})."
            )
            get_event_storage().put_scalar("nonfinite_skips", self.skipped, smoothing_hint=False)
            return False
        if self.mode == "skip":
            message += f". {self.skipped} steps were skipped already (SOLVER.NONFINITE_MAX_SKIPS)"
        raise NonFiniteLossError(
            message + ". The weights were not updated by this step; the last checkpoint is "
            "intact (resume with --resume)."
        )

    @staticmethod
    def _any_nonfinite(loss_dict: Dict[str, torch.Tensor]) -> bool:
        """Whether any process has a non-finite loss term: one flag per step, reduced over the
        processes (one host sync, plus one all-reduce with several processes)."""
        flag = torch.stack([~torch.isfinite(v.detach()).all() for v in loss_dict.values()]).any()
        if comm.get_world_size() > 1:
            flag = flag.float()
            if dist.get_backend() == "nccl":
                flag = flag.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag)


class _GuardedStep:
    """The part of a guarded step before backward: data, forward (in ``autocast``), check."""

    guard: NonFiniteLossGuard

    def _checked_forward(self, autocast):
        """Returns ``(total loss, loss dict, data time)``, or None for a skipped step."""
        assert self.model.training, f"[{type(self).__name__}] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with autocast:
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                loss_dict = {"total_loss": loss_dict}
            losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        if not self.guard.check(loss_dict, data, self.iter):
            return None
        return losses, loss_dict, data_time


class GuardedSimpleTrainer(_GuardedStep, SimpleTrainer):
    """``SimpleTrainer`` whose step checks the losses before backward (see the module)."""

    def __init__(self, model, data_loader, optimizer, guard: NonFiniteLossGuard):
        super().__init__(model, data_loader, optimizer)
        self.guard = guard

    def run_step(self):
        step = self._checked_forward(contextlib.nullcontext())
        if step is None:
            return
        losses, loss_dict, data_time = step
        losses.backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


class GuardedAMPTrainer(_GuardedStep, AMPTrainer):
    """``AMPTrainer`` on any device, whose step checks the losses before backward.

    The forward runs under ``policy``'s autocast; the backward and the optimizer step go through
    its grad scaler (a pass-through for bfloat16, see :mod:`projects.engine.amp`). A non-finite
    loss is reported or skipped before the scaler sees it, exactly as without AMP: a skipped step
    changes neither the weights nor the scaler. A finite loss whose scaled gradients overflow in
    float16 is the scaler's business: it skips the optimizer step and lowers its scale.

    Args:
        model, data_loader, optimizer: as for Detectron2's ``SimpleTrainer``.
        guard: the non-finite loss check.
        policy: device type and dtype; None: float16 on CUDA (Detectron2's ``AMPTrainer``).
    """

    def __init__(
        self,
        model,
        data_loader,
        optimizer,
        guard: NonFiniteLossGuard,
        policy: Optional[AMPPolicy] = None,
    ):
        policy = policy or AMPPolicy("cuda", torch.float16)
        super().__init__(model, data_loader, optimizer, grad_scaler=policy.build_grad_scaler())
        self.guard = guard
        self.policy = policy

    def run_step(self):
        step = self._checked_forward(self.policy.autocast())
        if step is None:
            return
        losses, loss_dict, data_time = step
        self.grad_scaler.scale(losses).backward()
        self._write_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    def load_state_dict(self, state_dict):
        SimpleTrainer.load_state_dict(self, state_dict)
        self.load_grad_scaler_state(state_dict.get("grad_scaler"))

    def load_grad_scaler_state(self, state: Optional[dict]):
        """Restore the grad scaler from a checkpoint's ``state`` (None or empty: the checkpoint
        was trained without float16 AMP; the scaler then keeps its initial scale)."""
        if not self.grad_scaler.is_enabled():
            return  # bfloat16: nothing to restore
        if not state:
            logger.warning(
                "The checkpoint has no grad scaler state (it was trained without float16 AMP): "
                "the grad scaler starts from its initial scale %s",
                self.grad_scaler.get_scale(),
            )
            return
        self.grad_scaler.load_state_dict(state)
