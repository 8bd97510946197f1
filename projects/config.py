"""Config: the keys shared by every method, and the one function that knows every method's adder.

All adders must run before ``merge_from_file`` (yacs rejects unknown keys), and each adds keys
under its own namespace only. The shared keys are documented where they are added:
:func:`projects.data.config.add_data_config`, :func:`projects.engine.config.add_engine_config`,
:func:`projects.evaluation.config.add_evaluation_config`,
:func:`projects.modeling.config.add_modeling_config` and
:func:`projects.methods.add_test_contract_config` (:func:`shared_config_adders`).

Every key has one owner, the adder that defines it, and every adder (shared or a method's) adds
its keys with :func:`add_missing_keys`: a key that exists already is kept and a node that exists
already is completed, never re-created. Running the adders twice or in any order therefore gives
the same config. A foreign adder that assigns (Detectron2's ``add_deeplab_config``, say) is run
through :func:`add_missing_from`.
"""

import copy
import importlib
import logging
from importlib import metadata
from typing import Any, Callable, Iterable, Iterator, Mapping, Tuple

from detectron2.config import CfgNode as CN

logger = logging.getLogger(__name__)

# Entry-point group through which a method installed outside this repository joins: its
# distribution declares ``entry_points={"d2_instance_seg.methods": ["name = package:adder"]}``.
METHOD_ENTRY_POINT_GROUP = "d2_instance_seg.methods"
# (package, adder) of every method of this repository; a package is skipped while it has not
# landed yet.
METHOD_CONFIG_ADDERS = (
    ("pointrend", "add_pointrend_config"),
    ("blendmask", "add_blendmask_config"),
    ("yolact", "add_yolact_config"),
    ("refinemask", "add_refinemask_config"),
    ("fastinst", "add_fastinst_config"),
)


def add_missing_keys(cfg: CN, defaults: Mapping[str, Any]) -> CN:
    """Add each key of ``defaults`` to ``cfg`` in place, only where it is missing.

    Missing nodes on a key's path are created; existing nodes and values are kept, so keys that
    Detectron2 or another adder put under the same node survive. Values are deep-copied: two
    configs never share a mutable default.

    Args:
        cfg: the config to complete.
        defaults: dotted key -> default value, e.g. ``{"MODEL.POINT_HEAD.FC_DIM": 256}``.

    Returns:
        ``cfg``.

    Raises:
        TypeError: a key's path runs through a value that is not a node (names the key).
    """
    for key, value in defaults.items():
        *parents, leaf = key.split(".")
        node = cfg
        for depth, name in enumerate(parents):
            if name not in node:
                setattr(node, name, CN())
            node = node[name]
            if not isinstance(node, CN):
                path = ".".join(parents[: depth + 1])
                raise TypeError(
                    f"cannot add config key {key!r}: {path} is a value ({node!r}), not a node"
                )
        if leaf not in node:
            setattr(node, leaf, copy.deepcopy(value))
    return cfg


