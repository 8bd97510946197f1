"""PointRend (Kirillov et al., "PointRend: Image Segmentation as Rendering", CVPR 2020).

Importing this package registers (names chosen not to clash with
``detectron2.projects.point_rend``, which may be imported in the same process):

* ``ROI_HEADS_REGISTRY``: ``RenderROIHeads``
* ``ROI_MASK_HEAD_REGISTRY``: ``RenderMaskHead``, ``RenderImplicitMaskHead``
* ``SEM_SEG_HEADS_REGISTRY``: ``RenderSemSegHead``
* :data:`POINTREND_POINT_HEAD_REGISTRY` (``MODEL.POINT_HEAD.NAME``): ``RenderPointHead``,
  ``RenderImplicitPointHead``

Parameter names and shapes equal Detectron2's PointRend, so its model-zoo checkpoints load as
they are. Config keys: :func:`add_pointrend_config`; its declaration for the shared tools:
:data:`POINTREND` (:mod:`projects.methods`).
"""

from .coarse_head import RenderCoarseHead
from .config import add_pointrend_config
from .implicit_mask_head import RenderImplicitMaskHead
from .implicit_point_head import RenderImplicitPointHead
from .mask_head import RenderMaskHead
from .method import POINTREND
from .point_head import POINTREND_POINT_HEAD_REGISTRY, RenderPointHead, build_point_head
from .roi_heads import RenderROIHeads
from .semantic_seg import RenderSemSegHead

__all__ = [
    "add_pointrend_config",
    "POINTREND",
    "POINTREND_POINT_HEAD_REGISTRY",
    "build_point_head",
    "RenderCoarseHead",
    "RenderImplicitMaskHead",
    "RenderImplicitPointHead",
    "RenderMaskHead",
    "RenderPointHead",
    "RenderROIHeads",
    "RenderSemSegHead",
]
