"""Config: the keys shared by every method, and the one function that knows every method's adder.

All adders must run before ``merge_from_file`` (yacs rejects unknown keys), and each adds keys
under its own namespace only. The shared keys are documented where they are added:
:func:`projects.data.config.add_data_config`, :func:`projects.engine.config.add_engine_config`
and :func:`projects.evaluation.config.add_evaluation_config`.
"""

import importlib

# (package, adder) of every method; a package is skipped while it has not landed yet.
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
    importlib.import_module(".modeling.config", __package__).add_modeling_config(cfg)


def add_all_configs(cfg):
    """Add the shared keys and every method's keys to ``cfg`` in place.

    This is the only function in ``projects`` that imports method packages (lazily, so that
    ``projects`` never imports them at module level). Importing a method package also registers
    its models in Detectron2's registries.
    """
    add_projects_config(cfg)
    for package, adder in METHOD_CONFIG_ADDERS:
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
        getattr(module, adder)(cfg)
    return cfg


def get_cfg():
    """Detectron2's default config with every key of this project added."""
    from detectron2.config import get_cfg as d2_get_cfg

    return add_all_configs(d2_get_cfg())
