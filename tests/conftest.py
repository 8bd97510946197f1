"""Fixtures shared by several test modules, and the session's learning-check summary."""

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


def pytest_terminal_summary(terminalreporter):
    """Print what every toy training of the session reached (the slow learning checks), so a CI
    log records the measured numbers beside pass / fail."""
    from tests.helpers.learning import summary_lines

    lines = summary_lines()
    if lines:
        terminalreporter.section("toy trainings of this session")
        for line in lines:
            terminalreporter.write_line(line)
