"""FCOS's head: classification and box towers shared over the FPN levels, with the published
checkpoints' parameter names (``cls_tower.*``, ``bbox_tower.*``, ``share_tower.*``, ``cls_logits``,
``bbox_pred``, ``ctrness``, ``scales.<level>.scale``).

Shape shorthand: ``N`` images, ``C`` channels of the FPN levels, ``K`` classes, ``Hl, Wl`` the
size of level ``l``.
"""

import math
from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.layers import NaiveSyncBatchNorm
from torch import Tensor, nn
from torch.nn import functional as F

from projects.layers import OffsetDeformConv2d

__all__ = ["FCOSHead", "PerLevelNorm", "Scale", "FCOS_NORMS"]

# MODEL.FCOS.NORM values; "NaiveGN" is the original's export-friendly GroupNorm, the same function
# and parameters as nn.GroupNorm, so it is built as one.
FCOS_NORMS = ("GN", "NaiveGN", "BN", "SyncBN", "none", "")


class Scale(nn.Module):
    """Multiplies its input by one learnable scalar (``scale``, shape ``(1,)``)."""

    def __init__(self, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([float(init_value)]))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class PerLevelNorm(nn.ModuleList):
    """One batch norm per FPN level (statistics of different levels are not mixed): item ``l``
    normalises level ``l``. Called through :meth:`FCOSHead.run_tower` with the level index."""

    def forward(self, x: Tensor, level: int) -> Tensor:  # noqa: D102
        return self[level](x)


def _norm_layer(norm: str, channels: int, num_levels: int) -> Optional[nn.Module]:
    if norm in ("GN", "NaiveGN"):
        return nn.GroupNorm(32, channels)
    if norm == "BN":
        return PerLevelNorm([nn.BatchNorm2d(channels) for _ in range(num_levels)])
    if norm == "SyncBN":
        return PerLevelNorm([NaiveSyncBatchNorm(channels) for _ in range(num_levels)])
    return None


class FCOSHead(nn.Module):
    """The towers and predictors of FCOS, run on every level with the same weights.

    Args:
        in_channels: channels of every input level.
        num_levels: number of FPN levels (for per-level norms and scales).
        num_classes: K.
        num_cls_convs, num_box_convs, num_share_convs: convs of the classification tower, of
            the box tower, and of a tower both share before them.
        norm: one of :data:`FCOS_NORMS`.
        use_deformable: the last conv of the cls and box towers is a modulated deformable conv.
        use_scale: a learnable scale per level on the regression.
        prior_prob: initial foreground probability (the classifier's bias).

    Raises:
        ValueError: an unknown ``norm``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_levels: int,
        num_classes: int,
        num_cls_convs: int = 4,
        num_box_convs: int = 4,
        num_share_convs: int = 0,
        norm: str = "GN",
        use_deformable: bool = False,
        use_scale: bool = True,
        prior_prob: float = 0.01,
    ):
        super().__init__()
        if norm not in FCOS_NORMS:
            raise ValueError(f"MODEL.FCOS.NORM must be one of {FCOS_NORMS}, got {norm!r}")
        self.num_classes = num_classes
        self.num_levels = num_levels
        towers = {
            "cls": (num_cls_convs, use_deformable),
            "bbox": (num_box_convs, use_deformable),
            "share": (num_share_convs, False),
        }
        for name, (num_convs, deformable) in towers.items():
            layers = []
            for i in range(num_convs):
                if deformable and i == num_convs - 1:
                    conv = OffsetDeformConv2d(in_channels, in_channels, bias=True)
                else:
                    conv = nn.Conv2d(in_channels, in_channels, 3, stride=1, padding=1)
                layers.append(conv)
                norm_layer = _norm_layer(norm, in_channels, num_levels)
                if norm_layer is not None:
                    layers.append(norm_layer)
                layers.append(nn.ReLU())
            self.add_module(f"{name}_tower", nn.Sequential(*layers))
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, stride=1, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, 3, stride=1, padding=1)
        self.ctrness = nn.Conv2d(in_channels, 1, 3, stride=1, padding=1)
        self.scales = nn.ModuleList([Scale(1.0) for _ in range(num_levels)]) if use_scale else None

        for module in (self.cls_tower, self.bbox_tower, self.share_tower):
            for layer in module.modules():
                if isinstance(layer, nn.Conv2d):
                    nn.init.normal_(layer.weight, std=0.01)
                    nn.init.constant_(layer.bias, 0.0)
        for layer in (self.cls_logits, self.bbox_pred, self.ctrness):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0.0)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    @staticmethod
    def run_tower(tower: nn.Sequential, x: Tensor, level: int) -> Tensor:
        """Run ``tower`` on level ``level``'s features (its per-level norms pick that level)."""
        for layer in tower:
            x = layer(x, level) if isinstance(layer, PerLevelNorm) else layer(x)
        return x

    def forward(
        self, features: Sequence[Tensor], top_module: Optional[nn.Module] = None
    ) -> Tuple[List[Tensor], List[Tensor], List[Tensor], List[Tensor], List[Tensor]]:
        """
        Args:
            features: the FPN levels, each ``(N, C, Hl, Wl)``.
            top_module: run on each level's box tower output (BlendMask's top layer), or None.

        Returns:
            Per level: class logits ``(N, K, Hl, Wl)``; box regression ``(N, 4, Hl, Wl)``
            (left, top, right, bottom distances in units of the level's stride, >= 0); quality
            (centerness) logits ``(N, 1, Hl, Wl)``; ``top_module``'s outputs (empty without
            it); the box towers' outputs ``(N, C, Hl, Wl)``.
        """
        logits, regressions, quality, top_feats, box_towers = [], [], [], [], []
        for level, feature in enumerate(features):
            feature = self.run_tower(self.share_tower, feature, level)
            cls_tower = self.run_tower(self.cls_tower, feature, level)
            box_tower = self.run_tower(self.bbox_tower, feature, level)
            box_towers.append(box_tower)
            logits.append(self.cls_logits(cls_tower))
            quality.append(self.ctrness(box_tower))
            reg = self.bbox_pred(box_tower)
            if self.scales is not None:
                reg = self.scales[level](reg)
            regressions.append(F.relu(reg))  # the improved FCOS: ReLU, not exp
            if top_module is not None:
                top_feats.append(top_module(box_tower))
        return logits, regressions, quality, top_feats, box_towers
