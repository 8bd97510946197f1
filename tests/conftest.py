"""Fixtures shared by several test modules; the learning checks' toy runs (planned from the
``toy_jobs`` markers of the selected tests, which run last; started with the session) and their
summary."""

import inspect

import numpy as np
import pytest
from PIL import Image

from projects.data.annotations import ANNOTATION_STATS


@pytest.fixture
def fresh_annotation_stats():
    """Empty ``ANNOTATION_STATS`` (the mappers' counts of dropped annotations) around one test."""
    ANNOTATION_STATS.clear()
    yield
    ANNOTATION_STATS.clear()


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    """A real H x W PNG (``hostile.H``, ``hostile.W``) the generated annotations belong to."""
    from tests.helpers.hostile import H, W

    path = tmp_path_factory.mktemp("hostile") / "hostile_image.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (H, W, 3), dtype=np.uint8)).save(path)
    return str(path)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "toy_jobs(jobs): the toy runs a learning check reads (a callable taking the test's "
        "parameters by name and returning tests.helpers.toy_jobs.ToyJob objects); the pool runs "
        "them ahead of the test",
    )


def _skipped(item):
    if item.get_closest_marker("skip"):
        return True
    return any(m.args and m.args[0] is True for m in item.iter_markers("skipif"))


def _declared_jobs(item):
    if _skipped(item):  # an opt-in check that is not opted in
        return []
    jobs = []
    for marker in item.iter_markers("toy_jobs"):
        declare = marker.args[0]
        params = getattr(getattr(item, "callspec", None), "params", {})
        names = inspect.signature(declare).parameters
        jobs.extend(declare(**{name: params[name] for name in names}))
    return jobs


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    """After selection (``-m``, ``-k``): the slow learning checks go last (so the quick tiers run
    on an idle machine), and the toy runs they declare are planned in the order they will be
    read."""
    slow = [item for item in items if item.get_closest_marker("slow")]
    if not slow:
        return
    items[:] = [item for item in items if not item.get_closest_marker("slow")] + slow
    from tests.helpers.toy_jobs import plan

    for item in slow:
        plan(_declared_jobs(item))


@pytest.fixture(scope="session", autouse=True)
def _toy_runs_ahead(request, tmp_path_factory):
    """The learning checks' toy runs start with the session: one at a time on one core while the
    quick tests (which keep about one core busy) run, then on every core from the first slow test
    on (:func:`pytest_runtest_setup`)."""
    from tests.helpers.toy_jobs import planned, session_pool

    if planned():
        quick_first = not request.session.items[0].get_closest_marker("slow")
        root = tmp_path_factory.getbasetemp() / "learning"
        session_pool(root, slots=1 if quick_first else None, reserved_cores=int(quick_first))
    yield


def pytest_runtest_setup(item):
    if item.get_closest_marker("slow"):
        from tests.helpers.toy_jobs import default_slots, existing_pool

        pool = existing_pool()
        if pool is not None and pool.reserved_cores:
            pool.share(default_slots(pool.cores))


def pytest_sessionfinish(session, exitstatus):
    from tests.helpers.toy_jobs import existing_pool

    pool = existing_pool()
    if pool is not None:
        pool.close()


def pytest_terminal_summary(terminalreporter):
    """Print what every toy run of the session reached (the slow learning checks) and how long it
    took, so a CI log records the measured numbers beside pass / fail."""
    from tests.helpers.learning import summary_lines

    lines = summary_lines()
    if lines:
        terminalreporter.section("toy runs of this session")
        for line in lines:
            terminalreporter.write_line(line)
