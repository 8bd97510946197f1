"""The broken controls on the whole toy regime: each deliberately broken yardstick
(:mod:`tests.helpers.broken`), trained on the full toy schedule, scores below the bar the correct
yardstick passes on ``toy_val``. Opt-in (three more toy trainings, about 9 minutes on 2 cores):
``D2IS_LEARNING_CONTROLS=1 make test-slow PYTEST_ARGS="-k controls"``. The suite itself runs the
quicker memorisation check on every control (tests/test_learning_yardstick.py)."""

import os

import pytest

from tests.helpers.broken import BROKEN_VARIANTS
from tests.helpers.learning import YARDSTICK, bars, train_job, train_toy

OPT_IN = "D2IS_LEARNING_CONTROLS"


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get(OPT_IN), reason=f"opt-in: set {OPT_IN}=1 (three toy trainings, ~9 minutes)"
)
@pytest.mark.parametrize("variant", sorted(BROKEN_VARIANTS))
@pytest.mark.toy_jobs(lambda variant: [train_job(YARDSTICK, *BROKEN_VARIANTS[variant])])
def test_broken_yardstick_scores_below_the_bar_on_the_toy_regime(variant, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "learning"
    results, _ = train_toy(YARDSTICK, root, *BROKEN_VARIANTS[variant])
    assert results["segm"]["AP"] < bars(YARDSTICK)["segm_AP"], results["segm"]
