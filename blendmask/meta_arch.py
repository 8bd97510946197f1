"""BlendMask (Chen et al., "BlendMask: Top-Down Meets Bottom-Up for Instance Segmentation",
CVPR 2020): FCOS boxes, a top layer giving each location K x M x M
attentions, a basis module giving K full-image bases, and the blender.

Parameter names equal those of the published checkpoints (``backbone.*``,
``proposal_generator.fcos_head.*``, ``basis_module.*``, ``top_layer.*``), so they load as they are.
"""

from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.modeling.postprocessing import detector_postprocess, sem_seg_postprocess
from detectron2.modeling.proposal_generator import build_proposal_generator
from detectron2.structures import ImageList, Instances
from torch import Tensor, nn

from .basis_module import build_basis_module
from .blender import Blender

__all__ = ["BlendMask"]


def _check_config(cfg):
    """Errors naming the keys of a config BlendMask cannot train as asked."""
    if cfg.MODEL.FCOS.BOX_QUALITY != "ctrness":
        raise ValueError(
            f"BlendMask needs MODEL.FCOS.BOX_QUALITY 'ctrness' (its mask loss is weighted by the "
            f"centerness targets), got {cfg.MODEL.FCOS.BOX_QUALITY!r}"
        )
    basis = cfg.MODEL.BASIS_MODULE
    if not basis.LOSS_ON:
        return
    if basis.NUM_CLASSES != cfg.MODEL.FCOS.NUM_CLASSES:
        raise ValueError(
            f"MODEL.BASIS_MODULE.NUM_CLASSES ({basis.NUM_CLASSES}) must equal "
            f"MODEL.FCOS.NUM_CLASSES ({cfg.MODEL.FCOS.NUM_CLASSES}): the semantic head predicts "
            f"the same thing classes"
        )
    sem = cfg.INPUT.INSTANCE_SEM_SEG
    if not sem.ENABLED or sem.BACKGROUND != "zero":
        raise ValueError(
            "MODEL.BASIS_MODULE.LOSS_ON trains on semantic targets derived from the masks with "
            "background 0: set INPUT.INSTANCE_SEM_SEG.ENABLED True and "
            f"INPUT.INSTANCE_SEM_SEG.BACKGROUND 'zero' (got {sem.ENABLED!r}, {sem.BACKGROUND!r})"
        )


