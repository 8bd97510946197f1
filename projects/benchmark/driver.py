"""Benchmark every method's configs: parameters, FLOPs, latency, training step, memory.

One row per config (:class:`~.specs.ConfigSpec`; by default every registered method's benchmark
configs, :func:`~.specs.default_config_specs`), measured in this order (each phase may fail on
its own; its error is recorded in the row and the next phase still runs; a config that does not
build yields a row with only that error):

1. build (random weights, or ``weights``) with the number of detections fixed
   (:func:`~.contract.fix_detections`: every registered score-threshold key set to 0),
   parameter count;
2. fvcore FLOPs over N images (mean and spread), with every method's FLOP handles;
3. inference latency on one image (warm-up, then N timed runs);
4. per-box FLOPs of the mask head, by the method whose ``head_flops`` counts it;
5. training step time and peak memory on a synthetic batch (changes the weights: last).

With ``settings.toy``, each row then gets the toy accuracy of the toy config that stands for it
(:mod:`.toy`; every registered toy config is trained, those no row maps to get rows of their
own). ``settings.measure`` False skips the measurements (rows with only the toy accuracy).

After each row (and each toy run) the JSON document is rewritten atomically, so an interrupted run
keeps what was measured. ``tools/benchmark.py`` is the command line.
"""

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence, Tuple

import torch

from ..methods import resolve_config, score_threshold_keys
from .contract import fix_detections, flop_handles, mask_head_flops, num_classes
from .measure import (
    calibrate_random_norms,
    count_flops_over_images,
    load_images,
    matmul_rate,
    synthetic_training_batch,
    time_inference,
    time_training_step,
)
from .report import machine_info, markdown_report, write_json, write_plot
from .specs import ConfigSpec
from .toy import ToySettings, run_toy_accuracy

logger = logging.getLogger(__name__)

__all__ = ["BenchmarkSettings", "parse_size", "run_benchmark"]

PHASES = ("flops", "latency", "mask_head", "train")
NO_HEAD_COUNTER = "no registered method's head_flops counts this model's mask head"


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
    mask_head_flops: Optional[bool] = None  # None: where a method counts it; True: required
    skip: Tuple[str, ...] = ()  # phases to skip: see PHASES
    opts: Tuple[str, ...] = ()
    matmul_size: int = 2048
    seed: int = 0
    calibrate_random: bool = True  # see measure.calibrate_random_norms
    measure: bool = True  # False: no config is built or measured (toy accuracy only)
    toy: Optional[ToySettings] = None  # the toy accuracy columns (see .toy)


def parse_size(text: str) -> Tuple[int, int]:
    """``"800x1333"`` -> ``(800, 1333)`` (height x width)."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size {text!r} is not HxW (e.g. 800x1333)") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"size {text!r} must be positive")
    return height, width


def _build(spec: ConfigSpec, settings: BenchmarkSettings):
    """Config (detections fixed, device set) and model (eval mode) for ``spec``."""
    from detectron2.modeling import build_model

    from ..engine.setup import load_config

    opts = list(settings.opts) + ["MODEL.DEVICE", settings.device]
    cfg = load_config(resolve_config(spec.path), opts, freeze=False)
    overridden = fix_detections(cfg, settings.detections)
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


def _base_row(spec: ConfigSpec) -> dict:
    row = {"label": spec.label, "config": spec.path, "yardstick": spec.yardstick}
    row.update(method=spec.method, toy_config=spec.toy)
    return row


def _measure(
    spec: ConfigSpec,
    settings: BenchmarkSettings,
    handles: dict,
    progress: Callable[[str], None],
) -> dict:
    """All phases for one config (see the module docstring); returns its row."""
    row = _base_row(spec)
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
                model, images[: settings.flop_images], step_progress, handles
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
            progress(f"{spec.label}: mask head FLOPs")
            head = mask_head_flops(cfg, model, images[0].to(model.device), spec.method)
            if head is not None:
                row["mask_head_flops"] = head
            elif wants_head:
                row["errors"]["mask_head"] = NO_HEAD_COUNTER
        except Exception as e:
            logger.exception("mask-head FLOPs of %s failed", spec.label)
            row["errors"]["mask_head"] = _error(e)
    if "train" not in settings.skip:
        try:
            classes, row["num_classes_key"] = num_classes(cfg, spec.num_classes_key)
            inputs = synthetic_training_batch(
                settings.train_batch,
                settings.train_size or size,
                classes,
                settings.train_instances,
                seed=settings.seed,
                sem_seg_background=(
                    cfg.INPUT.INSTANCE_SEM_SEG.BACKGROUND
                    if cfg.INPUT.INSTANCE_SEM_SEG.ENABLED
                    else None
                ),
            )
            row["train"] = time_training_step(
                model, inputs, settings.train_warmup, settings.train_runs, step_progress
            )
        except Exception as e:
            logger.exception("training step of %s failed", spec.label)
            row["errors"]["train"] = _error(e)
    del model
    return row


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
        f"({', '.join(score_threshold_keys())} where present)"
    )
    matmul, handles = None, {}
    if settings.measure:
        handles = flop_handles()
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
                document["rows"].append({**_base_row(spec), "errors": {}})
                continue
            done_time = time.perf_counter() - start
            eta = "" if i == 0 else f", ETA {done_time / i * (len(specs) - i):.0f} s"
            progress(f"config {i + 1}/{len(specs)}: {spec.label}{eta}")

            def config_progress(text, i=i):
                progress(f"[{i + 1}/{len(specs)}] {text}")

            document["rows"].append(_measure(spec, settings, handles, config_progress))
            _fill_ratios(document)
            write_json(document, paths["json"])
        if settings.toy is not None:
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
