"""ROI heads for PointRend: Detectron2's StandardROIHeads, plus loading of old weight formats."""

import logging

from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads

logger = logging.getLogger(__name__)

__all__ = ["RenderROIHeads"]


@ROI_HEADS_REGISTRY.register()
class RenderROIHeads(StandardROIHeads):
    """:class:`StandardROIHeads` for PointRend's mask heads.

    Set ``MODEL.ROI_MASK_HEAD.POOLER_TYPE: ""`` so that the mask head receives the image
    features of ``MODEL.ROI_HEADS.IN_FEATURES`` instead of pooled RoI features. The only
    difference from :class:`StandardROIHeads` is that version-1 PointRend checkpoints (point and
    coarse heads beside the mask head, ``mask_point_head.*`` / ``mask_coarse_head.*``) are renamed
    to the current layout (``mask_head.point_head.*`` / ``mask_head.coarse_head.*``) on load.
    """

    _version = 2

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        version = local_metadata.get("version", None)
        if version is None or version < 2:
            renames = {
                "mask_point_head": "mask_head.point_head",
                "mask_coarse_head": "mask_head.coarse_head",
            }
            renamed = 0
            for key in list(state_dict):
                for old, new in renames.items():
                    if key.startswith(prefix + old + "."):
                        state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)
                        renamed += 1
            if renamed:
                logger.warning(f"Renamed {renamed} weights of an old PointRend checkpoint format.")
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
