"""A method installed from a temporary folder joins the benchmark, the toy accuracy and the demo
through the method contract alone (tests/helpers/throwaway_method.py; nothing in projects/ is
edited)."""

import importlib
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from detectron2.modeling import META_ARCH_REGISTRY, build_model

import demo
from projects.benchmark import BenchmarkSettings, default_config_specs, run_benchmark
from projects.benchmark import toy as bt
from projects.config import get_cfg, method_config_adders
from projects.demo import set_confidence_threshold
from projects.engine.setup import load_config
from projects.methods import get_method, registered_methods, score_threshold_keys
from tests.helpers.pointrend_fixtures import instance_inputs
from tests.helpers.throwaway_method import (
    BENCHMARK_NUM_CLASSES,
    installed_throwaway_method,
)
from tests.helpers.throwaway_plugin import PLUGIN_ROOT_PREFIX

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "tools_benchmark_contract", os.path.join(REPO, "tools", "benchmark.py")
)
benchmark_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(benchmark_tool)


@pytest.fixture(scope="module")
def method(tmp_path_factory):
    """The throwaway method, installed for this module's tests and removed afterwards."""
    with installed_throwaway_method(str(tmp_path_factory.mktemp("throwaway"))) as installed:
        registered_methods()  # the method discovery imports it
        yield installed


def test_registered_methods_find_it_through_its_entry_point_and_cleanup_removes_it(tmp_path):
    with installed_throwaway_method(str(tmp_path)) as throwaway:
        assert throwaway.package not in sys.modules  # on sys.path, not imported yet
        names = [m.name for m in registered_methods()]
        assert throwaway.name in names and names[0] == "Detectron2"
        assert throwaway.package in sys.modules
        declared = get_method(throwaway.name)
        assert declared.package == throwaway.package
        assert declared.toy_configs == (throwaway.toy_config,)
        assert [c.config for c in declared.benchmark_configs] == [throwaway.benchmark_config]
        assert throwaway.meta_architecture in META_ARCH_REGISTRY
        adders = {package: adder.__name__ for package, adder in method_config_adders()}
        assert adders[throwaway.package] == throwaway.adder_name
        assert get_cfg().MODEL[throwaway.namespace].SCORE_THRESH_TEST == 0.05
        assert throwaway.score_key in score_threshold_keys()
    assert throwaway.name not in [m.name for m in registered_methods()]
    assert throwaway.package not in sys.modules and throwaway.root not in sys.path
    assert throwaway.meta_architecture not in META_ARCH_REGISTRY
    assert throwaway.namespace not in get_cfg().MODEL
    assert throwaway.score_key not in score_threshold_keys()


