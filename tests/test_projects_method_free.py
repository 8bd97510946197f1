"""No code in projects/ outside the method discovery refers to a method (DESIGN: the method
contract; adding a method edits nothing in projects/ but the list in add_all_configs).

The forbidden names are derived from what the methods register, never listed by hand:

* method package names (``projects.config.METHOD_CONFIG_ADDERS`` and every registered Method's
  package), and their config namespaces ``MODEL.<PACKAGE>`` (STYLE: an adder adds keys under
  ``MODEL.<METHOD>``; this covers methods that have not landed yet);
* the config keys each method's adder adds beyond the shared ones (and the nodes only it adds),
  and the keys its Method declares that Detectron2's defaults lack;
* the names each method package registers in any registry (Detectron2's and the project's) and
  the classes it exports;
* the config files under ``configs/<Method>/`` and each method's toy configs, but for file names
  of Detectron2's model zoo and Detectron2's own toy configs;
* method names (but ``Detectron2``).

The scan (``ast``) looks at import statements, identifiers and attribute chains in code, and at
string constants that are not docstrings; comments and docstrings may name methods. The method
discovery (``METHOD_CONFIG_ADDERS`` in projects/config.py) is exempt.
"""

import ast
import inspect
import os
import re
import sys
from dataclasses import dataclass, field
from typing import List, Set

import pytest
from detectron2 import model_zoo
from detectron2.config import get_cfg as d2_get_cfg
from fvcore.common.registry import Registry

from projects.config import (
    METHOD_CONFIG_ADDERS,
    add_projects_config,
    config_items,
    method_config_adders,
)
from projects.methods import DETECTRON2, config_root, registered_methods

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECTS = os.path.join(REPO, "projects")
EXEMPT = {("projects/config.py", "METHOD_CONFIG_ADDERS")}  # the method discovery

_DOTTED_KEY = re.compile(r"\b[A-Z][A-Z0-9_]*(?:\.[A-Z][A-Z0-9_]*)+\b")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class Forbidden:
    """What code in projects/ must not name."""

    packages: Set[str] = field(default_factory=set)
    keys: Set[str] = field(default_factory=set)  # full dotted keys
    nodes: Set[str] = field(default_factory=set)  # dotted nodes only methods add
    identifiers: Set[str] = field(default_factory=set)  # registered names, classes, method names
    files: Set[str] = field(default_factory=set)  # config file names

    @property
    def node_names(self) -> Set[str]:
        """The last part of each method node (``MODEL.X`` -> ``X``)."""
        return {node.split(".")[-1] for node in self.nodes}


def _node_paths(keys):
    return {".".join(key.split(".")[:i]) for key in keys for i in range(1, key.count(".") + 1)}


def _in_package(obj, packages) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return any(module == p or module.startswith(p + ".") for p in packages)


def _registries():
    seen = {}
    for module in list(sys.modules.values()):
        for value in list(getattr(module, "__dict__", {}).values()):
            if isinstance(value, Registry):
                seen[id(value)] = value
    return list(seen.values())


def derive_forbidden() -> Forbidden:
    methods = [m for m in registered_methods() if m.package]  # imports every method package
    forbidden = Forbidden()
    forbidden.packages = {p for p, _ in METHOD_CONFIG_ADDERS} | {m.package for m in methods}
    forbidden.nodes = {f"MODEL.{p.upper()}" for p in forbidden.packages}
    shared = add_projects_config(d2_get_cfg())
    shared_keys = {key for key, _ in config_items(shared)}
    shared_nodes = _node_paths(shared_keys)
    for _package, adder in method_config_adders():
        cfg = shared.clone()
        adder(cfg)
        added = {key for key, _ in config_items(cfg)} - shared_keys
        forbidden.keys |= added
        forbidden.nodes |= _node_paths(added) - shared_nodes
    for method in methods:
        declared = set(method.score_threshold_keys) | {method.num_classes_key}
        forbidden.keys |= declared - shared_keys
    method_packages = {m.package for m in methods}
    for registry in _registries():
        for name, obj in registry:
            if _in_package(obj, method_packages):
                forbidden.identifiers.add(name)
    for package in method_packages:
        for name, obj in vars(sys.modules[package]).items():
            if inspect.isclass(obj) and _in_package(obj, method_packages):
                forbidden.identifiers.add(name)
    forbidden.identifiers |= {m.name for m in methods}
    zoo = os.path.join(os.path.dirname(model_zoo.__file__), "configs")
    detectron2_files = {n for _, _, names in os.walk(zoo) for n in names}
    detectron2_files |= set(DETECTRON2.toy_configs)
    for method in methods:
        folder = os.path.join(config_root(), method.name)
        names = {n for _, _, files in os.walk(folder) for n in files}
        names |= {os.path.basename(t) for t in method.toy_configs}
        forbidden.files |= names - detectron2_files
    return forbidden


def _docstring_nodes(tree) -> Set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    ids.add(id(body[0].value))
    return ids


def _exempt_nodes(tree, relative) -> Set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = {t.id for t in targets if isinstance(t, ast.Name)}
            if any((relative, name) in EXEMPT for name in names):
                ids |= {id(n) for n in ast.walk(node)}
    return ids


def _attribute_chain(node) -> List[str]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return parts[::-1]


