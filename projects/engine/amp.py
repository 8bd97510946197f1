"""Mixed precision (``SOLVER.AMP``) on any device: which dtype, its autocast, its grad scaler.

Detectron2 v0.6's ``AMPTrainer`` asserts CUDA and always runs float16 with a grad scaler. Here
``SOLVER.AMP.ENABLED`` works on whatever ``MODEL.DEVICE`` is, with ``SOLVER.AMP.DTYPE``:

* ``"auto"`` (default): float16 on CUDA (Detectron2's behaviour, what the published recipes were
  tuned with) and other accelerators, bfloat16 on the CPU;
* ``"float16"``: float16 autocast with a grad scaler (float16's range is small: the loss is
  scaled up before backward, steps whose gradients overflow are skipped and the scale lowered);
  on the CPU this needs torch >= 2.3 (``torch.amp.GradScaler("cpu")``) and is slow without
  native float16 (AVX512-FP16 / AMX-FP16), as below;
* ``"bfloat16"``: bfloat16 autocast and no grad scaler (bfloat16 has float32's exponent range);
  on CUDA it needs a GPU with native bfloat16 (compute capability >= 8.0). A CPU without
  native bfloat16 (AVX512-BF16 / AMX) runs its convolutions through slow fallback kernels, so
  a step takes longer than in float32: the trainer says so in a warning.

Where the device cannot run the requested dtype, AMP is turned off with a warning naming the
key, and training runs in float32. Only the training forward runs under autocast: the weights
stay float32, and evaluation (a hook outside the step) runs in float32.
"""

import inspect
import logging
import warnings
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

logger = logging.getLogger(__name__)

__all__ = ["AMP_DTYPES", "AMPPolicy", "amp_policy_from_config", "resolve_amp_policy"]

