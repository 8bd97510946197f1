"""A 3x3 (or k x k) convolution that predicts its own deformable offsets.

The layer of FCOS's towers with ``MODEL.FCOS.USE_DEFORMABLE`` (parameter names ``offset.*`` and
``conv.*``, those of the published FCOS checkpoints), on Detectron2's
deformable convolutions (portable on the CPU: see :mod:`projects.compat`).
"""

import torch
from detectron2.layers import Conv2d, DeformConv, ModulatedDeformConv
from torch import Tensor, nn

__all__ = ["OffsetDeformConv2d"]


class OffsetDeformConv2d(nn.Module):
    """``conv(x, offsets(x))``: a deformable conv whose offsets (and, modulated, masks) a plain
    conv of the same geometry predicts from the input.

    Args:
        in_channels, out_channels: channels.
        modulated: deformable v2 (offsets then a sigmoid mask, 3 x k x k channels per group) or
            v1 (offsets only, 2 x k x k).
        kernel_size, stride, dilation, groups, deformable_groups: of the deformable conv.
        bias: the deformable conv has a bias.

    The offset conv has kaiming-uniform weights (``a=1``) and a zero bias, as the original's
    (FCOS's head re-initialises it with its other convs).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        modulated: bool = True,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = False,
    ):
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        taps = kernel_size * kernel_size
        self.modulated = modulated
        self.offset_split = 2 * taps * deformable_groups
        self.offset = Conv2d(
            in_channels,
            (3 if modulated else 2) * taps * deformable_groups,
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
        )
        nn.init.kaiming_uniform_(self.offset.weight, a=1)
        nn.init.constant_(self.offset.bias, 0.0)
        conv = ModulatedDeformConv if modulated else DeformConv
        self.conv = conv(
            in_channels,
            out_channels,
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            deformable_groups=deformable_groups,
            bias=bias,
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_channels, H, W)`` -> ``(N, out_channels, H', W')``."""
        offsets = self.offset(x)
        if not self.modulated:
            return self.conv(x, offsets)
        mask = torch.sigmoid(offsets[:, self.offset_split :])
        return self.conv(x, offsets[:, : self.offset_split], mask)
