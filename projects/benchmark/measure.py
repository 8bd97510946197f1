"""Measurements for the benchmark: inputs, FLOPs, latency, training step, memory, matmul rate.

Every timing synchronises CUDA before reading the clock; inference runs in eval mode under
``torch.no_grad`` at batch 1. FLOPs follow fvcore: one multiply-add is one FLOP.
"""

import logging
import math
import os
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage
from torch.nn import functional as F

from ..data.masks import instances_to_sem_seg
from ..evaluation.flops import count_flops

logger = logging.getLogger(__name__)

__all__ = [
    "PeakMemory",
    "calibrate_random_norms",
    "count_flops_over_images",
    "load_images",
    "matmul_rate",
    "summarize",
    "synthetic_training_batch",
    "time_inference",
    "time_training_step",
]

Progress = Callable[[str, int, int, float], None]  # (phase, done, total, seconds per step)


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(values: Sequence[float]) -> Dict[str, float]:
    """Median, mean, std, min, max and the 10/25/75/90th percentiles of ``values``."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return {}
    p10, p25, p50, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90])
    return {
        "n": int(x.size),
        "median": float(p50),
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "min": float(x.min()),
        "max": float(x.max()),
        "p10": float(p10),
        "p25": float(p25),
        "p75": float(p75),
        "p90": float(p90),
        "iqr": float(p75 - p25),
    }


def load_images(
    num: int,
    size: Tuple[int, int],
    input_format: str,
    dataset: Optional[str] = "toy_val",
    seed: int = 0,
) -> Tuple[List[torch.Tensor], str]:
    """``num`` images resized to ``size``, as ``(3, H, W)`` float tensors in ``input_format``.

    Args:
        num: how many (a dataset with fewer images is cycled through).
        size: ``(H, W)``: every image is resized to exactly this (bilinear).
        input_format: ``cfg.INPUT.FORMAT`` (``"BGR"`` / ``"RGB"``).
        dataset: a registered Detectron2 dataset name; None for uniform random images.
        seed: seed of the random images.

    Returns:
        (images, description)
    """
    height, width = size
    if dataset is None:
        generator = torch.Generator().manual_seed(seed)
        images = [torch.rand(3, height, width, generator=generator) * 255 for _ in range(num)]
        return images, f"{num} random images ({height}x{width})"
    from detectron2.data import DatasetCatalog
    from detectron2.data.detection_utils import read_image

    dicts = DatasetCatalog.get(dataset)
    if not dicts:
        raise ValueError(f"dataset {dataset!r} has no images")
    images = []
    for i in range(num):
        array = read_image(dicts[i % len(dicts)]["file_name"], format=input_format)
        image = torch.as_tensor(np.ascontiguousarray(array.transpose(2, 0, 1))).float()
        image = F.interpolate(image[None], size=(height, width), mode="bilinear")[0]
        images.append(image.clamp_(0, 255))
    return images, f"{num} images of {dataset} resized to {height}x{width}"


def _inputs(image: torch.Tensor) -> List[dict]:
    return [{"image": image, "height": image.shape[-2], "width": image.shape[-1]}]


@torch.no_grad()
def calibrate_random_norms(model: torch.nn.Module, image: torch.Tensor) -> int:
    """Rescale the affine parameters of every frozen / eval-mode batch norm of a randomly
    initialised ``model`` so that its output has unit standard deviation on ``image``.

    A random ResNet with identity frozen batch norms has activations that grow by orders of
    magnitude with depth; its RPN then decodes every anchor to the whole image and NMS leaves a
    couple of proposals, so the ROI heads do a fraction of their real work. Calibrated (the
    compute is unchanged: only ``weight`` and ``bias`` are divided by the observed std, in one
    inference pass, in execution order), the model yields the configured number of proposals and
    detections as a trained one does. Do not use it on trained weights.

    Returns:
        int: the number of norm layers rescaled.
    """
    from detectron2.layers import FrozenBatchNorm2d

    def hook(module, inputs, output):
        std = float(output.float().std())
        if not math.isfinite(std) or std <= 0:
            return None
        module.weight.div_(std)
        module.bias.div_(std)
        return output / std

    handles = []
    for module in model.modules():
        frozen = isinstance(module, FrozenBatchNorm2d)
        batch_norm = isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
        if (frozen or batch_norm) and getattr(module, "weight", None) is not None:
            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(_inputs(image.to(next(model.parameters()).device)))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return len(handles)


def count_flops_over_images(
    model: torch.nn.Module,
    images: Sequence[torch.Tensor],
    progress: Optional[Progress] = None,
    handles: Optional[Dict[str, Callable]] = None,
) -> Dict[str, object]:
    """fvcore FLOPs of one inference per image.

    Args:
        model: a Detectron2 model.
        images: ``(3, H, W)`` images in the model's input format.
        progress: gets ``("flops", done, total, seconds)`` after each image.
        handles: fvcore op handles added to the shared ones (see
            :func:`projects.evaluation.flops.count_flops`).

    Returns:
        dict: ``gflops`` (summary of per-image GFLOPs), ``per_image`` (GFLOPs), ``by_operator``
        (GFLOPs of the first image per op), ``unsupported_ops`` (op -> calls, first image).
    """
    per_image, by_operator, unsupported = [], {}, {}
    for i, image in enumerate(images):
        start = time.perf_counter()
        analysis = count_flops(model, image, extra_handles=handles)
        per_image.append(analysis.total() / 1e9)
        if i == 0:
            by_operator = {k: v / 1e9 for k, v in sorted(analysis.by_operator().items())}
            unsupported = dict(sorted(analysis.unsupported_ops().items()))
        if progress:
            progress("flops", i + 1, len(images), time.perf_counter() - start)
    return {
        "gflops": summarize(per_image),
        "per_image": per_image,
        "by_operator": by_operator,
        "unsupported_ops": unsupported,
    }


class PeakMemory:
    """Peak memory while the ``with`` block runs, in bytes above the level at entry.

    CUDA: ``torch.cuda.max_memory_allocated`` (peak stats reset at entry). CPU: the process RSS
    (psutil) sampled every ``interval`` seconds by a background thread, so a peak shorter than the
    interval can be missed.
    """

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.device = device
        self.interval = interval
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_rss_sampled"
        self.peak_bytes = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        import psutil

        self._process = psutil.Process(os.getpid())
        self._base = self._process.memory_info().rss
        self._max = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._max = max(self._max, self._process.memory_info().rss)
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._max, self._process.memory_info().rss)
        self.peak_bytes = max(0, int(peak - self._base))
        return False


def time_inference(
    model: torch.nn.Module,
    image: torch.Tensor,
    warmup: int,
    runs: int,
    progress: Optional[Progress] = None,
) -> Dict[str, object]:
    """Latency of ``model`` on one image: batch 1, eval mode, ``torch.no_grad``.

    Returns:
        dict: ``latency_ms`` (summary), ``detections`` (mean number of output instances),
        ``peak_mem_mb`` and ``mem_kind`` (over the timed runs).
    """
    device = next(model.parameters()).device
    model.eval()
    image = image.to(device)
    times, detections = [], []
    with torch.no_grad():
        for i in range(warmup):
            start = time.perf_counter()
            model(_inputs(image))
            if progress:
                progress("warm-up", i + 1, warmup, time.perf_counter() - start)
        with PeakMemory(device) as memory:
            for i in range(runs):
                _sync(device)
                start = time.perf_counter()
                outputs = model(_inputs(image))
                _sync(device)
                times.append((time.perf_counter() - start) * 1e3)
                if "instances" in outputs[0]:
                    detections.append(len(outputs[0]["instances"]))
                if progress:
                    progress("latency", i + 1, runs, times[-1] / 1e3)
    return {
        "latency_ms": summarize(times),
        "detections": float(np.mean(detections)) if detections else None,
        "peak_mem_mb": memory.peak_bytes / 2**20,
        "mem_kind": memory.kind,
    }


def synthetic_training_batch(
    batch: int,
    size: Tuple[int, int],
    num_classes: int,
    instances_per_image: int = 8,
    seed: int = 0,
    sem_seg_background: Optional[str] = None,
) -> List[dict]:
    """Random images with ``instances_per_image`` ellipse-shaped ground-truth instances each.

    Args:
        sem_seg_background: also give each input the ``sem_seg`` target the mapper derives from
            the masks (``INPUT.INSTANCE_SEM_SEG.ENABLED``), with this ``BACKGROUND``; None: none.

    Returns:
        list[dict]: Detectron2 training inputs: ``image`` ``(3, H, W)``, ``height``, ``width``,
        ``instances`` with ``gt_boxes``, ``gt_classes`` and ``gt_masks`` (:class:`BitMasks`),
        and ``sem_seg`` ``(H, W)`` with ``sem_seg_background``.
    """
    height, width = size
    generator = torch.Generator().manual_seed(seed)
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    inputs = []
    for _ in range(batch):
        wh = torch.rand(instances_per_image, 2, generator=generator) * 0.4 + 0.1
        wh = wh * torch.tensor([width, height])
        x0y0 = torch.rand(instances_per_image, 2, generator=generator)
        x0y0 = x0y0 * (torch.tensor([width, height]) - wh)
        boxes = torch.cat([x0y0, x0y0 + wh], dim=1)
        masks = []
        for x0, y0, x1, y1 in boxes.tolist():
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            masks.append(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1)
        instances = Instances((height, width))
        instances.gt_boxes = Boxes(boxes)
        instances.gt_classes = torch.randint(
            num_classes, (instances_per_image,), generator=generator
        )
        instances.gt_masks = BitMasks(torch.stack(masks))
        image = torch.rand(3, height, width, generator=generator) * 255
        item = {"image": image, "height": height, "width": width, "instances": instances}
        if sem_seg_background is not None:
            item["sem_seg"] = instances_to_sem_seg(
                instances.gt_masks.tensor.numpy(),
                instances.gt_classes.numpy(),
                (height, width),
                num_classes=num_classes,
                background=sem_seg_background,
            )
        inputs.append(item)
    return inputs


def time_training_step(
    model: torch.nn.Module,
    inputs: List[dict],
    warmup: int,
    runs: int,
    progress: Optional[Progress] = None,
    lr: float = 1e-5,
) -> Dict[str, object]:
    """Time forward + backward + SGD step (momentum 0.9) on ``inputs`` (one batch).

    The model is left in training mode with updated weights: rebuild it (or reload weights)
    before using it for anything else.

    Returns:
        dict: ``step_ms`` (summary over the timed steps), ``peak_mem_mb`` above the memory at the
        start of the first (warm-up) step, which includes the optimizer state, and ``mem_kind``.
    """
    device = next(model.parameters()).device
    for item in inputs:
        item["image"] = item["image"].to(device)
        item["instances"] = item["instances"].to(device)
        if "sem_seg" in item:
            item["sem_seg"] = item["sem_seg"].to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    times = []
    with EventStorage(0) as storage, PeakMemory(device) as memory:
        for i in range(warmup + runs):
            _sync(device)
            start = time.perf_counter()
            losses = model(inputs)
            total = sum(losses.values())
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            _sync(device)
            elapsed = time.perf_counter() - start
            storage.step()
            if not math.isfinite(float(total)):
                logger.warning("training loss is %s at step %d (random weights)", total, i)
            if i >= warmup:
                times.append(elapsed * 1e3)
            if progress:
                phase = "train warm-up" if i < warmup else "train"
                done, count = (i + 1, warmup) if i < warmup else (i + 1 - warmup, runs)
                progress(phase, done, count, elapsed)
    return {
        "step_ms": summarize(times),
        "peak_mem_mb": memory.peak_bytes / 2**20,
        "mem_kind": memory.kind,
        "batch": len(inputs),
    }


def matmul_rate(n: int = 2048, runs: int = 5, device: str = "cpu") -> Dict[str, float]:
    """Dense float32 ``torch.mm`` of two ``n x n`` matrices: the machine's practical ceiling.

    Returns:
        dict: ``gflops_per_s`` = ``n**3 / t / 1e9`` for the fastest of ``runs`` (multiply-adds per
        second, the unit fvcore counts FLOPs in; the "2 FLOPs per multiply-add" convention would
        give twice this), ``median_gflops_per_s``, ``n``, ``threads``.
    """
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    torch.mm(a, b)  # warm-up
    times = []
    for _ in range(runs):
        _sync(dev)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(dev)
        times.append(time.perf_counter() - start)
    macs = float(n) ** 3
    return {
        "gflops_per_s": macs / min(times) / 1e9,
        "median_gflops_per_s": macs / float(np.median(times)) / 1e9,
        "n": n,
        "threads": torch.get_num_threads(),
    }
