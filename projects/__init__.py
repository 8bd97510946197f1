"""The common layer every method stands on: config, compat, data, engine, evaluation, layers.

Importing ``projects`` applies the stack fixes of :mod:`projects.compat.stack` (idempotent; the
portable Detectron2 install applies them already, an official source build may need them).
``projects`` never imports a method package at module level; :func:`projects.config.add_all_configs`
is the one place that knows every method.
"""

# Imported first so that the fixes for these modules (deformable conv on CPU, MapDataset's
# fallback on Python >= 3.11) apply.
import detectron2.data.common  # noqa: F401
import detectron2.layers  # noqa: F401

from .compat import stack as _stack

_stack.apply_all()
