"""Checks that config adders leave each other's keys alone (used by ``tests/test_config.py``).

Every YAML under ``configs/`` belongs to at most one method (:func:`config_owner`). Merged with
the shared keys and its owner's adder only, it must give the same config as merged with every
adder (:func:`check_adders_keep_config`): an adder that assigns a key it does not own, or
re-creates a shared node (``cfg.MODEL.ROI_MASK_HEAD = CN()``), changes that config. And the
adders must give one config whatever their order, run once or twice
(:func:`check_adders_commute`).

Adders are given as ``(name, adder)`` pairs, like :func:`projects.config.method_config_adders`
returns them, so that the methods landing later are covered by the same calls.
"""

import glob
import os
from typing import Callable, List, Optional, Sequence, Tuple

import yaml
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg as d2_get_cfg

from projects.config import METHOD_CONFIG_ADDERS, add_projects_config, config_items
from projects.methods import method_of_toy_config, toy_config_names

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs")
TOY_FOLDER = "toy"
NOT_CONFIGS = ("bars.yaml",)  # YAML files under configs/ that are no configs

Adder = Tuple[str, Callable[[CN], object]]
_MISSING = "<missing>"


def config_files(root: str = CONFIGS) -> List[str]:
    """Every config YAML under ``root`` (``Base-*`` included), as paths relative to the repo."""
    paths = glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True)
    return sorted(os.path.relpath(p, REPO) for p in paths if os.path.basename(p) not in NOT_CONFIGS)


def _bases(path: str) -> List[str]:
    """The files ``path`` inherits from through ``_BASE_`` (nearest first), absolute."""
    out = []
    while True:
        with open(path) as f:
            base = (yaml.safe_load(f) or {}).get("_BASE_")
        if not base or base.startswith("zoo:"):
            return out
        path = os.path.normpath(os.path.join(os.path.dirname(path), base))
        out.append(path)


def config_owner(path: str) -> Optional[str]:
    """The method package a config belongs to, or None for a config of the shared keys only.

    ``configs/<Method>/...`` belongs to the package ``<method>`` (the folder name in lower case,
    ``PointRend`` -> ``pointrend``); a toy config to the package of the method that declares it
    (:func:`projects.methods.method_of_toy_config`; None for Detectron2's yardsticks); a toy
    ``Base-*`` file to the owner of the toy configs that inherit from it.

    Raises:
        LookupError: the file lies in a folder of ``configs/`` that names no method of
            :data:`projects.config.METHOD_CONFIG_ADDERS`, or is a toy config no method
            declares.
    """
    packages = [package for package, _ in METHOD_CONFIG_ADDERS]
    folder = os.path.relpath(os.path.join(REPO, path), CONFIGS).split(os.sep)[0]
    if folder != TOY_FOLDER:
        if folder.lower() not in packages:
            raise LookupError(
                f"{path}: configs/{folder}/ names no method of projects.config."
                f"METHOD_CONFIG_ADDERS ({', '.join(packages)})"
            )
        return folder.lower()
    name = os.path.basename(path)
    if not name.startswith("Base-"):
        try:
            return method_of_toy_config(name).package
        except KeyError as e:
            raise LookupError(str(e)) from None
    owners = {
        config_owner(os.path.join(os.path.dirname(path), other))
        for other in toy_config_names()
        if os.path.abspath(os.path.join(REPO, path))
        in _bases(os.path.join(CONFIGS, TOY_FOLDER, other))
    }
    owners.discard(None)
    if len(owners) > 1:
        raise LookupError(f"{path} is the base of toy configs of several methods: {owners}")
    return owners.pop() if owners else None


def merged_config(path: Optional[str], adders: Sequence[Adder]) -> CN:
    """Detectron2's defaults, the shared keys, each of ``adders`` in order, then ``path`` merged
    (no merge when ``path`` is None)."""
    cfg = add_projects_config(d2_get_cfg())
    for _name, adder in adders:
        adder(cfg)
    if path is not None:
        cfg.merge_from_file(os.path.join(REPO, path))
    return cfg


