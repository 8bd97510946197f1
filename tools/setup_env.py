#!/usr/bin/env python3
"""Set up (or repair) the Python environment this project runs in. Called by ``make setup``.

The environment is the active virtualenv/conda env when one is active, else ``./.venv``
(created here). Steps, each skipped when already done:

1. check the interpreter (Python >= 3.9), pip and free disk space, and say what is missing;
2. create ``.venv`` (re-created if a previous run left it broken);
3. install PyTorch when the environment has none: ``$TORCH_SPEC`` (default
   ``torch==2.14.1 torchvision==0.29.1``), from ``$TORCH_INDEX_URL`` when set (for a CUDA build
   of your choice). An environment that already has torch keeps it;
4. ``pip install -r requirements.txt -r requirements-test.txt -c constraints.txt``;
5. Detectron2: ``tools/install_detectron2.py`` (the registry's v0.6 sources with a portable
   ``detectron2._C``), unless a compiled Detectron2 is installed;
6. this project, editable (``pip install -e .``);
7. a check that ``detectron2.modeling/data/evaluation/engine`` and the project import.

Constraints: ``constraints.txt`` holds the exact versions the suite passed with (Python 3.11).
Step 4 installs with it, and so does step 3 while ``$TORCH_SPEC`` and ``$TORCH_INDEX_URL`` are
left at their defaults (the file's PyTorch section belongs to that torch). ``--constraints FILE``
or ``$CONSTRAINTS`` (``make setup CONSTRAINTS=FILE``) chooses another file; an empty value
(``make setup CONSTRAINTS=``) installs without one, resolving the requirements' ranges.

Completion is recorded in ``<env>/.d2proj-setup.json`` only after step 7 succeeds, together with
a hash of every input (requirements, constraints, installers, the portable ops, the torch spec).
An interrupted run therefore never counts as done, and a changed input re-runs the install.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAMP_NAME = ".d2proj-setup.json"
REQUIREMENTS = ("requirements.txt", "requirements-test.txt")
DEFAULT_CONSTRAINTS = REPO / "constraints.txt"
DEFAULT_TORCH_SPEC = "torch==2.14.1 torchvision==0.29.1"
MIN_PYTHON = (3, 9)
# A CUDA build of torch + torchvision unpacks to ~5.6 GB; leave room for the rest and the data.
MIN_FREE_GB_WITH_TORCH = 8.0
MIN_FREE_GB = 1.0
CHECK_IMPORTS = (
    "import detectron2.modeling, detectron2.data, detectron2.evaluation, detectron2.engine; "
    "import projects"
)


def log(msg):
    print(f"[setup] {msg}", flush=True)


def fail(msg):
    print(f"[setup] error: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def run(cmd, **kwargs):
    log("$ " + " ".join(str(c) for c in cmd))
    proc = subprocess.run([str(c) for c in cmd], **kwargs)
    if proc.returncode != 0:
        fail(f"command failed with exit code {proc.returncode}: {' '.join(str(c) for c in cmd)}")
    return proc


def works(python, code):
    try:
        proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    except OSError:
        return False
    return proc.returncode == 0


def constraints_file(value):
    """The constraints file to install with: ``value`` is ``--constraints`` / ``$CONSTRAINTS``.

    Args:
        value (str or None): None (not given) for the repository's ``constraints.txt``; an empty
            string for none; else a path, relative to the current directory.

    Returns:
        Path or None: the existing file, or None to install without constraints.
    """
    if value is None:
        path = DEFAULT_CONSTRAINTS
    elif not value.strip():
        return None
    else:
        path = Path(value).expanduser().resolve()
    if not path.is_file():
        fail(
            f"constraints file {path} (CONSTRAINTS={value!r}) does not exist; "
            "give an existing file, or CONSTRAINTS= to install without constraints"
        )
    return path


def torch_spec():
    return os.environ.get("TORCH_SPEC", "").split() or DEFAULT_TORCH_SPEC.split()


def default_torch():
    """True when PyTorch comes from the default ``TORCH_SPEC`` and index, the one whose
    dependencies ``constraints.txt`` pins."""
    return torch_spec() == DEFAULT_TORCH_SPEC.split() and not os.environ.get("TORCH_INDEX_URL")


def inputs_hash(constraints):
    """Hash of everything whose change must trigger a re-install.

    Args:
        constraints (Path or None): the constraints file in use (None: installing without).
    """
    files = [REPO / name for name in REQUIREMENTS] + [
        REPO / "setup.py",
        REPO / "tools" / "setup_env.py",
        REPO / "tools" / "install_detectron2.py",
        REPO / "projects" / "compat" / "stack.py",
    ]
    files += sorted((REPO / "projects" / "compat" / "portable_c").glob("*.py"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    # The editable install maps the top-level packages it found: a new method package redoes it.
    packages = sorted(p.parent.name for p in REPO.glob("*/__init__.py"))
    digest.update(" ".join(packages).encode())
    digest.update(" ".join(torch_spec()).encode())
    digest.update(b"constraints:" + (constraints.read_bytes() if constraints else b"<none>"))
    return digest.hexdigest()


def is_complete(stamp, python, digest):
    """True only if a finished setup recorded ``digest`` in ``stamp`` and the environment still
    imports Detectron2 and the project (an interrupted or outdated setup is never complete)."""
    try:
        recorded = json.loads(stamp.read_text()).get("inputs")
    except (OSError, ValueError, AttributeError):
        return False
    return recorded == digest and works(python, "import detectron2, projects")


def choose_env(args):
    """Return (env prefix, python executable, created_by_us)."""
    if args.venv is None:
        active = os.environ.get("VIRTUAL_ENV") or os.environ.get("CONDA_PREFIX")
        if active and Path(active).resolve() != Path(sys.base_prefix).resolve():
            bindir = "Scripts" if os.name == "nt" else "bin"
            python = Path(active) / bindir / ("python.exe" if os.name == "nt" else "python")
            if python.exists():
                log(f"using the active environment {active}")
                return Path(active), python, False
    venv = Path(args.venv or REPO / ".venv").resolve()
    return venv, venv / "bin" / "python", True


def check_interpreter():
    if sys.version_info < MIN_PYTHON:
        fail(
            f"Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} is needed (3.11 is what CI uses); "
            f"{sys.executable} is {sys.version.split()[0]}. Run `make setup PYTHON=python3.11`."
        )
    if not works(sys.executable, "import venv, ensurepip"):
        fail(
            f"{sys.executable} lacks the venv/ensurepip modules: install python3-venv "
            "(Debian/Ubuntu: `apt-get install python3-venv`) or use another Python via PYTHON="
        )


def check_disk(path, need_gb):
    probe = path
    while not probe.exists():
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 1e9
    if free_gb < need_gb:
        fail(
            f"{free_gb:.1f} GB free under {probe}; setup needs about {need_gb:.0f} GB "
            "(PyTorch alone unpacks to ~5.6 GB). Free some space or set VENV= elsewhere."
        )


def ensure_venv(prefix, python):
    if works(python, "import pip, sys; assert sys.prefix != sys.base_prefix"):
        return
    if prefix.exists():
        log(f"{prefix} exists but is not a working virtualenv with pip: re-creating it")
    else:
        log(f"creating the virtualenv {prefix}")
    check_disk(prefix.parent, MIN_FREE_GB_WITH_TORCH)
    run([sys.executable, "-m", "venv", "--clear", prefix])
    if not works(python, "import pip"):
        fail(f"{python} has no pip after creating the venv: install python3-pip / ensurepip")


def pip(python, *args):
    return run([python, "-m", "pip", "--disable-pip-version-check", *args])


def constraint_args(constraints):
    return ["-c", constraints] if constraints else []


def ensure_torch(python, constraints):
    if works(python, "import torch, torchvision; torchvision.ops.nms"):
        return
    spec = torch_spec()
    extra = (
        ["--index-url", os.environ["TORCH_INDEX_URL"]] if os.environ.get("TORCH_INDEX_URL") else []
    )
    if default_torch():
        extra += constraint_args(constraints)
    check_disk(Path(sys.prefix), MIN_FREE_GB_WITH_TORCH)
    log(f"installing {' '.join(spec)} (override with TORCH_SPEC=... / TORCH_INDEX_URL=...)")
    pip(python, "install", *extra, *spec)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--venv",
        default=os.environ.get("VENV") or None,
        help="virtualenv to create/use (default: the active one, else ./.venv)",
    )
    parser.add_argument(
        "--print-python",
        action="store_true",
        help="print the environment's python executable and exit",
    )
    parser.add_argument(
        "--constraints",
        default=os.environ.get("CONSTRAINTS"),
        help="pip constraints file (default: constraints.txt; an empty value: none)",
    )
    parser.add_argument("--force", action="store_true", help="redo every step")
    args = parser.parse_args(argv)

    prefix, python, _ = choose_env(args)
    if args.print_python:
        print(python)
        return 0

    stamp = prefix / STAMP_NAME
    constraints = constraints_file(args.constraints)
    digest = inputs_hash(constraints)
    if not args.force and is_complete(stamp, python, digest):
        log(f"environment {prefix} is set up (delete {stamp} or use --force to redo)")
        return 0

    start = time.time()
    log(f"constraints: {constraints or 'none (CONSTRAINTS is empty)'}")
    check_interpreter()
    check_disk(prefix if prefix.exists() else prefix.parent, MIN_FREE_GB)
    ensure_venv(prefix, python)
    stamp.unlink(missing_ok=True)  # from here on, an interruption must not look like success
    ensure_torch(python, constraints)
    requirements = [arg for name in REQUIREMENTS for arg in ("-r", REPO / name)]
    pip(python, "install", *requirements, *constraint_args(constraints))
    run([python, REPO / "tools" / "install_detectron2.py", "--python", python])
    pip(python, "install", "--no-deps", "--no-build-isolation", "-e", REPO)
    if not works(python, CHECK_IMPORTS):
        run([python, "-c", CHECK_IMPORTS])  # shows the traceback, then fails
    stamp.write_text(json.dumps({"inputs": digest, "python": str(python)}) + "\n")
    log(f"environment {prefix} ready in {time.time() - start:.0f} s; python: {python}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
