"""Fixes that let Detectron2 v0.6's Python sources run on today's Pillow, numpy and setuptools.

Each fix is one small, idempotent function that first detects whether it is needed (features,
never version numbers: v0.6 and a current source build both say ``0.6``), and ``apply_all`` runs
them in order. This module is self-contained (standard library, numpy and Pillow only; torch and
torchvision are imported inside the fixes that need them) because it is used two ways:

* the portable installer (``tools/install_detectron2.py``) ships it inside the ``detectron2``
  wheel as ``detectron2/_stack_compat.py`` and imports it first thing from
  ``detectron2/__init__.py``, so a plain ``import detectron2.data`` works with no project import;
* ``projects/__init__.py`` calls :func:`apply_all` too, which covers a Detectron2 built from
  source (an official GPU install) whatever its age.

Fixes of modules that are not imported yet when ``apply_all`` runs (it runs from
``detectron2/__init__.py``, before ``detectron2.layers`` or ``detectron2.data`` exist) are
registered as post-import fixes: a ``sys.meta_path`` finder (one per process, shared by both
copies of this module) lets the module's own loader execute it and then applies the fixes to
it, on first import and on every reload (:func:`fix_after_import`).

The gaps, each with a test in ``tests/test_compat_stack.py``:

* ``PIL.Image.LINEAR`` was removed in Pillow 10; v0.6 uses it as a *default argument* of
  ``ExtentTransform``, so ``import detectron2.data`` fails without it. It was always an alias of
  ``BILINEAR``.
* numpy 1.24 removed the aliases ``np.int``, ``np.float``, ``np.str``, ``np.object`` (and 1.24-1.26
  lack ``np.bool``): v0.6 calls them in empty-polygon masks, the class histogram printed before
  training, semantic-segmentation evaluation, the visualizer and Pascal VOC loading. They were
  always the Python builtins.
* v0.6's ``DeformConv`` / ``ModulatedDeformConv`` refuse CPU tensors (no backward, no
  deformable groups; Detectron2's current source has the same checks): :func:`patch_deform_conv_cpu`
  routes CPU tensors to ``torchvision.ops.deform_conv2d``, which has CPU autograd; CUDA tensors
  keep ``detectron2._C``. It applies when ``detectron2.layers.deform_conv`` is imported, and
  not at all when a probe finds that the installed Detectron2 trains on CPU tensors already.
* Python 3.11 no longer samples from a set: v0.6's ``MapDataset`` does, to replace a sample its
  mapper skipped (returned None), so skipping a bad image crashed the loader.
  :func:`patch_map_dataset_fallback` picks from the sorted candidates instead (same RNG). It
  applies when ``detectron2.data.common`` is imported.
* ``pkg_resources`` is gone from setuptools >= 81; v0.6's ``detectron2.model_zoo`` imports it at
  module level for ``resource_filename``. A minimal stand-in based on ``importlib.resources`` is
  registered only when the real module cannot be imported.
* fvcore's ``CropTransform.apply_polygons`` (used by every v0.6 crop: ``RandomCrop``,
  ``RandomCrop_CategoryAreaConstraint``, ``CropTransform`` itself) imports ``shapely``, which
  Detectron2 does not depend on. When shapely cannot be imported,
  :func:`patch_crop_polygons_without_shapely` gives it :func:`clip_polygon_to_box` instead
  (Sutherland-Hodgman against the crop window). It applies when ``fvcore.transforms.transform``
  is imported.
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


def _cannot_import(name):
    """Whether ``import name`` (a top-level module) would fail, found without importing it.

    A None entry in ``sys.modules`` means "import blocked"; otherwise ``find_spec`` decides
    (importing is slow, and ``pkg_resources`` warns that it is deprecated when imported).
    """
    existing = sys.modules.get(name, _MISSING)
    if existing is not _MISSING:
        return existing is None
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def patch_pkg_resources():
    """Register a ``pkg_resources`` stand-in if the real module cannot be imported.

    Returns:
        bool: True if the stand-in was registered.
    """
    if not _cannot_import("pkg_resources"):
        return False
    sys.modules["pkg_resources"] = make_pkg_resources_shim()
    return True


def _cpu_deform_conv_trains(module):
    """Whether ``module``'s deformable convolutions run forward and backward on CPU tensors
    (deformable groups included), probed on a 3 x 3 input."""
    import torch

    try:
        with torch.inference_mode(False), torch.enable_grad():
            x = torch.ones(1, 2, 3, 3, requires_grad=True)
            weight = torch.ones(2, 2, 3, 3, requires_grad=True)
            offset = torch.zeros(1, 2 * 2 * 9, 1, 1, requires_grad=True)  # 2 offset groups
            mask = torch.ones(1, 2 * 9, 1, 1, requires_grad=True)
            module.deform_conv(x, offset, weight, 1, 0, 1, 1, 2).sum().backward()
            module.modulated_deform_conv(
                x, offset, mask, weight, None, 1, 0, 1, 1, 2
            ).sum().backward()
    except Exception:  # v0.6 and later raise NotImplementedError; anything else: route too
        return False
    return x.grad is not None and weight.grad is not None


def patch_deform_conv_cpu(module=None):
    """Let Detectron2's deformable-convolution layers run (and train) on CPU tensors.

    Args:
        module (module or None): ``detectron2.layers.deform_conv`` (default: from
            ``sys.modules``).

    Returns:
        bool: True if the routing was installed now (False: already done, not needed, or
        ``detectron2.layers.deform_conv`` not imported yet).
    """
    module = module or sys.modules.get("detectron2.layers.deform_conv")
    if module is None or getattr(module.deform_conv, "_cpu_route", False):
        return False
    if _cpu_deform_conv_trains(module):
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

    for route, cuda_route in (
        (deform_conv, cuda_deform_conv),
        (modulated_deform_conv, cuda_modulated_deform_conv),
    ):
        route._cpu_route = True
        route.cuda_route = cuda_route
    module.deform_conv = deform_conv
    module.modulated_deform_conv = modulated_deform_conv
    return True


def _sets_cannot_be_sampled():
    import random

    try:
        random.Random(0).sample({0}, k=1)
    except TypeError:
        return True
    return False


def patch_map_dataset_fallback(module=None):
    """Make ``MapDataset`` replace skipped samples on Python >= 3.11 (see the module docstring).

    Args:
        module (module or None): ``detectron2.data.common`` (default: from ``sys.modules``).

    Returns:
        bool: True if ``MapDataset.__getitem__`` was replaced now.
    """
    module = module or sys.modules.get("detectron2.data.common")
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


def _clip_to_half_plane(points, axis, bound, keep_above):
    """One Sutherland-Hodgman step: the part of a polygon on one side of an axis-parallel line.

    Args:
        points (np.ndarray): (N, 2) float64 vertices (x, y), N >= 1.
        axis (int): 0 for the line ``x = bound``, 1 for ``y = bound``.
        bound (float): position of the line.
        keep_above (bool): keep ``coordinate >= bound`` (else ``<= bound``).

    Returns:
        np.ndarray: (M, 2) vertices; each edge that crosses the line contributes its crossing
        point, placed before the edge's end vertex when that one is kept.
    """
    import numpy as np

    dist = points[:, axis] - bound if keep_above else bound - points[:, axis]
    inside = dist >= 0
    if inside.all():
        return points
    if not inside.any():
        return points[:0]
    prev, prev_dist = np.roll(points, 1, axis=0), np.roll(dist, 1)
    crosses = inside != np.roll(inside, 1)
    # The edge prev -> point meets the line at prev + t (point - prev), t = d_prev / (d_prev - d).
    denom = np.where(crosses, prev_dist - dist, 1.0)
    t = np.where(crosses, prev_dist / denom, 0.0)
    crossing = prev + t[:, None] * (points - prev)
    crossing[:, axis] = bound
    candidates = np.stack([crossing, points], axis=1)  # (N, 2 candidates, 2 coordinates)
    return candidates[np.stack([crosses, inside], axis=1)]


def clip_polygon_to_box(points, x0, y0, x1, y1):
    """Clip a polygon to the box ``[x0, x1] x [y0, y1]`` (Sutherland-Hodgman), without shapely.

    Inside the box the result covers exactly what the polygon covers (every point of the box
    keeps its winding number), so it rasterizes to the same pixels. Where the box cuts a concave
    polygon into several pieces, they stay one polygon joined by zero-area bridges along the box
    edge (shapely returns the pieces separately; their rasterization is the same).

    Args:
        points (np.ndarray): (N, 2) vertices (x, y).
        x0, y0, x1, y1 (float): the box, ``x0 <= x1`` and ``y0 <= y1``.

    Returns:
        np.ndarray or None: (M, 2) float64 vertices, M >= 3, no vertex repeated in a row; None
        when nothing of positive area is left (the polygon is outside the box or only touches it).
    """
    import numpy as np

    poly = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    for axis, bound, keep_above in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        if len(poly) == 0:
            return None
        poly = _clip_to_half_plane(poly, axis, bound, keep_above)
    if len(poly) == 0:
        return None
    poly = poly[(poly != np.roll(poly, 1, axis=0)).any(axis=1)]
    if len(poly) < 3:
        return None
    x, y = poly[:, 0], poly[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    return poly if area > 1e-6 else None  # a line or a point along the box edge


def _crop_polygons_without_shapely(self, polygons):
    """``CropTransform.apply_polygons`` without shapely: clip to the window, then shift.

    Args:
        polygons (list[np.ndarray]): each (N, 2) floating point (x, y) in absolute coordinates.

    Returns:
        list[np.ndarray]: the cropped polygons, each (M, 2), in the window's coordinates;
        polygons left with no area are dropped (as fvcore drops shapely's lines and points).
    """
    box = (self.x0, self.y0, self.x0 + self.w, self.y0 + self.h)
    clipped = (clip_polygon_to_box(p, *box) for p in polygons)
    return [self.apply_coords(p) for p in clipped if p is not None]


_crop_polygons_without_shapely._without_shapely = True


def patch_crop_polygons_without_shapely(module=None):
    """Give fvcore's ``CropTransform`` a polygon crop that needs no shapely, if it is missing.

    Args:
        module (module or None): ``fvcore.transforms.transform`` (default: from
            ``sys.modules``).

    Returns:
        bool: True if ``CropTransform.apply_polygons`` was replaced now.
    """
    module = module or sys.modules.get("fvcore.transforms.transform")
    if module is None:
        return False
    crop = module.CropTransform
    if getattr(crop.apply_polygons, "_without_shapely", False) or not _cannot_import("shapely"):
        return False
    crop.apply_polygons = _crop_polygons_without_shapely
    return True


# ---------------------------------------------------------------------------------------------
# Post-import fixes
# ---------------------------------------------------------------------------------------------
_FINDER_MARK = "_detectron2_stack_fixes_finder"


class _FixAfterExecLoader:
    """Wraps a module's loader: executes the module with it, then applies the fixes.

    Every other attribute (``get_source``, ``get_resource_reader``, ...) is the wrapped loader's.
    """

    def __init__(self, loader, fixes):
        self._loader = loader
        self._fixes = fixes

    def create_module(self, spec):
        create = getattr(self._loader, "create_module", None)
        return None if create is None else create(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        for fix in self._fixes:
            fix(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _FixAfterImportFinder:
    """``sys.meta_path`` entry for the modules that have post-import fixes.

    For such a module it asks the finders behind it for the real spec and wraps the loader in
    :class:`_FixAfterExecLoader`; every other import goes past it (a dict look-up).

    Attributes:
        fixes (dict[str, dict[str, callable]]): module name -> fix name -> ``fix(module)``.
    """

    def __init__(self):
        self.fixes = {}
        setattr(self, _FINDER_MARK, True)

    def find_spec(self, fullname, path=None, target=None):
        fixes = self.fixes.get(fullname)
        if not fixes:
            return None
        for finder in list(sys.meta_path):
            find_spec = getattr(finder, "find_spec", None)
            if getattr(finder, _FINDER_MARK, False) or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _FixAfterExecLoader(spec.loader, list(fixes.values()))
        return spec


def _post_import_finder():
    """The process's one :class:`_FixAfterImportFinder` (either copy of this module may have
    created it: it is recognised by its mark, not its class), installed first in
    ``sys.meta_path``."""
    for finder in sys.meta_path:
        if getattr(finder, _FINDER_MARK, False):
            return finder
    finder = _FixAfterImportFinder()
    sys.meta_path.insert(0, finder)
    return finder


def fix_after_import(module_name, fix):
    """Apply ``fix(module)`` to ``module_name`` now if it is imported, and after every execution
    of it from now on (first import, ``importlib.reload``).

    A fix is registered once per module under its ``__name__``: the copy registered first (the
    installed ``detectron2._stack_compat`` or ``projects.compat.stack``) is the one applied.

    Args:
        module_name (str): dotted module name.
        fix (callable): ``fix(module) -> bool`` (True if it changed something); idempotent.

    Returns:
        bool: what ``fix`` returned now, False if the module is not imported yet.
    """
    _post_import_finder().fixes.setdefault(module_name, {}).setdefault(fix.__name__, fix)
    module = sys.modules.get(module_name)
    return False if module is None else bool(fix(module))


# Fixes of modules that are imported after this one (see the module docstring).
POST_IMPORT_FIXES = (
    ("detectron2.layers.deform_conv", patch_deform_conv_cpu),
    ("detectron2.data.common", patch_map_dataset_fallback),
    ("fvcore.transforms.transform", patch_crop_polygons_without_shapely),
)


def apply_all():
    """Apply every fix that the running stack needs. Safe to call any number of times.

    Fixes of modules that are not imported yet are registered to apply when they are.

    Returns:
        dict: fix name -> what it changed now (False / empty when nothing was needed).
    """
    changed = {
        "pillow_linear": patch_pillow_linear(),
        "numpy_aliases": patch_numpy_aliases(),
        "pkg_resources": patch_pkg_resources(),
    }
    for module_name, fix in POST_IMPORT_FIXES:
        changed[fix.__name__[len("patch_") :]] = fix_after_import(module_name, fix)
    if any(changed.values()):
        logger.debug("detectron2 stack fixes applied: %s", changed)
    return changed


apply_all()