def _key_hits(key: str, forbidden: Forbidden) -> bool:
    return key in forbidden.keys or any(
        key == node or key.startswith(node + ".") for node in forbidden.nodes
    )


def _string_problems(text: str, forbidden: Forbidden) -> List[str]:
    problems = []
    for key in _DOTTED_KEY.findall(text):
        if _key_hits(key, forbidden):
            problems.append(f"config key {key!r}")
    for token in set(_IDENTIFIER.findall(text)):
        if token in forbidden.packages:
            problems.append(f"method package {token!r}")
        elif token in forbidden.identifiers:
            problems.append(f"method name {token!r}")
    if text in forbidden.node_names:
        problems.append(f"method config node {text!r}")
    for name in forbidden.files:
        if re.search(r"(^|[^\w.-])" + re.escape(name) + r"($|[^\w.-])", text):
            problems.append(f"config file {name!r}")
    return problems


def scan_source(source: str, relative: str, forbidden: Forbidden) -> List[str]:
    """``"<file>:<line>: <what>"`` for every reference to a method in ``source``."""
    tree = ast.parse(source)
    skip = _docstring_nodes(tree) | _exempt_nodes(tree, relative)
    attributes_inside = {
        id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)
    }  # only the outermost attribute of a chain is checked
    problems = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        found = []
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found = _string_problems(node.value, forbidden)
        elif isinstance(node, ast.Import):
            found = [
                f"import of {a.name!r}"
                for a in node.names
                if a.name.split(".")[0] in forbidden.packages
            ]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").split(".")[0] in forbidden.packages:
                found = [f"import from {node.module!r}"]
            found += [
                f"import of {a.name!r}" for a in node.names if a.name in forbidden.identifiers
            ]
        elif isinstance(node, ast.Name) and node.id in forbidden.identifiers | forbidden.packages:
            found = [f"name {node.id!r}"]
        elif isinstance(node, ast.Attribute) and id(node) not in attributes_inside:
            chain = _attribute_chain(node)
            for start in range(len(chain)):
                for stop in range(start + 2, len(chain) + 1):
                    if _key_hits(".".join(chain[start:stop]), forbidden):
                        found.append(f"config key {'.'.join(chain[start:stop])!r}")
            found += [f"attribute {part!r}" for part in chain if part in forbidden.identifiers]
            found += [
                f"method config node {part!r}" for part in chain if part in forbidden.node_names
            ]
        problems += [f"{relative}:{getattr(node, 'lineno', '?')}: {what}" for what in found]
    return sorted(set(problems))


def _python_files():
    for folder, dirs, files in os.walk(PROJECTS):  # links (projects/configs) are not followed
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield path, os.path.relpath(path, REPO).replace(os.sep, "/")


@pytest.fixture(scope="module")
def forbidden():
    return derive_forbidden()


def test_every_method_contributes_forbidden_names(forbidden):
    """The derivation finds something of every kind for every method that has a package."""
    methods = [m for m in registered_methods() if m.package]
    assert methods, "no method package has landed"
    for method in methods:
        assert method.package in forbidden.packages
        assert any(_in_package(obj, {method.package}) for r in _registries() for _, obj in r)
        assert set(os.path.basename(t) for t in method.toy_configs) <= forbidden.files
        assert method.name in forbidden.identifiers
    assert forbidden.keys and forbidden.nodes
    assert not {"mask_rcnn.yaml", "Base-RCNN-FPN.yaml"} & forbidden.files  # Detectron2's
    assert not _key_hits("MODEL.ROI_HEADS.SCORE_THRESH_TEST", forbidden)  # Detectron2's


def test_the_scan_flags_each_kind_of_reference(forbidden):
    package = sorted(forbidden.packages)[0]
    key = sorted(forbidden.keys)[0]
    node = sorted(forbidden.nodes)[0]
    name = sorted(forbidden.identifiers)[0]
    config = sorted(forbidden.files)[0]
    attribute_key = ".".join(["cfg"] + key.split("."))
    source = f'''"""Docstrings may name {package}, {name}, {key} and {config}."""
import {package}
from {package}.x import y
from somewhere import {name}
KEY = "{key}"
NODE = "{node}.ANYTHING"
TEXT = f"see {{KEY}} in {config}"
value = {attribute_key}
other = isinstance(value, {name})
NAMES = ("ROI_HEADS", "{node.split(".")[-1]}")
FINE = ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "mask_rcnn.yaml")  # comments may name {package}


def f():
    """{package} again."""
'''
    problems = scan_source(source, "projects/x.py", forbidden)
    lines = {int(p.split(":")[1]) for p in problems}
    assert lines == {2, 3, 4, 5, 6, 7, 8, 9, 10}, problems
    exempt = f"METHOD_CONFIG_ADDERS = (({package!r}, 'add_config'),)\n"
    assert scan_source(exempt, "projects/config.py", forbidden) == []
    assert scan_source(exempt, "projects/other.py", forbidden) != []


def test_no_code_in_projects_refers_to_a_method(forbidden):
    problems = []
    for path, relative in _python_files():
        with open(path, encoding="utf-8") as f:
            problems += scan_source(f.read(), relative, forbidden)
    assert not problems, "projects/ refers to methods:\n" + "\n".join(problems)
