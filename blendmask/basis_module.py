"""BlendMask's bottom module: K full-image bases at stride 4 from P3-P5, and the auxiliary
semantic head whose loss trains them with class information. Parameter names follow the
published checkpoints (``basis_module.refine.*``, ``tower.*``, ``seg_head.*``).

Shape shorthand: ``N`` images, ``C`` FPN channels, ``D`` the module's width, ``K`` bases,
``H, W`` the padded input size.
"""

from typing import Dict, Optional, Tuple

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.utils.registry import Registry
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["BASIS_MODULE_REGISTRY", "ProtoNet", "build_basis_module"]

BASIS_MODULE_REGISTRY = Registry("BASIS_MODULE")
BASIS_MODULE_REGISTRY.__doc__ = """
Registry for BlendMask's basis modules (``MODEL.BASIS_MODULE.NAME``), which make the global bases
from the FPN features.

Called as ``obj(cfg, input_shape)`` with ``input_shape`` the backbone's ``{name: ShapeSpec}``;
returns an ``nn.Module`` whose ``forward(features, sem_targets=None)`` returns
``({"bases": [Tensor (N, K, H / 4, W / 4)], ...}, losses)``.
"""


def build_basis_module(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """The basis module named by ``MODEL.BASIS_MODULE.NAME``."""
    return BASIS_MODULE_REGISTRY.get(cfg.MODEL.BASIS_MODULE.NAME)(cfg, input_shape)


def _conv_norm_relu(in_channels: int, out_channels: int, norm: str) -> nn.Module:
    """3x3 conv without bias, norm (none for ``""``), ReLU; kaiming-uniform (a = 1) weights.

    No bias with ``norm ""`` either: the published models have a conv bias only for a norm of
    None, which a config cannot hold, so their checkpoints trained without norm have none.
    """
    conv = Conv2d(in_channels, out_channels, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if not norm:
        return nn.Sequential(conv, nn.ReLU(inplace=True))
    return nn.Sequential(conv, get_norm(norm, out_channels), nn.ReLU(inplace=True))


@BASIS_MODULE_REGISTRY.register()
class ProtoNet(nn.Module):
    """Bases: each level of ``in_features`` refined to ``D`` channels and summed at the first
    (bilinear upsampling), a tower of ``num_convs`` convs, x2 bilinear upsampling, one more
    conv, a 1x1 conv to K bases. With ``loss_on``, a semantic head on the first level
    (``num_classes + 1`` logits, background 0) adds ``loss_basis_sem`` in training.
    """

    @configurable
    def __init__(
        self,
        *,
        in_features,
        in_channels: Dict[str, int],
        num_bases: int = 4,
        convs_dim: int = 128,
        num_convs: int = 3,
        norm: str = "SyncBN",
        loss_on: bool = False,
        num_classes: int = 80,
        common_stride: int = 8,
        loss_weight: float = 0.3,
        ignore_value: int = 255,
        visualize: bool = False,
    ):
        """
        Args:
            in_features: the FPN levels fused, finest first (P3, P4, P5).
            in_channels: channels of each level.
            num_bases: K.
            convs_dim: D.
            num_convs: convs of the tower before the upsampling.
            norm: ``get_norm`` name of the convs (``""``: none, and no bias either).
            loss_on: build the semantic head and its loss.
            num_classes: thing classes (the head predicts ``num_classes + 1``).
            common_stride: stride of the semantic logits (targets are subsampled to it).
            loss_weight: weight of ``loss_basis_sem``.
            ignore_value: target label the loss ignores (crowd regions, padding).
            visualize: also return the semantic logits at inference (``"seg_thing_out"``).
        """
        super().__init__()
        self.in_features = list(in_features)
        self.loss_on = loss_on
        self.visualize = visualize
        self.refine = nn.ModuleList(
            [_conv_norm_relu(in_channels[f], convs_dim, norm) for f in self.in_features]
        )
        tower = [_conv_norm_relu(convs_dim, convs_dim, norm) for _ in range(num_convs)]
        tower.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        tower.append(_conv_norm_relu(convs_dim, convs_dim, norm))
        tower.append(nn.Conv2d(convs_dim, num_bases, 1))
        self.tower = nn.Sequential(*tower)
        if loss_on:
            self.common_stride = common_stride
            self.loss_weight = loss_weight
            self.ignore_value = ignore_value
            width = in_channels[self.in_features[0]]
            self.seg_head = nn.Sequential(
                nn.Conv2d(width, convs_dim, 3, stride=1, padding=1, bias=False),
                nn.BatchNorm2d(convs_dim),
                nn.ReLU(),
                nn.Conv2d(convs_dim, convs_dim, 3, stride=1, padding=1, bias=False),
                nn.BatchNorm2d(convs_dim),
                nn.ReLU(),
                nn.Conv2d(convs_dim, num_classes + 1, 1, stride=1),
            )

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        b = cfg.MODEL.BASIS_MODULE
        missing = [f for f in b.IN_FEATURES if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.BASIS_MODULE.IN_FEATURES {list(b.IN_FEATURES)}: the backbone has no "
                f"{missing} (it gives {sorted(input_shape)})"
            )
        return {
            "in_features": b.IN_FEATURES,
            "in_channels": {f: input_shape[f].channels for f in b.IN_FEATURES},
            "num_bases": b.NUM_BASES,
            "convs_dim": b.CONVS_DIM,
            "num_convs": b.NUM_CONVS,
            "norm": b.NORM,
            "loss_on": b.LOSS_ON,
            "num_classes": b.NUM_CLASSES,
            "common_stride": b.COMMON_STRIDE,
            "loss_weight": b.LOSS_WEIGHT,
            "ignore_value": cfg.INPUT.INSTANCE_SEM_SEG.IGNORE_VALUE,
            "visualize": cfg.MODEL.BLENDMASK.VISUALIZE,
        }

    def forward(
        self, features: Dict[str, Tensor], sem_targets: Optional[Tensor] = None
    ) -> Tuple[Dict[str, object], Dict[str, Tensor]]:
        """
        Args:
            features: ``{name: (N, C, Hl, Wl)}`` with every level of ``in_features``.
            sem_targets: ``(N, H, W)`` int64 semantic labels (0 background, class + 1, the
                ignore value on crowd and padding), needed in training with ``loss_on``.

        Returns:
            ``({"bases": [(N, K, 2 * H1, 2 * W1)]}, losses)`` with ``(H1, W1)`` the first level's
            size; ``losses`` has ``loss_basis_sem`` in training with ``loss_on``. With
            ``visualize`` at inference the dict also has ``"seg_thing_out"``.
        """
        x = None
        for refine, name in zip(self.refine, self.in_features):
            y = refine(features[name])
            if x is None:
                x = y
            else:
                x = x + F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        outputs = {"bases": [self.tower(x)]}
        losses = {}
        if self.training and self.loss_on:
            if sem_targets is None:
                raise ValueError(
                    "MODEL.BASIS_MODULE.LOSS_ON needs semantic targets: set "
                    "INPUT.INSTANCE_SEM_SEG.ENABLED True (the mapper derives them from the masks)"
                )
            logits = self.seg_head(features[self.in_features[0]])
            targets = F.interpolate(
                sem_targets[:, None].float(), scale_factor=1 / self.common_stride, mode="nearest"
            )[:, 0].long()
            # the mean over the labelled pixels (a batch with none gives 0, not NaN)
            valid = (targets != self.ignore_value).sum().clamp(min=1)
            loss = F.cross_entropy(
                logits.float(), targets, ignore_index=self.ignore_value, reduction="sum"
            )
            losses["loss_basis_sem"] = loss / valid * self.loss_weight
        elif self.visualize and self.loss_on:
            outputs["seg_thing_out"] = self.seg_head(features[self.in_features[0]])
        return outputs, losses
