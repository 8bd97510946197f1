"""Each method whose toy config holds to the standard learning contract learns on the toy data
and holds its own against the Mask R-CNN yardstick trained in the same session (same data,
schedule, seed and toy-pretrained ResNet-18), and memorises a few images.

Each comparison with the yardstick allows the paired difference's spread measured over seeds
(``configs/toy/bars.yaml``: the difference may not fall below its mean - 3 SD), never
bit-identity: runs are bit-identical on one CPU only. PointRend's checks, which add its own
(tests/test_pointrend_learning.py), are kept apart.
"""

import pytest

from tests.helpers.learning import (
    YARDSTICK,
    assert_learns_and_holds_to_the_yardstick,
    bars,
    memorise,
    memorise_job,
    train_job,
)

CONFIGS = ("blendmask.yaml", "yolact.yaml")


@pytest.mark.slow
@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.toy_jobs(lambda config_name: [train_job(config_name), train_job(YARDSTICK)])
def test_toy_method_learns_and_holds_its_paired_difference_to_the_yardstick(
    config_name, tmp_path_factory
):
    assert_learns_and_holds_to_the_yardstick(
        config_name, tmp_path_factory.getbasetemp() / "learning"
    )


@pytest.mark.slow
@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.toy_jobs(lambda config_name: [memorise_job(config_name)])
def test_toy_method_memorises_a_few_images(config_name, tmp_path_factory):
    results, _ = memorise(config_name, tmp_path_factory.getbasetemp() / "learning")
    assert results["segm"]["AP"] >= bars(config_name)["memorise"]["segm_AP"], results["segm"]
