"""Toy accuracy for the benchmark: each method trained and evaluated on the bundled toy data.

Every benchmarked config stands for its method; the method's toy config (``configs/toy/``: a
CPU-sized model, all toy configs sharing one training budget) is trained and evaluated by
``train_net.py`` in a subprocess, its log streamed to the progress callback and saved as
``<output>/toy/<name>/train_net.log``. The results are read from the run's ``metrics.json`` (the
record Detectron2's ``EvalHook`` writes after the last iteration): COCO box / mask / boundary AP,
or mIoU for semantic segmentation.

Which toy config stands for a config (:func:`toy_config_for`): :data:`TOY_CONFIGS`, by the
config's method (the folder ``configs/<Method>/``; ``Detectron2`` for ``zoo:`` configs) and task
(:func:`config_task`, from ``MODEL.META_ARCHITECTURE``); a config under ``configs/toy/`` stands
for itself. Every toy config (:func:`toy_config_files`) is trained once per benchmark; those no
benchmarked config maps to get rows of their own.

A finished run is reused (not retrained) when its ``toy_accuracy.json`` was written for the same
full config (the SHA-256 of the merged config, output directory and overrides included).
"""

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..engine.checkpoint import atomic_write

logger = logging.getLogger(__name__)

__all__ = [
    "SEMANTIC_META_ARCHITECTURES",
    "TOY_CONFIGS",
    "ToySettings",
    "config_method",
    "config_task",
    "read_final_results",
    "run_toy_accuracy",
    "summarize_results",
    "toy_config_files",
    "toy_config_for",
    "train_toy_config",
]

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZOO_PREFIX = "zoo:"
# The toy config (a file of configs/toy/) that stands for a method's configs, by the method's
# config folder (configs/<Method>/; "Detectron2" for its model zoo, i.e. the yardstick) and task
# (see config_task). A new method adds its toy config to configs/toy/, its bars to
# configs/toy/bars.yaml and its entry here, e.g. "BlendMask": {"instance": "blendmask.yaml"}.
TOY_CONFIGS = {
    "Detectron2": {"instance": "mask_rcnn.yaml", "semantic": "semantic_fpn.yaml"},
    "PointRend": {"instance": "pointrend.yaml", "semantic": "pointrend_semseg.yaml"},
}
# Meta-architectures whose task is semantic segmentation (evaluated by mIoU); every other one is
# taken as instance segmentation (box, mask and boundary AP).
SEMANTIC_META_ARCHITECTURES = ("SemanticSegmentor",)
TOY_FOLDER = "toy"  # configs/toy/<name>.yaml stands for itself
NOT_TOY_CONFIGS = ("bars.yaml",)  # YAML files of configs/toy/ that are no configs (nor Base-*)
RESULT_FILE = "toy_accuracy.json"  # written in a run's folder once it has finished
LOG_FILE = "train_net.log"  # the subprocess's stdout and stderr
# Summary fields of a row's "toy" entry: (field, task, metric) of Detectron2's evaluation results.
SUMMARY_METRICS = (
    ("bbox_AP", "bbox", "AP"),
    ("segm_AP", "segm", "AP"),
    ("boundary_AP", "boundary", "AP"),
    ("mIoU", "sem_seg", "mIoU"),
)


@dataclass
class ToySettings:
    """How toy configs are trained: ``opts`` (``KEY VALUE`` overrides for every toy run, e.g.
    ``("SOLVER.MAX_ITER", "5")`` for a quick check: this changes the shared budget), whether to
    ``retrain`` runs that have finished already, where the toy configs and ``train_net.py`` are."""

    opts: Tuple[str, ...] = ()
    retrain: bool = False
    toy_dir: str = field(default_factory=lambda: os.path.join(_REPO, "configs", TOY_FOLDER))
    train_net: str = field(default_factory=lambda: os.path.join(_REPO, "train_net.py"))


class ToyRunError(RuntimeError):
    """A toy config that could not be trained or evaluated (the message says why)."""


# ---------------------------------------------------------------- which toy config
def config_method(path: str) -> str:
    """The method a config belongs to: ``configs/PointRend/x.yaml`` -> ``PointRend``,
    ``zoo:...`` -> ``Detectron2``, ``configs/toy/x.yaml`` -> ``toy``."""
    if path.startswith(ZOO_PREFIX):
        return "Detectron2"
    return os.path.basename(os.path.dirname(os.path.abspath(path)))


def config_task(meta_architecture: str) -> str:
    """``"semantic"`` for :data:`SEMANTIC_META_ARCHITECTURES`, else ``"instance"``."""
    return "semantic" if meta_architecture in SEMANTIC_META_ARCHITECTURES else "instance"