# SOLVER.AMP.DTYPE values; None: chosen by the device.
AMP_DTYPES = {"auto": None, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class AMPPolicy:
    """How a training step runs under AMP.

    Attributes:
        device_type: ``torch.device(...).type`` of the model, e.g. ``"cuda"`` or ``"cpu"``.
        dtype: the autocast dtype, ``torch.float16`` or ``torch.bfloat16``.
    """

    device_type: str
    dtype: torch.dtype

    @property
    def scales_gradients(self) -> bool:
        """Whether the step needs an enabled grad scaler: float16 only."""
        return self.dtype == torch.float16

    @property
    def emulated(self) -> bool:
        """Whether the CPU has no native kernels for ``dtype``: its convolutions then run slow
        fallback kernels, and a step takes longer than in float32."""
        return self.device_type == "cpu" and not _cpu_has_native(self.dtype)

    def autocast(self):
        """The context manager the training forward runs in."""
        return torch.autocast(self.device_type, dtype=self.dtype)

    def build_grad_scaler(self):
        """A grad scaler for this device, enabled for float16 and a pass-through (``scale`` is the
        identity, ``step`` is ``optimizer.step``, its state is empty) for bfloat16."""
        if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3: any device
            return torch.amp.GradScaler(self.device_type, enabled=self.scales_gradients)
        if self.scales_gradients and self.device_type != "cuda":
            raise RuntimeError(
                f"torch {torch.__version__} has no grad scaler for {self.device_type}"
            )
        return torch.cuda.amp.GradScaler(enabled=self.scales_gradients)

    def __str__(self):
        scaler = "with a grad scaler" if self.scales_gradients else "without a grad scaler"
        return f"{str(self.dtype).replace('torch.', '')} autocast on {self.device_type} {scaler}"


def _dtype_from_name(name) -> Optional[torch.dtype]:
    if name not in AMP_DTYPES:
        raise ValueError(f"SOLVER.AMP.DTYPE must be one of {tuple(AMP_DTYPES)}, got {name!r}")
    return AMP_DTYPES[name]


# torch's oneDNN checks of the CPU's native support (bfloat16: AVX512-BF16 or AMX; float16:
# AVX512-FP16 or AMX-FP16).
_CPU_NATIVE_CHECKS = {
    torch.bfloat16: "_is_mkldnn_bf16_supported",
    torch.float16: "_is_mkldnn_fp16_supported",
}


def _cpu_has_native(dtype: torch.dtype) -> bool:
    """Whether oneDNN runs ``dtype`` natively on this CPU (True when torch cannot tell)."""
    try:
        return bool(getattr(torch.ops.mkldnn, _CPU_NATIVE_CHECKS[dtype])())
    except (AttributeError, RuntimeError):
        return True


def _cuda_has_native_bf16() -> bool:
    check = torch.cuda.is_bf16_supported
    if "including_emulation" in inspect.signature(check).parameters:
        return check(including_emulation=False)  # torch >= 2.3 counts emulation by default
    return check()


def _refusal(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """Why ``device`` cannot train under ``dtype`` autocast, or None if it can."""
    if device.type == "cuda" and dtype == torch.bfloat16 and not _cuda_has_native_bf16():
        return "this GPU has no native bfloat16 (compute capability < 8.0)"
    # Ask torch itself: it raises, or warns and disables autocast, for what it does not support.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.autocast(device.type, dtype=dtype):
                x = torch.ones(2, 2, device=device)
                produced = torch.mm(x, x).dtype
        except (RuntimeError, AssertionError, ValueError, AttributeError) as e:
            return f"{type(e).__name__}: {e}"
    if produced != dtype:
        said = "; ".join(str(w.message) for w in caught)
        return f"torch's autocast gives {produced} there" + (f" ({said})" if said else "")
    if dtype == torch.float16:
        try:
            AMPPolicy(device.type, dtype).build_grad_scaler()
        except (RuntimeError, AssertionError, ValueError) as e:
            return f"no float16 grad scaler: {e}"
    return None


def resolve_amp_policy(device, dtype_name="auto") -> Tuple[Optional[AMPPolicy], Optional[str]]:
    """The AMP policy ``device`` runs for ``SOLVER.AMP.DTYPE`` = ``dtype_name``.

    Args:
        device (str or torch.device): the model's device, e.g. ``cfg.MODEL.DEVICE``.
        dtype_name (str): one of :data:`AMP_DTYPES`.

    Returns:
        ``(policy, None)``, or ``(None, reason)`` when the device cannot run it.

    Raises:
        ValueError: ``dtype_name`` is not one of :data:`AMP_DTYPES` (the message names the key).
    """
    device = torch.device(device)
    dtype = _dtype_from_name(dtype_name)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    reason = _refusal(device, dtype)
    if reason is not None:
        return None, f"MODEL.DEVICE={str(device)!r} cannot run {dtype} autocast ({reason})"
    return AMPPolicy(device.type, dtype), None


def amp_policy_from_config(cfg) -> Optional[AMPPolicy]:
    """The AMP policy of ``cfg`` (``SOLVER.AMP.ENABLED``, ``SOLVER.AMP.DTYPE``, ``MODEL.DEVICE``).

    Returns:
        None when AMP is off, or when the device cannot run it: then a warning names the keys
        and training runs in float32.

    Raises:
        ValueError: an unknown ``SOLVER.AMP.DTYPE``.
    """
    dtype_name = cfg.SOLVER.AMP.get("DTYPE", "auto")
    _dtype_from_name(dtype_name)
    if not cfg.SOLVER.AMP.ENABLED:
        return None
    policy, reason = resolve_amp_policy(cfg.MODEL.DEVICE, dtype_name)
    if policy is None:
        logger.warning(
            "SOLVER.AMP.ENABLED is True but %s: AMP is turned off and training runs in float32. "
            "Choose another SOLVER.AMP.DTYPE (now %r) or set SOLVER.AMP.ENABLED False.",
            reason,
            dtype_name,
        )
    return policy
