"""Point heads: per-point predictors (an MLP as kernel-1 Conv1d layers) and their registry."""

import logging
from typing import List, Optional, Sequence, Tuple

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry
from torch import Tensor, nn
from torch.nn import functional as F

from .uncertainty import own_class_logits

logger = logging.getLogger(__name__)

__all__ = ["POINTREND_POINT_HEAD_REGISTRY", "RenderPointHead", "build_point_head"]

POINTREND_POINT_HEAD_REGISTRY = Registry("POINTREND_POINT_HEAD")
POINTREND_POINT_HEAD_REGISTRY.__doc__ = """
Registry of PointRend point heads: predictors of per-point logits from per-point features.

Called as ``obj(cfg, input_shape, **overrides)``, where ``input_shape`` is a
:class:`detectron2.layers.ShapeSpec` whose ``channels`` is the number of fine-grained feature
channels per point, and ``overrides`` are ``__init__`` arguments that replace what
``from_config`` reads (e.g. ``coarse_pred_channels=1`` for a class-agnostic coarse mask).
The module's forward depends on the head; see each class.
"""


@POINTREND_POINT_HEAD_REGISTRY.register()
class RenderPointHead(nn.Module):
    """PointRend's point head: an MLP over [fine features, coarse logits] at each point.

    Every hidden layer is a kernel-1 ``Conv1d`` followed by ReLU; with
    ``coarse_pred_each_layer`` the coarse logits are concatenated again to the input of every
    following layer, as in the paper. Parameter names (``fc1`` ... ``fcK``, ``predictor``) and
    shapes are those of Detectron2's ``StandardPointHead``.
    """

    @configurable
    def __init__(
        self,
        *,
        input_channels: int,
        coarse_pred_channels: int,
        num_mask_classes: int,
        fc_dims: List[int],
        coarse_pred_each_layer: bool = True,
    ):
        """
        Args:
            input_channels: fine-grained feature channels per point.
            coarse_pred_channels: channels of the coarse prediction sampled at each point
                (number of classes, or 1 for a class-agnostic coarse mask).
            num_mask_classes: output logits per point (number of classes, or 1).
            fc_dims: widths of the hidden layers (Detectron2: ``[FC_DIM] * NUM_FC``).
            coarse_pred_each_layer: concatenate the coarse prediction to every layer's input
                (True), or only to the first one.
        """
        super().__init__()
        self.coarse_pred_each_layer = coarse_pred_each_layer
        self.coarse_pred_channels = coarse_pred_channels
        # True: inference too computes every class with the concatenation at every point, as
        # Detectron2 does (bit for bit; slower), and a mask head does not use the projected
        # inputs. FLOP counts of the architecture as the paper defines it use this.
        self.exact = False
        self.fc_layers = []
        in_dim = input_channels + coarse_pred_channels
        for k, fc_dim in enumerate(fc_dims):
            fc = nn.Conv1d(in_dim, fc_dim, kernel_size=1, stride=1, padding=0, bias=True)
            self.add_module(f"fc{k + 1}", fc)
            self.fc_layers.append(fc)
            in_dim = fc_dim + (coarse_pred_channels if coarse_pred_each_layer else 0)
        self.predictor = nn.Conv1d(in_dim, num_mask_classes, kernel_size=1, stride=1, padding=0)

        for layer in self.fc_layers:
            weight_init.c2_msra_fill(layer)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        num_classes = cfg.MODEL.POINT_HEAD.NUM_CLASSES
        return {
            "input_channels": input_shape.channels,
            "coarse_pred_channels": num_classes,
            "num_mask_classes": 1 if cfg.MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK else num_classes,
            "fc_dims": [cfg.MODEL.POINT_HEAD.FC_DIM] * cfg.MODEL.POINT_HEAD.NUM_FC,
            "coarse_pred_each_layer": cfg.MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER,
        }

    def forward(
        self,
        fine_grained_features: Tensor,
        coarse_features: Tensor,
        classes: Optional[Tensor] = None,
    ) -> Tensor:
        """
        Args:
            fine_grained_features: shape ``(R, input_channels, P)``.
            coarse_features: coarse logits at the same points, ``(R, coarse_pred_channels, P)``.
            classes: optional class of each of the ``R`` rows, shape ``(R,)``: then only that
                class's logit is predicted (what inference uses), else every class's.

        Returns:
            Tensor: point logits, shape ``(R, num_mask_classes, P)``, or ``(R, 1, P)`` when
            ``classes`` is given.
        """
        autograd = torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        if autograd or self.exact:
            logits = self._forward_concat(fine_grained_features, coarse_features)
            return logits if classes is None else own_class_logits(logits, classes)
        return self._forward_rows(fine_grained_features, coarse_features, classes)

    def _forward_concat(self, fine_grained_features: Tensor, coarse_features: Tensor) -> Tensor:
        """The MLP as the paper draws it (Detectron2's computation, bit for bit): every layer a
        kernel-1 Conv1d on the concatenation of its input and the coarse logits."""
        x = torch.cat((fine_grained_features, coarse_features), dim=1)
        for layer in self.fc_layers:
            x = F.relu(layer(x))
            if self.coarse_pred_each_layer:
                x = torch.cat((x, coarse_features), dim=1)
        return self.predictor(x)

    # ------------------------------------------------------------------------------ inference
    # Without autograd the same function is computed in a cheaper order (equal up to float
    # rounding; tests/test_pointrend_heads.py compares them):
    # * each layer's weight is split into fine and coarse columns, W [x; c] + b = W_x x +
    #   (W_c c + b): the coarse terms of all layers are one product and nothing is concatenated;
    # * rows go through the whole MLP in blocks of ROW_BLOCK, so activations stay in the CPU
    #   cache between layers;
    # * with `classes`, only each box's own class is predicted;
    # * bilinear sampling is linear, so a product with sampled features equals the product
    #   applied to the whole map, then sampled: `project_fine_features` applies the first
    #   layer's fine columns to the image's feature maps, `project_coarse_logits` every
    #   layer's coarse columns to each box's coarse logits, once per image instead of at every
    #   point; `forward_projected` takes their values sampled at the points.

    def project_fine_features(self, maps: Sequence[Tensor]) -> List[Tensor]:
        """The first layer's fine-feature product applied to whole feature maps.

        Applied once per image as a 1 x 1 convolution, the product costs one evaluation per map
        cell instead of one per point: p2 of an 800 x 1333 image has 67k cells, the subdivision
        of 100 boxes evaluates 313,600 points.

        Args:
            maps: ``(N, C_i, H_i, W_i)`` whose channels, in order, make up ``input_channels``.

        Returns:
            list[Tensor]: per map, ``(N, fc_dims[0], H_i, W_i)``; sampled at the points and
            summed over the maps they are :meth:`forward_projected`'s ``fine_term``.
        """
        widths = [m.shape[1] for m in maps]
        weight = self.fc_layers[0].weight[:, : sum(widths)]  # (fc_dims[0], sum C_i, 1)
        return [
            F.conv2d(m, w.unsqueeze(3)) for m, w in zip(maps, torch.split(weight, widths, dim=1))
        ]

    def project_coarse_logits(self, coarse_logits: Tensor, classes: Optional[Tensor]) -> Tensor:
        """Every layer's coarse-logit product applied to each box's whole coarse map.

        Args:
            coarse_logits: ``(R, coarse_pred_channels, S, S)``.
            classes: as in :meth:`forward`.

        Returns:
            Tensor: ``(R, T, S, S)``, stored channels-last; sampled at the points they are
            :meth:`forward_projected`'s ``coarse_terms``. The first channels are the hidden
            layers' terms, then the predictor's (1 with ``classes``), then zero padding.
        """
        weight, _ = self._coarse_weight_and_bias(classes)
        terms = torch.einsum("tc,rchw->rhwt", weight, coarse_logits)
        predictor = self._predictor_coarse_weight()
        if classes is not None and self.predictor.out_channels > 1:
            if predictor is None:
                own = terms.new_zeros(terms.shape[:3])
            else:
                own = torch.einsum("rc,rchw->rhw", predictor[classes], coarse_logits)
            terms = torch.cat((terms, own[..., None]), dim=3)
        # Rows padded to a multiple of 16 floats: gathering them is faster.
        terms = F.pad(terms, (0, -terms.shape[3] % 16))
        return terms.permute(0, 3, 1, 2)  # (R, T, S, S) view of (R, S, S, T) memory

    def forward_projected(
        self, fine_term: Tensor, coarse_terms: Tensor, classes: Optional[Tensor] = None
    ) -> Tensor:
        """:meth:`forward` from projected inputs (inference only).

        Args:
            fine_term: :meth:`project_fine_features`' maps sampled at the points and summed
                over the maps, ``(R, fc_dims[0], P)``.
            coarse_terms: :meth:`project_coarse_logits` (same ``classes``) sampled at the
                points, ``(R, T, P)``.
            classes: as in :meth:`forward`.

        Returns:
            Tensor: as :meth:`forward`.
        """
        _, bias = self._coarse_weight_and_bias(classes)

        def pre(coarse: Tensor, cls: Optional[Tensor]) -> Tensor:
            hidden = coarse[:, : len(bias)] + bias  # the padding is left out
            if cls is None:
                return hidden
            own = coarse[:, len(bias) : len(bias) + 1] + self.predictor.bias[cls, None]
            return torch.cat((hidden, own), dim=1)

        return self._in_blocks(fine_term, coarse_terms, classes, pre, projected=True)

    def _forward_rows(
        self, fine_features: Tensor, coarse_features: Tensor, classes: Optional[Tensor]
    ) -> Tensor:
        """:meth:`forward`'s inference computation (see the notes above)."""
        weight, bias = self._coarse_weight_and_bias(classes)
        predictor = self._predictor_coarse_weight()

        def pre(coarse: Tensor, cls: Optional[Tensor]) -> Tensor:
            hidden = torch.addmm(bias, coarse, weight.t())
            if cls is None:
                return hidden
            own = self.predictor.bias[cls, None]  # + the own-class column of the predictor's
            if predictor is not None:
                own = own + (coarse * predictor[cls]).sum(1, keepdim=True)
            return torch.cat((hidden, own), dim=1)

        return self._in_blocks(fine_features, coarse_features, classes, pre, projected=False)

    def _in_blocks(self, fine: Tensor, coarse: Tensor, classes, pre_fn, projected: bool) -> Tensor:
        """Run :meth:`_mlp_block` over blocks of ``(R * P)`` rows.

        Args:
            fine, coarse: ``(R, C_f, P)`` and ``(R, C_c, P)``.
            classes: as in :meth:`forward`.
            pre_fn: ``(coarse rows (n, C_c), row classes (n,) or None) -> (n, T)``, the
                coarse terms plus biases of each layer (see :meth:`_mlp_block`).
            projected: whether ``fine`` is the first layer's fine term.

        Returns:
            Tensor: as :meth:`forward`.
        """
        num_rows, _, num_points = fine.shape
        fine_rows, coarse_rows = _rows(fine), _rows(coarse)
        row_classes = self._row_classes(classes, num_points)
        step = ROW_BLOCK if fine.device.type == "cpu" else max(1, fine_rows.shape[0])
        blocks = []
        for start in range(0, fine_rows.shape[0], step):
            cls = None if row_classes is None else row_classes[start : start + step]
            pre = pre_fn(coarse_rows[start : start + step], cls)
            blocks.append(self._mlp_block(fine_rows[start : start + step], pre, cls, projected))
        width = 1 if row_classes is not None else self.predictor.out_channels
        if not blocks:
            return coarse.new_zeros((num_rows, width, num_points))
        rows = torch.cat(blocks) if len(blocks) != 1 else blocks[0]
        return rows.view(num_rows, num_points, -1).transpose(1, 2)

    def _coarse_weight_and_bias(self, classes: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """Coarse columns ``(T', coarse_pred_channels)`` and biases ``(T',)`` of the hidden layers
        (zeros for a layer that does not see the coarse logits), and of the predictor unless
        only the boxes' own classes are predicted."""
        layers = list(self.fc_layers)
        if classes is None or self.predictor.out_channels == 1:
            layers.append(self.predictor)
        num_coarse = self.coarse_pred_channels
        weights = []
        for k, layer in enumerate(layers):
            if k == 0 or self.coarse_pred_each_layer:
                weights.append(layer.weight[:, -num_coarse:, 0])
            else:
                weights.append(layer.weight.new_zeros(layer.out_channels, num_coarse))
        return torch.cat(weights), torch.cat([layer.bias for layer in layers])

    def _predictor_coarse_weight(self) -> Optional[Tensor]:
        """The predictor's coarse columns ``(num_mask_classes, C)``, None if it does not see
        the coarse logits."""
        if not self.coarse_pred_each_layer:
            return None
        return self.predictor.weight[:, -self.coarse_pred_channels :, 0]

    def _row_classes(self, classes: Optional[Tensor], num_points: int) -> Optional[Tensor]:
        if classes is None or self.predictor.out_channels == 1:
            return None
        return classes.repeat_interleave(num_points)

    def _mlp_block(
        self, x: Tensor, pre: Tensor, row_classes: Optional[Tensor], projected: bool
    ) -> Tensor:
        """The MLP on a block of rows.

        Args:
            x: ``(n, input_channels)`` fine features, or with ``projected`` the first layer's
                fine term ``(n, fc_dims[0])``.
            pre: ``(n, T)`` coarse terms plus biases of each layer, the predictor's last
                (one column per row with ``row_classes``: the row's own class).
            row_classes: ``(n,)`` or None.

        Returns:
            Tensor: ``(n, num_mask_classes)``, or ``(n, 1)`` with ``row_classes``.
        """
        offset = 0
        for k, layer in enumerate(self.fc_layers):
            out = pre[:, offset : offset + layer.out_channels]
            offset += layer.out_channels
            if k == 0 and projected:
                out = out.add_(x)
            else:
                out = out.addmm_(x, layer.weight[:, : x.shape[1], 0].t())
            x = out.relu_()
        weight = self.predictor.weight[:, : x.shape[1], 0]
        if row_classes is None:
            return pre[:, offset:].addmm_(x, weight.t())
        # Only the classes of this block's boxes (a handful); each row keeps its own column.
        present, column = torch.unique(row_classes, return_inverse=True)
        logits = torch.mm(x, weight[present].t()).gather(1, column[:, None])
        return logits.add_(pre[:, offset:])


def _rows(x: Tensor) -> Tensor:
    """``(R, C, P)`` -> ``(R * P, C)`` rows; a view when ``x`` is a view of such rows."""
    return x.transpose(1, 2).reshape(-1, x.shape[1])


# Rows per block in RenderPointHead's CPU inference (a GPU takes all rows at once): activations
# of a block (a few MB) stay in a core's cache through the MLP (1024-2048 ran fastest of
# 1024-16384 on a 2 MB-L2 CPU).
ROW_BLOCK = 2048


def build_point_head(cfg, input_shape: ShapeSpec, **overrides) -> nn.Module:
    """Build the point head named by ``cfg.MODEL.POINT_HEAD.NAME``.

    Args:
        cfg: the config.
        input_shape: ``channels`` = fine-grained feature channels per point.
        **overrides: ``__init__`` arguments replacing what the head's ``from_config`` reads.
    """
    name = cfg.MODEL.POINT_HEAD.NAME
    if name not in POINTREND_POINT_HEAD_REGISTRY:
        raise KeyError(
            f"MODEL.POINT_HEAD.NAME={name!r} is not a registered point head; this project's are "
            f"{sorted(k for k, _ in POINTREND_POINT_HEAD_REGISTRY)} (Detectron2's own "
            "'StandardPointHead' / 'ImplicitPointHead' belong to detectron2.projects.point_rend)."
        )
    return POINTREND_POINT_HEAD_REGISTRY.get(name)(cfg, input_shape, **overrides)
