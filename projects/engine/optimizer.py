"""The optimizer: SGD or AdamW with per-parameter-group hyper-parameters and gradient clipping."""

import itertools
import logging
from collections import OrderedDict

import torch
from torch import nn

logger = logging.getLogger(__name__)

_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*d, SyncBatchNorm, Detectron2's NaiveSyncBatchNorm
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)
CLIP_TYPES = ("value", "norm", "full_model")


def is_norm_module(module):
    """Whether ``module`` is a normalization layer (torch's, or a custom ``*Norm*`` class)."""
    return isinstance(module, _NORM_TYPES) or "Norm" in type(module).__name__


def get_param_groups(cfg, model):
    """Split the trainable parameters of ``model`` into groups by learning rate and weight decay.

    Per parameter, in this order of precedence for weight decay:

    * parameters of normalization layers: ``SOLVER.WEIGHT_DECAY_NORM``;
    * ``nn.Embedding`` weights and parameters whose own name contains ``embed``:
      ``SOLVER.WEIGHT_DECAY_EMBED``;
    * biases: ``SOLVER.WEIGHT_DECAY_BIAS`` when not None;
    * everything else: ``SOLVER.WEIGHT_DECAY``.

    The learning rate is ``SOLVER.BASE_LR``, times ``SOLVER.BACKBONE_MULTIPLIER`` for parameters
    whose name starts with ``backbone.`` and times ``SOLVER.BIAS_LR_FACTOR`` for biases.
    A parameter shared by several modules is counted once.

    Returns:
        list[dict]: groups with keys ``params``, ``lr``, ``weight_decay`` (and ``names``,
        ignored by torch, for inspection), in first-appearance order.
    """
    solver = cfg.SOLVER
    groups = OrderedDict()
    seen = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            lr = solver.BASE_LR
            weight_decay = solver.WEIGHT_DECAY
            if full_name.startswith("backbone."):
                lr *= solver.BACKBONE_MULTIPLIER
            if param_name == "bias":
                lr *= solver.BIAS_LR_FACTOR
                if solver.WEIGHT_DECAY_BIAS is not None:
                    weight_decay = solver.WEIGHT_DECAY_BIAS
            if isinstance(module, nn.Embedding) or "embed" in param_name:
                weight_decay = solver.WEIGHT_DECAY_EMBED
            if is_norm_module(module):
                weight_decay = solver.WEIGHT_DECAY_NORM
            group = groups.setdefault(
                (lr, weight_decay),
                {"params": [], "names": [], "lr": lr, "weight_decay": weight_decay},
            )
            group["params"].append(param)
            group["names"].append(full_name)
    return list(groups.values())


def _clip_function(clip_cfg):
    """(kind, fn) for ``SOLVER.CLIP_GRADIENTS``: kind is "per_param" or "full_model"."""
    clip_type = clip_cfg.CLIP_TYPE
    value, norm_type = clip_cfg.CLIP_VALUE, clip_cfg.NORM_TYPE
    if clip_type == "value":
        return "per_param", lambda params: nn.utils.clip_grad_value_(params, value)
    if clip_type == "norm":
        return "per_param", lambda params: nn.utils.clip_grad_norm_(params, value, norm_type)
    if clip_type == "full_model":
        return "full_model", lambda params: nn.utils.clip_grad_norm_(params, value, norm_type)
    raise ValueError(
        f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE={clip_type!r} is not one of {', '.join(CLIP_TYPES)}"
    )


def with_gradient_clipping(cfg, optimizer_class):
    """``optimizer_class`` itself, or a subclass whose ``step`` clips gradients first.

    Clipping follows ``SOLVER.CLIP_GRADIENTS``: ``"value"`` and ``"norm"`` clip each parameter
    on its own, ``"full_model"`` clips the norm of all gradients together.
    """
    clip_cfg = cfg.SOLVER.CLIP_GRADIENTS
    if not clip_cfg.ENABLED:
        return optimizer_class
    kind, clip = _clip_function(clip_cfg)

    def step(self, closure=None):
        if kind == "full_model":
            clip(list(itertools.chain(*[g["params"] for g in self.param_groups])))
        else:
            for group in self.param_groups:
                for param in group["params"]:
                    clip(param)
        return super(clipped_class, self).step(closure)

    clipped_class = type(optimizer_class.__name__ + "WithGradientClip", (optimizer_class,), {})
    clipped_class.step = step
    return clipped_class


def build_optimizer(cfg, model):
    """Build the optimizer named by ``SOLVER.OPTIMIZER`` over :func:`get_param_groups`.

    Raises:
        ValueError: for an unknown ``SOLVER.OPTIMIZER`` or ``CLIP_GRADIENTS.CLIP_TYPE``.
    """
    groups = get_param_groups(cfg, model)
    for group in groups:
        logger.debug(
            "param group lr=%g weight_decay=%g: %d tensors",
            group["lr"],
            group["weight_decay"],
            len(group["params"]),
        )
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "SGD":
        optimizer_class = with_gradient_clipping(cfg, torch.optim.SGD)
        return optimizer_class(
            groups,
            lr=cfg.SOLVER.BASE_LR,
            momentum=cfg.SOLVER.MOMENTUM,
            nesterov=cfg.SOLVER.NESTEROV,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        )
    if name == "ADAMW":
        optimizer_class = with_gradient_clipping(cfg, torch.optim.AdamW)
        return optimizer_class(groups, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    raise ValueError(f"SOLVER.OPTIMIZER={cfg.SOLVER.OPTIMIZER!r} is not one of SGD, ADAMW")
