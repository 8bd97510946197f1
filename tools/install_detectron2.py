#!/usr/bin/env python3
"""Install Detectron2 v0.6 from the package registry as a pure-Python ``detectron2`` wheel.

Detectron2 publishes no wheels. The registry's only copy is the sdist ``pb1-detectron2==0.6``,
whose Python sources are those of the official v0.6 release but which ships no C++/CUDA sources,
so its own ``setup.py`` cannot build. This script:

1. leaves an importable Detectron2 that has a compiled ``detectron2._C`` alone (an official
   source build, the normal install of GPU users) and exits;
2. otherwise downloads the sdist (``pip download``; it is cached under ``--cache-dir``),
3. builds a wheel named ``detectron2`` with v0.6's package mapping: ``detectron2`` itself, the
   model-zoo YAML/Python configs, and ``detectron2.projects.{point_rend,deeplab,panoptic_deeplab}``,
4. adds ``detectron2/_C`` in portable PyTorch (``projects/compat/portable_c`` of this repository)
   and ``detectron2/_stack_compat.py`` (``projects/compat/stack.py``), imported first thing by
   ``detectron2/__init__.py``, so that Detectron2 works on its own on today's
   Pillow/numpy/setuptools,
5. installs the wheel with ``pip install --no-deps`` (dependencies come from requirements.txt).

Usage::

    python tools/install_detectron2.py [--cache-dir .cache/detectron2] [--force]
"""

import argparse
import base64
import hashlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
WHEEL_VERSION = "0.6+portable"
REPO_ROOT = Path(__file__).resolve().parent.parent
PORTABLE_C_DIR = REPO_ROOT / "projects" / "compat" / "portable_c"
STACK_COMPAT_FILE = REPO_ROOT / "projects" / "compat" / "stack.py"

# v0.6 setup.py: ``package_dir`` for the projects it installs under ``detectron2.projects``.
PROJECT_PACKAGES = {
    "detectron2/projects/point_rend": "projects/PointRend/point_rend",
    "detectron2/projects/deeplab": "projects/DeepLab/deeplab",
    "detectron2/projects/panoptic_deeplab": "projects/Panoptic-DeepLab/panoptic_deeplab",
}
# Imported by detectron2/__init__.py before anything else: the stack fixes must be in place
# before ``detectron2.data.transforms`` evaluates ``Image.LINEAR`` as a default argument.
INIT_HOOK = "from . import _stack_compat  # noqa: F401  (added by the portable installer)\n"

REQUIRES = [
    "Pillow>=7.1",
    "matplotlib",
    "pycocotools>=2.0.2",
    "termcolor>=1.1",
    "yacs>=0.1.8",
    "tabulate",
    "cloudpickle",
    "tqdm>4.29.0",
    "tensorboard",
    "fvcore>=0.1.5,<0.1.6",
    "iopath>=0.1.7,<0.1.10",
    "omegaconf>=2.1",
    "hydra-core>=1.1",
    "black",
]


def log(msg):
    print(f"[install_detectron2] {msg}", flush=True)


def compiled_detectron2(python):
    """Return the path of a compiled ``detectron2._C`` importable by ``python``, or None."""
    code = (
        "import importlib.util, sys\n"
        "spec = importlib.util.find_spec('detectron2')\n"
        "if spec is None: sys.exit(1)\n"
        "import detectron2._C as c\n"
        "f = getattr(c, '__file__', '') or ''\n"
        "print(f) if f.endswith(('.so', '.pyd')) else sys.exit(1)\n"
    )
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def download_sdist(python, cache_dir):
    cache_dir.mkdir(parents=True, exist_ok=True)
    sdist = cache_dir / f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"
    if sdist.is_file() and tarfile.is_tarfile(sdist):
        return sdist
    log(f"downloading the {SDIST_NAME}=={SDIST_VERSION} sdist into {cache_dir}")
    # Its setup.py imports torch even to produce metadata: hence no build isolation.
    cmd = [
        python,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-build-isolation",
        "-d",
        str(cache_dir),
        f"{SDIST_NAME}=={SDIST_VERSION}",
    ]
    proc = subprocess.run(cmd)
    if proc.returncode != 0 or not sdist.is_file():
        raise SystemExit(
            f"error: could not download {SDIST_NAME}=={SDIST_VERSION} with `{' '.join(cmd)}`. "
            "It needs torch installed in that environment and access to the package registry."
        )
    return sdist


