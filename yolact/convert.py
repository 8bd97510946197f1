"""Convert the authors' YOLACT / YOLACT++ checkpoints (``yolact_base_54_800000.pth``,
``yolact_resnet50_54_800000.pth``, ``yolact_plus_base_54_800000.pth``,
``yolact_plus_resnet50_54_800000.pth``, or any checkpoint of their code) to this implementation.

Run as ``python tools/convert_yolact.py --input yolact_base_54_800000.pth --output
yolact_R_101_550.pth`` (or ``python -m yolact.convert``); then ``MODEL.WEIGHTS
yolact_R_101_550.pth`` with ``configs/YOLACT/R_101_550.yaml``.

Every key of the authors' layout has a rule (:func:`convert_state_dict`); a key no rule knows is
reported and left out. Their deformable convs carry a bias before a batch norm: it is folded into
the norm's running mean (``mean - bias``), which is exact (a batch norm in training subtracts any
constant, and in inference ``(x + b - mean) = (x - (mean - b))``). With ``--num-classes`` other
than the checkpoint's, the class-dependent layers (classifier, semantic conv, the re-scoring
net's last conv) are left out, to train fresh, and listed; every other weight is kept.
"""

import argparse
import logging
import re
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["ConversionReport", "convert_state_dict", "main"]

logger = logging.getLogger(__name__)

_FPN_LATERAL = {0: 5, 1: 4, 2: 3}  # the authors store P5's conv first
_TOP_BLOCK = {0: "p6", 1: "p7"}
_NORM_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class ConversionReport:
    """What a conversion did: ``mapped`` (source -> target), ``folded`` (deformable biases folded
    into norms), ``dropped_legacy`` (keys the authors' own loader drops), ``fresh`` (class-
    dependent layers left out for a new class count) and ``unmapped`` (keys no rule knows)."""

    def __init__(self):
        self.mapped: Dict[str, str] = {}
        self.folded: List[str] = []
        self.dropped_legacy: List[str] = []
        self.fresh: List[str] = []
        self.unmapped: List[str] = []

    def summary(self) -> str:
        lines = [f"{len(self.mapped)} keys mapped"]
        if self.folded:
            lines.append(f"{len(self.folded)} deformable-conv biases folded into their norms")
        if self.dropped_legacy:
            lines.append(f"dropped as the authors' loader does: {self.dropped_legacy}")
        if self.fresh:
            lines.append(f"left fresh (class-dependent, new class count): {self.fresh}")
        if self.unmapped:
            lines.append(f"UNMAPPED (left out): {self.unmapped}")
        return "\n".join(lines)


def _backbone_key(rest: str) -> Optional[str]:
    """``conv1.weight`` / ``bn1.x`` / ``layers.S.B.<...>`` -> the Detectron2 ResNet name."""
    if rest == "conv1.weight":
        return "backbone.bottom_up.stem.conv1.weight"
    m = re.fullmatch(r"bn1\.(\w+)", rest)
    if m and m.group(1) in _NORM_FIELDS:
        return f"backbone.bottom_up.stem.conv1.norm.{m.group(1)}"
    m = re.fullmatch(r"layers\.(\d)\.(\d+)\.(.+)", rest)
    if not m:
        return None
    stage, block, tail = int(m.group(1)) + 2, m.group(2), m.group(3)
    prefix = f"backbone.bottom_up.res{stage}.{block}."
    m2 = re.fullmatch(r"conv(\d)\.weight", tail)
    if m2:
        return prefix + f"conv{m2.group(1)}.weight"
    m2 = re.fullmatch(r"bn(\d)\.(\w+)", tail)
    if m2 and m2.group(2) in _NORM_FIELDS:
        return prefix + f"conv{m2.group(1)}.norm.{m2.group(2)}"
    m2 = re.fullmatch(r"conv2\.conv_offset_mask\.(weight|bias)", tail)
    if m2:
        return prefix + f"conv2_offset.{m2.group(1)}"
    if tail == "downsample.0.weight":
        return prefix + "shortcut.weight"
    m2 = re.fullmatch(r"downsample\.1\.(\w+)", tail)
    if m2 and m2.group(1) in _NORM_FIELDS:
        return prefix + f"shortcut.norm.{m2.group(1)}"
    return None


def target_key(key: str) -> Optional[str]:
    """This implementation's name for one of the authors' keys, or None (no rule)."""
    if key.startswith("backbone."):
        return _backbone_key(key[len("backbone.") :])
    m = re.fullmatch(r"fpn\.lat_layers\.(\d)\.(weight|bias)", key)
    if m and int(m.group(1)) in _FPN_LATERAL:
        return f"backbone.fpn_lateral{_FPN_LATERAL[int(m.group(1))]}.{m.group(2)}"
    m = re.fullmatch(r"fpn\.pred_layers\.(\d)\.(weight|bias)", key)
    if m and int(m.group(1)) in _FPN_LATERAL:
        return f"backbone.fpn_output{_FPN_LATERAL[int(m.group(1))]}.{m.group(2)}"
    m = re.fullmatch(r"fpn\.downsample_layers\.(\d)\.(weight|bias)", key)
    if m and int(m.group(1)) in _TOP_BLOCK:
        return f"backbone.top_block.{_TOP_BLOCK[int(m.group(1))]}.{m.group(2)}"
    m = re.fullmatch(r"proto_net\.(\d+)\.(weight|bias)", key)
    if m:
        return key
    m = re.fullmatch(
        r"prediction_layers\.0\.(upfeature\.0|bbox_layer|conf_layer|mask_layer)\.(weight|bias)", key
    )
    if m:
        return f"prediction_head.{m.group(1)}.{m.group(2)}"
    if re.fullmatch(r"semantic_seg_conv\.(weight|bias)", key):
        return key
    m = re.fullmatch(r"maskiou_net\.maskiou_net\.(\d+)\.(weight|bias)", key)
    if m:
        return f"maskiou_net.net.{m.group(1)}.{m.group(2)}"
    return None


