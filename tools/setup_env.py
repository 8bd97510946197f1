#!/usr/bin/env python3
"""Set up (or repair) the Python environment this project runs in. Called by ``make setup``.

The environment is the active virtualenv/conda env when one is active, else ``./.venv``
(created here). Steps, each skipped when already done:

1. check the interpreter (Python >= 3.9), pip and free disk space, and say what is missing;
2. create ``.venv`` (re-created if a previous run left it broken);
3. install PyTorch when the environment has none: ``$TORCH_SPEC`` (default
   ``torch==2.14.1 torchvision==0.29.1``), from ``$TORCH_INDEX_URL`` when set (for a CUDA build
   of your choice). An environment that already has torch keeps it;
4. ``pip install -r requirements.txt``;
5. Detectron2: ``tools/install_detectron2.py`` (the registry's v0.6 sources with a portable
   ``detectron2._C``), unless a compiled Detectron2 is installed;
6. this project, editable (``pip install -e .``);
7. a check that ``detectron2.modeling/data/evaluation/engine`` and the project import.

Completion is recorded in ``<env>/.d2proj-setup.json`` only after step 7 succeeds, together with
a hash of every input (requirements, installers, the portable ops). An interrupted run therefore
never counts as done: the next one repeats what is missing.
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


def inputs_hash():
    """Hash of everything whose change must trigger a re-install."""
    files = [
        REPO / "requirements.txt",
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
    digest.update(os.environ.get("TORCH_SPEC", DEFAULT_TORCH_SPEC).encode())
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


def ensure_torch(python):
    if works(python, "import torch, torchvision; torchvision.ops.nms"):
        return
    spec = os.environ.get("TORCH_SPEC", DEFAULT_TORCH_SPEC).split()
    extra = (
        ["--index-url", os.environ["TORCH_INDEX_URL"]] if os.environ.get("TORCH_INDEX_URL") else []
    )
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
    parser.add_argument("--force", action="store_true", help="redo every step")
    args = parser.parse_args(argv)

    prefix, python, _ = choose_env(args)
    if args.print_python:
        print(python)
        return 0

    stamp = prefix / STAMP_NAME
    digest = inputs_hash()
    if not args.force and is_complete(stamp, python, digest):
        log(f"environment {prefix} is set up (delete {stamp} or use --force to redo)")
        return 0

    start = time.time()
    check_interpreter()
    check_disk(prefix if prefix.exists() else prefix.parent, MIN_FREE_GB)
    ensure_venv(prefix, python)
    stamp.unlink(missing_ok=True)  # from here on, an interruption must not look like success
    ensure_torch(python)
    pip(python, "install", "-r", REPO / "requirements.txt")
    run([python, REPO / "tools" / "install_detectron2.py", "--python", python])
    pip(python, "install", "--no-deps", "--no-build-isolation", "-e", REPO)
    if not works(python, CHECK_IMPORTS):
        run([python, "-c", CHECK_IMPORTS])  # shows the traceback, then fails
    stamp.write_text(json.dumps({"inputs": digest, "python": str(python)}) + "\n")
    log(f"environment {prefix} ready in {time.time() - start:.0f} s; python: {python}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
