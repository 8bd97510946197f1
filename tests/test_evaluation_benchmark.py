"""The benchmark tool (tools/benchmark.py, projects/benchmark/) and the FLOP metrics it uses
(projects/evaluation/: op handles, the conv-mask-head count).

Timings are never asserted: only that they are measured, reported and combined consistently.
PointRend's head counter is tested in tests/test_pointrend_flops.py; a method installed from a
temporary folder is run through the benchmark in tests/test_method_contract.py.
"""

import importlib.util
import json
import os

import pytest
import torch
from detectron2.layers import DeformConv, ModulatedDeformConv
from fvcore.nn import FlopCountAnalysis
from torch import nn
from torch.nn import functional as F
from torchvision.ops import roi_align

import projects.compat  # noqa: F401  (portable detectron2._C)
from projects.benchmark import contract
from projects.benchmark import driver as bench
from projects.benchmark import specs as bs
from projects.benchmark import toy as bt
from projects.benchmark.measure import calibrate_random_norms, load_images, summarize
from projects.benchmark.report import TABLE_COLUMNS, TOY_COLUMNS
from projects.evaluation.flop_handles import EXTRA_FLOP_HANDLES
from projects.evaluation.mask_head_flops import conv_mask_head_flops
from projects.methods import (
    DETECTRON2,
    Method,
    config_root,
    registered_methods,
    resolve_config,
    score_threshold_keys,
)
from tests.helpers.pointrend_fixtures import instance_cfg
from tests.helpers.tiny_coco import (
    register_tiny_coco,
    tiny_mask_rcnn_cfg,
    write_cfg,
    write_tiny_coco,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "tools_benchmark", os.path.join(REPO, "tools", "benchmark.py")
)
benchmark_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(benchmark_tool)
SIZE = "48x64"


def _toy_order(row_toys):
    """The order the toy configs are trained in: the rows' (in row order, each once), then every
    other registered toy config in registration order."""
    order = list(dict.fromkeys(t for t in row_toys if t is not None))
    return order + [n for m in registered_methods() for n in m.toy_configs if n not in order]


def _flops(module, *inputs):
    analysis = FlopCountAnalysis(module, inputs).set_op_handle(**EXTRA_FLOP_HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis.total()


# ---------------------------------------------------------------- FLOP handles
def test_conv_flops_exact():
    conv = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1)
    x = torch.rand(2, 3, 10, 12)
    out_h, out_w = 5, 6  # (10 + 2 - 3) // 2 + 1, (12 + 2 - 3) // 2 + 1
    assert _flops(conv, x) == 2 * 8 * out_h * out_w * 3 * 3 * 3


class _Deform(nn.Module):
    def __init__(self, modulated, stride=1):
        super().__init__()
        cls = ModulatedDeformConv if modulated else DeformConv
        self.conv = cls(4, 8, 3, stride=stride, padding=1, bias=False)
        self.modulated = modulated

    def forward(self, x, offset, mask):
        if self.modulated:
            return self.conv(x, offset, mask)
        return self.conv(x, offset)


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_deform_conv_handle_is_plain_conv_plus_sampling(modulated, stride):
    x = torch.rand(1, 4, 10, 12)
    plain = nn.Conv2d(4, 8, 3, stride=stride, padding=1, bias=False)
    out_h, out_w = plain(x).shape[-2:]
    offset = torch.rand(1, 18, out_h, out_w)
    mask = torch.rand(1, 9, out_h, out_w)
    sampled = out_h * out_w * 4 * 3 * 3  # every input value each output position reads
    expected = _flops(plain, x) + sampled * (4 + int(modulated))
    assert _flops(_Deform(modulated, stride), x, offset, mask) == expected


def test_grid_sample_and_roi_align_handles():
    x = torch.rand(1, 5, 9, 11)
    grid = torch.rand(1, 4, 6, 2) * 2 - 1

    class Sample(nn.Module):
        def forward(self, x, grid):
            return F.grid_sample(x, grid, align_corners=False)

    assert _flops(Sample(), x, grid) == 5 * 4 * 6 * 4  # 4 bilinear taps per output value

    rois = torch.tensor([[0, 1.0, 1.0, 8.0, 7.0], [0, 0.0, 2.0, 5.0, 9.0]])

    class Pool(nn.Module):
        def __init__(self, ratio):
            super().__init__()
            self.ratio = ratio

        def forward(self, x, rois):
            return roi_align(x, rois, (7, 7), 0.5, self.ratio, True)

    assert _flops(Pool(3), x, rois) == 2 * 5 * 7 * 7 * (3 * 3) * 4
    assert _flops(Pool(0), x, rois) == 2 * 5 * 7 * 7 * (2 * 2) * 4  # adaptive: 2 x 2 assumed


