"""BlendMask learns on the toy data and holds its own against the Mask R-CNN yardstick trained in
the same session (same data, schedule, seed and toy-pretrained ResNet-18), and memorises a few
images.

Each comparison with the yardstick allows the paired difference's spread measured over seeds
(``configs/toy/bars.yaml``: the difference may not fall below its mean - 3 SD), never
bit-identity: runs are bit-identical on one CPU only.
"""

import pytest

from tests.helpers.learning import assert_learns_and_holds_to_the_yardstick, bars, memorise


@pytest.mark.slow
def test_toy_blendmask_learns_and_holds_its_paired_difference_to_the_yardstick(tmp_path_factory):
    assert_learns_and_holds_to_the_yardstick(
        "blendmask.yaml", tmp_path_factory.getbasetemp() / "learning"
    )


@pytest.mark.slow
def test_toy_blendmask_memorises_a_few_images(tmp_path_factory):
    results, _ = memorise("blendmask.yaml", tmp_path_factory.getbasetemp() / "learning")
    assert results["segm"]["AP"] >= bars("blendmask.yaml")["memorise"]["segm_AP"], results["segm"]