def config_items(cfg: CN, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """Every leaf of ``cfg`` as ``(dotted key, value)``, in the config's order; an empty node is
    a leaf (its value is the empty ``CfgNode``)."""
    for name, value in cfg.items():
        if isinstance(value, CN) and len(value):
            yield from config_items(value, f"{prefix}{name}.")
        else:
            yield prefix + name, value


def _has_key(cfg: CN, key: str) -> bool:
    node = cfg
    for name in key.split("."):
        if not isinstance(node, CN) or name not in node:
            return False
        node = node[name]
    return True


def add_missing_from(cfg: CN, adder: Callable[[CN], Any], exclude: Iterable[str] = ()) -> CN:
    """Add to ``cfg`` in place the keys a foreign ``adder`` would add, only where missing.

    ``adder`` (one that assigns, such as Detectron2's ``add_deeplab_config``) runs on a copy of
    ``cfg``; of the keys it leaves there, those ``cfg`` lacks are added with their values, except
    the dotted keys in ``exclude`` (keys another adder owns).

    Returns:
        ``cfg``.
    """
    scratch = cfg.clone()
    adder(scratch)
    exclude = frozenset(exclude)
    new = {
        key: value
        for key, value in config_items(scratch)
        if key not in exclude and not _has_key(cfg, key)
    }
    return add_missing_keys(cfg, new)


def shared_config_adders():
    """``(name, adder)`` of the shared keys' owners in ``projects``, in the order they run."""
    from .data.config import add_data_config
    from .engine.config import add_engine_config
    from .evaluation.config import add_evaluation_config
    from .methods import add_test_contract_config
    from .modeling.config import add_modeling_config

    adders = (
        add_data_config,
        add_engine_config,
        add_evaluation_config,
        add_modeling_config,
        add_test_contract_config,
    )
    return [(adder.__name__, adder) for adder in adders]


def add_projects_config(cfg):
    """Add the keys shared by all methods (see the module docstring) to ``cfg`` in place."""
    for _name, adder in shared_config_adders():
        adder(cfg)
    return cfg


def _method_adders():
    """``(package, adder name)`` of this repository's methods, then of the installed ones that
    joined through :data:`METHOD_ENTRY_POINT_GROUP`."""
    adders = list(METHOD_CONFIG_ADDERS)
    for entry in metadata.entry_points(group=METHOD_ENTRY_POINT_GROUP):
        package, _, adder = entry.value.partition(":")
        if not adder:
            raise ValueError(
                f"entry point {entry.name!r} of group {METHOD_ENTRY_POINT_GROUP!r} must be "
                f"'package:adder', got {entry.value!r}"
            )
        if (package, adder) not in adders:
            adders.append((package, adder))
    return adders


def shared_config_keys() -> frozenset:
    """The dotted keys :func:`add_projects_config` adds to Detectron2's defaults (the keys whose
    owner is ``projects``; a method adder that runs a foreign adder leaves them out)."""
    from detectron2.config import get_cfg as d2_get_cfg

    defaults = d2_get_cfg()
    before = {key for key, _ in config_items(defaults)}
    return frozenset(key for key, _ in config_items(add_projects_config(defaults))) - before


def method_config_adders():
    """``(package, adder)`` of every method that has landed: this repository's, in
    :data:`METHOD_CONFIG_ADDERS` order, then those installed through
    :data:`METHOD_ENTRY_POINT_GROUP`.

    Imports the method packages (which registers their models in Detectron2's registries and
    their :class:`projects.methods.Method`). A package that does not exist, or a folder without
    ``__init__.py``, has not landed and is left out. This and :func:`add_all_configs` are the
    only functions in ``projects`` that import method packages (lazily, so that ``projects``
    never imports them at module level).

    Raises:
        AttributeError: a method package does not export its adder.
    """
    adders = []
    for package, adder in _method_adders():
        try:
            module = importlib.import_module(package)
        except ModuleNotFoundError as e:
            if e.name != package:
                raise
            continue
        if getattr(module, "__file__", None) is None:
            continue  # a folder without __init__.py (a method not landed yet) is not a package
        if not hasattr(module, adder):
            raise AttributeError(f"method package {package!r} must export {adder}(cfg)")
        adders.append((package, getattr(module, adder)))
    return adders


def add_all_configs(cfg):
    """Add the shared keys and every method's keys to ``cfg`` in place.

    This is the only function in ``projects`` that imports method packages (lazily, so that
    ``projects`` never imports them at module level). Importing a method package also registers
    its models in Detectron2's registries.
    """
    add_projects_config(cfg)
    for _package, adder in method_config_adders():
        adder(cfg)
    return cfg


def get_cfg():
    """Detectron2's default config with every key of this project added."""
    from detectron2.config import get_cfg as d2_get_cfg

    return add_all_configs(d2_get_cfg())