def test_embedding_bag_and_inplace_addmm_handles():
    table, indices, weights = torch.rand(30, 7), torch.randint(0, 30, (5, 4)), torch.rand(5, 4)

    class Gather(nn.Module):
        def forward(self, table, indices, weights):
            return F.embedding_bag(indices, table, per_sample_weights=weights, mode="sum")

    assert _flops(Gather(), table, indices, weights) == 5 * 4 * 7  # one per gathered value

    class InPlace(nn.Module):
        def forward(self, out, a, b):
            return out.clone().addmm_(a, b)

    assert _flops(InPlace(), torch.rand(6, 3), torch.rand(6, 5), torch.rand(5, 3)) == 6 * 5 * 3


# ---------------------------------------------------------------- mask-head FLOPs
def test_conv_mask_head_flops_exact():
    c_in, dim, classes, side = 4, 8, 3, 16
    result = conv_mask_head_flops(c_in, classes, conv_dim=dim, num_conv=1, output_side=side)
    half = side // 2
    convs = c_in * dim * 9 * half * half
    deconv = half * half * dim * dim * 2 * 2  # per input position, a 2x2 kernel per channel pair
    predictor = dim * classes * side * side
    assert result["output_side"] == side
    assert result["gflops_per_box"] * 1e9 == pytest.approx(convs + deconv + predictor)


# ---------------------------------------------------------------- random-weight calibration
def test_calibrated_random_norms_output_unit_std(tmp_path):
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(tiny_mask_rcnn_cfg(tmp_path, "toy_train", "", norm="BN"))
    image = torch.rand(3, 48, 64) * 255
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert calibrate_random_norms(model, image) == len(norms) > 0
    assert model.training  # the mode it had is restored
    model.eval()
    stds = []
    handles = [m.register_forward_hook(lambda m, i, o: stds.append(float(o.std()))) for m in norms]
    with torch.no_grad():
        model([{"image": image, "height": 48, "width": 64}])
    for handle in handles:
        handle.remove()
    assert len(stds) == len(norms)
    assert stds == pytest.approx([1.0] * len(norms), rel=1e-3)


# ---------------------------------------------------------------- helpers
def test_parse_size_and_summary():
    assert bench.parse_size("800x1333") == (800, 1333)
    with pytest.raises(ValueError, match="800-1333"):
        bench.parse_size("800-1333")
    stats = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats["median"] == 3.0 and stats["min"] == 1.0 and stats["max"] == 100.0
    assert stats["p10"] <= stats["p25"] <= stats["median"] <= stats["p75"] <= stats["p90"]


def test_default_rows_are_every_methods_benchmark_configs_yardstick_first():
    specs = bs.default_config_specs()
    declared = [(m, c) for m in registered_methods() for c in m.benchmark_configs]
    expected = [c for _, c in declared if c.yardstick] + [c for _, c in declared if not c.yardstick]
    assert [s.path for s in specs] == [c.config for c in expected]
    assert specs[0].yardstick and specs[0].method == DETECTRON2.name
    assert specs[0].path == DETECTRON2.benchmark_configs[0].config
    assert [s.yardstick for s in specs].count(True) == 1
    for spec, (method, config) in zip(specs, sorted(declared, key=lambda d: not d[1].yardstick)):
        assert spec.method == method.name and spec.toy == config.toy
        assert spec.num_classes_key == method.num_classes_key
        assert os.path.isfile(resolve_config(spec.path))
    labels = [s.label for s in specs]
    assert "PointRend R50-FPN" in labels and len(set(labels)) == len(labels)


