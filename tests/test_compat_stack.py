"""Each fix of ``projects.compat.stack`` is needed on this stack and makes Detectron2 v0.6 work.

Every check runs in a fresh interpreter, so that one test's patches cannot hide another's gap.
Each test first shows the gap exists here (the library lacks the feature) and then runs the v0.6
code path that needs it; removing the fix makes the second part fail.
"""

import subprocess
import sys
import textwrap

import pytest


def run_python(code):
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def test_pillow_linear_gap_and_fix():
    out = run_python("""
        import PIL.Image
        print("native", hasattr(PIL.Image, "LINEAR"))
        import numpy as np
        from detectron2.data.transforms import ExtentTransform  # evaluates Image.LINEAR
        t = ExtentTransform(src_rect=(0, 0, 8, 8), output_size=(4, 4))
        print("out", t.apply_image(np.zeros((8, 8, 3), np.uint8)).shape)
        """)
    if "native True" in out:
        pytest.skip("this Pillow still has Image.LINEAR: the fix is not exercised")
    assert "out (4, 4, 3)" in out


def test_numpy_alias_gap_and_fix(tmp_path):
    out = run_python(f"""
        import warnings
        import numpy as np
        try:
            np.int
            print("native np.int present")
        except AttributeError:
            print("native np.int missing")
        from PIL import Image
        import torch
        from detectron2.data import DatasetCatalog, MetadataCatalog
        from detectron2.data.build import print_instances_class_histogram
        from detectron2.evaluation import SemSegEvaluator
        from detectron2.structures.masks import polygons_to_bitmask

        # the class histogram logged before training (np.int)
        print_instances_class_histogram(
            [{{"annotations": [{{"category_id": 0, "iscrowd": 0}}]}}], ["a", "b"]
        )
        # empty polygon list -> empty mask (np.bool)
        assert polygons_to_bitmask([], 3, 4).shape == (3, 4)
        # semantic-segmentation evaluation (np.int in process, np.float in evaluate)
        gt = np.array([[0, 1], [1, 255]], np.uint8)
        Image.fromarray(gt).save("{tmp_path}/gt.png")
        DatasetCatalog.register("np_alias_sem", lambda: [
            {{"file_name": "x.png", "sem_seg_file_name": "{tmp_path}/gt.png"}}])
        MetadataCatalog.get("np_alias_sem").set(stuff_classes=["a", "b"], ignore_label=255)
        ev = SemSegEvaluator("np_alias_sem", distributed=False, output_dir=None)
        ev.reset()
        logits = torch.zeros(2, 2, 2)
        logits[0, 0, 0] = logits[1, 0, 1] = logits[1, 1, 0] = 1.0
        ev.process([{{"file_name": "x.png"}}], [{{"sem_seg": logits}}])
        print("mIoU", ev.evaluate()["sem_seg"]["mIoU"])
        """)
    if "native np.int present" in out:
        pytest.skip("this numpy still has np.int: the fix is not exercised")
    assert "mIoU 100.0" in out


def test_pkg_resources_gap_and_fix():
    # sys.modules[name] = None makes ``import pkg_resources`` fail, as on setuptools >= 81.
    out = run_python("""
        import sys
        sys.modules["pkg_resources"] = None
        try:
            import pkg_resources
            print("import worked")
        except ImportError:
            print("import blocked")
        from detectron2 import model_zoo
        path = model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
        import os
        print("exists", os.path.isfile(path))
        print("shim", getattr(sys.modules["pkg_resources"], "__detectron2_compat_shim__", False))
        """)
    assert "import blocked" in out
    assert "exists True" in out and "shim True" in out


def test_fixes_are_idempotent_and_detect_features():
    out = run_python("""
        from projects.compat import stack
        first = stack.apply_all()   # detectron2 is not imported yet, but projects applies them
        second = stack.apply_all()
        print("second", second)
        """)
    assert "'pillow_linear': False, 'numpy_aliases': [], 'pkg_resources': False" in out
    assert "'deform_conv_cpu': False" in out and "'map_dataset_fallback': False" in out