def toy_config_for(path: str, meta_architecture: str, toy_dir: str) -> str:
    """The toy config that stands for config ``path`` (see :data:`TOY_CONFIGS`).

    Args:
        path: a config file or ``zoo:<model-zoo path>``.
        meta_architecture: its ``MODEL.META_ARCHITECTURE`` (gives the task).
        toy_dir: the folder of the toy configs.

    Raises:
        LookupError: the method has no toy config for this task, or it names a missing file.
    """
    method = config_method(path)
    if method == TOY_FOLDER and not path.startswith(ZOO_PREFIX):
        return path
    task = config_task(meta_architecture)
    name = TOY_CONFIGS.get(method, {}).get(task)
    if name is None:
        raise LookupError(
            f"no toy config for {method} ({task}, {meta_architecture}): add one to "
            "projects.evaluation.benchmark_toy.TOY_CONFIGS"
        )
    toy = os.path.join(toy_dir, name)
    if not os.path.isfile(toy):
        raise LookupError(f"toy config {toy!r} of {method} ({task}) does not exist")
    return toy


def toy_config_files(toy_dir: str) -> List[str]:
    """Every toy config in ``toy_dir``: its YAML files but ``Base-*`` and :data:`NOT_TOY_CONFIGS`
    (sorted by name)."""
    names = sorted(
        n
        for n in os.listdir(toy_dir)
        if n.endswith(".yaml") and not n.startswith("Base") and n not in NOT_TOY_CONFIGS
    )
    return [os.path.join(toy_dir, n) for n in names]


# ---------------------------------------------------------------- results of a run
def read_final_results(output_dir: str) -> Tuple[Dict[str, Dict[str, float]], int]:
    """The last evaluation results in ``output_dir/metrics.json`` and their iteration.

    Detectron2's ``EvalHook`` stores the results flattened (``"segm/AP"``; with several test
    datasets ``"<dataset>/segm/AP"``) and its writer appends them as one record after the last
    iteration. They are returned nested again: ``{"segm": {"AP": ...}, ...}``.

    Raises:
        ToyRunError: no ``metrics.json``, or no evaluation record in it.
    """
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        raise ToyRunError(f"{path} does not exist")
    record = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut short by a killed run
            if any(k.endswith(("/AP", "/mIoU", "/PQ")) for k in entry):
                record = entry
    if record is None:
        raise ToyRunError(f"{path} holds no evaluation results (is DATASETS.TEST empty?)")
    results: Dict[str, Dict[str, float]] = {}
    for key, value in record.items():
        if "/" in key:
            task, metric = key.rsplit("/", 1)
            results.setdefault(task, {})[metric] = value
    return results, int(record.get("iteration", -1))


def summarize_results(results: Dict[str, Dict[str, float]]) -> Dict[str, Optional[float]]:
    """``bbox_AP``, ``segm_AP``, ``boundary_AP``, ``mIoU`` (see :data:`SUMMARY_METRICS`) from
    :func:`read_final_results`'s results; None for a task that was not evaluated. With several
    test datasets, the first one's."""
    summary = {}
    for name, task, metric in SUMMARY_METRICS:
        tasks = [t for t in results if t == task or t.endswith("/" + task)]
        summary[name] = results[tasks[0]].get(metric) if tasks else None
    return summary


# ---------------------------------------------------------------- running train_net.py
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b")