def test_a_config_named_on_the_command_line_is_matched_to_its_declaration():
    declared = {s.path: s for s in bs.default_config_specs()}
    pointrend = declared["PointRend/pointrend_rcnn_R_50_FPN_3x_coco.yaml"]
    by_file = bs.spec_for_config("configs/PointRend/pointrend_rcnn_R_50_FPN_3x_coco.yaml")
    assert (by_file.label, by_file.method, by_file.toy) == (
        "PointRend R50-FPN",
        "PointRend",
        pointrend.toy,
    )
    assert not by_file.yardstick
    toy = bs.spec_for_config(os.path.join(REPO, "configs", "toy", "pointrend_semseg.yaml"))
    assert (toy.label, toy.method, toy.toy) == (
        "toy/pointrend_semseg",
        "PointRend",
        "pointrend_semseg.yaml",
    )
    assert toy.num_classes_key is None  # a toy config declares its own (TEST_CONTRACT)
    other = bs.spec_for_config("configs/PointRend/pointrend_rcnn_R_50_FPN_1x_coco.yaml")
    assert (other.label, other.method, other.toy) == (
        "PointRend/pointrend_rcnn_R_50_FPN_1x_coco",
        None,
        None,
    )
    assert bs.config_label("zoo:A/b.yaml") == "d2zoo/b"


def test_installed_configs_are_the_repository_configs():
    """projects/configs is a link to configs/ (what a wheel installs as package data)."""
    assert os.path.realpath(config_root()) == os.path.realpath(os.path.join(REPO, "configs"))
    assert os.path.islink(os.path.join(REPO, "projects", "configs"))


def test_detections_fixed_through_every_registered_score_key():
    from projects.config import get_cfg

    cfg = get_cfg()
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.3
    overridden = contract.fix_detections(
        cfg, 7, keys=score_threshold_keys() + ("MODEL.NO.SUCH_KEY",)
    )
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 7
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == cfg.MODEL.RETINANET.SCORE_THRESH_TEST == 0.0
    declared = {k for m in registered_methods() for k in m.score_threshold_keys}
    assert set(overridden) == {"TEST.DETECTIONS_PER_IMAGE"} | {
        k for k in declared if contract.has_config_key(cfg, k)
    }
    assert "MODEL.NO.SUCH_KEY" not in overridden


def test_num_classes_from_the_declared_key_else_the_config_s_own():
    from projects.config import get_cfg

    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 5, 9
    assert contract.num_classes(cfg, "MODEL.SEM_SEG_HEAD.NUM_CLASSES") == (
        9,
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
    )
    assert contract.num_classes(cfg) == (5, DETECTRON2.num_classes_key)
    cfg.TEST_CONTRACT.NUM_CLASSES_KEY = "MODEL.SEM_SEG_HEAD.NUM_CLASSES"
    assert contract.num_classes(cfg)[0] == 9
    with pytest.raises(KeyError, match="MODEL.NO_SUCH.NUM_CLASSES"):
        contract.num_classes(cfg, "MODEL.NO_SUCH.NUM_CLASSES")


def test_flop_handles_merge_and_a_clash_is_named():
    def handle(inputs, outputs):
        return 1

    def other(inputs, outputs):
        return 2

    a = Method(name="A", flop_handles={"aten::op_a": handle})
    b = Method(name="B", flop_handles={"aten::op_a": handle, "aten::op_b": other})
    merged = contract.flop_handles([a, b])
    assert merged == {**EXTRA_FLOP_HANDLES, "aten::op_a": handle, "aten::op_b": other}
    with pytest.raises(ValueError, match="'C'.*aten::op_b.*'B'"):
        contract.flop_handles([a, b, Method(name="C", flop_handles={"aten::op_b": handle})])
    shared = next(iter(EXTRA_FLOP_HANDLES))
    with pytest.raises(ValueError, match=f"'D'.*{shared}.*flop_handles"):
        contract.flop_handles([Method(name="D", flop_handles={shared: handle})])


def test_mask_head_flops_from_the_first_method_that_counts_the_model():
    calls = []

    def none(cfg, model, image):
        calls.append("none")
        return None

    def count(cfg, model, image):
        calls.append("count")
        return {"gflops_per_box": 1.5, "output_side": 28}

    methods = (Method(name="N", head_flops=none), Method(name="C", head_flops=count))
    result = contract.mask_head_flops(None, None, None, methods=methods)
    assert result == {"gflops_per_box": 1.5, "output_side": 28, "method": "C"}
    assert calls == ["none", "count"]
    calls.clear()
    assert contract.mask_head_flops(None, None, None, "C", methods=methods)["method"] == "C"
    assert calls == ["count"]  # the declaring method first
    assert contract.mask_head_flops(None, None, None, methods=methods[:1]) is None
    bad = (Method(name="Bad", head_flops=lambda cfg, model, image: {"gflops": 1}),)
    with pytest.raises(TypeError, match="'Bad'.*gflops_per_box"):
        contract.mask_head_flops(None, None, None, methods=bad)


