"""The pool that runs the learning checks' toy runs ahead of the tests (tests/helpers/toy_jobs.py):
at most ``slots`` runs at a time with the cores shared among them, a run waits for the runs it
needs, a failure names its run and the end of its log, and a run nobody planned goes first.

The runs here are tiny Python scripts standing in for ``train_net.py``: each records when it
started and ended and writes the results file the real runner writes.
"""

import json
import os
import sys
import time

import pytest

from tests.helpers.toy_jobs import PRETRAIN, RESULTS_FILE, ToyJob, ToyJobPool

FAKE_RUN = """
import json, os, sys, time
out, seconds, fail = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1"
start = time.time()
time.sleep(seconds)
with open(os.path.join(out, "span.json"), "w") as f:
    json.dump([start, time.time(), os.environ.get("OMP_NUM_THREADS")], f)
if fail:
    print("something went wrong in the fake run")
    sys.exit(3)
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"segm": {"AP": float(len(os.path.basename(out)))}}, f)
"""


class FakePool(ToyJobPool):
    """A pool whose runs are :data:`FAKE_RUN`; ``needs`` maps a job to the jobs it waits for,
    ``seconds`` and ``failing`` set how long a job runs and which ones fail."""

    def __init__(self, root, needs=None, seconds=None, failing=(), **kwargs):
        self.fake_needs = needs or {}
        self.fake_seconds = seconds or {}
        self.failing = set(failing)
        super().__init__(root, **kwargs)

    def _needs(self, job):
        return tuple(self.fake_needs.get(job, ()))

    def _command(self, state):
        seconds = str(self.fake_seconds.get(state.job, 0.3))
        fail = "1" if state.job in self.failing else "0"
        return [sys.executable, "-c", FAKE_RUN, state.output_dir, seconds, fail]


def span(pool, job):
    with open(os.path.join(pool.output_dir(job), "span.json")) as f:
        return json.load(f)


def jobs(*names):
    return [ToyJob("train", f"{name}.yaml") for name in names]


def test_at_most_slots_runs_at_a_time_with_the_cores_shared(tmp_path):
    a, b, c = jobs("a", "b", "c")
    pool = FakePool(tmp_path, slots=2, cores=2, seconds={a: 1.5, b: 1.5, c: 0.3})
    try:
        pool.plan([a, b, c])
        for job in (a, b, c):
            assert pool.result(job) == {"segm": {"AP": 1.0}}
    finally:
        pool.close()
    spans = {job: span(pool, job) for job in (a, b, c)}
    assert spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]  # a and b overlapped
    assert spans[c][0] >= min(spans[a][1], spans[b][1])  # c waited for a free slot
    assert spans[a][2] == spans[b][2] == "1"  # two runs side by side on 2 cores: 1 thread each
    assert len(pool.finished()) == 3


def test_a_lone_run_gets_every_core(tmp_path):
    (a,) = jobs("a")
    pool = FakePool(tmp_path, slots=2, cores=4)
    try:
        pool.result(a)
    finally:
        pool.close()
    assert span(pool, a)[2] == "4"


def test_a_run_waits_for_what_it_needs_and_the_others_use_the_free_slot(tmp_path):
    a, semantic = jobs("a", "semantic")
    pool = FakePool(tmp_path, needs={a: [PRETRAIN]}, seconds={PRETRAIN: 1.0}, slots=2, cores=2)
    try:
        pool.plan([a, semantic])
        pool.result(a)
        pool.result(semantic)
    finally:
        pool.close()
    pretrain = span(pool, PRETRAIN)
    assert span(pool, a)[0] >= pretrain[1]
    assert span(pool, semantic)[0] < pretrain[1]


