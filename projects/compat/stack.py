"""Fixes that let Detectron2 v0.6's Python sources run on today's Pillow, numpy and setuptools.

Each fix is one small, idempotent function that first detects whether it is needed (features,
never version numbers: v0.6 and a current source build both say ``0.6``), and ``apply_all`` runs
them in order. This module is self-contained (standard library, numpy and Pillow only) because it
is used two ways:

* the portable installer (``tools/install_detectron2.py``) ships it inside the ``detectron2``
  wheel as ``detectron2/_stack_compat.py`` and imports it first thing from
  ``detectron2/__init__.py``, so a plain ``import detectron2.data`` works with no project import;
* ``projects/__init__.py`` calls :func:`apply_all` too, which covers a Detectron2 built from
  source (an official GPU install) whatever its age.

The gaps, each with a test in ``tests/test_compat_stack.py``:

* ``PIL.Image.LINEAR`` was removed in Pillow 10; v0.6 uses it as a *default argument* of
  ``ExtentTransform``, so ``import detectron2.data`` fails without it. It was always an alias of
  ``BILINEAR``.
* numpy 1.24 removed the aliases ``np.int``, ``np.float``, ``np.str``, ``np.object`` (and 1.24-1.26
  lack ``np.bool``): v0.6 calls them in empty-polygon masks, the class histogram printed before
  training, semantic-segmentation evaluation, the visualizer and Pascal VOC loading. They were
  always the Python builtins.
* v0.6's ``DeformConv`` / ``ModulatedDeformConv`` refuse CPU tensors (no backward, no
  deformable groups): :func:`patch_deform_conv_cpu` routes CPU tensors to
  ``torchvision.ops.deform_conv2d``, which has CPU autograd; CUDA tensors keep ``detectron2._C``.
  It applies once ``detectron2.layers`` is imported (``import projects`` imports it).
* Python 3.11 no longer samples from a set: v0.6's ``MapDataset`` does, to replace a sample its
  mapper skipped (returned None), so skipping a bad image crashed the loader.
  :func:`patch_map_dataset_fallback` picks from the sorted candidates instead (same RNG). It
  applies once ``detectron2.data`` is imported (``import projects`` imports it).
* ``pkg_resources`` is gone from setuptools >= 81; v0.6's ``detectron2.model_zoo`` imports it at
  module level for ``resource_filename``. A minimal stand-in based on ``importlib.resources`` is
  registered only when the real module cannot be imported.
"""

import builtins
import importlib
import importlib.util
import itertools
import logging
import os
import sys
import types
import warnings

logger = logging.getLogger(__name__)

# numpy aliases removed in 1.24 (``np.bool`` returned in 2.0 as ``np.bool_``).
NUMPY_ALIASES = ("bool", "int", "float", "complex", "object", "str")
_MISSING = object()


def patch_pillow_linear():
    """Provide ``PIL.Image.LINEAR`` (removed in Pillow 10) as ``BILINEAR``.

    Returns:
        bool: True if the attribute had to be added.
    """
    from PIL import Image

    if hasattr(Image, "LINEAR"):
        return False
    Image.LINEAR = Image.BILINEAR
    return True


def patch_numpy_aliases():
    """Restore ``np.bool``/``np.int``/``np.float``/``np.str``/... as the Python builtins.

    Returns:
        list[str]: the aliases that had to be added.
    """
    import numpy as np

    added = []
    for name in NUMPY_ALIASES:
        # numpy >= 1.24 raises AttributeError from its module __getattr__ for the removed names.
        if name not in vars(np) and not _has_attr(np, name):
            setattr(np, name, getattr(builtins, name))
            added.append(name)
    return added


