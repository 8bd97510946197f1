"""Config: the keys shared by every method, and the one function that knows every method's adder.

All adders must run before ``merge_from_file`` (yacs rejects unknown keys), and each adds keys
under its own namespace only. The shared keys are documented where they are added:
:func:`projects.data.config.add_data_config`, :func:`projects.engine.config.add_engine_config`
and :func:`projects.evaluation.config.add_evaluation_config`.
"""

import importlib
import logging
from importlib import metadata

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


def add_projects_config(cfg):
    """Add the keys shared by all methods (see the module docstring) to ``cfg`` in place."""
    from .data.config import add_data_config
    from .engine.config import add_engine_config
    from .evaluation.config import add_evaluation_config

    add_data_config(cfg)
    add_engine_config(cfg)
    add_evaluation_config(cfg)


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


def import_method_packages():
    """Import every method package (which registers its models in Detectron2's registries and
    its :class:`projects.methods.Method`); returns ``[(module, adder function)]``.

    This and :func:`add_all_configs` are the only functions in ``projects`` that import method
    packages (lazily, so that ``projects`` never imports them at module level).
    """
    found = []
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
        found.append((module, getattr(module, adder)))
    return found


def add_all_configs(cfg):
    """Add the shared keys and every method's keys to ``cfg`` in place (see
    :func:`import_method_packages`)."""
    add_projects_config(cfg)
    for _module, adder in import_method_packages():
        adder(cfg)
    return cfg


def get_cfg():
    """Detectron2's default config with every key of this project added."""
    from detectron2.config import get_cfg as d2_get_cfg

    return add_all_configs(d2_get_cfg())
