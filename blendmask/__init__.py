"""BlendMask (Chen et al., "BlendMask: Top-Down Meets Bottom-Up for Instance Segmentation",
CVPR 2020), on the shared FCOS (:mod:`projects.modeling.fcos`).

Importing this package registers:

* ``META_ARCH_REGISTRY``: ``BlendMask``
* :data:`BASIS_MODULE_REGISTRY` (``MODEL.BASIS_MODULE.NAME``): ``ProtoNet``

Parameter names and shapes equal those of the published BlendMask checkpoints, which load as
they are. Config keys: :func:`add_blendmask_config`; its declaration for the shared tools:
:data:`BLENDMASK` (:mod:`projects.methods`).
"""

from .basis_module import BASIS_MODULE_REGISTRY, ProtoNet, build_basis_module
from .blender import Blender, merge_bases
from .config import add_blendmask_config
from .meta_arch import BlendMask
from .method import BLENDMASK

__all__ = [
    "BASIS_MODULE_REGISTRY",
    "BLENDMASK",
    "BlendMask",
    "Blender",
    "ProtoNet",
    "add_blendmask_config",
    "build_basis_module",
    "merge_bases",
]
