"""A throwaway method package, built in a temporary folder, that joins through the method contract.

:func:`installed_throwaway_method` writes, next to each other in a folder:

* ``throwaway_<tag>/__init__.py``: a package that, on import, registers a tiny one-stage
  meta-architecture in Detectron2's ``META_ARCH_REGISTRY`` (``ThrowawayDetector<tag>``, a
  subclass of :class:`FullImageToyDetector`), exports its config adder
  ``add_throwaway_<tag>_config`` (keys under ``MODEL.THROWAWAY_<TAG>``: ``NUM_CLASSES``,
  ``NUM_MASKS``, ``SCORE_THRESH_TEST``) and registers its :class:`projects.methods.Method`
  (``Throwaway<tag>``; toy and benchmark configs as absolute paths in the folder, its score key,
  its class-count key, a FLOP handle and a mask-head FLOP counter);
* ``throwaway_<tag>-0.0.dist-info/``: ``METADATA`` and an ``entry_points.txt`` that declares the
  adder in the ``d2_instance_seg.methods`` group, which is how
  :func:`projects.config.method_config_adders` finds installed methods;
* ``toy.yaml`` (a CPU-sized config for the bundled toy data, with ``TEST_CONTRACT`` keys) and
  ``benchmark.yaml`` (its "published" config: more masks, 3 classes).

The folder is put on ``sys.path`` while the context is open; on exit the path, the package's
modules, its ``META_ARCH_REGISTRY`` entry and its ``projects.methods`` registration are removed.
Nothing in ``projects/`` is edited: the method is found the way an installed one is.

The model (:class:`FullImageToyDetector`): a Detectron2 backbone's finest map, a 1x1 conv
predicting ``K`` full-image mask logits, and a linear layer on the pooled map predicting each
mask's class (``C`` classes + "no object"). Training: the ``i``-th ground-truth instance of an
image is the target of mask ``i`` (``i < K``; the others predict "no object"); binary cross
entropy on the masks at feature resolution, cross entropy on the classes. Inference: per mask,
score and class from the softmax; masks above ``SCORE_THRESH_TEST`` through
:func:`projects.modeling.full_image_detector_postprocess` (boxes from the masks).
"""

import contextlib
import importlib
import os
import sys
import textwrap
import uuid
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import BitMasks, ImageList, Instances, PolygonMasks
from fvcore.nn.jit_handles import get_shape
from torch import nn
from torch.nn import functional as F

from projects.config import METHOD_ENTRY_POINT_GROUP, add_missing_keys
from projects.evaluation.mask_head_flops import module_flops
from projects.modeling import full_image_detector_postprocess

__all__ = [
    "FullImageToyDetector",
    "ThrowawayMethod",
    "define_package",
    "installed_throwaway_method",
    "softmax_flop_jit",
    "uninstall_throwaway_method",
    "write_throwaway_method",
]

TOY_NUM_CLASSES = 4  # the classes of the toy instance regime (toy_train)
BENCHMARK_NUM_CLASSES = 3  # the "published" config's, unlike any Detectron2 default


