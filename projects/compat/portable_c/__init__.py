"""``detectron2._C`` written in portable PyTorch / torchvision.

Detectron2 v0.6 compiles its C++/CUDA operators into ``detectron2._C``. When no compiled module
exists (the registry's sdist ships no C++ sources), the portable installer
(``tools/install_detectron2.py``) installs this package as ``detectron2._C``. It provides the same
functions with the same argument order, so ``detectron2.layers`` and ``detectron2.evaluation`` run
unchanged, on the CPU and on CUDA:

* deformable convolution v1 and modulated v2, forward and backward, on
  ``torchvision.ops.deform_conv2d`` (:mod:`.deform_conv`);
* rotated-box IoU, rotated NMS and rotated RoIAlign in plain PyTorch (:mod:`.rotated`);
* ``InstanceAnnotation`` / ``COCOevalEvaluateImages`` / ``COCOevalAccumulate`` used by
  ``COCOeval_opt``, computed with pycocotools' own per-image matching and accumulation
  (:mod:`.cocoeval`);
* ``get_compiler_version`` / ``get_cuda_version`` for ``collect_env``.

The package imports nothing from the project: it must work inside the installed ``detectron2``.
A compiled ``_C`` from an official source build is never replaced.
"""

import torch

from .cocoeval import COCOevalAccumulate, COCOevalEvaluateImages, InstanceAnnotation
from .deform_conv import (
    deform_conv_backward_filter,
    deform_conv_backward_input,
    deform_conv_forward,
    modulated_deform_conv_backward,
    modulated_deform_conv_forward,
)
from .rotated import (
    box_iou_rotated,
    nms_rotated,
    roi_align_rotated_backward,
    roi_align_rotated_forward,
)

#: True for this package; a compiled ``detectron2._C`` does not have the attribute.
PORTABLE = True


def get_compiler_version():
    """Name of what "compiled" these operators (read by ``detectron2.utils.collect_env``)."""
    return f"none: portable PyTorch {torch.__version__} operators"


def get_cuda_version():
    """CUDA version the operators run with: PyTorch's own, since they are PyTorch code."""
    return torch.version.cuda or "not available (CPU-only PyTorch)"


__all__ = [
    "COCOevalAccumulate",
    "COCOevalEvaluateImages",
    "InstanceAnnotation",
    "PORTABLE",
    "box_iou_rotated",
    "deform_conv_backward_filter",
    "deform_conv_backward_input",
    "deform_conv_forward",
    "get_compiler_version",
    "get_cuda_version",
    "modulated_deform_conv_backward",
    "modulated_deform_conv_forward",
    "nms_rotated",
    "roi_align_rotated_backward",
    "roi_align_rotated_forward",
]
