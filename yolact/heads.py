"""YOLACT's networks after the FPN: the protonet, the shared prediction head, the semantic conv
and YOLACT++'s mask re-scoring net. Every conv starts Xavier-uniform with zero bias, as the
authors initialise them."""

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MaskIoUNet", "PredictionHead", "ProtoNet", "xavier_init"]


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every conv in ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ProtoNet(nn.Sequential):
    """P3 ``(N, C, H, W)`` -> k prototypes ``(N, k, 2H, 2W)``, ReLU'd: three 3x3 convs + ReLU,
    bilinear x2, a 3x3 conv + ReLU, a 1x1 conv to k, ReLU. Indices of the convs: 0, 2, 4, 8, 10
    (the authors' ``proto_net`` layout)."""

    def __init__(self, in_channels: int, dim: int = 256, num_prototypes: int = 32):
        layers: List[nn.Module] = []
        channels = in_channels
        for _ in range(3):
            layers += [nn.Conv2d(channels, dim, 3, padding=1), nn.ReLU(inplace=True)]
            channels = dim
        layers += [
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, num_prototypes, 1),
            nn.ReLU(inplace=True),
        ]
        super().__init__(*layers)
        xavier_init(self)


class PredictionHead(nn.Module):
    """The head shared by every level: a 3x3 conv + ReLU (``upfeature``), then 3x3 convs to box
    offsets (``bbox_layer``), class logits over background + K classes (``conf_layer``) and k
    tanh coefficients (``mask_layer``) for each of A anchors per cell."""

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        num_prototypes: int,
        dim: int = 256,
    ):
        """
        Args:
            in_channels: FPN channels.
            num_anchors: A, anchors per cell.
            num_classes: K foreground classes.
            num_prototypes: k.
            dim: channels of ``upfeature``.
        """
        super().__init__()
        self.num_anchors = num_anchors
        self.num_classes = num_classes
        self.num_prototypes = num_prototypes
        self.upfeature = nn.Sequential(
            nn.Conv2d(in_channels, dim, 3, padding=1), nn.ReLU(inplace=True)
        )
        self.bbox_layer = nn.Conv2d(dim, num_anchors * 4, 3, padding=1)
        self.conf_layer = nn.Conv2d(dim, num_anchors * (num_classes + 1), 3, padding=1)
        self.mask_layer = nn.Conv2d(dim, num_anchors * num_prototypes, 3, padding=1)
        xavier_init(self)

    def forward(self, features: List[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """
        Args:
            features: per level ``(N, C, H_l, W_l)``.

        Returns:
            tuple[Tensor, Tensor, Tensor]: over all anchors (level, row, column, anchor order):
            box offsets ``(N, A_total, 4)``, class logits ``(N, A_total, K + 1)``, coefficients
            ``(N, A_total, k)`` in [-1, 1].
        """
        boxes, logits, coefs = [], [], []
        for x in features:
            n = x.shape[0]
            x = self.upfeature(x)
            boxes.append(self.bbox_layer(x).permute(0, 2, 3, 1).reshape(n, -1, 4))
            logits.append(
                self.conf_layer(x).permute(0, 2, 3, 1).reshape(n, -1, self.num_classes + 1)
            )
            coefs.append(
                torch.tanh(self.mask_layer(x))
                .permute(0, 2, 3, 1)
                .reshape(n, -1, self.num_prototypes)
            )
        return torch.cat(boxes, 1), torch.cat(logits, 1), torch.cat(coefs, 1)


class MaskIoUNet(nn.Module):
    """YOLACT++'s re-scoring net: masks ``(n, 1, h, w)`` -> predicted IoU per class ``(n, K)``.

    Five 3x3 stride-2 convs (8, 16, 32, 64, 128 channels, no padding) with ReLU, a 1x1 conv to K
    with ReLU, and a global max pool (``net`` indices 0, 2, ..., 10).
    """

    def __init__(self, num_classes: int, channels=(8, 16, 32, 64, 128)):
        super().__init__()
        layers: List[nn.Module] = []
        previous = 1
        for c in channels:
            layers += [nn.Conv2d(previous, c, 3, stride=2), nn.ReLU(inplace=True)]
            previous = c
        layers += [nn.Conv2d(previous, num_classes, 1), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)
        xavier_init(self)

    def forward(self, masks: Tensor) -> Tensor:
        if masks.shape[0] == 0:
            return masks.new_zeros((0, self.net[-2].out_channels))
        x = self.net(masks)
        return F.adaptive_max_pool2d(x, 1).flatten(1)