class FullImageToyDetector(nn.Module):
    """Full-image masks and their classes from a 1x1 conv on one backbone map (see the module
    docstring). Subclasses set :attr:`CONFIG_NAMESPACE`, the node under ``MODEL`` of their keys.

    Shapes: ``N`` images, ``K`` masks per image, ``C`` classes, ``(h, w)`` the map's size.
    """

    CONFIG_NAMESPACE = ""

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        num_masks: int,
        num_classes: int,
        score_threshold: float,
        detections_per_image: int,
        pixel_mean: List[float],
        pixel_std: List[float],
    ):
        """
        Args:
            backbone: any Detectron2 backbone; its finest output map is used.
            num_masks: K, masks predicted per image.
            num_classes: C, object classes (index C is "no object").
            score_threshold: inference keeps masks scoring above it.
            detections_per_image: inference keeps at most this many masks per image.
            pixel_mean, pixel_std: input normalisation, one value per channel.
        """
        super().__init__()
        self.backbone = backbone
        shapes = backbone.output_shape()
        self.in_feature = min(shapes, key=lambda name: shapes[name].stride)
        channels, stride = shapes[self.in_feature].channels, shapes[self.in_feature].stride
        self.size_divisibility = max(backbone.size_divisibility, stride)
        self.num_masks, self.num_classes = num_masks, num_classes
        self.score_threshold = score_threshold
        self.detections_per_image = detections_per_image
        self.mask_predictor = nn.Conv2d(channels, num_masks, kernel_size=1)
        self.class_predictor = nn.Linear(channels, num_masks * (num_classes + 1))
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        node = cfg.MODEL[cls.CONFIG_NAMESPACE]
        return {
            "backbone": build_backbone(cfg),
            "num_masks": node.NUM_MASKS,
            "num_classes": node.NUM_CLASSES,
            "score_threshold": node.SCORE_THRESH_TEST,
            "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs) -> ImageList:
        """Normalised images, padded to a multiple of the map's stride."""
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        return ImageList.from_tensors(images, self.size_divisibility)

    def predict(self, images: torch.Tensor):
        """(N, 3, Hp, Wp) -> mask logits (N, K, h, w), class logits (N, K, C + 1)."""
        features = self.backbone(images)[self.in_feature]
        masks = self.mask_predictor(features)
        pooled = features.mean(dim=(2, 3))
        classes = self.class_predictor(pooled).view(len(images), self.num_masks, -1)
        return masks, classes

    def forward(self, batched_inputs):
        """Training: ``{"loss_mask", "loss_cls"}``; inference: see :meth:`inference`."""
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        mask_logits, class_logits = self.predict(images.tensor)
        targets = [x["instances"].to(self.device) for x in batched_inputs]
        return self.losses(mask_logits, class_logits, targets, images.tensor.shape[-2:])

    def _mask_targets(self, instances: Instances, padded_size, map_size) -> torch.Tensor:
        """(G, h, w) float 0/1 targets of the first G <= K ground-truth masks."""
        count = min(len(instances), self.num_masks)
        height, width = instances.image_size
        masks = instances.gt_masks if count else BitMasks(torch.zeros(0, height, width))
        if isinstance(masks, PolygonMasks):
            masks = BitMasks.from_polygon_masks(masks, height, width)
        masks = masks.tensor[:count].float()
        masks = F.pad(masks, (0, padded_size[1] - width, 0, padded_size[0] - height))
        resized = F.interpolate(masks[:, None], size=map_size, mode="bilinear", align_corners=False)
        return (resized[:, 0] > 0.5).float()

    def losses(self, mask_logits, class_logits, targets, padded_size) -> Dict[str, torch.Tensor]:
        """Binary cross entropy of the matched masks, cross entropy of every mask's class."""
        mask_terms, class_targets = [], []
        for logits, instances in zip(mask_logits, targets):
            target = self._mask_targets(instances, padded_size, logits.shape[-2:])
            count = len(target)
            if count:
                mask_terms.append(
                    F.binary_cross_entropy_with_logits(logits[:count], target, reduction="none")
                )
            labels = torch.full((self.num_masks,), self.num_classes, device=self.device)
            labels[:count] = instances.gt_classes[:count]
            class_targets.append(labels)
        if mask_terms:
            loss_mask = torch.cat([t.flatten() for t in mask_terms]).mean()
        else:
            loss_mask = mask_logits.sum() * 0.0  # keeps the graph whole with no ground truth
        loss_cls = F.cross_entropy(class_logits.flatten(0, 1), torch.cat(class_targets))
        return {"loss_mask": loss_mask, "loss_cls": loss_cls}

    def inference(self, batched_inputs, do_postprocess: bool = True):
        """``[{"instances": Instances}]``: ``pred_masks`` (n, height, width) bool, ``pred_boxes``
        (from the masks), ``scores``, ``pred_classes``; raw (n, h, w) logits over the padded
        input without ``do_postprocess``."""
        images = self.preprocess_image(batched_inputs)
        mask_logits, class_logits = self.predict(images.tensor)
        scores, classes = class_logits.softmax(dim=-1)[..., : self.num_classes].max(dim=-1)
        results = []
        for i, image_size in enumerate(images.image_sizes):
            keep = torch.nonzero(scores[i] > self.score_threshold).flatten()
            keep = keep[scores[i, keep].argsort(descending=True)][: self.detections_per_image]
            raw = Instances(image_size)
            raw.pred_masks = mask_logits[i, keep]
            raw.scores = scores[i, keep]
            raw.pred_classes = classes[i, keep]
            if do_postprocess:
                height = batched_inputs[i].get("height", image_size[0])
                width = batched_inputs[i].get("width", image_size[1])
                raw = full_image_detector_postprocess(
                    raw,
                    height,
                    width,
                    padded_size=tuple(images.tensor.shape[-2:]),
                    mask_threshold=0.0,
                )
            results.append({"instances": raw})
        return results


def softmax_flop_jit(inputs, outputs) -> int:
    """fvcore handle for ``aten::softmax``: one FLOP per output value (the throwaway method's
    ``flop_handles``; fvcore does not count softmax)."""
    return int(np.prod(get_shape(outputs[0])))


def _config_adder(namespace: str):
    def add_config(cfg):
        """Add the throwaway method's keys (only where missing)."""
        return add_missing_keys(
            cfg,
            {
                f"MODEL.{namespace}.NUM_CLASSES": TOY_NUM_CLASSES,
                f"MODEL.{namespace}.NUM_MASKS": 4,
                f"MODEL.{namespace}.SCORE_THRESH_TEST": 0.05,
            },
        )

    return add_config


def _head_flops_counter(detector_class):
    def head_flops(cfg, model, image) -> Optional[dict]:
        """FLOPs of one mask of the 1x1 mask predictor on ``image``'s map (None for models
        that are not ``detector_class``)."""
        if not isinstance(model, detector_class):
            return None
        with torch.no_grad():
            images = model.preprocess_image([{"image": image}])
            features = model.backbone(images.tensor)[model.in_feature]
            total = module_flops(model.mask_predictor, (features,)).total()
        return {
            "gflops_per_box": total / model.num_masks / 1e9,
            "feature_size": list(features.shape[-2:]),
        }

    return head_flops


def define_package(package: str, name: str, namespace: str, meta_architecture: str, root: str):
    """What the package's ``__init__`` runs: the meta-architecture registered, the adder, the
    Method registered. Returns the names the package exports."""
    from projects.methods import BenchmarkConfig, Method, register_method

    detector = type(
        meta_architecture,
        (FullImageToyDetector,),
        {"CONFIG_NAMESPACE": namespace, "__module__": package},
    )
    META_ARCH_REGISTRY.register(detector)
    adder = _config_adder(namespace)
    adder.__name__ = adder.__qualname__ = f"add_{package}_config"
    adder.__module__ = package
    toy, benchmark = os.path.join(root, "toy.yaml"), os.path.join(root, "benchmark.yaml")
    method = register_method(
        Method(
            name=name,
            package=package,
            toy_configs=(toy,),
            benchmark_configs=(BenchmarkConfig(benchmark, toy=toy, label=f"{name} (throwaway)"),),
            score_threshold_keys=(f"MODEL.{namespace}.SCORE_THRESH_TEST",),
            num_classes_key=f"MODEL.{namespace}.NUM_CLASSES",
            flop_handles={"aten::softmax": softmax_flop_jit},
            head_flops=_head_flops_counter(detector),
        )
    )
    return {meta_architecture: detector, adder.__name__: adder, "METHOD": method}


@dataclass
class ThrowawayMethod:
    """What :func:`installed_throwaway_method` built (names and absolute paths)."""

    root: str  # the folder on sys.path
    package: str  # e.g. "throwaway_1a2b3c4d"
    name: str  # its Method's name
    namespace: str  # its config node under MODEL
    meta_architecture: str  # its name in META_ARCH_REGISTRY
    toy_config: str
    benchmark_config: str

    @property
    def score_key(self) -> str:
        return f"MODEL.{self.namespace}.SCORE_THRESH_TEST"

    @property
    def num_classes_key(self) -> str:
        return f"MODEL.{self.namespace}.NUM_CLASSES"

    @property
    def adder_name(self) -> str:
        return f"add_{self.package}_config"


_INIT = '''\
"""A throwaway method package (written by tests.helpers.throwaway_method)."""

from tests.helpers.throwaway_method import define_package

globals().update(define_package({package!r}, {name!r}, {namespace!r}, {arch!r}, {root!r}))
'''

_TOY_CONFIG = """\
MODEL:
  META_ARCHITECTURE: "{arch}"
  WEIGHTS: ""
  MASK_ON: True
  PIXEL_MEAN: [103.53, 116.28, 123.675]
  PIXEL_STD: [57.375, 57.12, 58.395]
  BACKBONE:
    NAME: "build_resnet_backbone"
    FREEZE_AT: 0
  RESNETS:
    DEPTH: 18
    RES2_OUT_CHANNELS: 64
    NORM: "BN"
    OUT_FEATURES: ["res2"]
  {namespace}:
    NUM_CLASSES: {toy_classes}
    NUM_MASKS: 4
    SCORE_THRESH_TEST: 0.05
DATASETS:
  TRAIN: ("toy_train",)
  TEST: ("toy_val",)
INPUT:
  MASK_FORMAT: "bitmask"
  MIN_SIZE_TRAIN: (64,)
  MAX_SIZE_TRAIN: 96
  MIN_SIZE_TEST: 64
  MAX_SIZE_TEST: 96
DATALOADER:
  NUM_WORKERS: 0
SOLVER:
  IMS_PER_BATCH: 2
  BASE_LR: 0.001
  MAX_ITER: 20
  STEPS: ()
  WARMUP_ITERS: 0
  CHECKPOINT_PERIOD: 1000
TEST:
  EVAL_PERIOD: 0
  DETECTIONS_PER_IMAGE: 4
TEST_CONTRACT:
  TINY_OPTS: ["INPUT.MIN_SIZE_TRAIN", "(48,)", "INPUT.MAX_SIZE_TRAIN", "64",
              "INPUT.MIN_SIZE_TEST", "48", "INPUT.MAX_SIZE_TEST", "64"]
  NUM_CLASSES_KEY: "MODEL.{namespace}.NUM_CLASSES"
SEED: 7
VERSION: 2
"""

_BENCHMARK_CONFIG = """\
_BASE_: "toy.yaml"
MODEL:
  {namespace}:
    NUM_CLASSES: {benchmark_classes}
    NUM_MASKS: 8
INPUT:
  MIN_SIZE_TEST: 512
  MAX_SIZE_TEST: 768
"""


def write_throwaway_method(root: str, tag: Optional[str] = None) -> ThrowawayMethod:
    """Write the package, its ``*.dist-info`` and its configs into ``root`` (see the module
    docstring); ``tag`` (default: random) makes every name unique."""
    tag = tag or uuid.uuid4().hex[:8]
    package = f"throwaway_{tag}"
    method = ThrowawayMethod(
        root=os.path.abspath(root),
        package=package,
        name=f"Throwaway{tag}",
        namespace=f"THROWAWAY_{tag.upper()}",
        meta_architecture=f"ThrowawayDetector{tag}",
        toy_config=os.path.join(os.path.abspath(root), "toy.yaml"),
        benchmark_config=os.path.join(os.path.abspath(root), "benchmark.yaml"),
    )
    fields = dict(
        package=package,
        name=method.name,
        namespace=method.namespace,
        arch=method.meta_architecture,
        root=method.root,
        toy_classes=TOY_NUM_CLASSES,
        benchmark_classes=BENCHMARK_NUM_CLASSES,
    )
    files = {
        os.path.join(package, "__init__.py"): _INIT.format(**fields),
        os.path.join(f"{package}-0.0.dist-info", "METADATA"): (
            f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0\n"
        ),
        os.path.join(f"{package}-0.0.dist-info", "entry_points.txt"): (
            f"[{METHOD_ENTRY_POINT_GROUP}]\n{method.name} = {package}:{method.adder_name}\n"
        ),
        "toy.yaml": _TOY_CONFIG.format(**fields),
        "benchmark.yaml": _BENCHMARK_CONFIG.format(**fields),
    }
    for relative, text in files.items():
        path = os.path.join(method.root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
    return method


def uninstall_throwaway_method(method: ThrowawayMethod):
    """Undo what installing and importing ``method`` did (see the module docstring)."""
    from projects import methods

    while method.root in sys.path:
        sys.path.remove(method.root)
    for module in [
        m for m in sys.modules if m == method.package or m.startswith(method.package + ".")
    ]:
        del sys.modules[module]
    META_ARCH_REGISTRY._obj_map.pop(method.meta_architecture, None)
    methods._METHODS.pop(method.name, None)
    importlib.invalidate_caches()


@contextlib.contextmanager
def installed_throwaway_method(root: str, tag: Optional[str] = None) -> Iterator[ThrowawayMethod]:
    """A throwaway method written into ``root`` and on ``sys.path`` (not imported yet: the
    method discovery imports it); everything undone on exit."""
    method = write_throwaway_method(root, tag)
    sys.path.insert(0, method.root)
    importlib.invalidate_caches()
    try:
        yield method
    finally:
        uninstall_throwaway_method(method)