def test_a_failed_run_names_itself_and_its_log_and_fails_what_needs_it(tmp_path):
    a, b = jobs("a", "b")
    pool = FakePool(tmp_path, needs={b: [a]}, failing=[a], slots=2, cores=2)
    try:
        pool.plan([a, b])
        with pytest.raises(RuntimeError, match="something went wrong in the fake run") as info:
            pool.result(a)
        assert "a.yaml" in str(info.value) and "exit code 3" in str(info.value)
        with pytest.raises(RuntimeError, match="it needs 'a.yaml', which failed"):
            pool.result(b)
    finally:
        pool.close()


def test_a_run_nobody_planned_goes_ahead_of_the_queue(tmp_path):
    a, b, c, urgent = jobs("a", "b", "c", "urgent")
    pool = FakePool(tmp_path, seconds={a: 0.8}, slots=1, cores=1)
    try:
        pool.plan([a, b, c])
        time.sleep(0.3)  # a is running
        pool.result(urgent)
        pool.result(c)
    finally:
        pool.close()
    started = {job: span(pool, job)[0] for job in (a, b, c, urgent)}
    assert started[a] < started[urgent] < started[b] < started[c]


def test_runs_have_folders_of_their_own(tmp_path):
    pool = ToyJobPool(tmp_path, slots=1, cores=1)
    train = ToyJob("train", "mask_rcnn.yaml")
    other = ToyJob("train", "mask_rcnn.yaml", ("SEED", "8"))
    memorise = ToyJob("memorise", "mask_rcnn.yaml", ("SEED", "8"))
    evaluate = ToyJob("evaluate", "mask_rcnn.yaml", ("TEST.DETECTIONS_PER_IMAGE", "5"), of=train)
    folders = [pool.output_dir(job) for job in (train, other, memorise, evaluate, PRETRAIN)]
    assert len(set(folders)) == 5
    assert all(folder.startswith(str(tmp_path)) for folder in folders)
    assert pool.output_dir(evaluate).startswith(pool.output_dir(train) + os.sep)
    assert not os.path.exists(os.path.join(pool.output_dir(train), RESULTS_FILE))


@pytest.mark.integration
def test_a_memorisation_run_goes_through_the_real_runner(tmp_path):
    """A tiny memorisation run of the yardstick, from random weights (no toy-pretrained backbone
    to wait for), through ``tests.helpers.toy_job_runner`` and ``train_net.py``: its results come
    back as the evaluation on the four memorised images."""
    import yaml

    from tests.helpers.learning import YARDSTICK, memorise_job, toy_config

    with open(toy_config(YARDSTICK)) as f:
        tiny = yaml.safe_load(f)["TEST_CONTRACT"]["TINY_OPTS"]
    job = memorise_job(YARDSTICK, *tiny, "MODEL.WEIGHTS", "", "SOLVER.MAX_ITER", "2")
    pool = ToyJobPool(tmp_path, slots=1)
    try:
        results = pool.result(job)
    finally:
        pool.close()
    assert set(results) >= {"bbox", "segm", "boundary"}
    assert 0.0 <= results["segm"]["AP"] <= 100.0
    with open(os.path.join(pool.output_dir(job), "config.yaml")) as f:
        cfg = yaml.safe_load(f)
    assert cfg["DATASETS"]["TRAIN"] == cfg["DATASETS"]["TEST"] == ["toy_train_memorise4"]
    assert cfg["SOLVER"]["MAX_ITER"] == 2  # the job's options come after the schedule's


def test_two_runs_share_a_two_core_machine_by_default(monkeypatch):
    from tests.helpers.toy_jobs import SLOTS_ENV, default_slots

    monkeypatch.delenv(SLOTS_ENV, raising=False)
    assert (default_slots(1), default_slots(2), default_slots(8)) == (1, 2, 2)
    monkeypatch.setenv(SLOTS_ENV, "3")
    assert default_slots(2) == 3


def test_a_run_that_cannot_start_fails_alone(tmp_path):
    a, b = jobs("a", "b")

    class Unstartable(FakePool):
        def _command(self, state):
            if state.job == a:
                raise ValueError("config a.yaml does not load")
            return super()._command(state)

    pool = Unstartable(tmp_path, slots=1, cores=1)
    try:
        pool.plan([a, b])
        with pytest.raises(RuntimeError, match="could not start: ValueError: config a.yaml"):
            pool.result(a)
        assert pool.result(b) == {"segm": {"AP": 1.0}}
    finally:
        pool.close()