def _is_legacy(key: str) -> bool:
    """Keys the authors' ``load_weights`` deletes: pre-``layers`` backbone names and a third FPN
    downsampling layer of their v1.0 weights."""
    if key.startswith("backbone.layer") and not key.startswith("backbone.layers"):
        return True
    m = re.fullmatch(r"fpn\.downsample_layers\.(\d+)\..+", key)
    return bool(m) and int(m.group(1)) >= 2


def checkpoint_num_classes(state: Dict[str, Tensor]) -> Optional[int]:
    """Foreground classes of an authors' checkpoint (from its semantic conv, else None)."""
    if "semantic_seg_conv.weight" in state:
        return int(state["semantic_seg_conv.weight"].shape[0])
    return None


def _class_dependent(key: str) -> bool:
    return (
        key.startswith("prediction_layers.0.conf_layer.")
        or key.startswith("semantic_seg_conv.")
        or key.startswith("maskiou_net.maskiou_net.10.")
    )


def convert_state_dict(
    state: Dict[str, Tensor], num_classes: Optional[int] = None, source: str = "<state dict>"
) -> Tuple["OrderedDict[str, Tensor]", ConversionReport]:
    """The authors' state dict -> this implementation's.

    Args:
        state: the authors' ``state_dict`` (as their ``save_weights`` writes it).
        num_classes: foreground classes of the target model; None or the checkpoint's own keeps
            every layer, another count leaves the class-dependent layers out.
        source: the file's name, for errors.

    Returns:
        tuple: the converted state dict and a :class:`ConversionReport`.

    Raises:
        ValueError: ``state`` is not a YOLACT checkpoint (names ``source``).
    """
    if not any(k.startswith("proto_net.") for k in state) or not any(
        k.startswith("prediction_layers.0.") for k in state
    ):
        sample = sorted(state)[:5]
        raise ValueError(
            f"{source} is not a checkpoint of the YOLACT authors' code: it has no proto_net.* / "
            f"prediction_layers.0.* weights (first keys: {sample}). A checkpoint of this "
            f"project loads directly with MODEL.WEIGHTS."
        )
    own_classes = checkpoint_num_classes(state)
    new_classes = num_classes is not None and own_classes is not None and num_classes != own_classes
    if num_classes is not None and own_classes is None:
        conf = state.get("prediction_layers.0.conf_layer.bias")
        new_classes = conf is not None and conf.shape[0] % (num_classes + 1) != 0
    report = ConversionReport()
    out: "OrderedDict[str, Tensor]" = OrderedDict()
    biases = {}
    for key, value in state.items():
        if _is_legacy(key):
            report.dropped_legacy.append(key)
            continue
        m = re.fullmatch(r"backbone\.layers\.(\d)\.(\d+)\.conv2\.bias", key)
        if m:
            biases[key] = value
            continue
        if new_classes and _class_dependent(key):
            report.fresh.append(key)
            continue
        target = target_key(key)
        if target is None:
            report.unmapped.append(key)
            continue
        out[target] = value
        report.mapped[key] = target
    for key, bias in biases.items():
        mean_key = _backbone_key(key[len("backbone.") :].replace("conv2.bias", "bn2.running_mean"))
        if mean_key not in out:
            report.unmapped.append(key)
            continue
        out[mean_key] = out[mean_key] - bias
        report.folded.append(key)
        report.mapped[key] = mean_key
    return out, report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert an authors' YOLACT / YOLACT++ checkpoint for MODEL.WEIGHTS."
    )
    parser.add_argument("--input", required=True, help="the authors' .pth (a state dict)")
    parser.add_argument("--output", required=True, help="where to write the converted .pth")
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="foreground classes to fine-tune for (MODEL.YOLACT.NUM_CLASSES); the "
        "class-dependent layers are then left fresh",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        state = torch.load(args.input, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SystemExit(f"{args.input}: no such file") from None
    except Exception as e:  # a pickle of anything else, a truncated file
        raise SystemExit(f"{args.input} cannot be read as a PyTorch checkpoint: {e}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise SystemExit(f"{args.input} does not hold a state dict of tensors")
    try:
        converted, report = convert_state_dict(state, args.num_classes, source=args.input)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    logger.info(report.summary())
    payload = {"model": converted, "__author__": "yolact.convert", "matching_heuristics": False}
    tmp = args.output + ".tmp"
    torch.save(payload, tmp)
    import os

    os.replace(tmp, args.output)
    logger.info(f"wrote {args.output}")
    return 1 if report.unmapped else 0


if __name__ == "__main__":
    sys.exit(main())