def config_differences(expected: CN, actual: CN, both_ways: bool = False) -> List[str]:
    """``"KEY: expected -> actual"`` for every leaf of ``expected`` that ``actual`` lacks or holds
    with another value (and, with ``both_ways``, every leaf only ``actual`` has)."""
    want, got = dict(config_items(expected)), dict(config_items(actual))
    lines = [
        f"{key}: {value!r} -> {got.get(key, _MISSING)!r}"
        for key, value in want.items()
        if key not in got or got[key] != value
    ]
    if both_ways:
        lines += [f"{key}: {_MISSING} -> {got[key]!r}" for key in got if key not in want]
    return lines


def _fail(title: str, lines: List[str]):
    raise AssertionError(title + "\n  " + "\n  ".join(lines))


def check_adders_keep_config(path: str, adders: Sequence[Adder]) -> None:
    """Assert that running every adder leaves the config of ``path`` as its owner defines it.

    The reference is ``path`` merged with the shared keys and only its owner's adder
    (:func:`config_owner`; none for a shared-keys config). It must equal, key for key, ``path``
    merged with every adder of ``adders``, in their order and reversed; the keys only the other
    adders add are not compared.

    Args:
        path: a config file, relative to the repo.
        adders: ``(package, adder)`` of every method, e.g.
            :func:`projects.config.method_config_adders()`.

    Raises:
        LookupError: the owner of ``path`` is not among ``adders`` (skip such files while their
            method has not landed).
        AssertionError: naming the keys that changed, or the merge that failed and the keys the
            adders changed before it.
    """
    owner = config_owner(path)
    own = [(name, adder) for name, adder in adders if name == owner]
    if owner is not None and not own:
        raise LookupError(f"{path} belongs to {owner!r}, which is not among the adders")
    try:
        reference = merged_config(path, own)
    except Exception as e:
        raise AssertionError(
            f"{path} does not merge with the shared keys and {owner or 'no method'}'s adder "
            f"only: {e} (a method declares its toy configs in its projects.methods.Method)"
        ) from e
    names = ", ".join(name for name, _ in adders)
    for order, sequence in (("in order", list(adders)), ("reversed", list(adders)[::-1])):
        title = (
            f"{path} merged after every adder ({names}; {order}) differs from {path} merged "
            f"after the shared keys and {owner or 'no method'}'s adder only:"
        )
        try:
            merged = merged_config(path, sequence)
        except Exception as e:
            before = config_differences(merged_config(None, own), merged_config(None, sequence))
            _fail(title, [f"merging the file fails: {e!r}"] + before)
        changed = config_differences(reference, merged)
        if changed:
            _fail(title, changed)


def check_adders_commute(adders: Sequence[Adder]) -> None:
    """Assert that ``adders`` give one config whatever their order, and that each is idempotent.

    Starting from Detectron2's defaults (no shared keys unless ``adders`` holds them), each adder
    run twice must give what it gives once, and every rotation of ``adders`` (each adder first
    once, every pair in both orders), forwards and reversed, run once or twice, must give the
    config of ``adders`` run once in order (the full config is compared).

    Raises:
        AssertionError: naming the adder or the order, and the keys that differ.
    """
    for name, adder in adders:
        once = d2_get_cfg()
        adder(once)
        twice = once.clone()
        adder(twice)
        if once.dump() != twice.dump():
            _fail(f"adder {name} run twice differs from once:", config_differences(once, twice))

    def run(sequence, times=1):
        cfg = d2_get_cfg()
        for _ in range(times):
            for _name, adder in sequence:
                adder(cfg)
        return cfg

    adders = list(adders)
    reference = run(adders)
    for start in range(len(adders)):
        rotation = adders[start:] + adders[:start]
        for sequence in (rotation, rotation[::-1]):
            for times in (1, 2):
                cfg = run(sequence, times)
                if cfg.dump() != reference.dump():
                    order = " -> ".join(name for name, _ in sequence)
                    _fail(
                        f"adders run {times}x as {order} differ from their order in the list:",
                        config_differences(reference, cfg, both_ways=True),
                    )
