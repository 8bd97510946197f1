"""Toy accuracy for the benchmark: each method trained and evaluated on the bundled toy data.

The toy config that stands for a row is the one its method declares for the config
(``BenchmarkConfig.toy``, see :mod:`projects.methods`; a toy config stands for itself). It is
trained and evaluated by the launcher (``python -m projects.engine.main``, i.e. ``train_net.py``)
in a subprocess, its log streamed to the progress callback and saved as
``<output>/toy/<name>/train_net.log``. The results are read from the run's ``metrics.json`` (the
record Detectron2's ``EvalHook`` writes after the last iteration): COCO box / mask / boundary AP,
or mIoU for semantic segmentation. Every registered method's ``toy_configs`` are trained once per
benchmark; those no row maps to get rows of their own.

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
from ..methods import registered_methods
from .specs import toy_config_file, toy_label

logger = logging.getLogger(__name__)

__all__ = [
    "LAUNCHER_MODULE",
    "ToyRunError",
    "ToySettings",
    "read_final_results",
    "run_toy_accuracy",
    "run_training",
    "summarize_results",
    "toy_configs_to_train",
    "train_toy_config",
]

# The module the toy runs start (``python -m``): the launcher train_net.py is a script over.
LAUNCHER_MODULE = "projects.engine.main"
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
    ``retrain`` runs that have finished already, and the ``python`` that runs the launcher."""

    opts: Tuple[str, ...] = ()
    retrain: bool = False
    python: str = field(default_factory=lambda: sys.executable)


class ToyRunError(RuntimeError):
    """A toy config that could not be trained or evaluated (the message says why)."""


def toy_configs_to_train() -> List[Tuple[str, str]]:
    """``(method name, toy config name)`` of every registered method's toy configs, in
    registration order."""
    return [(m.name, name) for m in registered_methods() for name in m.toy_configs]


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


# ---------------------------------------------------------------- running the launcher
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b")


def _subprocess_env() -> Dict[str, str]:
    """This environment, with the folder of the ``projects`` package this process imported put
    first on ``PYTHONPATH``: the launcher runs the same code, installed or not."""
    import projects

    root = os.path.dirname(os.path.dirname(os.path.abspath(projects.__file__)))
    path = [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(path))


def run_training(
    argv: Sequence[str], log_path: str, echo: Callable[[str], None], python: str = sys.executable
) -> Tuple[int, List[str]]:
    """Run ``python <argv>`` in a subprocess, each output line echoed and written to
    ``log_path``; returns its exit code and last output lines. Ctrl-C stops it too."""
    tail: deque = deque(maxlen=40)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [python, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=_subprocess_env(),
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
    """SHA-256 of the full config the launcher runs with (what its config.yaml holds)."""
    from ..engine.setup import load_config

    return hashlib.sha256(load_config(config, list(opts)).dump().encode("utf-8")).hexdigest()


def train_toy_config(
    config: str,
    output_dir: str,
    settings: ToySettings,
    echo: Callable[[str], None] = logger.info,
) -> dict:
    """Train and evaluate toy config file ``config`` with the launcher in ``output_dir`` (or
    reuse the finished run there, unless ``settings.retrain``).

    Returns:
        dict: ``config``, ``output_dir``, ``log``, ``reused``, ``iteration`` (of the evaluation,
        i.e. the iterations trained), ``seconds`` (of training + evaluation), the summary of
        :func:`summarize_results` and the full ``results``.

    Raises:
        ToyRunError: the config does not load, the launcher failed, or no results.
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
    argv = ["-m", LAUNCHER_MODULE, "--config-file", config, *opts]
    echo("python " + " ".join(argv))
    start = time.perf_counter()
    code, tail = run_training(argv, log_path, echo, settings.python)
    seconds = time.perf_counter() - start
    if code != 0:
        raise ToyRunError(
            f"{LAUNCHER_MODULE} exited with {code}: {_failure_line(tail)} (log: {log_path})"
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
    known = isinstance(e, (ToyRunError, FileNotFoundError))
    return (str(e) if known else f"{type(e).__name__}: {e}")[:500]


def _no_toy_error(row: dict) -> str:
    if row.get("method"):
        return (
            f"no toy config: method {row['method']!r} declares none for {row['config']} "
            "(BenchmarkConfig.toy)"
        )
    return (
        f"no toy config: {row['config']} is no registered method's benchmark config nor toy "
        "config (projects.methods)"
    )


def run_toy_accuracy(
    rows: List[dict],
    settings: ToySettings,
    output_dir: str,
    progress: Callable[[str], None],
    on_update: Callable[[], None] = lambda: None,
):
    """Fill each row's ``toy`` entry (or ``errors["toy"]``): the toy config that stands for it
    trained and evaluated (see the module docstring), each toy config once, in
    ``output_dir/toy/<name>/``.

    Args:
        rows: benchmark rows with ``config``, ``toy_config`` (the name of the toy config that
            stands for it, or None) and ``method``. A row is appended for each registered toy
            config no row maps to (``toy_only``), so that every toy config is trained.
        settings: how to train.
        output_dir: the benchmark's output folder.
        progress: gets progress messages and the subprocess's log lines.
        on_update: called after each toy config (to save the rows).
    """
    wanted: Dict[str, Tuple[str, str, List[dict]]] = {}  # real path: (name, file, rows)
    missing = set()  # toy config names whose file does not exist (their rows say so)

    def want(name: str, row_list: List[dict]):
        try:
            path = toy_config_file(name)
        except FileNotFoundError as e:
            missing.add(name)
            for row in row_list:
                row.setdefault("errors", {})["toy"] = _error(e)
            return
        wanted.setdefault(os.path.realpath(path), (name, path, []))[2].extend(row_list)

    for row in rows:
        if row.get("toy_config"):
            want(row["toy_config"], [row])
        else:
            row.setdefault("errors", {})["toy"] = _no_toy_error(row)
    for method, name in toy_configs_to_train():
        if name in missing:
            continue
        try:
            known = os.path.realpath(toy_config_file(name)) in wanted
        except FileNotFoundError:
            known = False
        if not known:
            row = {"label": toy_label(name), "config": name, "yardstick": False}
            row.update(method=method, toy_config=name, toy_only=True, errors={})
            rows.append(row)
            want(name, [row])
    for name, path, row_list in wanted.values():
        for row in row_list:
            row["toy"] = {"config": path, "label": toy_label(name), "pending": True}
    on_update()
    trained_seconds, trained = 0.0, 0
    for i, (name, path, row_list) in enumerate(wanted.values()):
        run_dir = os.path.join(output_dir, "toy", os.path.splitext(os.path.basename(name))[0])
        label = toy_label(name)
        eta = ""
        if trained:
            eta = f", ETA {trained_seconds / trained * (len(wanted) - i):.0f} s if none is reused"
        progress(f"toy accuracy {i + 1}/{len(wanted)}: {label} ({len(row_list)} row(s){eta})")

        def echo(line, label=label):
            progress(f"{label} | {line}")

        error = None
        try:
            entry = train_toy_config(path, run_dir, settings, echo)
            if not entry["reused"]:
                trained_seconds += entry["seconds"]
                trained += 1
        except Exception as e:
            if not isinstance(e, ToyRunError):
                logger.exception("toy run of %s failed", path)
            entry = {"config": path, "output_dir": run_dir, "log": os.path.join(run_dir, LOG_FILE)}
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
