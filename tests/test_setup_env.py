"""tools/setup_env.py: what it refuses (old Python, no venv/pip, no disk), how it repairs, the
constraints it installs with; setup.py and the requirement files declare what the code imports."""

import ast
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def setup_env():
    spec = importlib.util.spec_from_file_location("setup_env", REPO / "tools" / "setup_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_old_python_is_refused_with_a_message(setup_env, monkeypatch, capsys):
    monkeypatch.setattr(setup_env.sys, "version_info", (3, 8, 10))
    with pytest.raises(SystemExit):
        setup_env.check_interpreter()
    assert "Python >= 3.9 is needed" in capsys.readouterr().err


def test_missing_venv_module_is_refused(setup_env, monkeypatch, capsys):
    monkeypatch.setattr(setup_env, "works", lambda python, code: "venv" not in code)
    with pytest.raises(SystemExit):
        setup_env.check_interpreter()
    assert "python3-venv" in capsys.readouterr().err


def test_no_disk_space_is_refused(setup_env, tmp_path, capsys):
    with pytest.raises(SystemExit):
        setup_env.check_disk(tmp_path / "not" / "yet" / "created", need_gb=1e9)
    err = capsys.readouterr().err
    assert "GB free under" in err and str(tmp_path) in err


@pytest.mark.integration
def test_interrupted_or_outdated_setup_is_not_complete(setup_env, tmp_path):
    stamp = tmp_path / setup_env.STAMP_NAME
    python = sys.executable  # imports detectron2 and projects: a working environment
    assert not setup_env.is_complete(stamp, python, "abc")  # interrupted: no stamp written
    stamp.write_text("{not json")
    assert not setup_env.is_complete(stamp, python, "abc")  # half-written stamp
    stamp.write_text(json.dumps({"inputs": "old"}))
    assert not setup_env.is_complete(stamp, python, "abc")  # inputs changed since
    stamp.write_text(json.dumps({"inputs": "abc"}))
    assert setup_env.is_complete(stamp, python, "abc")
    assert not setup_env.is_complete(stamp, tmp_path / "no-python", "abc")  # env broken since


@pytest.mark.integration
def test_broken_venv_is_recreated(setup_env, tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("not an interpreter")
    setup_env.ensure_venv(venv, venv / "bin" / "python")
    out = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import pip, sys; print(sys.prefix != sys.base_prefix)",
        ],
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == "True"


def test_inputs_hash_changes_with_the_torch_spec(setup_env, monkeypatch):
    first = setup_env.inputs_hash(setup_env.DEFAULT_CONSTRAINTS)
    monkeypatch.setenv("TORCH_SPEC", "torch==0.0.0")
    assert setup_env.inputs_hash(setup_env.DEFAULT_CONSTRAINTS) != first


def test_inputs_hash_changes_with_the_constraints_file_and_with_opting_out(setup_env, tmp_path):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text('numpy==2.0.0; python_version == "3.11"\n')
    first = setup_env.inputs_hash(constraints)
    constraints.write_text('numpy==2.0.1; python_version == "3.11"\n')
    second = setup_env.inputs_hash(constraints)
    assert len({first, second, setup_env.inputs_hash(None)}) == 3


def test_constraints_default_opt_out_and_a_missing_file(setup_env, tmp_path, capsys):
    assert setup_env.constraints_file(None) == REPO / "constraints.txt"
    assert setup_env.constraints_file("") is None
    other = tmp_path / "mine.txt"
    other.write_text("")
    assert setup_env.constraints_file(str(other)) == other
    with pytest.raises(SystemExit):
        setup_env.constraints_file(str(tmp_path / "typo.txt"))
    err = capsys.readouterr().err
    assert str(tmp_path / "typo.txt") in err and "CONSTRAINTS=" in err


@pytest.mark.parametrize(
    "env, constrained",
    [
        ({}, True),
        ({"TORCH_SPEC": "torch==2.14.1 torchvision==0.29.1"}, True),
        ({"TORCH_SPEC": "torch==2.5.1 torchvision==0.20.1"}, False),
        ({"TORCH_INDEX_URL": "https://download.pytorch.org/whl/cu121"}, False),
    ],
)
def test_torch_is_installed_with_the_constraints_only_for_the_default_torch(
    setup_env, monkeypatch, env, constrained
):
    monkeypatch.delenv("TORCH_SPEC", raising=False)
    monkeypatch.delenv("TORCH_INDEX_URL", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    calls = []
    monkeypatch.setattr(setup_env, "works", lambda python, code: False)  # no torch yet
    monkeypatch.setattr(setup_env, "check_disk", lambda path, need_gb: None)
    monkeypatch.setattr(setup_env, "pip", lambda python, *args: calls.append(args))
    setup_env.ensure_torch("python", REPO / "constraints.txt")
    (args,) = calls
    assert (("-c", REPO / "constraints.txt") in zip(args, args[1:])) == constrained
    spec = env.get("TORCH_SPEC", setup_env.DEFAULT_TORCH_SPEC).split()
    assert list(args[-len(spec) :]) == spec


# --- declared dependencies and constraints -------------------------------------------------------

# Installed by tools/setup_env.py's own rules (TORCH_SPEC, tools/install_detectron2.py), not pip -r.
OWN_INSTALLERS = {"torch", "torchvision", "detectron2"}


def requirement_lines(path):
    """The requirement strings of a requirements/constraints file (no comments or options)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def names(path):
    return {canonicalize_name(Requirement(line).name) for line in requirement_lines(path)}


def install_requires():
    """setup.py's INSTALL_REQUIRES literal, read without running setup()."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        targets = getattr(node, "targets", [])
        if any(isinstance(t, ast.Name) and t.id == "INSTALL_REQUIRES" for t in targets):
            return [Requirement(r) for r in ast.literal_eval(node.value)]
    raise AssertionError("setup.py has no INSTALL_REQUIRES = [...]")


def optional_import_nodes(tree):
    """ids of the nodes inside a ``try:`` body whose handlers catch ImportError (optional)."""
    optional = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            h.type is not None and "ImportError" in ast.unparse(h.type) for h in node.handlers
        ):
            optional.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return optional


def own_modules():
    """The repository's top-level packages (``tests`` among them) and scripts."""
    return {p.parent.name for p in REPO.glob("*/__init__.py")} | {p.stem for p in REPO.glob("*.py")}


def installed_code():
    """The files whose imports setup.py declares: the packages it installs, tools/, the scripts."""
    packages = sorted(p.parent.name for p in REPO.glob("*/__init__.py") if p.parent.name != "tests")
    files = [f for package in packages for f in sorted((REPO / package).rglob("*.py"))]
    scripts = [p for p in sorted(REPO.glob("*.py")) if p.name != "setup.py"]
    return files + sorted((REPO / "tools").glob("*.py")) + scripts


def third_party_imports(files):
    """{top-level module: first file:line} of the absolute, non-optional imports in ``files``,
    the standard library and the repository's own modules excluded."""
    own = own_modules()
    found = {}
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        optional = optional_import_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in own or id(node) in optional:
                    continue
                found.setdefault(top, f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def imported_distributions(files):
    """{canonical distribution name: file:line} of the third-party imports in ``files``."""
    dists_of = importlib.metadata.packages_distributions()
    imported = {}
    for module, where in third_party_imports(files).items():
        dists = dists_of.get(module)
        assert dists, f"`import {module}` ({where}) comes from no installed distribution"
        imported.setdefault(canonicalize_name(dists[0]), where)
    return imported


def test_setup_py_declares_exactly_the_third_party_imports_of_the_code():
    imported = imported_distributions(installed_code())
    declared = {canonicalize_name(r.name) for r in install_requires()}
    missing = sorted(
        f"{name} ({where})" for name, where in imported.items() if name not in declared
    )
    assert not missing, f"imported but not in setup.py's INSTALL_REQUIRES: {missing}"
    unused = sorted(declared - set(imported))
    assert not unused, f"in setup.py's INSTALL_REQUIRES, never imported: {unused}"
    assert {"numpy", "scipy", "pillow"} <= declared  # what `import projects.data` needs


def test_the_tests_imports_are_listed_and_test_tools_kept_apart_from_runtime():
    imported = imported_distributions(sorted((REPO / "tests").rglob("*.py")))
    listed = names(REPO / "requirements.txt") | names(REPO / "requirements-test.txt")
    missing = sorted(
        f"{name} ({where})"
        for name, where in imported.items()
        if name not in listed | OWN_INSTALLERS
    )
    assert not missing, f"imported by the tests, in no requirements*.txt: {missing}"
    runtime_only = {"pytest", "hypothesis", "packaging"} & names(REPO / "requirements.txt")
    assert not runtime_only, f"test tools belong in requirements-test.txt: {runtime_only}"


def test_make_setup_installs_what_setup_py_declares():
    # The project is installed with --no-deps: what it declares must come from requirements.txt.
    declared = {canonicalize_name(r.name) for r in install_requires()} - OWN_INSTALLERS
    listed = names(REPO / "requirements.txt")
    assert declared <= listed, f"in setup.py, not in requirements.txt: {declared - listed}"


def test_every_requirement_has_an_exact_pin_that_satisfies_it(setup_env):
    pins = {}
    for line in requirement_lines(REPO / "constraints.txt"):
        pin = Requirement(line)
        (spec,) = pin.specifier
        assert spec.operator == "==", f"constraints.txt: {line!r} is not an exact pin"
        assert pin.marker is not None and pin.marker.evaluate({"python_version": "3.11"})
        assert not pin.marker.evaluate({"python_version": "3.9"}), f"{line!r}: not for 3.11 only"
        pins[canonicalize_name(pin.name)] = spec.version
    for name in setup_env.REQUIREMENTS:
        for line in requirement_lines(REPO / name):
            req = Requirement(line)
            version = pins.get(canonicalize_name(req.name))
            assert version, f"{name}: {req.name} has no pin in constraints.txt (add NAME==VERSION)"
            assert req.specifier.contains(version, prereleases=True), f"{name}: {line} vs {version}"


def test_constraints_leave_torch_detectron2_and_the_project_to_their_installers():
    pinned = names(REPO / "constraints.txt") & (OWN_INSTALLERS | {"d2-instance-seg"})
    assert not pinned, f"constraints.txt pins what setup_env installs by its own rules: {pinned}"