def test_closing_the_pool_releases_whoever_waits(tmp_path):
    a, b = jobs("a", "b")
    pool = FakePool(tmp_path, seconds={a: 30.0}, slots=1, cores=1)
    pool.plan([a, b])
    time.sleep(0.5)
    pool.close()
    with pytest.raises(RuntimeError, match="the pool was closed"):
        pool.result(b)


def test_runs_keep_the_environment_the_pool_was_made_in(tmp_path, monkeypatch):
    monkeypatch.setenv("D2IS_PROBE", "when made")
    (a,) = jobs("a")

    class EnvPool(FakePool):
        def _command(self, state):
            code = "import os, sys; open(sys.argv[1], 'w').write(os.environ['D2IS_PROBE'])"
            return [sys.executable, "-c", code, os.path.join(state.output_dir, "probe.txt")]

    pool = EnvPool(tmp_path, slots=1, cores=1)
    monkeypatch.setenv("D2IS_PROBE", "changed by a test")
    try:
        with pytest.raises(RuntimeError, match="no results"):  # the probe writes no results
            pool.result(a)
    finally:
        pool.close()
    with open(os.path.join(pool.output_dir(a), "probe.txt")) as f:
        assert f.read() == "when made"


def test_reserved_cores_are_left_to_what_runs_beside_the_pool(tmp_path):
    a, b = jobs("a", "b")
    pool = FakePool(tmp_path, slots=2, cores=4)
    try:
        pool.share(1, reserved_cores=1)
        pool.result(a)
        pool.share(2)
        pool.result(b)
    finally:
        pool.close()
    assert span(pool, a)[2] == "3" and span(pool, b)[2] == "4"


def test_a_backbone_made_for_measuring_bars_loads_as_the_toy_pretrained_one(tmp_path, monkeypatch):
    """``measure_bars --backbones``: a backbone pretrained with another seed, in a datasets root of
    its own, is what the toy configs' ``toy-pretrained://`` weights resolve to there (not
    retrained), and that root reaches this machine's toy instance data."""
    from projects.data.toy.writer import default_root
    from projects.engine import toy_pretrained
    from tests.helpers import measure_bars

    made = tmp_path / "backbone-8" / "datasets" / "toy_pretrained" / "R-18.pkl"
    made.parent.mkdir(parents=True)
    made.write_bytes(b"pretrained with seed 8")

    def no_training(*args):
        raise AssertionError("the backbone was retrained")

    monkeypatch.setattr(toy_pretrained, "_train", no_training)
    datasets = measure_bars.make_backbone(8, str(tmp_path / "backbone-8"))
    assert toy_pretrained.ensure_pretrained(root=datasets) == str(made)
    instance = os.path.join(datasets, "toy_instance")
    assert os.path.realpath(instance) == os.path.realpath(
        os.path.join(default_root(), "toy_instance")
    )


def test_pretraining_for_a_measurement_changes_only_the_recipe_seed(tmp_path, monkeypatch):
    from projects.engine import toy_pretrained
    from tests.helpers import measure_bars

    seen = []
    monkeypatch.setattr(toy_pretrained, "RECIPE_OPTS", toy_pretrained.RECIPE_OPTS)
    monkeypatch.setattr(
        toy_pretrained, "_train_into", lambda work: seen.append(toy_pretrained.RECIPE_OPTS)
    )
    before = dict(zip(toy_pretrained.RECIPE_OPTS[::2], toy_pretrained.RECIPE_OPTS[1::2]))
    measure_bars._pretrain_with_seed(str(tmp_path / "work"), 8)
    after = dict(zip(seen[0][::2], seen[0][1::2]))
    assert after == {**before, "SEED": "8"} and before["SEED"] != "8"