@META_ARCH_REGISTRY.register()
class BlendMask(nn.Module):
    """BlendMask: ``forward(batched_inputs)`` returns the losses in training (``loss_fcos_cls``,
    ``loss_fcos_loc``, ``loss_fcos_ctr``, ``loss_mask``, and ``loss_basis_sem`` with
    ``MODEL.BASIS_MODULE.LOSS_ON``) and ``[{"instances": Instances}]`` at inference, with
    ``pred_boxes``, ``scores``, ``pred_classes`` and ``pred_masks`` ``(D, H, W)`` at each input's
    ``height`` x ``width``.

    Called as ``BlendMask(cfg)`` (``META_ARCH_REGISTRY``) or with the keyword arguments below.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        proposal_generator: nn.Module,
        basis_module: nn.Module,
        blender: Blender,
        top_layer: nn.Conv2d,
        pixel_mean,
        pixel_std,
        instance_loss_weight: float = 1.0,
        sem_seg_ignore_value: int = 255,
    ):
        """
        Args:
            backbone: FCOS's ResNet-FPN.
            proposal_generator: :class:`projects.modeling.fcos.FCOS` (called with the top
                layer as its ``top_module``).
            basis_module: see :mod:`blendmask.basis_module`.
            blender: see :class:`blendmask.blender.Blender`.
            top_layer: conv from the box tower to the K x M x M attentions.
            pixel_mean, pixel_std: per-channel statistics of the input format.
            instance_loss_weight: weight of ``loss_mask``.
            sem_seg_ignore_value: padding label of the semantic targets.
        """
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.blender = blender
        self.basis_module = basis_module
        self.top_layer = top_layer
        self.instance_loss_weight = instance_loss_weight
        self.sem_seg_ignore_value = sem_seg_ignore_value
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        if cfg.MODEL.PANOPTIC_FPN.COMBINE.ENABLED:
            raise ValueError(
                "MODEL.PANOPTIC_FPN.COMBINE.ENABLED: panoptic BlendMask is not implemented here"
            )
        if cfg.MODEL.PROPOSAL_GENERATOR.NAME != "FCOS":
            raise ValueError(
                f"BlendMask needs MODEL.PROPOSAL_GENERATOR.NAME 'FCOS', got "
                f"{cfg.MODEL.PROPOSAL_GENERATOR.NAME!r}"
            )
        _check_config(cfg)
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        attn_len = cfg.MODEL.BASIS_MODULE.NUM_BASES * cfg.MODEL.BLENDMASK.ATTN_SIZE**2
        top_layer = nn.Conv2d(cfg.MODEL.FPN.OUT_CHANNELS, attn_len, 3, stride=1, padding=1)
        nn.init.normal_(top_layer.weight, std=0.01)
        nn.init.constant_(top_layer.bias, 0.0)
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(cfg, shapes),
            "basis_module": build_basis_module(cfg, shapes),
            "blender": Blender(cfg),
            "top_layer": top_layer,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "instance_loss_weight": cfg.MODEL.BLENDMASK.INSTANCE_LOSS_WEIGHT,
            "sem_seg_ignore_value": cfg.INPUT.INSTANCE_SEM_SEG.IGNORE_VALUE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise and batch the images (padded to the backbone's size divisibility)."""
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: a list of the mapper's dicts: ``image`` ``(3, H, W)``; in training
                ``instances`` (``gt_boxes``, ``gt_classes``, ``gt_masks``) and, with the
                semantic loss, ``sem_seg`` ``(H, W)`` (0 background, class + 1); optionally
                ``height`` and ``width`` of the output.

        Returns:
            Training: dict of losses. Inference: ``[{"instances": Instances}]`` per image
            (and ``"bases"`` / ``"sem_thing_seg"`` with ``MODEL.BLENDMASK.VISUALIZE``).
        """
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        if not self.training:
            return self.inference(batched_inputs, images, features)
        sem_targets = None
        if "sem_seg" in batched_inputs[0]:
            sem_targets = ImageList.from_tensors(
                [x["sem_seg"].to(self.device) for x in batched_inputs],
                self.backbone.size_divisibility,
                self.sem_seg_ignore_value,
            ).tensor
        basis_out, basis_losses = self.basis_module(features, sem_targets)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        outputs, losses = self.proposal_generator(images, features, gt_instances, self.top_layer)
        mask_losses = self.blender.losses(basis_out["bases"], outputs.positives, gt_instances)
        losses.update(basis_losses)
        losses.update({k: v * self.instance_loss_weight for k, v in mask_losses.items()})
        return losses

    def inference(
        self, batched_inputs: List[Dict], images: ImageList, features: Dict[str, Tensor]
    ) -> List[Dict]:
        """Detections with masks, resized to each input's ``height`` x ``width``."""
        basis_out, _ = self.basis_module(features)
        detections, _ = self.proposal_generator(images, features, None, self.top_layer)
        detections = self.blender.inference(basis_out["bases"], detections)
        results = []
        for i, (det, inputs, size) in enumerate(
            zip(detections, batched_inputs, images.image_sizes)
        ):
            height = inputs.get("height", size[0])
            width = inputs.get("width", size[1])
            out = Instances(det.image_size)
            for name in ("pred_boxes", "scores", "pred_classes", "pred_masks"):
                out.set(name, det.get(name))
            result = {"instances": detector_postprocess(out, height, width)}
            if "seg_thing_out" in basis_out:
                result["sem_thing_seg"] = sem_seg_postprocess(
                    basis_out["seg_thing_out"][i], size, height, width
                )
            if self.basis_module.visualize:
                result["bases"] = basis_out["bases"][0][i]
            results.append(result)
        return results