def test_load_images_resizes_dataset_images(tmp_path):
    json_path, image_dir = write_tiny_coco(tmp_path, num_images=2)
    name = register_tiny_coco("bench_tiny_images", json_path, image_dir)
    images, text = load_images(3, (40, 50), "BGR", name)
    assert len(images) == 3 and all(im.shape == (3, 40, 50) for im in images)
    assert torch.equal(images[0], images[2])  # 2 images, cycled
    assert float(images[0].max()) <= 255 and float(images[0].std()) > 0
    assert name in text


# ---------------------------------------------------------------- the tool, end to end
@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_configs")
    mrcnn = write_cfg(tiny_mask_rcnn_cfg(root, "toy_train", ""), root / "tiny_mrcnn.yaml")
    pointrend_cfg = instance_cfg()
    pointrend = write_cfg(pointrend_cfg, root / "tiny_pointrend.yaml")
    broken = root / "broken.yaml"
    broken.write_text('MODEL:\n  META_ARCHITECTURE: "NoSuchArchitecture"\n')
    from detectron2.modeling import build_model

    weights = root / "pointrend.pth"
    torch.save({"model": build_model(pointrend_cfg).state_dict()}, weights)
    return {"mrcnn": mrcnn, "pointrend": pointrend, "broken": str(broken), "weights": weights}


