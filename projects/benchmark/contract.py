"""What the benchmark asks the method contract (:mod:`projects.methods`) about a built model.

* :func:`fix_detections`: every model hands the same number of detections to its mask head:
  ``TEST.DETECTIONS_PER_IMAGE`` set, and every registered score-threshold key
  (:func:`projects.methods.score_threshold_keys`) the config has set to 0;
* :func:`num_classes`: the class count of a config, for the synthetic training batch;
* :func:`flop_handles`: the shared fvcore op handles with every method's ``flop_handles``;
* :func:`mask_head_flops`: the per-box mask-head FLOPs, from the first method whose
  ``head_flops`` counts the model's head.
"""

import logging
import numbers
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from ..evaluation.flop_handles import EXTRA_FLOP_HANDLES
from ..methods import DETECTRON2, Method, registered_methods, score_threshold_keys

logger = logging.getLogger(__name__)

__all__ = [
    "config_value",
    "fix_detections",
    "flop_handles",
    "has_config_key",
    "mask_head_flops",
    "num_classes",
]

_NO_DEFAULT = object()
_ABSENT = object()


def config_value(cfg, key: str, default: Any = _NO_DEFAULT) -> Any:
    """The value of dotted ``key`` in ``cfg``.

    Raises:
        KeyError: ``key`` is not in ``cfg`` and no ``default`` is given.
    """
    node = cfg
    for name in key.split("."):
        if not hasattr(node, "keys") or name not in node:
            if default is _NO_DEFAULT:
                raise KeyError(f"config key {key!r} does not exist (no {name!r})")
            return default
        node = node[name]
    return node


def has_config_key(cfg, key: str) -> bool:
    """Whether dotted ``key`` is in ``cfg``."""
    return config_value(cfg, key, _ABSENT) is not _ABSENT


def _set_config_value(cfg, key: str, value):
    *parents, leaf = key.split(".")
    node = cfg
    for name in parents:
        node = node[name]
    node[leaf] = value


def fix_detections(cfg, detections: int, keys: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Set ``TEST.DETECTIONS_PER_IMAGE`` to ``detections`` and every score-threshold key that
    ``cfg`` has to 0, in place (``cfg`` not frozen).

    Args:
        keys: the score-threshold keys (default: every registered method's).

    Returns:
        dict: each key set -> its value.
    """
    keys = score_threshold_keys() if keys is None else keys
    cfg.TEST.DETECTIONS_PER_IMAGE = detections
    overridden = {"TEST.DETECTIONS_PER_IMAGE": detections}
    for key in keys:
        if has_config_key(cfg, key):
            _set_config_value(cfg, key, 0.0)
            overridden[key] = 0.0
    return overridden


def num_classes(cfg, key: Optional[str] = None) -> Tuple[int, str]:
    """The number of classes of ``cfg`` and the key it was read from.

    Args:
        key: the key (a benchmark config's method's ``num_classes_key``); None: the config's
            ``TEST_CONTRACT.NUM_CLASSES_KEY`` if it sets one (every toy config does), else
            Detectron2's (:data:`projects.methods.DETECTRON2`).

    Raises:
        KeyError: naming the key that the config lacks.
    """
    if key is None:
        key = config_value(cfg, "TEST_CONTRACT.NUM_CLASSES_KEY", "") or DETECTRON2.num_classes_key
    value = config_value(cfg, key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"config key {key!r} holds {value!r}, not a number of classes")
    return value, key


def flop_handles(methods: Optional[Sequence[Method]] = None) -> Dict[str, Callable]:
    """The shared fvcore op handles (:data:`projects.evaluation.flop_handles.EXTRA_FLOP_HANDLES`)
    with every method's ``flop_handles`` added.

    Args:
        methods: default: every registered method.

    Raises:
        ValueError: two methods (or a method and the shared handles) give different handles for
            one operator (a handle is used for every row, so it must be agreed on once, in
            ``projects.evaluation.flop_handles`` if two methods need it).
    """
    methods = registered_methods() if methods is None else methods
    handles = dict(EXTRA_FLOP_HANDLES)
    owner = {op: "projects.evaluation.flop_handles" for op in handles}
    for method in methods:
        for op, handle in method.flop_handles.items():
            if op in handles and handles[op] is not handle:
                raise ValueError(
                    f"method {method.name!r} declares a FLOP handle for {op!r}, which "
                    f"{owner[op]} counts already with another handle"
                )
            handles[op] = handle
            owner.setdefault(op, f"method {method.name!r}")
    return handles


def mask_head_flops(
    cfg, model, image, method: Optional[str] = None, methods: Optional[Sequence[Method]] = None
) -> Optional[Dict[str, Any]]:
    """The per-box FLOPs of ``model``'s mask head, by the first method whose ``head_flops``
    returns a result (``method`` asked first, then the others in order).

    Args:
        cfg: the model's config.
        model: the built model (eval mode).
        image: ``(3, H, W)`` float image in ``cfg.INPUT.FORMAT`` on the model's device.
        method: the name of the method that declares the config, if any.
        methods: default: every registered method.

    Returns:
        dict or None: the counter's result (see ``Method.head_flops``) with ``method`` (the name
        of the method that counted it); None when no method counts this model's head.

    Raises:
        TypeError: a counter returned something other than None or a dict with a numeric
            ``gflops_per_box`` (names the method).
    """
    methods = list(registered_methods() if methods is None else methods)
    methods.sort(key=lambda m: m.name != method)  # stable: the declaring method first
    for candidate in methods:
        if candidate.head_flops is None:
            continue
        result = candidate.head_flops(cfg, model, image)
        if result is None:
            continue
        if not isinstance(result, dict) or not isinstance(
            result.get("gflops_per_box"), numbers.Real
        ):
            raise TypeError(
                f"head_flops of method {candidate.name!r} must return None or a dict with a "
                f"numeric 'gflops_per_box', got {result!r:.200}"
            )
        return {**result, "method": candidate.name}
    return None
