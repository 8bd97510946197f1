"""Shared by the slow learning tests: train a toy config once per session and read its bars.

Bars (the mask AP etc. a config must reach on the toy data) live in ``configs/toy/bars.yaml`` next
to the configs, each with the value measured when it was set.
"""

import copy
import hashlib
import json
import os

import yaml
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser

import train_net

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_RESULTS = {}  # (config name, *opts) -> (final evaluation results, output dir)
_EVALUATIONS = []  # (config name, weights, opts, results) of evaluate_toy
# The numbers the summary prints: (task, metric) in the order shown.
_SUMMARY_METRICS = (
    ("bbox", "AP"),
    ("segm", "AP"),
    ("boundary", "AP"),
    ("sem_seg", "mIoU"),
    ("sem_seg", "fwIoU"),
    ("sem_seg", "pACC"),
)


def toy_config(name):
    return os.path.join(REPO, "configs", "toy", name)


def bars(config_name):
    """The bars of ``configs/toy/<config_name>`` from ``configs/toy/bars.yaml``."""
    with open(toy_config("bars.yaml")) as f:
        return yaml.safe_load(f)[config_name]


def train_toy(config_name, output_root, *opts):
    """Train ``configs/toy/<config_name>`` as ``train_net.py`` would (once per session and options)
    and return ``(final evaluation results, output dir)``."""
    key = (config_name,) + tuple(opts)
    if key not in _RESULTS:
        stem = config_name.replace(".yaml", "")
        if opts:  # one folder per set of options
            stem += "-" + hashlib.sha1(" ".join(opts).encode()).hexdigest()[:8]
        output_dir = os.path.join(str(output_root), stem)
        argv = ["--config-file", toy_config(config_name), "OUTPUT_DIR", output_dir, *opts]
        results = train_net.main(default_argument_parser().parse_args(argv))
        _RESULTS[key] = (results, output_dir)
    return _RESULTS[key]


def evaluate_toy(config_name, weights, output_dir, *opts):
    """Evaluate ``weights`` with ``configs/toy/<config_name>`` (plus ``opts``) as
    ``train_net.py --eval-only`` would, and return the evaluation results."""
    argv = ["--config-file", toy_config(config_name), "--eval-only"]
    argv += ["MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(output_dir), *opts]
    results = train_net.main(default_argument_parser().parse_args(argv))
    _EVALUATIONS.append((config_name, weights, opts, results))
    return results


def _metrics_text(results):
    return ", ".join(
        f"{task} {metric} {results[task][metric]:.2f}"
        for task, metric in _SUMMARY_METRICS
        if task in results and metric in results[task]
    )


def summary_lines():
    """One line per toy training (and extra evaluation) of this session, with its main metrics."""
    lines = []
    for (config_name, *opts), (results, _) in _RESULTS.items():
        extra = f" {' '.join(opts)}" if opts else ""
        lines.append(f"{config_name}{extra}: {_metrics_text(results)}")
    for config_name, weights, opts, results in _EVALUATIONS:
        extra = f" {' '.join(opts)}" if opts else ""
        trained = os.path.basename(os.path.dirname(str(weights)))
        lines.append(
            f"{config_name} --eval-only{extra} ({trained}'s weights): {_metrics_text(results)}"
        )
    return lines


def logged_loss(metrics_file, first, key="total_loss", count=2):
    """Mean of ``key`` over the first (or last) ``count`` rows of Detectron2's metrics.json (one
    row every 20 iterations, each the median of its window)."""
    with open(metrics_file) as f:
        rows = [json.loads(line) for line in f if f'"{key}"' in line]
    rows = rows[:count] if first else rows[-count:]
    return sum(r[key] for r in rows) / len(rows)


def assert_losses_fell(metrics_file, factors):
    """Each loss ``key`` ends below ``factors[key]`` times where it started."""
    for key, factor in factors.items():
        start, end = logged_loss(metrics_file, True, key), logged_loss(metrics_file, False, key)
        assert end < factor * start, f"{key}: {start:.3f} -> {end:.3f}"


YARDSTICK = "mask_rcnn.yaml"


def assert_learns_and_holds_to_the_yardstick(config_name, output_root):
    """Train ``config_name`` and the yardstick (each once per session) and check what the config's
    bars ask for: its losses fell (``loss_factors``), its ``segm_AP`` (and ``bbox_AP``, if set)
    reached the bar, and each ``minus_yardstick`` paired difference (its AP minus the yardstick's,
    per task) stayed above its measured lower end.

    Returns:
        ``(results, yardstick results)``.
    """
    results, output_dir = train_toy(config_name, output_root)
    yardstick, _ = train_toy(YARDSTICK, output_root)
    bar = bars(config_name)
    assert_losses_fell(os.path.join(output_dir, "metrics.json"), bar["loss_factors"])
    assert results["segm"]["AP"] >= bar["segm_AP"], results["segm"]
    if "bbox_AP" in bar:
        assert results["bbox"]["AP"] >= bar["bbox_AP"], results["bbox"]
    for task, lowest in bar["minus_yardstick"].items():
        difference = results[task]["AP"] - yardstick[task]["AP"]
        assert difference >= lowest, (task, difference, results[task], yardstick[task])
    return results, yardstick


# ------------------------------------------------------------------------------ memorisation
MEMORISE_IMAGES = 4


def memorisation_dataset(source, count=MEMORISE_IMAGES):
    """Register (once) and return the name of a dataset of the first ``count`` images of dataset
    ``source`` with at least two instances (or, for semantic segmentation, any ``count``), with
    ``source``'s metadata: trained on and evaluated on, it measures memorisation."""
    name = f"{source}_memorise{count}"
    if name in DatasetCatalog.list():
        return name
    semantic = MetadataCatalog.get(source).get("evaluator_type") == "sem_seg"
    dicts = [d for d in DatasetCatalog.get(source) if semantic or len(d["annotations"]) >= 2]
    dicts = copy.deepcopy(dicts[:count])
    assert len(dicts) == count, f"{source} has fewer than {count} usable images"
    DatasetCatalog.register(name, lambda: copy.deepcopy(dicts))
    metadata = {k: v for k, v in MetadataCatalog.get(source).as_dict().items() if k != "name"}
    metadata.pop("json_file", None)  # the evaluator converts the subset's dicts
    MetadataCatalog.get(name).set(**metadata)
    return name


def memorise(config_name, output_root, *opts):
    """Train ``config_name`` on the :func:`memorisation_dataset` of its training set with the
    schedule of its ``memorise`` entry in bars.yaml (``iterations``, and ``opts`` if any), from the
    config's own initial weights, evaluate on the same images, and return ``(results, output
    dir)`` (once per session and options)."""
    spec = bars(config_name)["memorise"]
    from projects.engine.setup import load_config

    cfg = load_config(toy_config(config_name), list(opts))
    name = memorisation_dataset(cfg.DATASETS.TRAIN[0])
    iterations = int(spec["iterations"])
    schedule = [
        "DATASETS.TRAIN", f"('{name}',)",
        "DATASETS.TEST", f"('{name}',)",
        "SOLVER.MAX_ITER", str(iterations),
        "SOLVER.STEPS", f"({int(iterations * 0.8)},)",
        "SOLVER.CHECKPOINT_PERIOD", str(iterations),
        "TEST.EVAL_PERIOD", "0",
        *[str(v) for v in spec.get("opts", [])],
    ]  # fmt: skip
    return train_toy(config_name, os.path.join(str(output_root), "memorise"), *schedule, *opts)
