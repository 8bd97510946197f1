"""Benchmark every method's configs: parameters, FLOPs, latency, training step, memory.

One row per config, measured in this order (each phase may fail on its own; its error is recorded
in the row and the next phase still runs; a config that does not build yields a row with only
that error):

1. build (random weights, or ``weights``) with the number of detections fixed (see
   :data:`DETECTION_OVERRIDES`), parameter count;
2. fvcore FLOPs over N images (mean and spread);
3. inference latency on one image (warm-up, then N timed runs);
4. per-box FLOPs of the mask head, for PointRend's ``RenderMaskHead``;
5. training step time and peak memory on a synthetic batch (changes the weights: last).

With ``settings.toy``, each row then gets its method's toy accuracy: the toy config that stands
for the method trained and evaluated on the bundled toy data (:mod:`.benchmark_toy`; every toy
config is trained, those no row maps to get rows of their own). ``settings.measure`` False skips
the measurements (rows with only the toy accuracy).

After each row (and each toy run) the JSON document is rewritten atomically, so an interrupted run
keeps what was measured. :mod:`tools.benchmark` is the command line.
"""

import glob
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from .benchmark_measure import (
    calibrate_random_norms,
    count_flops_over_images,
    load_images,
    matmul_rate,
    synthetic_training_batch,
    time_inference,
    time_training_step,
)
from .benchmark_report import machine_info, markdown_report, write_json, write_plot
from .benchmark_toy import ZOO_PREFIX, ToySettings, run_toy_accuracy
from .mask_head_flops import (
    conv_mask_head_flops,
    is_point_rend_mask_head,
    point_rend_mask_head_flops,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BenchmarkSettings",
    "ConfigSpec",
    "DETECTION_OVERRIDES",
    "ToySettings",
    "YARDSTICK_CONFIG",
    "default_config_specs",
    "parse_size",
    "run_benchmark",
]

YARDSTICK_CONFIG = ZOO_PREFIX + "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
# Each method's paper config under configs/<Method>/; a method folder not listed here gets the
# first match of the fallback rule in :func:`default_config_specs`.
PAPER_CONFIGS = {"PointRend": "pointrend_rcnn_R_50_FPN_3x_coco.yaml"}
# Score thresholds set to 0 (when the key exists) so that every model hands the same number of
# detections (TEST.DETECTIONS_PER_IMAGE) to its mask head. Methods add their key here.
DETECTION_OVERRIDES = (
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "MODEL.RETINANET.SCORE_THRESH_TEST",
    "MODEL.FCOS.INFERENCE_TH_TEST",
    "MODEL.YOLACT.SCORE_THRESH_TEST",
    "MODEL.FASTINST.SCORE_THRESH_TEST",
)


@dataclass
class ConfigSpec:
    """One config to benchmark: ``path`` (a file, or ``zoo:<model-zoo path>``), ``label`` shown in
    the table, optional ``weights`` file, and whether it is the yardstick."""

    path: str
    label: str = ""
    weights: Optional[str] = None
    yardstick: bool = False

    def __post_init__(self):
        if not self.label:
            self.label = config_label(self.path)


@dataclass
class BenchmarkSettings:
    """What to measure and how often. ``size`` None: each config's (MIN_SIZE_TEST,
    MAX_SIZE_TEST), i.e. 800x1333 for the COCO configs; ``dataset`` None: random images."""

    size: Optional[Tuple[int, int]] = None
    dataset: Optional[str] = "toy_val"
    flop_images: int = 5
    warmup: int = 2
    runs: int = 10
    train_warmup: int = 1
    train_runs: int = 3
    train_batch: int = 2
    train_instances: int = 8
    train_size: Optional[Tuple[int, int]] = None  # None: the inference size
    detections: int = 100
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    mask_head_flops: Optional[bool] = None  # None: for RenderMaskHead configs only
    skip: Tuple[str, ...] = ()  # phases to skip: "flops", "latency", "train", "mask_head"
    opts: Tuple[str, ...] = ()
    matmul_size: int = 2048
    seed: int = 0
    calibrate_random: bool = True  # see benchmark_measure.calibrate_random_norms
    measure: bool = True  # False: no config is built or measured (toy accuracy only)
    toy: Optional[ToySettings] = None  # the toy accuracy columns (see benchmark_toy)


