"""FCOS (Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019, with
the improvements of its later versions), the ``PROPOSAL_GENERATOR_REGISTRY`` entry ``"FCOS"``
that one-stage methods (BlendMask) share. Parameter names equal the published checkpoints'
(``proposal_generator.fcos_head.*``).

Shape shorthand: ``N`` images, ``K`` classes, ``A`` channels of the top module's output (BlendMask:
the attention length), ``M`` locations of all levels and images, ``P`` positive locations, ``D``
detections of one image.
"""

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, batched_nms, cat
from detectron2.modeling import PROPOSAL_GENERATOR_REGISTRY
from detectron2.structures import Boxes, ImageList, Instances
from fvcore.nn import sigmoid_focal_loss
from torch import Tensor, nn
from torch.nn import functional as F

from .head import FCOSHead
from .losses import LOC_LOSS_TYPES, iou_loss, ltrb_iou, mean_over_processes
from .targets import assign_targets, centerness_targets, compute_locations, size_ranges

logger = logging.getLogger(__name__)

__all__ = ["FCOS", "FCOSPositives", "FCOSTrainingOutputs"]

BOX_QUALITIES = ("ctrness", "iou")
CLS_NORMALIZERS = ("fg", "moving_fg", "all")


@dataclass
class FCOSPositives:
    """FCOS's positive locations in training, one row each, for a mask branch (BlendMask's
    blender) to train on the same samples with the same weights as the box loss.

    Rows are ordered level-major, then image, then location (row-major), as the losses see them.

    Attributes:
        gt_inds: ``(P,)`` int64 index of each row's box in the concatenation of the batch's
            ground-truth instances (image 0's boxes first).
        im_inds: ``(P,)`` int64 image of each row.
        labels: ``(P,)`` int64 class of each row's box.
        fpn_levels: ``(P,)`` int64 level of each row.
        locations: ``(P, 2)`` ``(x, y)`` image coordinates of each row.
        reg_targets: ``(P, 4)`` (l, t, r, b) distances to the box, in strides.
        ctrness_targets: ``(P,)`` centerness of each row (the box loss's weight).
        loss_denorm: the box loss's normaliser: the sum of ``ctrness_targets`` averaged over
            the training processes, at least 1e-6 (``box_quality="ctrness"``), else the mean
            positive count (at least 1).
        top_feats: ``(P, A)`` the top module's output at each row (None without a top module).
    """

    gt_inds: Tensor
    im_inds: Tensor
    labels: Tensor
    fpn_levels: Tensor
    locations: Tensor
    reg_targets: Tensor
    ctrness_targets: Tensor
    loss_denorm: float
    top_feats: Optional[Tensor] = None

    def __len__(self) -> int:
        return self.gt_inds.shape[0]


@dataclass
class FCOSTrainingOutputs:
    """What :meth:`FCOS.forward` returns besides its losses in training.

    Attributes:
        positives: see :class:`FCOSPositives`.
        proposals: per image detections (as in inference) when ``MODEL.FCOS.YIELD_PROPOSAL``,
            else None.
        box_feats: ``{level name: (N, C, Hl, Wl)}`` box-tower outputs when
            ``MODEL.FCOS.YIELD_BOX_FEATURES``, else empty.
    """

    positives: FCOSPositives
    proposals: Optional[List[Instances]] = None
    box_feats: Dict[str, Tensor] = field(default_factory=dict)


