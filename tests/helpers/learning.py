"""Shared by the slow learning tests: train a toy config once per session and read its bars.

Bars (the mask AP etc. a config must reach on the toy data) live in ``configs/toy/bars.yaml`` next
to the configs, each with the value measured when it was set.
"""

import copy
import json
import os

import yaml
from detectron2.data import DatasetCatalog, MetadataCatalog

from tests.helpers.toy_jobs import ToyJob, existing_pool, session_pool

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


# ------------------------------------------------------------------------------ toy runs
def train_job(config_name, *opts):
    """The run that trains ``configs/toy/<config_name>`` (plus ``opts``) as ``train_net.py``
    would."""
    return ToyJob("train", config_name, tuple(str(o) for o in opts))


def evaluate_job(config_name, of, *opts):
    """The run that evaluates the final weights of run ``of`` with ``configs/toy/<config_name>``
    (plus ``opts``) as ``train_net.py --eval-only`` would."""
    return ToyJob("evaluate", config_name, tuple(str(o) for o in opts), of=of)


def train_toy(config_name, output_root, *opts):
    """Train ``configs/toy/<config_name>`` as ``train_net.py`` would (once per session and options,
    in the session's pool of toy runs under ``output_root``) and return ``(final evaluation
    results, output dir)``."""
    pool = session_pool(output_root)
    job = train_job(config_name, *opts)
    return pool.result(job), pool.output_dir(job)


def evaluate_toy(config_name, weights_of, output_root, *opts):
    """Evaluate the final weights of run ``weights_of`` with ``configs/toy/<config_name>`` (plus
    ``opts``) as ``train_net.py --eval-only`` would, and return the evaluation results."""
    return session_pool(output_root).result(evaluate_job(config_name, weights_of, *opts))


def _metrics_text(results):
    return ", ".join(
        f"{task} {metric} {results[task][metric]:.2f}"
        for task, metric in _SUMMARY_METRICS
        if task in results and metric in results[task]
    )


def summary_lines():
    """One line per toy run of this session: its main metrics, its time and threads."""
    pool = existing_pool()
    if pool is None:
        return []
    lines = []
    for state in pool.finished():
        text = "failed" if state.error else (_metrics_text(state.results or {}) or "done")
        timing = f"{state.seconds:.0f} s, {state.threads} thread(s)"
        lines.append(f"{state.job.label()}: {text} [{timing}]")
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
MEMORISE_ITERATIONS = 100  # the schedule of a config with no ``memorise`` entry yet


def memorisation_dataset_name(source, count=MEMORISE_IMAGES):
    """The name :func:`memorisation_dataset` registers for ``source``."""
    return f"{source}_memorise{count}"


def memorisation_dataset(source, count=MEMORISE_IMAGES):
    """Register (once) and return the name of a dataset of the first ``count`` images of dataset
    ``source`` with at least two instances (or, for semantic segmentation, any ``count``), with
    ``source``'s metadata: trained on and evaluated on, it measures memorisation."""
    name = memorisation_dataset_name(source, count)
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


def memorise_schedule(config_name, *opts):
    """``(source, schedule)``: the training set whose :func:`memorisation_dataset` ``config_name``
    (plus ``opts``) memorises, and the options of the schedule of its ``memorise`` entry in
    bars.yaml (``iterations``, and ``opts`` if any) on that dataset."""
    from projects.engine.setup import load_config

    try:
        spec = bars(config_name).get("memorise") or {}
    except KeyError:  # a config whose bars are still to be measured
        spec = {}
    source = load_config(toy_config(config_name), list(opts)).DATASETS.TRAIN[0]
    name = memorisation_dataset_name(source)
    iterations = int(spec.get("iterations", MEMORISE_ITERATIONS))
    schedule = [
        "DATASETS.TRAIN", f"('{name}',)",
        "DATASETS.TEST", f"('{name}',)",
        "SOLVER.MAX_ITER", str(iterations),
        "SOLVER.STEPS", f"({int(iterations * 0.8)},)",
        "SOLVER.CHECKPOINT_PERIOD", str(iterations),
        "TEST.EVAL_PERIOD", "0",
        *[str(v) for v in spec.get("opts", [])],
    ]  # fmt: skip
    return source, schedule


def memorise_job(config_name, *opts):
    """The run that trains ``config_name`` (plus ``opts``, after the schedule's) on the
    :func:`memorisation_dataset` of its training set with :func:`memorise_schedule`, from the
    config's own initial weights, and evaluates it on the same images."""
    return ToyJob("memorise", config_name, tuple(str(o) for o in opts))


def memorise(config_name, output_root, *opts):
    """Run :func:`memorise_job` (once per session and options) and return ``(results, output
    dir)``."""
    pool = session_pool(output_root)
    job = memorise_job(config_name, *opts)
    return pool.result(job), pool.output_dir(job)