def _has_attr(module, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns about names it plans to re-purpose
        try:
            getattr(module, name)
        except AttributeError:
            return False
    return True


def _resource_filename(package_or_requirement, resource_name):
    """``pkg_resources.resource_filename`` for packages installed as plain directories."""
    if not isinstance(package_or_requirement, str):
        package_or_requirement = package_or_requirement.__name__
    module = importlib.import_module(package_or_requirement)
    base = os.path.dirname(os.path.abspath(module.__file__))
    return os.path.join(base, *resource_name.split("/"))


def make_pkg_resources_shim():
    """Build the minimal ``pkg_resources`` stand-in used when setuptools no longer ships one."""
    shim = types.ModuleType("pkg_resources")
    shim.__doc__ = "Minimal stand-in for setuptools' removed pkg_resources (resource_filename)."
    shim.resource_filename = _resource_filename
    shim.resource_exists = lambda pkg, name: os.path.exists(_resource_filename(pkg, name))
    shim.__detectron2_compat_shim__ = True
    return shim


def patch_pkg_resources():
    """Register a ``pkg_resources`` stand-in if the real module cannot be imported.

    Returns:
        bool: True if the stand-in was registered.
    """
    # A None entry in sys.modules means "import blocked": treat it as missing. Otherwise use
    # find_spec, not import: importing the real module is slow and warns that it is deprecated.
    existing = sys.modules.get("pkg_resources", _MISSING)
    if existing is not _MISSING and existing is not None:
        return False
    if existing is _MISSING and importlib.util.find_spec("pkg_resources") is not None:
        return False
    sys.modules["pkg_resources"] = make_pkg_resources_shim()
    return True


def patch_deform_conv_cpu():
    """Let Detectron2's deformable-convolution layers run (and train) on CPU tensors.

    Returns:
        bool: True if the routing was installed now (False: already done, or
        ``detectron2.layers.deform_conv`` not imported yet).
    """
    module = sys.modules.get("detectron2.layers.deform_conv")
    if module is None or getattr(module, "_cpu_route_installed", False):
        return False
    import torchvision

    cuda_deform_conv, cuda_modulated_deform_conv = module.deform_conv, module.modulated_deform_conv

    def deform_conv(
        input,
        offset,
        weight,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        deformable_groups=1,
        im2col_step=64,
    ):
        if input.is_cuda:
            return cuda_deform_conv(
                input,
                offset,
                weight,
                stride,
                padding,
                dilation,
                groups,
                deformable_groups,
                im2col_step,
            )
        # torchvision reads groups from the weight and deformable groups from the offsets.
        return torchvision.ops.deform_conv2d(
            input, offset, weight, stride=stride, padding=padding, dilation=dilation
        )

    def modulated_deform_conv(
        input,
        offset,
        mask,
        weight,
        bias=None,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        deformable_groups=1,
    ):
        if input.is_cuda:
            return cuda_modulated_deform_conv(
                input,
                offset,
                mask,
                weight,
                bias,
                stride,
                padding,
                dilation,
                groups,
                deformable_groups,
            )
        return torchvision.ops.deform_conv2d(
            input,
            offset,
            weight,
            bias,
            stride=stride,
            padding=padding,
            dilation=dilation,
            mask=mask,
        )

    module.deform_conv = deform_conv
    module.modulated_deform_conv = modulated_deform_conv
    module._cpu_route_installed = True
    return True


def _sets_cannot_be_sampled():
    import random

    try:
        random.Random(0).sample({0}, k=1)
    except TypeError:
        return True
    return False


def patch_map_dataset_fallback():
    """Make ``MapDataset`` replace skipped samples on Python >= 3.11 (see the module docstring).

    Returns:
        bool: True if ``MapDataset.__getitem__`` was replaced now.
    """
    module = sys.modules.get("detectron2.data.common")
    if module is None or getattr(module.MapDataset, "_fallback_fixed", False):
        return False
    if not _sets_cannot_be_sampled():
        return False

    def __getitem__(self, idx):
        cur_idx = int(idx)
        for retry_count in itertools.count(1):
            data = self._map_func(self._dataset[cur_idx])
            if data is not None:
                self._fallback_candidates.add(cur_idx)
                return data
            self._fallback_candidates.discard(cur_idx)
            if not self._fallback_candidates:
                raise RuntimeError(
                    f"the dataset mapper skipped sample {idx} and every other sample tried: "
                    "no sample of this dataset can be loaded"
                )
            cur_idx = self._rng.choice(sorted(self._fallback_candidates))
            if retry_count >= 3:
                logger.warning(
                    "mapping sample %s failed %d times; trying another", idx, retry_count
                )

    module.MapDataset.__getitem__ = __getitem__
    module.MapDataset._fallback_fixed = True
    return True


def apply_all():
    """Apply every fix that the running stack needs. Safe to call any number of times.

    Returns:
        dict: fix name -> what it changed (False / empty when nothing was needed).
    """
    changed = {
        "pillow_linear": patch_pillow_linear(),
        "numpy_aliases": patch_numpy_aliases(),
        "pkg_resources": patch_pkg_resources(),
        "deform_conv_cpu": patch_deform_conv_cpu(),
        "map_dataset_fallback": patch_map_dataset_fallback(),
    }
    if any(changed.values()):
        logger.debug("detectron2 stack fixes applied: %s", changed)
    return changed


apply_all()
