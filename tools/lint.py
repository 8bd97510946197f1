#!/usr/bin/env python3
"""Check the repository's code style: flake8, isort and black, in check mode (no file rewritten).

``make lint`` runs this script and ``tests/test_lint.py`` (so ``make test`` and CI) runs the same
commands over the same paths, :func:`lint_paths`: every top-level package (``projects``, each
method package present, ``tests``), ``tools`` and the top-level scripts. Settings: ``setup.cfg``
(flake8, isort) and ``pyproject.toml`` (black, which reads no other file).

Usage::

    python tools/lint.py                  # all three; exit status 1 if any fails
    python tools/lint.py black isort      # some of them
    python tools/lint.py --print-paths    # the linted paths, one a line
"""

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Directories of Python files that are not packages (no __init__.py) but are linted too.
SCRIPT_DIRS = ("tools",)
TOOLS = ("flake8", "isort", "black")


def lint_paths(repo=REPO):
    """Return the repository-relative paths to lint.

    Args:
        repo (Path): the repository root.

    Returns:
        list[str]: top-level packages (directories holding an ``__init__.py``, so a new method
        package is linted without an edit here), then :data:`SCRIPT_DIRS`, then top-level
        ``*.py`` files.
    """
    repo = Path(repo)
    packages = sorted(p.parent.name for p in repo.glob("*/__init__.py"))
    dirs = [d for d in SCRIPT_DIRS if (repo / d).is_dir()]
    scripts = sorted(p.name for p in repo.glob("*.py"))
    return packages + dirs + scripts


def commands(paths, python=sys.executable):
    """Return ``{tool: argv}``: each tool's check-only command over ``paths`` (run it from the
    repository root, where the tools find their settings).

    Args:
        paths (list[str]): files and directories to check.
        python (str): the interpreter whose flake8 / isort / black run.
    """
    return {
        "flake8": [python, "-m", "flake8", *paths],
        "isort": [python, "-m", "isort", "--check-only", "--diff", *paths],
        # No --diff: with it black re-checks every file instead of skipping those it has cached.
        "black": [python, "-m", "black", "--check", *paths],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tools", nargs="*", help=f"some of {', '.join(TOOLS)} (default: all)")
    parser.add_argument("--print-paths", action="store_true", help="print the paths and exit")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.tools) - set(TOOLS))
    if unknown:
        parser.error(f"unknown tool(s) {', '.join(unknown)}; known: {', '.join(TOOLS)}")

    paths = lint_paths()
    if args.print_paths:
        print("\n".join(paths))
        return 0
    failed = []
    for tool, cmd in commands(paths).items():
        if args.tools and tool not in args.tools:
            continue
        print(f"[lint] {tool} {' '.join(paths)}", flush=True)
        if subprocess.run(cmd, cwd=REPO).returncode != 0:
            failed.append(tool)
    if failed:
        print(f"[lint] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
