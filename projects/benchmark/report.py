"""Benchmark output: machine description, markdown table, JSON (written atomically), PNG plot."""

import datetime
import json
import logging
import os
import platform
from typing import Dict, List, Optional

import torch

from ..engine.checkpoint import atomic_write

logger = logging.getLogger(__name__)

__all__ = [
    "MEASURE_COLUMNS",
    "TABLE_COLUMNS",
    "TOY_COLUMNS",
    "machine_info",
    "markdown_report",
    "row_label",
    "table_columns",
    "write_json",
    "write_plot",
]

FLOP_CONVENTION = (
    "FLOPs are fvcore's: 1 multiply-add = 1 FLOP (the papers' convention); the matmul "
    "ceiling is n^3 / t in the same unit (the '2 FLOPs per multiply-add' convention doubles both)"
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _detectron2_build() -> str:
    import detectron2

    try:
        from detectron2 import _C
    except ImportError as e:
        return f"detectron2 {detectron2.__version__}, no _C ({e})"
    if getattr(_C, "PORTABLE", False):
        return f"detectron2 {detectron2.__version__}, portable _C (PyTorch/torchvision ops)"
    return f"detectron2 {detectron2.__version__}, compiled _C"


def machine_info(device: str) -> Dict[str, object]:
    """CPU model, core counts, torch threads and version, Detectron2 build, device."""
    info = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "detectron2": _detectron2_build(),
        "python": platform.python_version(),
        "device": device,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _get(row: dict, *keys):
    for key in keys:
        if not isinstance(row, dict) or row.get(key) is None:
            return None
        row = row[key]
    return row


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _spread(summary: Optional[dict], spec: str) -> str:
    if not summary:
        return "-"
    return f"{summary['median']:{spec}} [{summary['p10']:{spec}}-{summary['p90']:{spec}}]"


def _measure_cells(row: dict) -> List[str]:
    flops = _get(row, "flops", "gflops")
    flops_cell = "-" if not flops else f"{flops['mean']:.1f} ± {flops['std']:.1f} (n={flops['n']})"
    head = row.get("mask_head_flops") or {}
    head_cell = "-"
    if head.get("gflops_per_box") is not None:
        head_cell = f"{head['gflops_per_box']:.3g}"
        if head.get("output_side") is not None:
            head_cell += f" @{head['output_side']}"
        conv = head.get("conv_head_same_output")
        if conv:
            head_cell += f" (4-conv: {conv['gflops_per_box']:.3g})"
    rate = row.get("achieved_gflops_per_s")
    rate_cell = "-" if rate is None else f"{rate:.1f} ({100 * row['ceiling_fraction']:.0f}%)"
    size = row.get("input_size")
    return [
        row.get("weights") or "-",
        _fmt(row.get("params") and row["params"] / 1e6, ".2f"),
        "-" if not size else f"{size[0]}x{size[1]}",
        flops_cell,
        _fmt(_get(row, "inference", "detections"), ".0f"),
        _spread(_get(row, "inference", "latency_ms"), ".0f"),
        _fmt(row.get("latency_ratio"), ".2f"),
        rate_cell,
        _spread(_get(row, "train", "step_ms"), ".0f"),
        _fmt(_get(row, "train", "peak_mem_mb"), ".0f"),
        head_cell,
    ]


def _toy_cells(row: dict) -> List[str]:
    toy = row.get("toy") or {}
    if not toy.get("config"):
        return ["-"] * len(TOY_COLUMNS)
    label = toy.get("label") or os.path.splitext(os.path.basename(toy["config"]))[0]
    if toy.get("pending"):
        label += " (pending)"
    elif toy.get("iteration") is not None:
        label += f", {toy['iteration']} it" + (", reused" if toy.get("reused") else "")
    metrics = ("bbox_AP", "segm_AP", "boundary_AP", "mIoU")
    return [label] + [_fmt(toy.get(name), ".2f") for name in metrics]


def row_label(row: dict) -> str:
    """The row's label, marked as the yardstick (unless its label says so already)."""
    label = row["label"]
    if row.get("yardstick") and "yardstick" not in label.lower():
        label += " (yardstick)"
    return label


def _row_cells(row: dict, columns: List[str]) -> List[str]:
    status = (
        "ok" if not row.get("errors") else "; ".join(f"{k}: {v}" for k, v in row["errors"].items())
    )
    cells = [row_label(row)]
    if MEASURE_COLUMNS[0] in columns:
        cells += _measure_cells(row)
    if TOY_COLUMNS[0] in columns:
        cells += _toy_cells(row)
    return [c.replace("|", "/").replace("\n", " ") for c in cells + [status]]


MEASURE_COLUMNS = [
    "weights",
    "params (M)",
    "input HxW",
    "GFLOPs mean ± std",
    "dets",
    "latency ms median [p10-p90]",
    "x yardstick",
    "GFLOP/s (% of mm)",
    "train step ms median [p10-p90]",
    "train peak MB",
    "mask head GFLOPs/box",
]
TOY_COLUMNS = ["toy config", "toy box AP", "toy mask AP", "toy boundary AP", "toy mIoU"]
TABLE_COLUMNS = ["config", *MEASURE_COLUMNS, "status"]  # without the toy accuracy


def table_columns(document: dict) -> List[str]:
    """The table's columns: :data:`TABLE_COLUMNS`, with :data:`TOY_COLUMNS` before the status
    when the toy accuracy was asked for, without :data:`MEASURE_COLUMNS` when nothing was
    measured."""
    settings = document["settings"]
    columns = ["config"]
    if settings.get("measure", True):
        columns += MEASURE_COLUMNS
    if settings.get("toy"):
        columns += TOY_COLUMNS
    return columns + ["status"]


def markdown_report(document: dict) -> str:
    """The header (machine, settings, conventions) and one table row per config."""
    machine, settings, ceiling = document["machine"], document["settings"], document["matmul"]
    columns = table_columns(document)
    lines = [
        "# Benchmark" + ("" if document.get("complete") else " (incomplete)"),
        "",
        f"- machine: {machine['cpu']}, {machine['logical_cores']} logical cores "
        f"({machine['usable_cores']} usable), torch threads {machine['torch_threads']}"
        + (f", GPU {machine['gpu']}" if machine.get("gpu") else ""),
        f"- torch {machine['torch']}, {machine['detectron2']}, python {machine['python']}, "
        f"device {machine['device']}, {machine['date']}",
    ]
    if settings.get("measure", True):
        lines += [
            f"- dense float32 mm ({ceiling['n']}^3, best of runs): "
            f"{ceiling['gflops_per_s']:.1f} GFLOP/s (multiply-adds/s)",
            f"- {FLOP_CONVENTION}",
            f"- FLOPs over {settings['flop_images_description']}; latency: batch 1, eval, "
            f"no_grad, {settings['warmup']} warm-up + {settings['runs']} timed runs on the first "
            f"image; train step: forward+backward+SGD on {settings['train_batch']} synthetic "
            f"images with {settings['train_instances']} GT instances each, "
            f"{settings['train_warmup']} warm-up + {settings['train_runs']} timed; peak memory "
            f"above the level before the first step (CPU: sampled RSS; CUDA: "
            f"max_memory_allocated)",
            f"- detections fixed: {settings['detections_policy']}",
        ]
    toy = settings.get("toy")
    if toy:
        overrides = " ".join(toy["opts"])
        lines.append(
            "- toy accuracy: each row by the toy config its method declares for it "
            "(BenchmarkConfig.toy; toy configs share one budget, iterations trained shown) "
            "trained from scratch by the launcher (python -m projects.engine.main) on the "
            "bundled toy data and evaluated on its val split: COCO box / mask / boundary AP, or "
            "mIoU for semantic segmentation (%); runs and logs in <output-dir>/toy/<name>/"
            + (f"; toy overrides: {overrides}" if overrides else "")
        )
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in document["rows"]:
        lines.append("| " + " | ".join(_row_cells(row, columns)) + " |")
    return "\n".join(lines) + "\n"


def write_json(document: dict, path: str):
    """Write ``document`` to ``path`` atomically (complete or untouched)."""
    text = json.dumps(document, indent=2, sort_keys=False, default=str)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_plot(document: dict, path: str):
    """Latency (median, p10-p90 bars) against GFLOPs (mean ± std) per config, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    plotted = 0
    for row in document["rows"]:
        flops = _get(row, "flops", "gflops")
        latency = _get(row, "inference", "latency_ms")
        if not flops or not latency:
            continue
        yerr = [[latency["median"] - latency["p10"]], [latency["p90"] - latency["median"]]]
        axes.errorbar(
            [flops["mean"]],
            [latency["median"]],
            xerr=[[flops["std"]], [flops["std"]]],
            yerr=yerr,
            fmt="s" if row.get("yardstick") else "o",
            capsize=3,
            label=row_label(row),
        )
        plotted += 1
    axes.set_xlabel("GFLOPs per image (fvcore, 1 multiply-add = 1 FLOP)")
    axes.set_ylabel("inference latency, ms (median, p10-p90)")
    machine = document["machine"]
    axes.set_title(f"{machine['cpu']} / {machine['device']} / torch {machine['torch']}", fontsize=9)
    axes.grid(True, alpha=0.3)
    if plotted:
        axes.legend(fontsize=7)
    else:
        axes.text(0.5, 0.5, "no row with FLOPs and latency", ha="center", transform=axes.transAxes)
    figure.tight_layout()
    tmp = path + ".tmp.png"
    figure.savefig(tmp, format="png")
    os.replace(tmp, path)
