"""Deliberately broken variants of the Mask R-CNN yardstick: the controls that show the learning
checks can fail. Each is a bug of the kind a method implementation makes, registered in
Detectron2's registries under a name of its own and chosen with config options
(:data:`BROKEN_VARIANTS`):

* ``shifted_targets``: the mask head is trained on ground-truth masks shifted by
  :data:`SHIFT` pixels right and down (a coordinate bug in target building);
* ``wrong_box_paste``: at inference each mask is pasted into its box moved by a quarter of the
  box's size towards the image's centre, while the reported box is right (a paste bug);
* ``permuted_mask_classes``: the mask head is trained with the class of every target moved to the
  next class, while inference reads the predicted class's mask (a label bug).
"""

import torch
from detectron2.layers.mask_ops import paste_masks_in_image
from detectron2.modeling import META_ARCH_REGISTRY, ROI_MASK_HEAD_REGISTRY, GeneralizedRCNN
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.roi_heads import MaskRCNNConvUpsampleHead
from detectron2.structures import BitMasks, Boxes, Instances

SHIFT = 4  # pixels, at the network's input scale
PASTE_OFFSET = 0.25  # of the box's width / height


def _shifted(masks, shift):
    """``masks`` (N, H, W) moved ``shift`` pixels right and down, zeros entering."""
    out = torch.zeros_like(masks)
    out[:, shift:, shift:] = masks[:, : masks.shape[1] - shift, : masks.shape[2] - shift]
    return out


class _TrainingTargetEdit(MaskRCNNConvUpsampleHead):
    """Detectron2's mask head whose training targets pass through :meth:`edit` first."""

    def edit(self, instances):
        raise NotImplementedError

    def forward(self, x, instances):
        if self.training:
            for inst in instances:
                self.edit(inst)
        return super().forward(x, instances)


if "BrokenShiftedTargetsMaskHead" not in ROI_MASK_HEAD_REGISTRY:

    @ROI_MASK_HEAD_REGISTRY.register()
    class BrokenShiftedTargetsMaskHead(_TrainingTargetEdit):
        def edit(self, instances):
            masks = instances.gt_masks
            tensor = masks.tensor if isinstance(masks, BitMasks) else masks
            instances.gt_masks = BitMasks(_shifted(tensor, SHIFT))

    @ROI_MASK_HEAD_REGISTRY.register()
    class BrokenPermutedClassesMaskHead(_TrainingTargetEdit):
        def edit(self, instances):
            classes = instances.gt_classes
            instances.gt_classes = (classes + 1) % self.num_classes

        @property
        def num_classes(self):
            return self.predictor.out_channels

    @META_ARCH_REGISTRY.register()
    class BrokenWrongPasteRCNN(GeneralizedRCNN):
        # GeneralizedRCNN.inference calls GeneralizedRCNN._postprocess by name: override inference
        def inference(self, batched_inputs, detected_instances=None, do_postprocess=True):
            results = super().inference(batched_inputs, detected_instances, do_postprocess=False)
            if not do_postprocess:
                return results
            processed = []
            for result, inputs in zip(results, batched_inputs):
                size = result.image_size  # the network input's (height, width)
                height = inputs.get("height", size[0])
                width = inputs.get("width", size[1])
                masks = result.pred_masks  # (N, 1, M, M) per-box mask probabilities
                boxes_only = Instances(size, **result.get_fields())
                boxes_only.remove("pred_masks")
                boxes_only.index = torch.arange(len(result), device=masks.device)
                right = detector_postprocess(boxes_only, height, width)  # scaled, clipped, kept
                box = right.pred_boxes.tensor
                # towards the image's centre, so that the moved box stays in the image
                centre = torch.tensor([width, height], dtype=box.dtype, device=box.device)
                side = torch.where((box[:, :2] + box[:, 2:]) < centre, 1.0, -1.0)
                offset = (box[:, 2:] - box[:, :2]) * side * PASTE_OFFSET
                moved = Boxes(box + offset.repeat(1, 2))
                right.pred_masks = paste_masks_in_image(
                    masks[right.index, 0], moved, (height, width), threshold=0.5
                )
                right.remove("index")
                processed.append({"instances": right})
            return processed


# Config options that turn the yardstick into each broken variant.
BROKEN_VARIANTS = {
    "shifted_targets": ("MODEL.ROI_MASK_HEAD.NAME", "BrokenShiftedTargetsMaskHead"),
    "wrong_box_paste": ("MODEL.META_ARCHITECTURE", "BrokenWrongPasteRCNN"),
    "permuted_mask_classes": ("MODEL.ROI_MASK_HEAD.NAME", "BrokenPermutedClassesMaskHead"),
}