def parse_size(text: str) -> Tuple[int, int]:
    """``"800x1333"`` -> ``(800, 1333)`` (height x width)."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size {text!r} is not HxW (e.g. 800x1333)") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"size {text!r} must be positive")
    return height, width


def resolve_config_path(path: str) -> str:
    """A config file path, ``zoo:`` paths resolved in Detectron2's model zoo."""
    if path.startswith(ZOO_PREFIX):
        from detectron2 import model_zoo

        return model_zoo.get_config_file(path[len(ZOO_PREFIX) :])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    return path


def config_label(path: str) -> str:
    """``configs/PointRend/x.yaml`` -> ``PointRend/x``; ``zoo:A/b.yaml`` -> ``d2zoo/b``."""
    if path.startswith(ZOO_PREFIX):
        return "d2zoo/" + os.path.splitext(os.path.basename(path))[0]
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return f"{parent}/{os.path.splitext(os.path.basename(path))[0]}"


def default_config_specs(configs_dir: str, yardstick: bool = True) -> List[ConfigSpec]:
    """Each method's paper config under ``configs_dir/<Method>/`` (``toy/`` excluded), then the
    Mask R-CNN R50-FPN 3x yardstick.

    A method without an entry in :data:`PAPER_CONFIGS` gets its first non-``Base`` YAML with
    ``R_50`` in the name, preferring ``3x`` over ``1x``, skipping semantic and implicit variants.
    """
    specs = []
    for method_dir in sorted(glob.glob(os.path.join(configs_dir, "*", ""))):
        method = os.path.basename(os.path.dirname(method_dir))
        if method == "toy":
            continue
        chosen = None
        if method in PAPER_CONFIGS and os.path.isfile(method_dir + PAPER_CONFIGS[method]):
            chosen = method_dir + PAPER_CONFIGS[method]
        else:
            names = sorted(
                n
                for n in map(os.path.basename, glob.glob(method_dir + "*.yaml"))
                if not n.startswith("Base")
                and "R_50" in n
                and "semantic" not in n
                and "implicit" not in n
            )
            ranked = sorted(names, key=lambda n: (0 if "3x" in n else 1 if "1x" in n else 2, n))
            chosen = method_dir + ranked[0] if ranked else None
        if chosen:
            specs.append(ConfigSpec(os.path.normpath(chosen)))
        else:
            logger.warning("no paper config found under %s", method_dir)
    if yardstick:
        specs.insert(0, ConfigSpec(YARDSTICK_CONFIG, yardstick=True))
    return specs


def _build(spec: ConfigSpec, settings: BenchmarkSettings):
    """Config (detections fixed, device set) and model (eval mode) for ``spec``."""
    from detectron2.modeling import build_model

    from ..engine.setup import load_config

    opts = list(settings.opts) + ["MODEL.DEVICE", settings.device]
    cfg = load_config(resolve_config_path(spec.path), opts, freeze=False)
    cfg.TEST.DETECTIONS_PER_IMAGE = settings.detections
    overridden = {"TEST.DETECTIONS_PER_IMAGE": settings.detections}
    for key in DETECTION_OVERRIDES:
        node, *path, leaf = key.split(".")
        node = cfg[node]
        for part in path:
            node = node.get(part) if node is not None else None
        if node is not None and leaf in node:
            node[leaf] = 0.0
            overridden[key] = 0.0
    if spec.weights:
        cfg.MODEL.WEIGHTS = spec.weights
    cfg.freeze()
    torch.manual_seed(settings.seed)
    model = build_model(cfg)
    if spec.weights:
        from ..engine.checkpoint import load_weights_for_evaluation

        load_weights_for_evaluation(cfg, model)
    model.eval()
    return cfg, model, overridden


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:500]