def test_its_model_learns_and_predicts_full_image_masks(method):
    cfg = load_config(method.toy_config, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg)
    assert type(model).__name__ == method.meta_architecture
    inputs = instance_inputs(num_images=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    totals = []
    for _ in range(8):
        losses = model(inputs)
        assert set(losses) == {"loss_mask", "loss_cls"}
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(float(total))
    assert totals[-1] < 0.6 * totals[0], totals  # it fits two images
    empty = [dict(inputs[0], instances=inputs[0]["instances"][:0])]
    assert float(model(empty)["loss_mask"]) == 0.0  # no ground truth: a loss, no crash
    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": inputs[0]["image"], "height": 30, "width": 41}])
    instances = out["instances"]
    assert instances.image_size == (30, 41) and instances.pred_masks.shape[1:] == (30, 41)
    assert (
        instances.pred_masks.dtype == torch.bool and len(instances) <= cfg.TEST.DETECTIONS_PER_IMAGE
    )
    for mask, box in zip(instances.pred_masks, instances.pred_boxes.tensor):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        tight = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert box.tolist() == [float(v) for v in tight]


class _FakeTraining:
    """Stands in for the launcher subprocess: a finished run with AP = 1, 2, ... by call."""

    def __init__(self):
        self.configs = []

    def __call__(self, argv, log_path, echo, python=None):
        config = argv[argv.index("--config-file") + 1]
        output_dir = argv[argv.index("OUTPUT_DIR") + 1]
        self.configs.append(config)
        ap = float(len(self.configs))
        record = {"iteration": 2, "bbox/AP": ap, "segm/AP": ap, "boundary/AP": ap}
        with open(os.path.join(output_dir, "metrics.json"), "w") as f:
            f.write(json.dumps(record) + "\n")
        return 0, ["done"]


def test_default_rows_hold_its_benchmark_config_and_its_toy_config_stands_for_it(
    method, tmp_path, monkeypatch
):
    fake = _FakeTraining()
    monkeypatch.setattr(bt, "run_training", fake)
    argv = ["--toy-accuracy-only", "--output-dir", str(tmp_path)]
    assert benchmark_tool.main(argv) == 0
    with open(tmp_path / "benchmark.json") as f:
        rows = json.load(f)["rows"]
    (row,) = [r for r in rows if r.get("method") == method.name]
    assert row["config"] == method.benchmark_config and not row.get("toy_only")
    assert row["label"] == f"{method.name} (throwaway)" and rows[0]["yardstick"]
    assert row["toy"]["config"] == method.toy_config and row["errors"] == {}
    assert row["toy"]["segm_AP"] == fake.configs.index(method.toy_config) + 1
    trained = {os.path.realpath(c) for c in fake.configs}
    every_toy = {m.name: m.toy_configs for m in registered_methods()}
    assert len(fake.configs) == sum(len(t) for t in every_toy.values()) == len(trained)
    assert os.path.realpath(method.toy_config) in trained
    assert method.name in (tmp_path / "benchmark.md").read_text()


def test_its_default_row_is_measured_with_its_keys_flop_handle_and_head_counter(method, tmp_path):
    (spec,) = [s for s in default_config_specs() if s.method == method.name]
    settings = BenchmarkSettings(
        size=(48, 64), dataset=None, flop_images=1, warmup=0, runs=1, train_warmup=0,
        train_runs=1, train_batch=1, detections=5, device="cpu", matmul_size=32,
    )  # fmt: skip
    document = run_benchmark([spec], settings, str(tmp_path), progress=lambda text: None)
    (row,) = document["rows"]
    assert row["errors"] == {} and row["meta_architecture"] == method.meta_architecture
    # Its own score key set to 0; its own class-count key read (3 classes: Detectron2's key holds
    # 80, whose labels would not fit its classifier).
    assert row["detection_overrides"][method.score_key] == 0.0
    assert row["num_classes_key"] == method.num_classes_key and BENCHMARK_NUM_CLASSES == 3
    assert row["train"]["step_ms"]["n"] == 1
    assert 1 <= row["inference"]["detections"] <= 5
    # Its FLOP handle counts the class softmax: one per value of (1 image, 8 masks, 3 + 1).
    assert row["flops"]["by_operator"]["softmax"] * 1e9 == pytest.approx(8 * (3 + 1))
    # Its head counter: the 1x1 mask conv for one mask on the stride-4 map of 48 x 64, 64 ch.
    head = row["mask_head_flops"]
    assert head["method"] == method.name and head["feature_size"] == [12, 16]
    assert head["gflops_per_box"] * 1e9 == pytest.approx(64 * 12 * 16)


def test_the_demo_sets_its_score_key(method, tmp_path):
    cfg = load_config(method.toy_config, ["MODEL.DEVICE", "cpu"])
    set_confidence_threshold(cfg, 0.42)
    assert cfg.MODEL[method.namespace].SCORE_THRESH_TEST == 0.42
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.42  # Detectron2's keys too, where present
    torch.manual_seed(0)
    weights = tmp_path / "model.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    image = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray((torch.rand(50, 70, 3) * 255).byte().numpy()).save(image)
    argv = ["--config-file", method.toy_config, "--input", str(image), "--output",
            str(tmp_path / "out.png"), "--confidence-threshold", "0.0", "--json",
            str(tmp_path / "pred.json"), "--opts", "MODEL.WEIGHTS", str(weights)]  # fmt: skip
    assert demo.main(argv) == 0
    predictions = json.loads((tmp_path / "pred.json").read_text())
    assert (tmp_path / "out.png").is_file() and len(predictions["annotations"]) >= 1


# The shared tests that parametrize over every registered method's toy configs.
SHARED_CONTRACT_TESTS = (
    "tests/test_contract.py",
    "tests/test_hostile_images.py",
    "tests/test_hostile_models.py",
)


@pytest.mark.integration
def test_the_shared_contract_and_hostile_tests_run_on_its_toy_config_unedited():
    """pytest, with the throwaway method installed before collection (a plugin), collects the
    unedited shared tests with its toy config among their parameters, and they pass on it."""
    argv = [sys.executable, "-m", "pytest", "-p", "tests.helpers.throwaway_plugin", "-q"]
    argv += ["-p", "no:cacheprovider", "-o", "addopts=", "-rA", *SHARED_CONTRACT_TESTS]
    listed = subprocess.run(
        argv + ["--collect-only"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert listed.returncode == 0, listed.stdout[-3000:] + listed.stderr[-3000:]
    ids = [line for line in listed.stdout.splitlines() if "::" in line]
    ours = [line for line in ids if PLUGIN_ROOT_PREFIX in line]
    # Every test of test_contract.py that takes a config, and the hostile image / model tests.
    assert len(ours) >= 7, listed.stdout[-3000:]
    for test_file in SHARED_CONTRACT_TESTS:
        assert any(line.startswith(test_file) for line in ours), (test_file, ours)

    run = subprocess.run(
        argv + ["-k", PLUGIN_ROOT_PREFIX],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-3000:]
    summary = run.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) == len(ours), summary
    assert "failed" not in summary and "error" not in summary and "skipped" not in summary, summary


def test_every_method_in_the_repository_has_its_readme_and_the_hub_links_it():
    """A method's declared README exists (zoo, toy results, parity, BibTeX), and the top README,
    the hub, links it; the hub stays short (no measurement history)."""
    with open(os.path.join(REPO, "README.md")) as f:
        hub = f.read()
    assert (
        len(hub.splitlines()) <= 170
    ), "README.md is a hub: move details to docs/ or a method README"
    for method in registered_methods():
        if method.package is None or not os.path.isdir(os.path.join(REPO, method.package)):
            continue  # Detectron2's yardsticks, or a method installed from elsewhere
        assert method.readme, f"method {method.name!r} declares no readme"
        path = os.path.join(REPO, method.readme)
        assert os.path.isfile(path), f"method {method.name!r}: readme {method.readme!r} is missing"
        with open(path) as f:
            text = f.read()
        for section in ("## Model zoo", "## Toy results", "## Parity", "bibtex"):
            assert section in text, f"{method.readme}: no {section!r}"
        assert f"]({method.readme})" in hub, f"README.md does not link {method.readme}"
