"""``SOLVER.AMP`` on any device: bfloat16 training on the CPU (forward in bfloat16, the loss falls,
evaluation in float32), the non-finite guard and exact resume under AMP (bfloat16, and float16
with its grad scaler), and AMP turned off with a warning naming the keys where the device cannot
run it."""

import contextlib
import logging
import math
import os
import warnings

import pytest
import torch
from detectron2.engine import HookBase
from detectron2.utils.env import seed_all_rng

import projects.engine.amp as amp_module
from projects.config import get_cfg
from projects.engine.amp import AMPPolicy, amp_policy_from_config
from projects.engine.launch import fit_device_to_machine
from projects.engine.nonfinite import GuardedAMPTrainer, GuardedSimpleTrainer, NonFiniteLossError
from projects.engine.setup import load_config
from projects.engine.trainer import Trainer
from tests.helpers.tiny_coco import register_tiny_coco, tiny_mask_rcnn_cfg, write_tiny_coco

# torch.amp.GradScaler's defaults: the float16 scale starts at 2**16 and halves on an overflow.
INITIAL_SCALE = 2.0**16
BACKOFF = 0.5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: a CPU without native bfloat16 runs fallback kernels made of many short
    parallel regions, which stall whenever another job holds one of a shared machine's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_coco")
    return register_tiny_coco("engine_amp_tiny", *write_tiny_coco(str(root), num_images=2))


def _amp_cfg(output_dir, train, test=None, dtype="bfloat16"):
    """The tiny Mask R-CNN at 32 px with AMP on, its ResNet frozen (with GroupNorm).

    Frozen: on a CPU without native bfloat16 the backward of the 512-channel convolutions runs
    fallback kernels that take several times a whole float32 step; frozen, the backbone still runs
    its forward under autocast and the FPN and heads train. GroupNorm: a frozen BatchNorm of a
    random initialisation leaves the features unnormalised, and training diverges.
    """
    cfg = tiny_mask_rcnn_cfg(output_dir, train, test, norm="GN")
    cfg.MODEL.BACKBONE.FREEZE_AT = 5
    cfg.INPUT.MIN_SIZE_TRAIN = (32,)
    cfg.INPUT.MAX_SIZE_TRAIN = 52
    cfg.INPUT.MIN_SIZE_TEST = 32
    cfg.INPUT.MAX_SIZE_TEST = 52
    cfg.SOLVER.BASE_LR = 0.003
    cfg.SOLVER.AMP.ENABLED = True
    cfg.SOLVER.AMP.DTYPE = dtype
    return cfg


def _build(cfg):
    seed_all_rng(cfg.SEED)  # what default_setup does at the start of every run
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    return trainer


def _losses(trainer, key="total_loss"):
    return [(it, v) for v, it in trainer.storage.history(key).values()]


