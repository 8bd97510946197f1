"""Which configs the benchmark measures, read from the method contract (:mod:`projects.methods`).

* Default rows (:func:`default_config_specs`): every registered method's ``benchmark_configs``,
  the yardstick first, each with the toy config that stands for it (``BenchmarkConfig.toy``).
* A config named on the command line (:func:`spec_for_config`) is matched to the declarations:
  a declared benchmark config is its method's row, a declared toy config stands for itself, any
  other file is a bare row (no method: no toy config; class count from its
  ``TEST_CONTRACT.NUM_CLASSES_KEY`` or Detectron2's key).

Config names are those of :func:`projects.methods.resolve_config`: a file path, a path under the
project's config folder (``"<Method>/x.yaml"``) or ``"zoo:<model-zoo path>"``.
"""

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

from ..methods import ZOO_PREFIX, registered_methods, resolve_config

logger = logging.getLogger(__name__)

__all__ = [
    "ConfigSpec",
    "config_label",
    "default_config_specs",
    "same_config_file",
    "spec_for_config",
    "toy_config_file",
    "toy_label",
]

TOY_FOLDER = "toy"  # toy configs are file names under <config_root>/toy/ (or absolute paths)


@dataclass
class ConfigSpec:
    """One config to benchmark (a row of the table).

    Attributes:
        path: the config's name (see the module docstring).
        label: shown in the table (default: :func:`config_label`).
        weights: a weights file; None: random weights.
        yardstick: every latency is divided by this row's.
        method: the name of the :class:`~projects.methods.Method` that declares it (None: a
            config no method declares).
        toy: the toy config that stands for it in the toy-accuracy columns (a name of the
            method's ``toy_configs``); None: no toy column.
        num_classes_key: the key with its number of classes (the declaring method's
            ``num_classes_key`` for its benchmark configs); None: the config's own
            ``TEST_CONTRACT.NUM_CLASSES_KEY``, else Detectron2's.
    """

    path: str
    label: str = ""
    weights: Optional[str] = None
    yardstick: bool = False
    method: Optional[str] = None
    toy: Optional[str] = None
    num_classes_key: Optional[str] = None

    def __post_init__(self):
        if not self.label:
            self.label = config_label(self.path)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def config_label(path: str) -> str:
    """``configs/PointRend/x.yaml`` -> ``PointRend/x``; ``zoo:A/b.yaml`` -> ``d2zoo/b``."""
    if path.startswith(ZOO_PREFIX):
        return "d2zoo/" + _stem(path)
    return f"{os.path.basename(os.path.dirname(os.path.abspath(path)))}/{_stem(path)}"


def toy_label(name: str) -> str:
    """The table label of toy config ``name``: ``toy/<file stem>``."""
    return f"{TOY_FOLDER}/{_stem(name)}"


def toy_config_file(name: str) -> str:
    """The file of toy config ``name`` (a file name under ``<config_root>/toy/``, or an
    absolute path, as a method installed outside this repository may declare it).

    Raises:
        FileNotFoundError: naming the toy config and where it was looked for.
    """
    return resolve_config(name if os.path.isabs(name) else f"{TOY_FOLDER}/{name}")


def same_config_file(a: str, b: str) -> bool:
    """Whether config names ``a`` and ``b`` are the same file (False if either does not
    resolve)."""
    if a == b:
        return True
    try:
        return os.path.realpath(resolve_config(a)) == os.path.realpath(resolve_config(b))
    except FileNotFoundError:
        return False


def default_config_specs(yardstick: bool = True) -> List[ConfigSpec]:
    """Every registered method's benchmark configs, in registration order, the yardstick(s)
    first.

    Args:
        yardstick: False: no row is marked as the yardstick (the caller picks one).
    """
    specs = []
    for method in registered_methods():
        for declared in method.benchmark_configs:
            specs.append(
                ConfigSpec(
                    declared.config,
                    label=declared.label or f"{method.name}/{_stem(declared.config)}",
                    yardstick=yardstick and declared.yardstick,
                    method=method.name,
                    toy=declared.toy,
                    num_classes_key=method.num_classes_key,
                )
            )
    return sorted(specs, key=lambda spec: not spec.yardstick)  # stable: order kept otherwise


def spec_for_config(name: str, declared: Optional[Sequence[ConfigSpec]] = None) -> ConfigSpec:
    """The row of config ``name`` (see the module docstring), never marked as the yardstick.

    Args:
        name: a config name.
        declared: the declared rows to match (default: :func:`default_config_specs`).
    """
    if declared is None:
        declared = default_config_specs()
    for spec in declared:
        if same_config_file(spec.path, name):
            return dataclasses.replace(spec, path=name, yardstick=False)
    for method in registered_methods():
        for toy in method.toy_configs:
            try:
                toy_file = toy_config_file(toy)
            except FileNotFoundError:
                continue
            if same_config_file(toy_file, name):
                return ConfigSpec(name, label=toy_label(toy), method=method.name, toy=toy)
    return ConfigSpec(name)