@PROPOSAL_GENERATOR_REGISTRY.register()
class FCOS(nn.Module):
    """FCOS: per-location classes, (l, t, r, b) box distances and centerness on FPN levels.

    Called as ``FCOS(cfg, input_shape)`` (the registry's signature, keys ``MODEL.FCOS.*``) or
    with the keyword arguments below.

    Training: focal loss over all locations divided by the positive count (averaged over
    processes), GIoU (``loc_loss_type``) loss of the positives weighted by their centerness and
    divided by the centerness sum, centerness BCE divided by the positive count.
    Inference: per level, locations whose score (``sigmoid(cls)``, times ``sigmoid(ctr)`` with
    ``thresh_with_ctr``) exceeds the threshold, the ``pre_nms_topk`` best of them by
    ``sigmoid(cls) * sigmoid(ctr)``; score ``sqrt(cls * ctr)``; class-aware NMS over all
    levels; the ``post_nms_topk`` best. Boxes are not clipped (the caller's postprocessing
    clips them).
    """

    @configurable
    def __init__(
        self,
        *,
        in_features: Sequence[str],
        strides: Sequence[int],
        head: FCOSHead,
        sizes_of_interest: Sequence[float] = (64, 128, 256, 512),
        center_sample: bool = True,
        radius: float = 1.5,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        loc_loss_type: str = "giou",
        box_quality: str = "ctrness",
        cls_normalizer: str = "fg",
        cls_loss_weight: float = 1.0,
        thresh_train: float = 0.05,
        thresh_test: float = 0.05,
        pre_nms_topk_train: int = 1000,
        pre_nms_topk_test: int = 1000,
        post_nms_topk_train: int = 100,
        post_nms_topk_test: int = 100,
        nms_thresh: float = 0.6,
        thresh_with_ctr: bool = False,
        yield_proposal: bool = False,
        yield_box_features: bool = False,
    ):
        """
        Args:
            in_features: FPN levels the head runs on (``MODEL.FCOS.IN_FEATURES``).
            strides: their strides (``FPN_STRIDES``).
            head: the towers and predictors.
            sizes_of_interest: regression range bounds between levels (one fewer than levels).
            center_sample, radius: centre sampling (see :mod:`.targets`).
            focal_alpha, focal_gamma: of the classification focal loss.
            loc_loss_type: ``"iou"``, ``"linear_iou"`` or ``"giou"``.
            box_quality: ``"ctrness"`` (centerness branch) or ``"iou"`` (IoU-predicting branch).
            cls_normalizer: classification loss divided by the positive count (``"fg"``), its
                moving average (``"moving_fg"``) or the location count (``"all"``).
            cls_loss_weight: weight of ``loss_fcos_cls``.
            thresh_train, thresh_test: candidate score threshold.
            pre_nms_topk_train, pre_nms_topk_test: candidates kept per level and image.
            post_nms_topk_train, post_nms_topk_test: detections kept per image.
            nms_thresh: IoU threshold of the class-aware NMS (<= 0: no NMS).
            thresh_with_ctr: threshold ``cls * ctr`` rather than ``cls``.
            yield_proposal, yield_box_features: see :class:`FCOSTrainingOutputs`.

        Raises:
            ValueError: inconsistent levels, strides and sizes, or an unknown option value.
        """
        super().__init__()
        if len(in_features) != len(strides):
            raise ValueError(
                f"MODEL.FCOS.IN_FEATURES {list(in_features)} and MODEL.FCOS.FPN_STRIDES "
                f"{list(strides)} must have the same length"
            )
        if len(sizes_of_interest) != len(in_features) - 1:
            raise ValueError(
                f"MODEL.FCOS.SIZES_OF_INTEREST {list(sizes_of_interest)} must have one value "
                f"fewer than MODEL.FCOS.IN_FEATURES {list(in_features)}"
            )
        for name, value, allowed in (
            ("LOC_LOSS_TYPE", loc_loss_type, LOC_LOSS_TYPES),
            ("BOX_QUALITY", box_quality, BOX_QUALITIES),
            ("LOSS_NORMALIZER_CLS", cls_normalizer, CLS_NORMALIZERS),
        ):
            if value not in allowed:
                raise ValueError(f"MODEL.FCOS.{name} must be one of {allowed}, got {value!r}")
        self.in_features = list(in_features)
        self.strides = [int(s) for s in strides]
        self.fcos_head = head
        self.num_classes = head.num_classes
        self.ranges = size_ranges(sizes_of_interest)
        self.center_sample = center_sample
        self.radius = radius
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.loc_loss_type = loc_loss_type
        self.box_quality = box_quality
        self.cls_normalizer = cls_normalizer
        self.cls_loss_weight = cls_loss_weight
        self.thresh = {True: thresh_train, False: thresh_test}
        self.pre_nms_topk = {True: pre_nms_topk_train, False: pre_nms_topk_test}
        self.post_nms_topk = {True: post_nms_topk_train, False: post_nms_topk_test}
        self.nms_thresh = nms_thresh
        self.thresh_with_ctr = thresh_with_ctr
        self.yield_proposal = yield_proposal
        self.yield_box_features = yield_box_features
        self.moving_num_fg = 100.0  # "moving_fg": any reasonable start
        self.moving_num_fg_momentum = 0.9

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        f = cfg.MODEL.FCOS
        missing = [name for name in f.IN_FEATURES if name not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.FCOS.IN_FEATURES {list(f.IN_FEATURES)}: the backbone has no {missing} "
                f"(it gives {sorted(input_shape)})"
            )
        strides = [input_shape[name].stride for name in f.IN_FEATURES]
        if list(strides) != list(f.FPN_STRIDES):
            raise ValueError(
                f"MODEL.FCOS.FPN_STRIDES {list(f.FPN_STRIDES)} must be the strides of "
                f"MODEL.FCOS.IN_FEATURES {list(f.IN_FEATURES)} in the backbone: {strides}"
            )
        channels = {input_shape[name].channels for name in f.IN_FEATURES}
        if len(channels) != 1:
            raise ValueError(f"MODEL.FCOS.IN_FEATURES must have equal channels, got {channels}")
        head = FCOSHead(
            in_channels=channels.pop(),
            num_levels=len(f.IN_FEATURES),
            num_classes=f.NUM_CLASSES,
            num_cls_convs=f.NUM_CLS_CONVS,
            num_box_convs=f.NUM_BOX_CONVS,
            num_share_convs=f.NUM_SHARE_CONVS,
            norm=f.NORM,
            use_deformable=f.USE_DEFORMABLE,
            use_scale=f.USE_SCALE,
            prior_prob=f.PRIOR_PROB,
        )
        return {
            "in_features": f.IN_FEATURES,
            "strides": f.FPN_STRIDES,
            "head": head,
            "sizes_of_interest": f.SIZES_OF_INTEREST,
            "center_sample": f.CENTER_SAMPLE,
            "radius": f.POS_RADIUS,
            "focal_alpha": f.LOSS_ALPHA,
            "focal_gamma": f.LOSS_GAMMA,
            "loc_loss_type": f.LOC_LOSS_TYPE,
            "box_quality": f.BOX_QUALITY,
            "cls_normalizer": f.LOSS_NORMALIZER_CLS,
            "cls_loss_weight": f.LOSS_WEIGHT_CLS,
            "thresh_train": f.INFERENCE_TH_TRAIN,
            "thresh_test": f.INFERENCE_TH_TEST,
            "pre_nms_topk_train": f.PRE_NMS_TOPK_TRAIN,
            "pre_nms_topk_test": f.PRE_NMS_TOPK_TEST,
            "post_nms_topk_train": f.POST_NMS_TOPK_TRAIN,
            "post_nms_topk_test": f.POST_NMS_TOPK_TEST,
            "nms_thresh": f.NMS_TH,
            "thresh_with_ctr": f.THRESH_WITH_CTR,
            "yield_proposal": f.YIELD_PROPOSAL,
            "yield_box_features": f.YIELD_BOX_FEATURES,
        }

    # ------------------------------------------------------------------------------ forward
    def forward(
        self,
        images: ImageList,
        features: Dict[str, Tensor],
        gt_instances: Optional[List[Instances]] = None,
        top_module: Optional[nn.Module] = None,
    ):
        """
        Args:
            images: the batch (its ``image_sizes`` bound nothing here; boxes are not clipped).
            features: ``{name: (N, C, Hl, Wl)}`` with every name of ``in_features``.
            gt_instances: per image ``gt_boxes`` and ``gt_classes`` (training).
            top_module: run on every level's box-tower output; its ``(N, A, Hl, Wl)`` output is
                carried by the positives (training) and the detections (inference).

        Returns:
            Training: ``(FCOSTrainingOutputs, losses)`` with ``loss_fcos_cls``,
            ``loss_fcos_loc`` and ``loss_fcos_ctr`` (``loss_fcos_iou`` for
            ``box_quality="iou"``). Inference: ``(detections, {})``, per image an
            ``Instances`` with ``pred_boxes`` ``(D, 4)``, ``scores`` ``(D,)``, ``pred_classes``
            ``(D,)``, ``locations`` ``(D, 2)``, ``fpn_levels`` ``(D,)`` and, with a top
            module, ``top_feats`` ``(D, A)``, sorted by score; the extras hold
            ``box_feats`` with ``yield_box_features``.
        """
        feats = [features[name] for name in self.in_features]
        locations = [
            compute_locations(f.shape[-2], f.shape[-1], s, f.device)
            for f, s in zip(feats, self.strides)
        ]
        logits, regs, ctrs, top_feats, box_towers = self.fcos_head(feats, top_module)
        box_feats = dict(zip(self.in_features, box_towers)) if self.yield_box_features else {}
        if not self.training:
            detections = self.predict(logits, regs, ctrs, top_feats, locations, images.image_sizes)
            return detections, ({"box_feats": box_feats} if box_feats else {})
        if gt_instances is None:
            raise ValueError("FCOS in training needs gt_instances (the batch has no 'instances')")
        positives, losses = self.losses(logits, regs, ctrs, top_feats, locations, gt_instances)
        proposals = None
        if self.yield_proposal:
            with torch.no_grad():
                proposals = self.predict(
                    logits, regs, ctrs, top_feats, locations, images.image_sizes
                )
        return FCOSTrainingOutputs(positives, proposals, box_feats), losses

    # ------------------------------------------------------------------------------ training
    def targets(self, locations: List[Tensor], gt_instances: List[Instances]):
        """Targets of every location of the batch, level-major then image (the losses' order).

        Returns:
            labels ``(M,)``, reg_targets ``(M, 4)`` in strides, gt_inds ``(M,)`` (index into
            the batch's concatenated boxes), im_inds ``(M,)``, fpn_levels ``(M,)`` and
            locations ``(M, 2)``.
        """
        counts = [len(loc) for loc in locations]
        device = locations[0].device
        all_locations = cat(locations, dim=0)
        strides = cat(
            [torch.full((n,), float(s), device=device) for n, s in zip(counts, self.strides)]
        )
        ranges = cat(
            [
                torch.tensor(r, device=device).expand(n, 2)
                for n, r in zip(counts, self.ranges[: len(counts)])
            ]
        )
        per_image, offset = [], 0
        for image, inst in enumerate(gt_instances):
            labels, dist, gt_index = assign_targets(
                all_locations,
                strides,
                ranges,
                inst.gt_boxes.tensor,
                inst.gt_classes,
                self.num_classes,
                center_sample=self.center_sample,
                radius=self.radius,
            )
            per_image.append((labels, dist / strides[:, None], gt_index + offset, image))
            offset += len(inst)
        levels = torch.repeat_interleave(
            torch.arange(len(counts), device=device), torch.tensor(counts, device=device)
        )
        out = {k: [] for k in ("labels", "reg", "gt", "im", "level", "loc")}
        begin = 0
        for count in counts:  # level-major, then image
            sl = slice(begin, begin + count)
            for labels, reg, gt_index, image in per_image:
                out["labels"].append(labels[sl])
                out["reg"].append(reg[sl])
                out["gt"].append(gt_index[sl])
                out["im"].append(torch.full((count,), image, dtype=torch.int64, device=device))
                out["level"].append(levels[sl])
                out["loc"].append(all_locations[sl])
            begin += count
        return tuple(cat(out[k], dim=0) for k in ("labels", "reg", "gt", "im", "level", "loc"))

    @staticmethod
    def _flatten(per_level: List[Tensor], channels: int) -> Tensor:
        """Per level ``(N, channels, Hl, Wl)`` -> ``(M, channels)``, level-major then image."""
        return cat([x.permute(0, 2, 3, 1).reshape(-1, channels) for x in per_level], dim=0)

    def losses(self, logits, regs, ctrs, top_feats, locations, gt_instances):
        """The FCOS losses and the positives (see :meth:`forward`)."""
        labels, reg_targets, gt_inds, im_inds, levels, locs = self.targets(locations, gt_instances)
        logits_flat = self._flatten(logits, self.num_classes).float()
        reg_flat = self._flatten(regs, 4).float()
        ctr_flat = self._flatten(ctrs, 1).reshape(-1).float()

        pos = torch.nonzero(labels != self.num_classes).squeeze(1)
        num_pos_avg = max(mean_over_processes(labels.new_tensor(float(pos.numel()))), 1.0)
        class_target = torch.zeros_like(logits_flat)
        class_target[pos, labels[pos]] = 1.0
        # fvcore's plain focal loss (the same as sigmoid_focal_loss_jit): the
        # TorchScript one's backward is not run-to-run reproducible on the CPU
        cls_loss = sigmoid_focal_loss(
            logits_flat,
            class_target,
            alpha=self.focal_alpha,
            gamma=self.focal_gamma,
            reduction="sum",
        )
        if self.cls_normalizer == "fg":
            cls_loss = cls_loss / num_pos_avg
        elif self.cls_normalizer == "moving_fg":
            momentum = self.moving_num_fg_momentum
            self.moving_num_fg = momentum * self.moving_num_fg + (1 - momentum) * num_pos_avg
            cls_loss = cls_loss / self.moving_num_fg
        else:
            num_all = max(mean_over_processes(labels.new_tensor(float(labels.numel()))), 1.0)
            cls_loss = cls_loss / num_all
        losses = {"loss_fcos_cls": cls_loss * self.cls_loss_weight}

        reg_pos, target_pos, ctr_pos = reg_flat[pos], reg_targets[pos], ctr_flat[pos]
        iou, giou = ltrb_iou(reg_pos, target_pos)
        ctr_targets = centerness_targets(target_pos)
        if self.box_quality == "ctrness":
            loss_denorm = max(mean_over_processes(ctr_targets.sum()), 1e-6)
            losses["loss_fcos_loc"] = (
                iou_loss(iou, giou, self.loc_loss_type, ctr_targets) / loss_denorm
            )
            losses["loss_fcos_ctr"] = (
                F.binary_cross_entropy_with_logits(ctr_pos, ctr_targets, reduction="sum")
                / num_pos_avg
            )
        else:
            loss_denorm = num_pos_avg
            losses["loss_fcos_loc"] = iou_loss(iou, giou, self.loc_loss_type) / num_pos_avg
            losses["loss_fcos_iou"] = (
                F.binary_cross_entropy_with_logits(ctr_pos, iou.detach(), reduction="sum")
                / num_pos_avg
            )
        positives = FCOSPositives(
            gt_inds=gt_inds[pos],
            im_inds=im_inds[pos],
            labels=labels[pos],
            fpn_levels=levels[pos],
            locations=locs[pos],
            reg_targets=target_pos,
            ctrness_targets=ctr_targets,
            loss_denorm=loss_denorm,
            top_feats=self._flatten(top_feats, top_feats[0].shape[1])[pos] if top_feats else None,
        )
        return positives, losses

    # ------------------------------------------------------------------------------ inference
    def predict(
        self,
        logits: List[Tensor],
        regs: List[Tensor],
        ctrs: List[Tensor],
        top_feats: List[Tensor],
        locations: List[Tensor],
        image_sizes: List[Tuple[int, int]],
    ) -> List[Instances]:
        """Detections per image from the head's outputs (see the class docstring)."""
        training = self.training
        thresh, pre_topk = self.thresh[training], self.pre_nms_topk[training]
        per_level = []
        for level, (lg, rg, ct, loc) in enumerate(zip(logits, regs, ctrs, locations)):
            top = top_feats[level] if top_feats else None
            per_level.append(
                self._level_candidates(
                    lg, rg * self.strides[level], ct, top, loc, level, thresh, pre_topk
                )
            )
        results = []
        for i, image_size in enumerate(image_sizes):
            fields = {k: cat([lv[i][k] for lv in per_level], dim=0) for k in per_level[0][i]}
            inst = Instances(image_size)
            inst.pred_boxes = Boxes(fields["boxes"])
            inst.scores = fields["scores"]
            inst.pred_classes = fields["classes"]
            inst.locations = fields["locations"]
            inst.fpn_levels = fields["levels"]
            if "top_feats" in fields:
                inst.top_feats = fields["top_feats"]
            if self.nms_thresh > 0:
                keep = batched_nms(
                    inst.pred_boxes.tensor, inst.scores, inst.pred_classes, self.nms_thresh
                )
            else:
                keep = torch.argsort(inst.scores, descending=True)
            post_topk = self.post_nms_topk[training]
            if post_topk > 0:
                keep = keep[:post_topk]
            results.append(inst[keep])
        return results

    def _level_candidates(self, logits, regs, ctrs, top, locations, level, thresh, topk):
        """Per image, the candidates of one level: a dict of ``boxes``, ``scores``,
        ``classes``, ``locations``, ``levels`` (and ``top_feats``) tensors."""
        n, k, h, w = logits.shape
        scores = logits.permute(0, 2, 3, 1).reshape(n, h * w, k).float().sigmoid()
        ctr = ctrs.permute(0, 2, 3, 1).reshape(n, h * w).float().sigmoid()
        reg = regs.permute(0, 2, 3, 1).reshape(n, h * w, 4).float()
        if top is not None:
            top = top.permute(0, 2, 3, 1).reshape(n, h * w, -1)
        if self.thresh_with_ctr:
            scores = scores * ctr[:, :, None]
            candidates = scores > thresh
        else:
            candidates = scores > thresh
            scores = scores * ctr[:, :, None]
        # The top-k of the candidates: non-candidates ranked below every candidate.
        ranked = torch.where(candidates, scores, torch.full_like(scores, -1.0)).reshape(n, -1)
        best, index = ranked.topk(min(topk, ranked.shape[1]), dim=1)
        out = []
        for i in range(n):
            idx = index[i][best[i] >= 0]
            loc_idx = torch.div(idx, k, rounding_mode="floor")
            classes = idx - loc_idx * k
            d = reg[i, loc_idx]
            pts = locations[loc_idx]
            entry = {
                "boxes": torch.stack(
                    (
                        pts[:, 0] - d[:, 0],
                        pts[:, 1] - d[:, 1],
                        pts[:, 0] + d[:, 2],
                        pts[:, 1] + d[:, 3],
                    ),
                    dim=1,
                ),
                "scores": torch.sqrt(scores[i].reshape(-1)[idx]),
                "classes": classes,
                "locations": pts,
                "levels": torch.full_like(classes, level),
            }
            if top is not None:
                entry["top_feats"] = top[i, loc_idx]
            out.append(entry)
        return out