def _argv(configs, out, *extra):
    return [
        "--configs", configs["pointrend"], configs["broken"],
        "--yardstick", configs["mrcnn"],
        "--size", SIZE, "--random-images", "--flop-images", "2",
        "--warmup", "0", "--runs", "2", "--train-warmup", "0", "--train-runs", "1",
        "--detections", "5", "--matmul-size", "64", "--device", "cpu",
        "--output-dir", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def run(configs, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_out")
    weights = f"tiny_pointrend.yaml={configs['weights']}"
    code = benchmark_tool.main(_argv(configs, out, "--weights", weights))
    with open(out / "benchmark.json") as f:
        return code, out, json.load(f)


def test_tool_writes_table_json_png_with_all_columns(run, capsys):
    code, out, document = run
    assert code == 0 and document["complete"]
    markdown = (out / "benchmark.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| config"))
    assert [c.strip() for c in header.strip("|").split("|")] == TABLE_COLUMNS
    assert "AMD" in markdown or document["machine"]["cpu"] in markdown
    assert document["machine"]["detectron2"] in markdown and "torch" in markdown
    with open(out / "benchmark.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    labels = [row["label"] for row in document["rows"]]
    assert len(labels) == 3 and document["rows"][0]["yardstick"]
    table_rows = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    assert len(table_rows) == 3
    assert all(len(line.strip("|").split("|")) == len(TABLE_COLUMNS) for line in table_rows)


def test_tool_rows_hold_every_measurement(run):
    _, _, document = run
    yard, pointrend, _ = document["rows"]
    for row in (yard, pointrend):
        assert row["errors"] == {}, row["errors"]
        assert row["params"] > 0 and row["input_size"] == [48, 64]
        assert row["flops"]["gflops"]["n"] == 2 and row["flops"]["gflops"]["mean"] > 0
        assert row["inference"]["latency_ms"]["n"] == 2
        assert row["train"]["step_ms"]["n"] == 1 and row["train"]["peak_mem_mb"] >= 0
        assert row["detection_overrides"]["TEST.DETECTIONS_PER_IMAGE"] == 5
        assert row["detection_overrides"]["MODEL.ROI_HEADS.SCORE_THRESH_TEST"] == 0.0
        assert row["inference"]["detections"] <= 5
        latency_s = row["inference"]["latency_ms"]["median"] / 1e3
        assert row["achieved_gflops_per_s"] == pytest.approx(
            row["flops"]["gflops"]["mean"] / latency_s
        )
        ceiling = document["matmul"]["gflops_per_s"]
        assert row["ceiling_fraction"] == pytest.approx(row["achieved_gflops_per_s"] / ceiling)
    assert yard["latency_ratio"] == pytest.approx(1.0)
    assert pointrend["latency_ratio"] == pytest.approx(
        pointrend["inference"]["latency_ms"]["median"] / yard["inference"]["latency_ms"]["median"]
    )
    assert yard["weights"] == "random (norm-calibrated)" and pointrend["weights"].endswith(
        "pointrend.pth"
    )
    assert "mask_head_flops" not in yard  # a plain Mask R-CNN head: no method counts it
    head = pointrend["mask_head_flops"]  # an undeclared config: PointRend's counter found it
    assert head["method"] == "PointRend" and head["output_side"] == 7 * 2**5
    assert head["gflops_per_box"] > 0 and head["conv_head_same_output"]["gflops_per_box"] > 0
    for row in (yard, pointrend):  # undeclared configs: Detectron2's class-count key
        assert row["num_classes_key"] == DETECTRON2.num_classes_key and row["method"] is None


def test_broken_config_gives_error_row_and_others_run(run):
    _, out, document = run
    broken = document["rows"][2]
    assert set(broken["errors"]) == {"build"} and "NoSuchArchitecture" in broken["errors"]["build"]
    assert "flops" not in broken and "inference" not in broken
    assert "NoSuchArchitecture" in (out / "benchmark.md").read_text()


def test_interrupted_run_keeps_measured_rows(configs, tmp_path, monkeypatch):
    real_measure = bench._measure
    calls = []

    def measure_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_measure(*args, **kwargs)

    monkeypatch.setattr(bench, "_measure", measure_then_interrupt)
    argv = _argv(configs, tmp_path, "--skip", "flops", "latency", "mask_head", "train")
    assert benchmark_tool.main(argv) == 130
    with open(tmp_path / "benchmark.json") as f:
        document = json.load(f)
    assert not document["complete"]
    assert [row["label"] for row in document["rows"]] == [bs.config_label(configs["mrcnn"])]
    assert document["rows"][0]["params"] > 0
    assert "(incomplete)" in (tmp_path / "benchmark.md").read_text()


def test_weights_for_unknown_config_is_a_clear_error(configs, tmp_path):
    argv = _argv(configs, tmp_path, "--weights", f"nosuch.yaml={configs['weights']}")
    with pytest.raises(SystemExit, match="nosuch.yaml"):
        benchmark_tool.main(argv)


# ---------------------------------------------------------------- toy accuracy
def test_every_registered_toy_config_is_trained():
    expected = [(m.name, n) for m in registered_methods() for n in m.toy_configs]
    assert bt.toy_configs_to_train() == expected
    assert {"mask_rcnn.yaml", "semantic_fpn.yaml"} <= {n for _, n in expected}
    for _, name in expected:
        path = bs.toy_config_file(name)
        assert os.path.realpath(path) == os.path.realpath(
            os.path.join(REPO, "configs", "toy", name)
        )
    with pytest.raises(FileNotFoundError, match="toy/nosuch.yaml"):
        bs.toy_config_file("nosuch.yaml")


def _metrics_lines(iteration, task_values, prefix=""):
    train = {"iteration": iteration - 1, "total_loss": 1.5, "fast_rcnn/cls_accuracy": 0.9}
    final = {"iteration": iteration}
    for task, values in task_values.items():
        final.update({f"{prefix}{task}/{k}": v for k, v in values.items()})
    return [json.dumps(train), json.dumps(final)]


def test_read_final_results_from_metrics_json(tmp_path):
    with pytest.raises(bt.ToyRunError, match="does not exist"):
        bt.read_final_results(str(tmp_path))
    instance = {t: {"AP": ap, "AP50": 2 * ap, "AP-box": ap} for t, ap in
                (("bbox", 10.5), ("segm", 7.25), ("boundary", 5.0))}  # fmt: skip
    lines = _metrics_lines(20, {"bbox": {"AP": 1.0}}) + _metrics_lines(300, instance)
    (tmp_path / "metrics.json").write_text("\n".join(lines) + '\n{"iteration": 30')  # cut short
    results, iteration = bt.read_final_results(str(tmp_path))
    assert iteration == 300 and results == instance  # the last evaluation record, nested again
    summary = bt.summarize_results(results)
    assert summary == {"bbox_AP": 10.5, "segm_AP": 7.25, "boundary_AP": 5.0, "mIoU": None}
    lines = _metrics_lines(5, {"sem_seg": {"mIoU": 33.0, "fwIoU": 50.0}}, prefix="toy_sem_val/")
    (tmp_path / "metrics.json").write_text("\n".join(lines))
    results, iteration = bt.read_final_results(str(tmp_path))
    assert results == {"toy_sem_val/sem_seg": {"mIoU": 33.0, "fwIoU": 50.0}}
    assert bt.summarize_results(results)["mIoU"] == 33.0
    (tmp_path / "metrics.json").write_text(json.dumps({"iteration": 3, "total_loss": 1.0}))
    with pytest.raises(bt.ToyRunError, match="no evaluation results"):
        bt.read_final_results(str(tmp_path))


class FakeTrainNet:
    """Stands in for the train_net.py subprocess: writes the log and metrics.json of a finished
    run (instance or semantic results by the config's name); ``fail`` names configs that crash."""

    def __init__(self, fail=(), on_call=None):
        self.calls, self.fail, self.on_call = [], fail, on_call

    def __call__(self, argv, log_path, echo, python=None):
        assert argv[:2] == ["-m", "projects.engine.main"]
        config = argv[argv.index("--config-file") + 1]
        output_dir = argv[argv.index("OUTPUT_DIR") + 1]
        iteration = int(argv[argv.index("SOLVER.MAX_ITER") + 1]) if "SOLVER.MAX_ITER" in argv else 7
        self.calls.append(os.path.basename(config))
        if self.on_call:
            self.on_call(len(self.calls))
        with open(log_path, "w") as f:
            f.write("fake train_net\n")
        echo("iter: 0")
        if os.path.basename(config) in self.fail:
            return 1, ["Traceback (most recent call last):", "  File x", "RuntimeError: boom", ""]
        if "sem" in os.path.basename(config):
            results = {"sem_seg": {"mIoU": 30.0 + len(self.calls), "fwIoU": 40.0}}
        else:
            ap = float(len(self.calls))
            results = {"bbox": {"AP": ap}, "segm": {"AP": ap + 0.5}, "boundary": {"AP": ap + 0.25}}
        with open(os.path.join(output_dir, "metrics.json"), "w") as f:
            f.write("\n".join(_metrics_lines(iteration, results)) + "\n")
        return 0, ["done"]


def _table(markdown):
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    split = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    return split[0], split[1:]


def test_toy_accuracy_only_trains_every_toy_config_and_reuses_runs(tmp_path, monkeypatch):
    def check_incremental(call):  # when the 2nd run starts, the 1st is in the JSON already
        if call == 2:
            with open(tmp_path / "benchmark.json") as f:
                rows = json.load(f)["rows"]
            assert rows[0]["toy"]["bbox_AP"] == 1.0 and rows[1]["toy"]["pending"]

    fake = FakeTrainNet(fail=("pointrend_semseg.yaml",), on_call=check_incremental)
    monkeypatch.setattr(bt, "run_training", fake)
    argv = [
        "--toy-accuracy-only",
        "--toy-opts",
        "SOLVER.MAX_ITER",
        "3",
        "--output-dir",
        str(tmp_path),
    ]
    assert benchmark_tool.main(argv) == 0
    declared = bs.default_config_specs()
    order = _toy_order([spec.toy for spec in declared])
    assert fake.calls == order
    with open(tmp_path / "benchmark.json") as f:
        document = json.load(f)
    assert document["complete"] and document["matmul"] is None
    assert document["settings"]["toy"]["opts"] == ["SOLVER.MAX_ITER", "3"]
    rows = {row["label"]: row for row in document["rows"]}
    assert [row["label"] for row in document["rows"][: len(declared)]] == [
        spec.label for spec in declared
    ]
    yard, pointrend = rows["Mask R-CNN R50-FPN (Detectron2, yardstick)"], rows["PointRend R50-FPN"]
    semseg, semantic_fpn = rows["toy/pointrend_semseg"], rows["toy/semantic_fpn"]
    assert yard["yardstick"] and "params" not in yard  # nothing measured
    assert yard["toy"]["config"].endswith("configs/toy/mask_rcnn.yaml")
    assert (yard["toy"]["bbox_AP"], yard["toy"]["segm_AP"], yard["toy"]["boundary_AP"]) == (
        1.0,
        1.5,
        1.25,
    )
    assert yard["toy"]["iteration"] == 3 and yard["toy"]["reused"] is False
    assert yard["toy"]["results"]["segm"] == {"AP": 1.5}
    assert pointrend["toy"]["config"].endswith("configs/toy/pointrend.yaml")
    assert yard["errors"] == pointrend["errors"] == {}  # check_incremental passed too
    assert semseg["toy_only"] and semantic_fpn["toy_only"] and semantic_fpn["errors"] == {}
    assert semseg["method"] == "PointRend" and semantic_fpn["method"] == "Detectron2"
    mIoU = 30.0 + order.index("semantic_fpn.yaml") + 1  # FakeTrainNet: by call number
    assert semantic_fpn["toy"]["mIoU"] == mIoU and semantic_fpn["toy"]["bbox_AP"] is None
    assert semseg["errors"]["toy"].startswith(
        "projects.engine.main exited with 1: RuntimeError: boom"
    )
    assert "mIoU" not in semseg["toy"] and semseg["toy"]["log"].endswith("train_net.log")
    header, table = _table((tmp_path / "benchmark.md").read_text())
    assert header == ["config", *TOY_COLUMNS, "status"]
    table = {row[0]: row for row in table}
    assert table["Mask R-CNN R50-FPN (Detectron2, yardstick)"] == [
        "Mask R-CNN R50-FPN (Detectron2, yardstick)", "toy/mask_rcnn, 3 it",
        "1.00", "1.50", "1.25", "-", "ok"]  # fmt: skip
    assert table["toy/semantic_fpn"] == [
        "toy/semantic_fpn", "toy/semantic_fpn, 3 it", "-", "-", "-", f"{mIoU:.2f}", "ok"
    ]  # fmt: skip
    assert "RuntimeError: boom" in table["toy/pointrend_semseg"][-1]
    assert "toy overrides: SOLVER.MAX_ITER 3" in (tmp_path / "benchmark.md").read_text()

    # Again: the finished runs are reused, the failed one is trained again.
    fake.calls.clear()
    fake.fail = ()
    assert benchmark_tool.main(argv) == 0
    assert fake.calls == ["pointrend_semseg.yaml"]
    with open(tmp_path / "benchmark.json") as f:
        again = json.load(f)["rows"]
    trained = [row for row in again if "toy" in row]  # rows without a toy config have none
    assert [row["toy"]["reused"] for row in trained] == [
        row["label"] != "toy/pointrend_semseg" for row in trained
    ]
    assert again[0]["toy"]["bbox_AP"] == 1.0
    assert all(row["errors"] == {} for row in again)
    assert "toy/mask_rcnn, 3 it, reused" in (tmp_path / "benchmark.md").read_text()
    # Another budget is another config: trained again; so is everything with --toy-retrain.
    fake.calls.clear()
    assert benchmark_tool.main(argv[:3] + ["4"] + argv[4:]) == 0
    assert len(fake.calls) == len(order)
    fake.calls.clear()
    assert benchmark_tool.main(argv[:3] + ["4"] + argv[4:] + ["--toy-retrain"]) == 0
    assert len(fake.calls) == len(order)


def test_toy_accuracy_columns_beside_the_measurements(configs, tmp_path, monkeypatch):
    fake = FakeTrainNet()
    monkeypatch.setattr(bt, "run_training", fake)
    toy_mrcnn = os.path.join(REPO, "configs", "toy", "mask_rcnn.yaml")
    skip = ["--skip", "flops", "latency", "mask_head", "train"]
    argv = _argv(configs, tmp_path, *skip, "--toy-accuracy")
    argv[1:3] = [toy_mrcnn, configs["broken"]]  # --configs: a toy config, a broken file
    assert benchmark_tool.main(argv) == 0
    # The toy config stands for itself; the other two are no method's: no toy config.
    assert fake.calls == _toy_order(["mask_rcnn.yaml"])
    with open(tmp_path / "benchmark.json") as f:
        document = json.load(f)
    yard, toy, broken = document["rows"][:3]
    assert [row["label"] for row in document["rows"][3:]] == [
        bs.toy_label(name) for name in fake.calls[1:]
    ]
    assert yard["params"] > 0 and toy["params"] > 0 and "build" in broken["errors"]
    assert os.path.samefile(toy["toy"]["config"], toy_mrcnn)
    assert toy["toy"]["segm_AP"] == 1.5 and toy["errors"] == {}
    for row in (yard, broken):
        assert "toy" not in row and "is no registered method's" in row["errors"]["toy"]
    header, rows = _table((tmp_path / "benchmark.md").read_text())
    assert header == TABLE_COLUMNS[:-1] + TOY_COLUMNS + ["status"]
    assert all(len(row) == len(header) for row in rows)
    assert rows[1][len(TABLE_COLUMNS) - 1 : -1] == [
        "toy/mask_rcnn, 7 it",
        "1.00",
        "1.50",
        "1.25",
        "-",
    ]
    assert rows[0][1] != "-" and "no toy config" in rows[0][-1]  # measured, toy error in status


def test_a_declared_toy_config_that_is_missing_and_a_row_without_one_are_error_rows(
    tmp_path, monkeypatch
):
    fake = FakeTrainNet()
    monkeypatch.setattr(bt, "run_training", fake)
    missing = str(tmp_path / "nosuch_toy.yaml")
    to_train = [("Detectron2", "mask_rcnn.yaml"), ("NewMethod", missing)]
    monkeypatch.setattr(bt, "toy_configs_to_train", lambda: to_train)
    rows = [{"label": "NewMethod/a", "config": "a.yaml", "method": "NewMethod", "errors": {}}]
    rows[0]["toy_config"] = None
    bt.run_toy_accuracy(rows, bt.ToySettings(), str(tmp_path / "out"), lambda text: None)
    assert "method 'NewMethod' declares none for a.yaml" in rows[0]["errors"]["toy"]
    assert "toy" not in rows[0] and fake.calls == ["mask_rcnn.yaml"]
    assert [row["label"] for row in rows[1:]] == ["toy/mask_rcnn", "toy/nosuch_toy"]
    assert rows[1]["toy"]["bbox_AP"] == 1.0 and rows[1]["errors"] == {}
    assert "nosuch_toy.yaml" in rows[2]["errors"]["toy"] and "toy" not in rows[2]


@pytest.mark.integration
def test_toy_run_of_the_launcher_module_for_real_then_reused(tmp_path, monkeypatch):
    """A 2-iteration run of a tiny config through the real ``python -m projects.engine.main``
    subprocess, started from a folder outside the checkout."""
    json_path, image_dir = write_tiny_coco(tmp_path / "data", num_images=4)
    data = f"coco_format:{json_path}:{image_dir}"
    toy_dir = tmp_path / "toy"
    toy_dir.mkdir()
    cfg = tiny_mask_rcnn_cfg(tmp_path / "unused", data, data)
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.CHECKPOINT_PERIOD = 2, 100
    config = write_cfg(cfg, toy_dir / "tiny.yaml")
    output_dir = str(tmp_path / "run")
    monkeypatch.chdir(tmp_path)  # the launcher is found through the projects package, not cwd
    lines = []
    entry = bt.train_toy_config(config, output_dir, bt.ToySettings(), lines.append)
    assert entry["iteration"] == 2 and not entry["reused"] and entry["seconds"] > 0
    for name in ("bbox_AP", "segm_AP", "boundary_AP"):
        assert 0 <= entry[name] <= 100, entry
    assert entry["mIoU"] is None and "AP50" in entry["results"]["segm"]
    assert lines[0].startswith("python -m projects.engine.main --config-file")
    assert any("Starting training" in line for line in lines)  # the log, streamed
    with open(os.path.join(output_dir, "train_net.log")) as f:
        assert "Starting training" in f.read()

    def no_run(*args):
        raise AssertionError("a finished run of the same config is not trained again")

    monkeypatch.setattr(bt, "run_training", no_run)
    again = bt.train_toy_config(config, output_dir, bt.ToySettings(), lines.append)
    assert again["reused"] and again["segm_AP"] == entry["segm_AP"]


def test_synthetic_training_batch_carries_the_semantic_target_a_config_derives():
    """A config with INPUT.INSTANCE_SEM_SEG.ENABLED trains on ``sem_seg``: the synthetic batch has
    it, derived from its masks (background 0, class + 1 with ``"zero"``)."""
    from projects.benchmark.measure import synthetic_training_batch

    (plain,) = synthetic_training_batch(1, (40, 60), 3, 2)
    assert "sem_seg" not in plain
    (item,) = synthetic_training_batch(1, (40, 60), 3, 2, sem_seg_background="zero")
    inst, sem = item["instances"], item["sem_seg"]
    assert sem.shape == (40, 60) and set(sem.unique().tolist()) <= {0, 1, 2, 3}
    covered = inst.gt_masks.tensor.any(dim=0)
    assert (sem[~covered] == 0).all() and (sem[covered] > 0).all()
