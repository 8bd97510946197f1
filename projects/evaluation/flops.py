"""FLOP counting of Detectron2 models with fvcore, without ``detectron2.utils.analysis``.

Detectron2 v0.6's ``detectron2.utils.analysis`` imports ``detectron2.export``, which imports
caffe2 at module level and fails on any current PyTorch. The adapter here does what its
``TracingAdapter`` did for FLOP counting: it turns the model's ``list[dict] -> list[dict]``
interface into ``Tensor -> tuple[Tensor]`` so that fvcore can trace it.
"""

import logging

import torch
from detectron2.structures import Boxes, Instances
from fvcore.nn import FlopCountAnalysis
from torch import nn

from .flop_handles import EXTRA_FLOP_HANDLES

logger = logging.getLogger(__name__)


def flatten_outputs(outputs):
    """Collect every tensor of a model's output (dicts, lists, ``Instances``, ``Boxes``) in order.

    Args:
        outputs: a tensor, or nested lists/tuples/dicts of tensors, ``Instances`` and ``Boxes``.

    Returns:
        tuple[Tensor]: the tensors, dict keys and ``Instances`` fields visited in sorted order.
    """
    if isinstance(outputs, torch.Tensor):
        return (outputs,)
    if isinstance(outputs, Boxes):
        return (outputs.tensor,)
    if isinstance(outputs, Instances):
        outputs = outputs.get_fields()
    if isinstance(outputs, dict):
        return tuple(t for key in sorted(outputs) for t in flatten_outputs(outputs[key]))
    if isinstance(outputs, (list, tuple)):
        return tuple(t for item in outputs for t in flatten_outputs(item))
    if hasattr(outputs, "tensor") and isinstance(outputs.tensor, torch.Tensor):
        return (outputs.tensor,)  # BitMasks, RotatedBoxes, ...
    return ()


class TensorInAdapter(nn.Module):
    """Run a Detectron2 model on one image tensor and return its outputs as a tuple of tensors.

    Args:
        model (nn.Module): a model with Detectron2's ``forward(batched_inputs)`` interface, in
            eval mode.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        """
        Args:
            image (Tensor): (C, H, W) in the model's input format.

        Returns:
            tuple[Tensor]: the flattened outputs.
        """
        height, width = image.shape[-2:]
        outputs = self.model([{"image": image, "height": height, "width": width}])
        return flatten_outputs(outputs)


def count_flops(model, image, extra_handles=None):
    """Count the FLOPs of one inference of ``model`` on ``image`` with fvcore.

    Args:
        model (nn.Module): a Detectron2 model (it is put in eval mode).
        image (Tensor): (C, H, W) image in the model's input format.
        extra_handles (dict[str, callable] or None): fvcore op handles, added to (and overriding)
            :data:`~projects.evaluation.flop_handles.EXTRA_FLOP_HANDLES` (deformable conv,
            RoIAlign, grid_sample).

    Returns:
        fvcore.nn.FlopCountAnalysis: call ``.total()`` / ``.by_module()`` / ``.by_operator()``.
            fvcore counts one fused multiply-add as one flop.
    """
    model.eval()
    analysis = FlopCountAnalysis(TensorInAdapter(model), (image,))
    analysis.set_op_handle(**{**EXTRA_FLOP_HANDLES, **(extra_handles or {})})
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        analysis.total()  # trace now, so errors surface here
    return analysis
