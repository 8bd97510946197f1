"""The code is flake8, isort and black clean under the repository's settings (setup.cfg,
pyproject.toml), over the paths ``make lint`` checks (both take them from tools/lint.py), and the
checks report bad code without rewriting it."""

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Fails each check for its own reason: imports out of order (isort), an unused import (flake8),
# spacing black rewrites (black).
BAD_CODE = "import sys\nimport os\n\nx = {  'a':1 }\nprint(sys)\n"


@pytest.fixture(scope="module")
def lint():
    spec = importlib.util.spec_from_file_location("lint", REPO / "tools" / "lint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("tool", ["flake8", "isort", "black"])
def test_code_is_clean(lint, tool):
    result = run(lint.commands(lint.lint_paths())[tool], REPO)
    assert result.returncode == 0, (
        f"{tool} finds problems (`make lint` shows them; isort and black fix theirs when run "
        f"without --check-only / --check):\n{result.stdout}{result.stderr}"
    )


def test_lint_paths_cover_every_python_file_of_the_repository(lint):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the repository's own files are unknown")
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], REPO)
    assert listed.returncode == 0, listed.stderr
    files = listed.stdout.split()
    assert "train_net.py" in files and "tools/lint.py" in files
    paths = lint.lint_paths()
    unlinted = [f for f in files if not any(f == p or f.startswith(p + "/") for p in paths)]
    assert not unlinted, f"not linted by tools/lint.py (add to SCRIPT_DIRS?): {unlinted}"


@pytest.mark.parametrize("tool", ["flake8", "isort", "black"])
def test_check_reports_bad_code_without_rewriting_it(lint, tool, tmp_path):
    for settings in ("setup.cfg", "pyproject.toml"):
        shutil.copy(REPO / settings, tmp_path / settings)
    bad = tmp_path / "bad.py"
    bad.write_text(BAD_CODE)
    result = run(lint.commands([bad.name])[tool], tmp_path)
    assert result.returncode != 0, f"{tool} accepted {BAD_CODE!r}: {result.stdout}{result.stderr}"
    assert bad.read_text() == BAD_CODE


def test_black_takes_the_100_column_limit_from_pyproject(lint, tmp_path):
    # 94 columns: black's default limit (88) splits the call, the repository's (100) keeps it.
    line = "result = some_function_name(" + ", ".join(f"arg_num_{i}" for i in range(6)) + ")"
    assert 88 < len(line) <= 100, len(line)
    source = tmp_path / "long_line.py"
    source.write_text(line + "\n")
    black = lint.commands([source.name])["black"]
    without = run(black, tmp_path)
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    with_settings = run(black, tmp_path)
    assert without.returncode != 0, "black's default limit should split the line (control)"
    assert with_settings.returncode == 0, with_settings.stdout + with_settings.stderr


def test_make_lint_runs_tools_lint():
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "tools/lint.py" in recipe  # the one list of paths and commands
    for tool in ("flake8", "isort", "black"):
        assert tool not in recipe, f"make lint runs {tool} itself, beside tools/lint.py's list"