def run_train_net(
    argv: Sequence[str], log_path: str, echo: Callable[[str], None]
) -> Tuple[int, List[str]]:
    """Run ``python <argv>`` in a subprocess, each output line echoed and written to
    ``log_path``; returns its exit code and last output lines. Ctrl-C stops it too."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    tail: deque = deque(maxlen=40)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
        )
        try:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                line = line.rstrip("\n")
                tail.append(line)
                echo(line)
            proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        finally:
            proc.stdout.close()
    return proc.returncode, list(tail)


def _failure_line(lines: Sequence[str]) -> str:
    """The exception line of a traceback in ``lines``, else the last non-empty line."""
    lines = [line.strip() for line in lines if line.strip()]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line
    return lines[-1] if lines else "no output"


def _config_digest(config: str, opts: Sequence[str]) -> str:
    """SHA-256 of the full config ``train_net.py`` runs with (what its config.yaml holds)."""
    from ..engine.setup import load_config

    return hashlib.sha256(load_config(config, list(opts)).dump().encode("utf-8")).hexdigest()


def train_toy_config(
    config: str,
    output_dir: str,
    settings: ToySettings,
    echo: Callable[[str], None] = logger.info,
) -> dict:
    """Train and evaluate toy config ``config`` with ``train_net.py`` in ``output_dir`` (or reuse
    the finished run there, unless ``settings.retrain``).

    Returns:
        dict: ``config``, ``output_dir``, ``log``, ``reused``, ``iteration`` (of the evaluation,
        i.e. the iterations trained), ``seconds`` (of training + evaluation), the summary of
        :func:`summarize_results` and the full ``results``.

    Raises:
        ToyRunError: the config does not load, ``train_net.py`` failed, or no results.
    """
    opts = [*settings.opts, "OUTPUT_DIR", output_dir]
    stamp_path = os.path.join(output_dir, RESULT_FILE)
    log_path = os.path.join(output_dir, LOG_FILE)
    try:
        digest = _config_digest(config, opts)
    except Exception as e:
        raise ToyRunError(f"{config} does not load: {type(e).__name__}: {e}") from e
    entry = {"config": config, "output_dir": output_dir, "log": log_path}
    if not settings.retrain and os.path.isfile(stamp_path):
        try:
            with open(stamp_path) as f:
                stamp = json.load(f)
        except ValueError:
            stamp = {}
        if stamp.get("config_sha256") == digest and "entry" in stamp:
            echo(f"reusing the finished run in {output_dir} (--toy-retrain to train again)")
            return {**entry, **stamp["entry"], "reused": True}
        echo(f"{output_dir} holds a run of another config: training again")
    os.makedirs(output_dir, exist_ok=True)
    for name in (RESULT_FILE, "metrics.json"):  # metrics.json is appended to, never rewritten
        if os.path.exists(os.path.join(output_dir, name)):
            os.remove(os.path.join(output_dir, name))
    argv = [settings.train_net, "--config-file", config, *opts]
    echo("python " + " ".join(argv))
    start = time.perf_counter()
    code, tail = run_train_net(argv, log_path, echo)
    seconds = time.perf_counter() - start
    if code != 0:
        raise ToyRunError(
            f"train_net.py exited with {code}: {_failure_line(tail)} (log: {log_path})"
        )
    results, iteration = read_final_results(output_dir)
    done = {"iteration": iteration, "seconds": seconds, **summarize_results(results)}
    done["results"] = results
    stamp = {"config_sha256": digest, "opts": opts, "entry": done}
    text = json.dumps(stamp, indent=2)
    atomic_write(stamp_path, lambda f: f.write(text.encode("utf-8")))
    return {**entry, **done, "reused": False}


# ---------------------------------------------------------------- the benchmark's toy phase
def _error(e: BaseException) -> str:
    text = str(e) if isinstance(e, (ToyRunError, LookupError)) else f"{type(e).__name__}: {e}"
    return text[:500]


def run_toy_accuracy(
    rows: List[dict],
    settings: ToySettings,
    output_dir: str,
    progress: Callable[[str], None],
    on_update: Callable[[], None] = lambda: None,
):
    """Fill each row's ``toy`` entry (or ``errors["toy"]``): its method's toy config trained and
    evaluated (see the module docstring), each toy config once, in ``output_dir/toy/<name>/``.

    Args:
        rows: benchmark rows with ``config`` and ``meta_architecture`` (rows without the latter
            have a config that does not load). A row is appended for each toy config no row
            maps to (``toy_only``), so that every toy config is trained.
        settings: how to train.
        output_dir: the benchmark's output folder.
        progress: gets progress messages and the subprocess's log lines.
        on_update: called after each toy config (to save the rows).
    """
    from .benchmark import config_label  # not at import time: benchmark imports this module

    wanted: Dict[str, Tuple[str, List[dict]]] = {}  # absolute path: (path, rows)
    for row in rows:
        try:
            if not row.get("meta_architecture"):
                raise LookupError("the config does not load: no toy config")
            toy = toy_config_for(row["config"], row["meta_architecture"], settings.toy_dir)
        except LookupError as e:
            row.setdefault("errors", {})["toy"] = _error(e)
            continue
        wanted.setdefault(os.path.abspath(toy), (toy, []))[1].append(row)
    for toy in toy_config_files(settings.toy_dir):
        if os.path.abspath(toy) not in wanted:
            row = {"label": config_label(toy), "config": toy, "yardstick": False}
            row.update(toy_only=True, errors={})
            rows.append(row)
            wanted[os.path.abspath(toy)] = (toy, [row])
    for toy, row_list in wanted.values():
        for row in row_list:
            row["toy"] = {"config": toy, "label": config_label(toy), "pending": True}
    on_update()
    trained_seconds, trained = 0.0, 0
    for i, (toy, row_list) in enumerate(wanted.values()):
        name = os.path.splitext(os.path.basename(toy))[0]
        run_dir = os.path.join(output_dir, "toy", name)
        label = config_label(toy)
        eta = ""
        if trained:
            eta = f", ETA {trained_seconds / trained * (len(wanted) - i):.0f} s if none is reused"
        progress(f"toy accuracy {i + 1}/{len(wanted)}: {label} ({len(row_list)} row(s){eta})")

        def echo(line, label=label):
            progress(f"{label} | {line}")

        error = None
        try:
            entry = train_toy_config(toy, run_dir, settings, echo)
            if not entry["reused"]:
                trained_seconds += entry["seconds"]
                trained += 1
        except Exception as e:
            if not isinstance(e, ToyRunError):
                logger.exception("toy run of %s failed", toy)
            entry = {"config": toy, "output_dir": run_dir, "log": os.path.join(run_dir, LOG_FILE)}
            error = _error(e)
        for row in row_list:
            row["toy"] = {"label": label, **entry}
            if error:
                row.setdefault("errors", {})["toy"] = error
        progress(f"{label}: " + (error or _summary_text(entry)))
        on_update()


def _summary_text(entry: dict) -> str:
    parts = [
        f"{name} {entry[name]:.2f}" for name, _, _ in SUMMARY_METRICS if entry.get(name) is not None
    ]
    reused = ", reused" if entry.get("reused") else ""
    return f"{', '.join(parts) or 'no AP / mIoU'} after {entry.get('iteration')} iterations{reused}"