def sdist_members(sdist):
    """Yield (path inside the wheel, bytes) for every file of the v0.6 package mapping."""
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            # "pb1-detectron2-0.6/detectron2/..." -> "detectron2/..."
            rel = member.name.split("/", 1)[1] if "/" in member.name else member.name
            target = None
            if rel.startswith("detectron2/"):
                if rel.endswith(".py") or rel.startswith("detectron2/model_zoo/configs/"):
                    target = rel
            else:
                for dst, src in PROJECT_PACKAGES.items():
                    if rel.startswith(src + "/") and rel.endswith(".py"):
                        target = dst + rel[len(src) :]
            if target is not None:
                yield target, tar.extractfile(member).read()


def portable_members():
    """Yield the files this repository adds to the wheel."""
    for path in sorted(PORTABLE_C_DIR.glob("*.py")):
        yield f"detectron2/_C/{path.name}", path.read_bytes()
    yield "detectron2/_stack_compat.py", STACK_COMPAT_FILE.read_bytes()


def _record_hash(data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel(sdist, out_dir):
    files = dict(sdist_members(sdist))
    if "detectron2/__init__.py" not in files:
        raise SystemExit(f"error: {sdist} does not contain detectron2/__init__.py")
    files["detectron2/__init__.py"] = INIT_HOOK.encode() + files["detectron2/__init__.py"]
    files.update(portable_members())

    dist_info = f"detectron2-{WHEEL_VERSION}.dist-info"
    metadata = [
        "Metadata-Version: 2.1",
        "Name: detectron2",
        f"Version: {WHEEL_VERSION}",
        "Summary: Detectron2 v0.6 Python sources (from the pb1-detectron2 sdist) with a "
        "portable PyTorch detectron2._C",
        "Home-page: https://github.com/facebookresearch/detectron2",
        "License: Apache-2.0",
        "Requires-Python: >=3.8",
    ] + [f"Requires-Dist: {r}" for r in REQUIRES]
    files[f"{dist_info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    files[f"{dist_info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: tools/install_detectron2.py\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n"
    ).encode()
    files[f"{dist_info}/top_level.txt"] = b"detectron2\n"
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in sorted(files.items())]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()

    wheel = out_dir / f"detectron2-{WHEEL_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(files.items()):
            info = zipfile.ZipInfo(name, date_time=(2021, 11, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    n_py = sum(name.endswith(".py") for name in files)
    log(f"built {wheel.name}: {len(files)} files ({n_py} Python modules)")
    return wheel


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter to install into")
    parser.add_argument("--cache-dir", default=str(REPO_ROOT / ".cache" / "detectron2"))
    parser.add_argument(
        "--force", action="store_true", help="install even over a compiled Detectron2"
    )
    args = parser.parse_args(argv)

    compiled = compiled_detectron2(args.python)
    if compiled and not args.force:
        log(f"a compiled Detectron2 is installed ({compiled}); leaving it alone")
        return 0
    sdist = download_sdist(args.python, Path(args.cache_dir))
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(sdist, Path(tmp))
        cmd = [
            args.python,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--force-reinstall",
            "-q",
            str(wheel),
        ]
        if subprocess.run(cmd).returncode != 0:
            raise SystemExit(f"error: `{' '.join(cmd)}` failed")
    log(f"installed detectron2 {WHEEL_VERSION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