def _params(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _same(a, b):
    return all(torch.equal(a[name], b[name]) for name in a)


class _InfGrad(torch.autograd.Function):
    """Adds 0 to the loss and sends an infinite gradient back: an overflow the loss does not
    show, which only the grad scaler sees."""

    @staticmethod
    def forward(ctx, x):
        return torch.zeros_like(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, math.inf)


def _poison(trainer, nan_at=(), inf_grad_at=()):
    """Make ``loss_mask`` NaN at the iterations ``nan_at``, and its gradient infinite (the loss
    finite) at ``inf_grad_at``."""
    forward = trainer.model.forward

    def poisoned(batched_inputs):
        losses = forward(batched_inputs)
        if trainer.iter in nan_at:
            losses["loss_mask"] = losses["loss_mask"] * float("nan")
        if trainer.iter in inf_grad_at:
            losses["loss_mask"] = losses["loss_mask"] + _InfGrad.apply(losses["loss_mask"])
        return losses

    trainer.model.forward = poisoned


class _StepRecorder(HookBase):
    """Records, at each iteration in ``at``, the weights after the step, whether the step changed
    them, and the grad scaler's state before and after it (empty for bfloat16)."""

    def __init__(self, at):
        self.at = set(at)
        self.after = {}
        self.changed = {}
        self.scaler = {}

    def before_step(self):
        if self.trainer.iter in self.at:
            self._before = (_params(self.trainer.model), self._scaler_state())

    def after_step(self):
        it = self.trainer.iter
        if it in self.at:
            params, scaler = self._before
            self.after[it] = _params(self.trainer.model)
            self.changed[it] = not _same(params, self.after[it])
            self.scaler[it] = (scaler, self._scaler_state())

    def _scaler_state(self):
        return dict(self.trainer._trainer.grad_scaler.state_dict())

    def stepped(self, it):
        """Whether iteration ``it`` went through the optimizer as the scaler's contract says: the
        weights changed (and a float16 scaler counted one more good step), or a float16 scaler
        found an overflow, left the weights and backed its scale off."""
        before, after = self.scaler[it]
        if not before:  # bfloat16: no loss scaling
            return self.changed[it]
        if self.changed[it]:
            return (after["scale"], after["_growth_tracker"]) == (
                before["scale"],
                before["_growth_tracker"] + 1,
            )
        return (after["scale"], after["_growth_tracker"]) == (before["scale"] * BACKOFF, 0)

    def untouched(self, it):
        """Whether iteration ``it`` changed neither the weights nor the grad scaler."""
        before, after = self.scaler[it]
        return not self.changed[it] and before == after


def test_bf16_training_on_cpu_runs_the_forward_in_bf16_lowers_the_loss_and_evaluates_in_fp32(
    tmp_path, tiny_coco
):
    cfg = _amp_cfg(tmp_path, tiny_coco, tiny_coco)
    cfg.SOLVER.MAX_ITER = 24
    cfg.SOLVER.CHECKPOINT_PERIOD = 1000
    trainer = _build(cfg)
    assert isinstance(trainer._trainer, GuardedAMPTrainer)
    assert trainer._trainer.policy == AMPPolicy("cpu", torch.bfloat16)
    assert not trainer._trainer.grad_scaler.is_enabled()  # bfloat16 needs no loss scaling
    model = trainer.model
    outputs = []  # (training?, dtype) of a backbone convolution and of the box head's FC

    def record(module, inputs, output):
        outputs.append((module.training, output.dtype))

    model.backbone.bottom_up.stem.conv1.register_forward_hook(record)
    model.roi_heads.box_head.fc1.register_forward_hook(record)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    before = _params(model)

    results = trainer.train()  # 24 steps, then the final evaluation

    assert {dtype for training, dtype in outputs if training} == {torch.bfloat16}
    assert {dtype for training, dtype in outputs if not training} == {torch.float32}
    assert {"bbox", "segm"} <= set(results)  # the evaluation after AMP training ran
    losses = [v for _, v in _losses(trainer)]
    assert len(losses) == 24 and all(math.isfinite(v) for v in losses)
    after = _params(model)
    assert all(p.dtype == torch.float32 for p in after.values())  # master weights stay fp32
    assert all(not torch.equal(before[n], after[n]) for n in trainable)
    assert all(torch.equal(before[n], after[n]) for n in set(before) - trainable)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, f"total_loss {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_nonfinite_loss_under_amp_is_skipped_as_without_amp(tmp_path, tiny_coco, dtype):
    cfg = _amp_cfg(tmp_path, tiny_coco, dtype=dtype)
    cfg.SOLVER.NONFINITE_LOSS = "skip"
    trainer = _build(cfg)
    assert trainer._trainer.grad_scaler.is_enabled() == (dtype == "float16")
    _poison(trainer, nan_at={1, 3})
    recorder = _StepRecorder(at={0, 1, 2, 3})
    trainer.register_hooks([recorder])
    trainer.train()  # all 6 iterations run
    # What test_engine_nonfinite.py asserts without AMP:
    assert trainer.iter == 6 and trainer._trainer.guard.skipped == 2
    assert _losses(trainer, "nonfinite_skips") == [(1, 1), (3, 2)]
    assert [it for it, _ in _losses(trainer)] == [0, 2, 4, 5]  # skipped steps log no loss
    # A skipped step touches neither the weights nor the grad scaler; the others step.
    assert recorder.untouched(1) and recorder.untouched(3)
    assert recorder.stepped(0) and recorder.stepped(2)


def test_nonfinite_loss_under_bf16_stops_naming_the_iteration_and_term(tmp_path, tiny_coco):
    # The very first step is poisoned: what is checked is the guard, so no earlier bf16 step (whose
    # kernels differ from CPU to CPU) has to have gone well first.
    trainer = _build(_amp_cfg(tmp_path, tiny_coco))
    initial = _params(trainer.model)
    _poison(trainer, nan_at={0})
    with pytest.raises(NonFiniteLossError, match="iteration 0: loss_mask=nan"):
        trainer.train()
    assert trainer.iter == 0
    # The failed step left the weights as they were.
    assert _same(initial, _params(trainer.model))


def test_float16_overflowing_gradients_leave_the_weights_and_back_the_scale_off(
    tmp_path, tiny_coco
):
    trainer = _build(_amp_cfg(tmp_path, tiny_coco, dtype="float16"))
    _poison(trainer, inf_grad_at={2})
    recorder = _StepRecorder(at=range(6))
    trainer.register_hooks([recorder])
    trainer.train()
    # The loss was finite, so the guard let the step through; the scaler found the overflow.
    assert trainer._trainer.guard.skipped == 0
    assert [it for it, _ in _losses(trainer)] == list(range(6))
    before, after = recorder.scaler[2]
    assert not recorder.changed[2] and after["scale"] == before["scale"] * BACKOFF
    assert all(recorder.stepped(it) for it in range(6))
    assert any(recorder.changed[it] for it in (3, 4, 5))  # and training went on


class _Stop(HookBase):
    """Simulates a crash right after iteration ``at`` (after its checkpoint was written)."""

    def __init__(self, at):
        self.at = at

    def after_step(self):
        if self.trainer.iter == self.at:
            raise KeyboardInterrupt("stopped")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_exact_resume_under_amp_on_cpu_gives_identical_losses(tmp_path, tiny_coco, dtype):
    # float16: an overflow at iteration 1 halves the scale before the checkpoint (iteration 2),
    # so a resume that forgot the scaler's state would start again from the initial scale.
    inf_grad_at = {1} if dtype == "float16" else set()
    cfg = _amp_cfg(tmp_path / "straight", tiny_coco, dtype=dtype)
    cfg.SOLVER.BASE_LR = 0.001  # what is checked is the resume: no divergence in six steps
    straight = _build(cfg)
    _poison(straight, inf_grad_at=inf_grad_at)
    straight.train()
    expected = _losses(straight)
    assert [it for it, _ in expected] == list(range(6))

    cfg.OUTPUT_DIR = str(tmp_path / "stopped")
    first = _build(cfg)
    _poison(first, inf_grad_at=inf_grad_at)
    first.register_hooks([_Stop(at=2)])  # checkpoint period 3: model_0000002 is written
    with pytest.raises(KeyboardInterrupt):
        first.train()
    saved = torch.load(os.path.join(cfg.OUTPUT_DIR, "model_0000002.pth"), weights_only=False)
    seed_all_rng(cfg.SEED + 1)  # a restart's fresh state must not matter
    second = Trainer(cfg)
    second.resume_or_load(resume=True)
    assert second.start_iter == 3
    scaler = second._trainer.grad_scaler
    if dtype == "float16":
        assert saved["trainer"]["grad_scaler"]["scale"] <= INITIAL_SCALE * BACKOFF
        assert scaler.state_dict() == saved["trainer"]["grad_scaler"]
        assert scaler.state_dict() == first._trainer.grad_scaler.state_dict()
    else:
        assert not scaler.is_enabled()
    # what the resume restored: the checkpoint's weights and optimizer state, exactly
    for key, value in saved["model"].items():
        assert torch.equal(second.model.state_dict()[key], value), key
    restored = second.optimizer.state_dict()["state"]
    for index, entry in saved["optimizer"]["state"].items():
        for name, value in entry.items():
            assert torch.equal(torch.as_tensor(restored[index][name]), torch.as_tensor(value))
    second.train()
    resumed = _losses(second)
    assert [it for it, _ in resumed] == [it for it, _ in expected]
    if dtype == "float16":
        assert resumed == expected  # bit-identical on the CPU
    else:
        # bf16 matmuls on CPUs with AMX (oneDNN) are not bit-reproducible from run to run, so the
        # straight run itself moves: the losses agree to a few bf16 roundings, not to the bit
        assert [v for _, v in resumed] == pytest.approx([v for _, v in expected], rel=2e-2)


def test_cuda_config_on_a_machine_without_cuda_trains_bf16_on_the_cpu(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cuda"
    cfg.SOLVER.AMP.ENABLED = True  # SOLVER.AMP.DTYPE stays "auto"
    with caplog.at_level(logging.WARNING):
        fit_device_to_machine(cfg)
    assert cfg.MODEL.DEVICE == "cpu" and cfg.SOLVER.AMP.ENABLED
    assert amp_policy_from_config(cfg) == AMPPolicy("cpu", torch.bfloat16)
    assert not any("SOLVER.AMP" in r.getMessage() for r in caplog.records)


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_gpu_without_bf16_turns_amp_off_with_a_warning_naming_the_keys(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cuda"
    cfg.SOLVER.AMP.ENABLED = True
    cfg.SOLVER.AMP.DTYPE = "bfloat16"
    with caplog.at_level(logging.WARNING):
        fit_device_to_machine(cfg)
    assert cfg.MODEL.DEVICE == "cuda" and not cfg.SOLVER.AMP.ENABLED
    (message,) = [m for m in _warnings(caplog) if "SOLVER.AMP" in m]
    assert "SOLVER.AMP.ENABLED" in message and "SOLVER.AMP.DTYPE (now 'bfloat16')" in message
    assert "MODEL.DEVICE='cuda'" in message and "no native bfloat16" in message


class _RefusingAutocast(contextlib.nullcontext):
    """What torch's autocast does for a device type / dtype pair it cannot run: it warns and
    disables itself."""

    def __init__(self, device_type, dtype=None, **kwargs):
        super().__init__()
        warnings.warn(f"In {device_type} autocast, but the target dtype is not supported.")


def test_cpu_refusing_the_dtype_turns_amp_off_and_trains_in_fp32(
    monkeypatch, caplog, tmp_path, tiny_coco
):
    monkeypatch.setattr(torch, "autocast", _RefusingAutocast)
    cfg = _amp_cfg(tmp_path, tiny_coco)
    with caplog.at_level(logging.WARNING):
        trainer = Trainer(cfg)
    assert isinstance(trainer._trainer, GuardedSimpleTrainer)
    (message,) = [m for m in _warnings(caplog) if "SOLVER.AMP" in m]
    assert "SOLVER.AMP.ENABLED" in message and "SOLVER.AMP.DTYPE (now 'bfloat16')" in message
    assert "MODEL.DEVICE='cpu'" in message and "target dtype is not supported" in message
    assert "training runs in float32" in message


@pytest.mark.parametrize("native", [False, True])
def test_cpu_without_native_bf16_kernels_warns_that_the_step_is_slower(
    monkeypatch, caplog, tmp_path, tiny_coco, native
):
    monkeypatch.setattr(amp_module, "_cpu_has_native", lambda dtype: native)
    with caplog.at_level(logging.WARNING):
        trainer = Trainer(_amp_cfg(tmp_path, tiny_coco))
    assert isinstance(trainer._trainer, GuardedAMPTrainer)  # AMP stays on either way
    slower = [m for m in _warnings(caplog) if "takes longer than in float32" in m]
    assert len(slower) == (0 if native else 1)
    assert native or "SOLVER.AMP.ENABLED with bfloat16 autocast on cpu" in slower[0]


def test_unknown_amp_dtype_is_a_clear_error():
    with pytest.raises(ValueError, match=r"SOLVER.AMP.DTYPE must be one of .*got 'fp8'"):
        load_config("", ["SOLVER.AMP.DTYPE", "fp8"])
