"""The toy runs of the learning checks, run ahead of the tests that read them, two at a time.

The slow learning tests each read one or more toy runs (a toy config trained on its schedule, a
memorisation run, an ``--eval-only`` of a trained model). Each test declares them with the
``toy_jobs`` marker::

    @pytest.mark.toy_jobs(lambda config_name: [train_job(config_name), train_job(YARDSTICK)])

(the callable gets the test's parameters by name). When the session's first slow test starts, the
pool (:class:`ToyJobPool`) runs every declared run of the selected tests (trainings first, the
short memorisation runs last), each in a subprocess of its own
(:mod:`tests.helpers.toy_job_runner`); a test waits only for its own runs. On 2 CPU cores, two
one-thread runs side by side train about 1.5x as many iterations per second as one two-thread run
(measured with the toy Mask R-CNN: 340 s for two runs side by side, 262 s for one alone), so two
runs share the machine (``D2IS_TOY_SLOTS`` sets how many), each with its share of the cores as
threads.

The toy-pretrained backbone (:mod:`projects.engine.toy_pretrained`) is a run of its own: the runs
whose config starts from it wait for it, the others (the semantic pair) share the machine with it.
A run nobody declared is started when a test asks for it, ahead of the queue.
"""

import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

logger = logging.getLogger(__name__)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SLOTS_ENV = "D2IS_TOY_SLOTS"
RESULTS_FILE = "results.json"
LOG_FILE = "job.log"


@dataclass(frozen=True)
class ToyJob:
    """One toy run.

    Attributes:
        kind (str): ``"train"`` (``train_net.py`` on ``configs/toy/<config_name>`` with ``opts``;
            its result is the final evaluation), ``"memorise"`` (see below), ``"evaluate"``
            (``--eval-only`` of the final weights of run ``of``, with ``opts``) or
            ``"pretrain"`` (the toy-pretrained backbone, made if missing or stale).
            ``"memorise"`` is the same on the memorisation dataset of the config's training set,
            with the schedule of :func:`tests.helpers.learning.memorise_schedule` before
            ``opts``.
        config_name (str): toy config file name (empty for ``"pretrain"``).
        opts (tuple[str]): ``KEY VALUE`` overrides.
        of (ToyJob or None): for ``"evaluate"``, the training run whose weights are evaluated.
    """

    kind: str
    config_name: str = ""
    opts: Tuple[str, ...] = ()
    of: Optional["ToyJob"] = None

    def label(self):
        extra = f" {' '.join(self.opts)}" if self.opts else ""
        if self.kind == "evaluate":
            return f"{self.config_name} --eval-only{extra} ({self.of.label()})"
        if self.kind == "pretrain":
            return "toy-pretrained backbone"
        prefix = "memorise " if self.kind == "memorise" else ""
        return f"{prefix}{self.config_name}{extra}"


PRETRAIN = ToyJob("pretrain")


@dataclass
class _State:
    job: ToyJob
    output_dir: str = ""
    needs: Tuple[ToyJob, ...] = ()
    process: Optional[subprocess.Popen] = None
    threads: int = 0
    started: float = 0.0
    seconds: float = 0.0
    results: Optional[dict] = None
    error: Optional[str] = None
    done: bool = False


def default_slots(cores=None):
    """Runs side by side: ``$D2IS_TOY_SLOTS``, else two (one on a single core)."""
    if os.environ.get(SLOTS_ENV):
        return max(1, int(os.environ[SLOTS_ENV]))
    return min(2, cores or os.cpu_count() or 1)


def _digest(opts):
    return hashlib.sha1(" ".join(opts).encode()).hexdigest()[:8]


def _log_tail(path, lines=25):
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except OSError:
        return "(no log)"


