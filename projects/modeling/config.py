"""Config keys of the shared model pieces (:mod:`projects.modeling`).

The adder only adds keys that are missing: a value set by Detectron2, another adder or a YAML
merged earlier is never overwritten, so calling it twice changes nothing.
"""

__all__ = ["add_modeling_config"]


def add_modeling_config(cfg):
    """Add the keys of the shared model pieces to ``cfg`` in place, each only if missing.

    * ``MODEL.RESNETS.DEFORM_INTERVAL`` (1): in the stages that ``DEFORM_ON_PER_STAGE`` enables,
      block ``i`` (0-based within its stage) has a deformable conv iff ``i % DEFORM_INTERVAL ==
      0``. Read by ``build_resnet_deform_interval_backbone`` and
      ``build_resnet_deform_interval_fpn_backbone``; AdelaiDet's key of the same name and
      meaning (its ``dcni3`` configs set 3). Detectron2's own builders ignore it.
    """
    if "DEFORM_INTERVAL" not in cfg.MODEL.RESNETS:
        cfg.MODEL.RESNETS.DEFORM_INTERVAL = 1
    return cfg