def _measure(
    index: int,
    spec: ConfigSpec,
    settings: BenchmarkSettings,
    progress: Callable[[str], None],
) -> dict:
    """All phases for one config (see the module docstring); returns its row."""
    row = {"label": spec.label, "config": spec.path, "yardstick": spec.yardstick}
    row.update(weights=spec.weights or "random", errors={})

    def step_progress(phase, done, total, seconds):
        eta = seconds * (total - done)
        progress(f"{spec.label}: {phase} {done}/{total} ({seconds:.2f} s/step, ETA {eta:.0f} s)")

    progress(f"{spec.label}: build")
    try:
        cfg, model, overridden = _build(spec, settings)
    except Exception as e:
        logger.exception("building %s failed", spec.path)
        row["errors"]["build"] = _error(e)
        return row
    size = settings.size or (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    row.update(
        meta_architecture=cfg.MODEL.META_ARCHITECTURE,
        input_size=list(size),
        detection_overrides=overridden,
        params=sum(p.numel() for p in model.parameters()),
    )
    images = None
    if {"flops", "latency", "mask_head"} - set(settings.skip) or settings.calibrate_random:
        try:
            count = max(1, settings.flop_images)
            images, row["images"] = load_images(
                count, size, cfg.INPUT.FORMAT, settings.dataset, seed=settings.seed
            )
        except Exception as e:
            row["errors"]["images"] = _error(e)
    if images and not spec.weights and settings.calibrate_random:
        progress(f"{spec.label}: calibrate random norms (one inference)")
        try:
            row["calibrated_norms"] = calibrate_random_norms(model, images[0])
            row["weights"] = "random (norm-calibrated)" if row["calibrated_norms"] else "random"
        except Exception as e:
            logger.exception("calibrating %s failed", spec.label)
            row["errors"]["calibrate"] = _error(e)
    if images and "flops" not in settings.skip:
        try:
            row["flops"] = count_flops_over_images(
                model, images[: settings.flop_images], step_progress
            )
        except Exception as e:
            logger.exception("FLOPs of %s failed", spec.label)
            row["errors"]["flops"] = _error(e)
    if images and "latency" not in settings.skip:
        try:
            row["inference"] = time_inference(
                model, images[0], settings.warmup, settings.runs, step_progress
            )
        except Exception as e:
            logger.exception("latency of %s failed", spec.label)
            row["errors"]["latency"] = _error(e)
    wants_head = settings.mask_head_flops
    if images and "mask_head" not in settings.skip and wants_head is not False:
        try:
            if is_point_rend_mask_head(model):
                progress(f"{spec.label}: mask head FLOPs")
                head = point_rend_mask_head_flops(model, images[0].to(model.device))
                side = head["output_side"]
                head["conv_head_same_output"] = conv_mask_head_flops(
                    model.backbone.output_shape()[head_feature(model)].channels,
                    cfg.MODEL.ROI_HEADS.NUM_CLASSES,
                    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM,
                    output_side=side,
                )
                row["mask_head_flops"] = head
            elif wants_head:
                row["errors"]["mask_head"] = "not a PointRend RenderMaskHead with a point head"
        except Exception as e:
            logger.exception("mask-head FLOPs of %s failed", spec.label)
            row["errors"]["mask_head"] = _error(e)
    if "train" not in settings.skip:
        try:
            inputs = synthetic_training_batch(
                settings.train_batch,
                settings.train_size or size,
                _num_classes(cfg),
                settings.train_instances,
                seed=settings.seed,
            )
            row["train"] = time_training_step(
                model, inputs, settings.train_warmup, settings.train_runs, step_progress
            )
        except Exception as e:
            logger.exception("training step of %s failed", spec.label)
            row["errors"]["train"] = _error(e)
    del model
    return row


def head_feature(model) -> str:
    """The first feature map PointRend's mask head reads (for the conv-head comparison)."""
    return model.roi_heads.mask_head.coarse_in_features[0]


def _num_classes(cfg) -> int:
    for key in ("ROI_HEADS", "RETINANET", "FCOS", "YOLACT", "FASTINST", "SEM_SEG_HEAD"):
        node = cfg.MODEL.get(key)
        if node is not None and "NUM_CLASSES" in node:
            return int(node.NUM_CLASSES)
    return 1


def _fill_ratios(document: dict):
    """Latency ratio to the yardstick and achieved GFLOP/s against the matmul ceiling."""
    rows = document["rows"]
    yard = next((r for r in rows if r.get("yardstick") and r.get("inference")), None)
    base = yard["inference"]["latency_ms"]["median"] if yard else None
    ceiling = (document.get("matmul") or {}).get("gflops_per_s")
    for row in rows:
        latency = (row.get("inference") or {}).get("latency_ms")
        row["latency_ratio"] = latency["median"] / base if latency and base else None
        flops = (row.get("flops") or {}).get("gflops")
        if latency and flops and ceiling:
            rate = flops["mean"] / (latency["median"] / 1e3)
            row["achieved_gflops_per_s"] = rate
            row["ceiling_fraction"] = rate / ceiling
        else:
            row["achieved_gflops_per_s"] = row["ceiling_fraction"] = None


def _meta_architecture(spec: ConfigSpec, settings: BenchmarkSettings) -> Optional[str]:
    """``MODEL.META_ARCHITECTURE`` of ``spec`` (None when its config does not load)."""
    from ..engine.setup import load_config

    try:
        cfg = load_config(resolve_config_path(spec.path), list(settings.opts), freeze=False)
    except Exception as e:
        logger.warning("config %s does not load: %s", spec.path, e)
        return None
    return cfg.MODEL.META_ARCHITECTURE


def run_benchmark(
    specs: Sequence[ConfigSpec],
    settings: BenchmarkSettings,
    output_dir: str,
    progress: Optional[Callable[[str], None]] = None,
) -> dict:
    """Measure every spec in turn, then (``settings.toy``) fill in the toy accuracy; write
    ``benchmark.json`` after each row and toy run, and at the end (or when interrupted)
    ``benchmark.md`` and ``benchmark.png``, all under ``output_dir``.

    Returns:
        dict: the JSON document (``machine``, ``settings``, ``matmul``, ``rows``, ``complete``).
    """
    progress = progress or logger.info
    os.makedirs(output_dir, exist_ok=True)
    paths = {ext: os.path.join(output_dir, "benchmark." + ext) for ext in ("json", "md", "png")}
    if settings.dataset is None:
        image_text = f"{settings.flop_images} random images"
    else:
        image_text = f"{settings.flop_images} images of {settings.dataset}"
    if settings.size:
        size_text = "x".join(map(str, settings.size))
    else:
        size_text = "each config's INPUT.MIN_SIZE_TEST x INPUT.MAX_SIZE_TEST"
    detections_policy = (
        f"TEST.DETECTIONS_PER_IMAGE={settings.detections}, score thresholds 0 "
        f"({', '.join(DETECTION_OVERRIDES)} where present)"
    )
    matmul = None
    if settings.measure:
        progress(f"matmul ceiling ({settings.matmul_size}^3 float32 mm)")
        matmul = matmul_rate(settings.matmul_size, device=settings.device)
    document = {
        "machine": machine_info(settings.device),
        "settings": {
            **asdict(settings),
            "flop_images_description": f"{image_text} resized to {size_text}",
            "detections_policy": detections_policy,
        },
        "matmul": matmul,
        "flop_convention": "1 multiply-add = 1 FLOP (fvcore); matmul ceiling n^3/t",
        "rows": [],
        "complete": False,
    }
    start = time.perf_counter()
    try:
        for i, spec in enumerate(specs):
            if not settings.measure:
                row = {"label": spec.label, "config": spec.path, "yardstick": spec.yardstick}
                row.update(meta_architecture=_meta_architecture(spec, settings), errors={})
                document["rows"].append(row)
                continue
            done_time = time.perf_counter() - start
            eta = "" if i == 0 else f", ETA {done_time / i * (len(specs) - i):.0f} s"
            progress(f"config {i + 1}/{len(specs)}: {spec.label}{eta}")

            def config_progress(text, i=i):
                progress(f"[{i + 1}/{len(specs)}] {text}")

            document["rows"].append(_measure(i, spec, settings, config_progress))
            _fill_ratios(document)
            write_json(document, paths["json"])
        if settings.toy is not None:
            for spec, row in zip(specs, document["rows"]):
                if not row.get("meta_architecture"):
                    row["meta_architecture"] = _meta_architecture(spec, settings)
            run_toy_accuracy(
                document["rows"],
                settings.toy,
                output_dir,
                progress,
                on_update=lambda: write_json(document, paths["json"]),
            )
        document["complete"] = True
    finally:
        _fill_ratios(document)
        write_json(document, paths["json"])
        with open(paths["md"], "w") as f:
            f.write(markdown_report(document))
        try:
            write_plot(document, paths["png"])
        except Exception:
            logger.exception("writing %s failed", paths["png"])
    return document
