"""The common layer every method stands on: config, compat, data, engine, evaluation, layers.

Importing ``projects`` applies the stack fixes of :mod:`projects.compat.stack` (idempotent; the
portable Detectron2 install applies them already, an official source build may need them).
``projects`` never imports a method package at module level; :func:`projects.config.add_all_configs`
is the one place that knows every method.
"""
import detectron2.layers  # noqa: F401  (so that the deformable-conv CPU routing applies)

from .compat import stack as _stack

_stack.apply_all()