def test_installed_stack_compat_is_this_repository():
    """``detectron2/_stack_compat.py`` is the repository's file (a stale install is caught)."""
    from pathlib import Path

    import detectron2

    installed = Path(detectron2.__file__).parent / "_stack_compat.py"
    if not installed.exists():
        pytest.skip("Detectron2 is an official build, not the portable install")
    repo_file = Path(__file__).resolve().parent.parent / "projects" / "compat" / "stack.py"
    assert installed.read_bytes() == repo_file.read_bytes(), "re-run `make setup`"


def test_detectron2_imports_without_the_project():
    out = run_python("""
        import sys
        import detectron2.modeling, detectron2.data, detectron2.evaluation, detectron2.engine
        imported = any(m == "projects" or m.startswith("projects.") for m in sys.modules)
        print("project imported", imported)
        """)
    assert "project imported False" in out


def test_caffe2_free_flop_count():
    """v0.6's detectron2.utils.analysis needs caffe2; projects.evaluation.flops does not."""
    out = run_python("""
        try:
            import detectron2.utils.analysis
            print("analysis importable")
        except ImportError as e:
            print("analysis fails:", e)
        import torch
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model
        from projects.evaluation.flops import count_flops
        cfg = get_cfg()
        cfg.MODEL.DEVICE = "cpu"
        cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
        cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
        cfg.MODEL.RESNETS.DEPTH = 18
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
        cfg.MODEL.RESNETS.OUT_FEATURES = ["res4"]
        cfg.MODEL.RPN.IN_FEATURES = ["res4"]
        cfg.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
        cfg.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"
        cfg.MODEL.RESNETS.RES5_DILATION = 1
        model = build_model(cfg)
        flops = count_flops(model, torch.rand(3, 64, 96) * 255)
        conv1 = flops.by_module_and_operator()["model.backbone.stem.conv1"]["conv"]
        # 7x7 stride-2 conv, 3 -> 64 channels, output 32 x 48: multiply-adds
        expected = 7 * 7 * 3 * 64 * 32 * 48
        print("conv1", conv1, expected, "total_gt_conv1", flops.total() > 10 * conv1)
        """)
    assert "analysis fails" in out or "analysis importable" in out
    conv1_line = [line for line in out.splitlines() if line.startswith("conv1")][0].split()
    assert conv1_line[1] == conv1_line[2]
    assert conv1_line[-1] == "True"


def test_deform_conv_layers_train_on_cpu():
    """v0.6 raises NotImplementedError for CPU backward; with the routing they match torchvision."""
    import torch
    import torchvision
    from detectron2.layers import DeformConv, ModulatedDeformConv

    import projects  # noqa: F401  (installs the routing)

    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    layer = DeformConv(4, 6, kernel_size=3, padding=1, groups=2, deformable_groups=2).double()
    offset = torch.randn(2, 2 * 2 * 9, 9, 8, dtype=torch.float64, requires_grad=True)
    out = layer(x, offset)
    out.square().sum().backward()
    ref = torchvision.ops.deform_conv2d(x, offset, layer.weight, padding=1)
    torch.testing.assert_close(out, ref)
    assert x.grad.abs().sum() > 0 and offset.grad.abs().sum() > 0

    mlayer = ModulatedDeformConv(4, 6, kernel_size=3, padding=1, deformable_groups=1).double()
    moffset = torch.randn(2, 18, 9, 8, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(2, 9, 9, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, c: mlayer(a, b, c),
        (
            x.detach()[:, :, :5, :5].requires_grad_(),
            moffset.detach()[:, :, :5, :5].requires_grad_(),
            mask.detach()[:, :, :5, :5].requires_grad_(),
        ),
    )


def test_map_dataset_replaces_skipped_samples():
    """v0.6 samples from a set (TypeError on Python >= 3.11); the fix picks another sample."""
    from detectron2.data.common import MapDataset

    import projects  # noqa: F401  (installs the fix)

    dataset = MapDataset(list(range(6)), lambda x: None if x % 2 == 0 else x)
    assert [dataset[i] % 2 for i in range(6)] == [1] * 6
    with pytest.raises(RuntimeError, match="no sample of this dataset can be loaded"):
        MapDataset([0, 2], lambda x: None)[0]