class ToyJobPool:
    """Runs :class:`ToyJob`\\ s in subprocesses, at most ``slots`` at a time, each in a folder of
    its own under ``root``; :meth:`result` waits for one.

    Args:
        root (str): folder of the runs' output folders.
        slots (int): runs side by side (default :func:`default_slots`).
        cores (int): CPU cores shared among the running jobs (default ``os.cpu_count()``).
        python (str): the interpreter that runs the jobs.
    """

    def __init__(self, root, slots=None, cores=None, python=sys.executable):
        self.root = str(root)
        self.cores = cores or os.cpu_count() or 1
        self.slots = slots or default_slots(self.cores)
        self.reserved_cores = 0
        self.python = python
        # the environment when the pool was made: a test that changes its own (monkeypatch) while
        # a run starts must not change the run's
        self.environ = dict(os.environ)
        self._states: Dict[ToyJob, _State] = {}
        self._queue: List[ToyJob] = []
        self._cond = threading.Condition()
        self._thread = None
        self._closed = False

    # ------------------------------------------------------------------ planning
    def plan(self, jobs, front=False):
        """Queue ``jobs`` (those not queued yet), after the queued ones or, with ``front``, before
        them."""
        with self._cond:
            new = []
            for job in jobs:
                for needed in self._needs(job):
                    if needed not in self._states and needed not in new:
                        new.append(needed)
                if job not in self._states and job not in new:
                    new.append(job)
            for job in new:
                self._states[job] = _State(job, self._output_dir(job), self._needs(job))
            self._queue = new + self._queue if front else self._queue + new
            self._cond.notify_all()
        self._start_thread()

    def _needs(self, job):
        if job.kind == "pretrain":
            return ()
        if job.kind == "evaluate":
            return (job.of,)
        from projects.engine.setup import load_config
        from projects.engine.toy_pretrained import is_toy_pretrained
        from tests.helpers.learning import toy_config

        cfg = load_config(toy_config(job.config_name), list(job.opts))
        return (PRETRAIN,) if is_toy_pretrained(cfg.MODEL.WEIGHTS) else ()

    def _output_dir(self, job):
        if job.kind == "pretrain":
            return os.path.join(self.root, "toy_pretrained")
        if job.kind == "evaluate":
            return os.path.join(self._output_dir(job.of), "eval-" + _digest(job.opts))
        stem = os.path.splitext(job.config_name)[0]
        if job.opts:  # one folder per set of options
            stem += "-" + _digest(job.opts)
        if job.kind == "memorise":
            return os.path.join(self.root, "memorise", stem)
        return os.path.join(self.root, stem)

    def share(self, slots, reserved_cores=0):
        """From now on run at most ``slots`` runs at a time on the cores but ``reserved_cores``
        (kept for what runs beside the pool); runs going on keep their threads."""
        with self._cond:
            self.slots, self.reserved_cores = max(1, slots), max(0, reserved_cores)
            self._cond.notify_all()

    # ------------------------------------------------------------------ results
    def result(self, job):
        """The results of ``job`` (Detectron2's evaluation results, nested dicts of floats; for
        ``"pretrain"``, an empty dict), once it has run; queued first if nobody planned it.

        Raises:
            RuntimeError: the run failed (the message holds the end of its log).
        """
        if job not in self._states:
            self.plan([job], front=True)
        with self._cond:
            state = self._states[job]
            while not state.done:
                self._cond.wait(timeout=5)
        if state.error:
            raise RuntimeError(f"toy run {job.label()!r} failed: {state.error}")
        return state.results

    def output_dir(self, job):
        """The folder of ``job``'s run (planned or not)."""
        return self._states[job].output_dir if job in self._states else self._output_dir(job)

    def finished(self):
        """The states (job, results, error, seconds, threads) of the runs that have finished,
        in the order they finished."""
        with self._cond:
            done = [s for s in self._states.values() if s.done and s.started]
        return sorted(done, key=lambda s: s.started + s.seconds)

    def close(self):
        """Stop the runs still going (at the end of the session, or on Ctrl-C)."""
        with self._cond:
            self._closed = True
            running = [s for s in self._states.values() if s.process and not s.done]
            self._fail_pending("the pool was closed")
        for state in running:
            state.process.terminate()
        for state in running:
            try:
                state.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                state.process.kill()

    # ------------------------------------------------------------------ the scheduler
    def _start_thread(self):
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="toy-jobs", daemon=True)
                self._thread.start()

    def _fail_pending(self, why):
        for state in self._states.values():
            if not state.done:
                state.error, state.done = why, True
        self._cond.notify_all()

    def _ready(self, state):
        return all(self._states[n].done for n in state.needs)

    def _loop(self):
        try:
            self._schedule()
        except BaseException as e:  # a test waiting on a run must not wait for ever
            with self._cond:
                self._fail_pending(f"the pool stopped: {type(e).__name__}: {e}")
            raise

    def _schedule(self):
        while True:
            with self._cond:
                if self._closed:
                    return
                running = [s for s in self._states.values() if s.process and not s.done]
                for state in running:
                    if state.process.poll() is not None:
                        self._finish(state)
                running = [s for s in running if not s.done]
                for job in list(self._queue):
                    state = self._states[job]
                    failed = [n for n in state.needs if self._states[n].error]
                    if failed:
                        self._queue.remove(job)
                        state.error = f"it needs {failed[0].label()!r}, which failed"
                        state.done = True
                        self._cond.notify_all()
                ready = [j for j in self._queue if self._ready(self._states[j])]
                while ready and len(running) < self.slots:
                    job = ready.pop(0)
                    self._queue.remove(job)
                    # the cores are shared among what runs now and what could run beside it
                    sharing = min(self.slots, len(running) + 1 + len(ready))
                    cores = self.cores - self.reserved_cores
                    self._launch(self._states[job], max(1, cores // sharing))
                    if not self._states[job].done:
                        running.append(self._states[job])
                self._cond.notify_all()
            time.sleep(0.5)

    def _command(self, state):
        job = state.job
        if job.kind == "pretrain":
            return [self.python, "-m", "projects.engine.toy_pretrained"]
        from tests.helpers.learning import memorise_schedule, toy_config

        command = [self.python, "-m", "tests.helpers.toy_job_runner"]
        command += ["--results", os.path.join(state.output_dir, RESULTS_FILE)]
        opts = list(job.opts)
        if job.kind == "memorise":
            source, schedule = memorise_schedule(job.config_name, *job.opts)
            command += ["--memorise", source]
            opts = schedule + opts
        command += ["--", "--config-file", toy_config(job.config_name)]
        if job.kind == "evaluate":
            weights = os.path.join(self._states[job.of].output_dir, "model_final.pth")
            command += ["--eval-only", "MODEL.WEIGHTS", weights]
        return command + ["OUTPUT_DIR", state.output_dir, *opts]

    def _launch(self, state, threads):
        os.makedirs(state.output_dir, exist_ok=True)
        results = os.path.join(state.output_dir, RESULTS_FILE)
        if os.path.exists(results):
            os.remove(results)
        env = dict(self.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        env["PYTHONPATH"] = os.pathsep.join(
            [REPO] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        log = open(os.path.join(state.output_dir, LOG_FILE), "w")
        state.threads, state.started = threads, time.perf_counter()
        logger.info("toy run %s: %d thread(s) in %s", state.job.label(), threads, state.output_dir)
        try:
            state.process = subprocess.Popen(
                self._command(state), stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env
            )
        except Exception as e:  # a config that does not load, a missing interpreter, ...
            state.error, state.done = f"could not start: {type(e).__name__}: {e}", True
        finally:
            log.close()

    def _finish(self, state):
        state.seconds = time.perf_counter() - state.started
        code = state.process.returncode
        log = os.path.join(state.output_dir, LOG_FILE)
        if code != 0:
            state.error = f"exit code {code}; the end of {log}:\n{_log_tail(log)}"
        elif state.job.kind == "pretrain":
            state.results = {}
        else:
            try:
                with open(os.path.join(state.output_dir, RESULTS_FILE)) as f:
                    state.results = json.load(f)
            except (OSError, ValueError) as e:
                state.error = f"no results ({e}); the end of {log}:\n{_log_tail(log)}"
        state.done = True


# ---------------------------------------------------------------------- the session's pool
_PLANNED: List[ToyJob] = []
_POOL: Dict[str, ToyJobPool] = {}


def plan(jobs):
    """Declare runs the session's tests will read (before the pool starts, from collection)."""
    for job in jobs:
        if job not in _PLANNED:
            _PLANNED.append(job)


# Longer kinds of run first, so that the short memorisation runs fill the end of the schedule.
_KIND_ORDER = {"pretrain": 0, "train": 1, "evaluate": 2, "memorise": 3}


def planned():
    """Whether the session's tests declared any toy run."""
    return bool(_PLANNED)


def session_pool(root, slots=None, reserved_cores=0):
    """The session's :class:`ToyJobPool` (made at the first call, with everything planned: the
    trainings first, then the evaluations, then the memorisation runs; ``slots`` and
    ``reserved_cores`` as :meth:`ToyJobPool.share`'s, default two runs on every core)."""
    if "pool" not in _POOL:
        pool = ToyJobPool(root)
        pool.share(slots or pool.slots, reserved_cores)
        logger.info("toy runs: %d planned, %d at a time", len(_PLANNED), pool.slots)
        pool.plan(sorted(_PLANNED, key=lambda job: _KIND_ORDER[job.kind]))
        _POOL["pool"] = pool
    return _POOL["pool"]


def existing_pool():
    """The session's pool if it was started, else None."""
    return _POOL.get("pool")
