"""Each fix of ``projects.compat.stack`` is needed on this stack and makes Detectron2 v0.6 work.

Every gap-and-fix check runs in a fresh interpreter, so that one test's patches cannot hide
another's gap. Each first shows the gap exists here (the library lacks the feature) and then runs
the v0.6 code path that needs it; removing the fix makes the second part fail. The
``test_plain_detectron2_import_*`` checks import Detectron2 alone, so they need the installed
``detectron2/_stack_compat.py`` to be this repository's (``make setup`` refreshes it).
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


@pytest.mark.integration
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


@pytest.mark.integration
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


def _portable_install():
    """Whether Detectron2 is the portable install, whose ``detectron2/_stack_compat.py`` applies
    the fixes on a plain ``import detectron2``; an official build gets them from ``import
    projects``."""
    from pathlib import Path

    import detectron2

    return (Path(detectron2.__file__).parent / "_stack_compat.py").exists()


@pytest.mark.integration
def test_pkg_resources_gap_and_fix():
    # sys.modules[name] = None makes ``import pkg_resources`` fail, as on setuptools >= 81.
    # Detectron2's model_zoo (v0.6 and source builds of 2026) imports pkg_resources.
    fix = "" if _portable_install() else "import projects"
    out = run_python(f"""
        import sys
        sys.modules["pkg_resources"] = None
        try:
            import pkg_resources
            print("import worked")
        except ImportError:
            print("import blocked")
        {fix}
        from detectron2 import model_zoo
        path = model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
        import os
        print("exists", os.path.isfile(path))
        print("shim", getattr(sys.modules["pkg_resources"], "__detectron2_compat_shim__", False))
        """)
    assert "import blocked" in out
    assert "exists True" in out and "shim True" in out


@pytest.mark.integration
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


@pytest.mark.integration
def test_detectron2_imports_without_the_project():
    out = run_python("""
        import sys
        import detectron2.modeling, detectron2.data, detectron2.evaluation, detectron2.engine
        imported = any(m == "projects" or m.startswith("projects.") for m in sys.modules)
        print("project imported", imported)
        """)
    assert "project imported False" in out


@pytest.mark.integration
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


def _installed_stack_compat_or_skip():
    """Skip unless ``detectron2/_stack_compat.py`` is this repository's stack.py: a plain
    ``import detectron2`` only runs the fixes of the installed copy (``make setup`` refreshes it;
    ``test_installed_stack_compat_is_this_repository`` fails on a stale one)."""
    from pathlib import Path

    import detectron2

    if not _portable_install():
        pytest.skip("official Detectron2 build: the fixes apply on `import projects` only")
    installed = Path(detectron2.__file__).parent / "_stack_compat.py"
    repo_file = Path(__file__).resolve().parent.parent / "projects" / "compat" / "stack.py"
    if installed.read_bytes() != repo_file.read_bytes():
        pytest.skip("the installed detectron2/_stack_compat.py is stale: re-run `make setup`")


@pytest.mark.integration
def test_plain_detectron2_import_trains_deform_conv_on_cpu():
    """A script that imports Detectron2 alone: v0.6's Functions refuse the CPU backward (the gap),
    the layers train on CPU tensors and match torchvision, also after a reload of the module."""
    _installed_stack_compat_or_skip()
    out = run_python("""
        import importlib, sys
        import torch, torchvision
        from detectron2.layers import DeformConv, ModulatedDeformConv
        import detectron2.layers.deform_conv as dc

        torch.manual_seed(0)
        x = torch.randn(2, 4, 7, 6, dtype=torch.float64, requires_grad=True)
        offset = torch.randn(2, 2 * 2 * 9, 7, 6, dtype=torch.float64, requires_grad=True)
        weight = torch.randn(6, 2, 3, 3, dtype=torch.float64, requires_grad=True)
        v06_function = dc.deform_conv.cuda_route  # v0.6's own, kept for CUDA tensors
        try:
            v06_function(x, offset[:, :18], weight.repeat(1, 2, 1, 1), 1, 1).sum().backward()
            print("gap none")
        except NotImplementedError as e:
            print("gap", e)

        def check(layer_class, *extra):
            layer = layer_class(4, 6, 3, padding=1, groups=2, deformable_groups=2).double()
            layer.weight.data.copy_(weight.detach())
            out = layer(x, offset, *extra)
            grads = torch.autograd.grad(out.square().sum(), (x, offset, layer.weight))
            kwargs = {"mask": extra[0]} if extra else {}
            ref = torchvision.ops.deform_conv2d(x, offset, layer.weight, padding=1, **kwargs)
            ref_grads = torch.autograd.grad(ref.square().sum(), (x, offset, layer.weight))
            torch.testing.assert_close(out, ref)
            for g, r in zip(grads, ref_grads):
                torch.testing.assert_close(g, r)
            return "ok"

        mask = torch.rand(2, 2 * 9, 7, 6, dtype=torch.float64)
        print("v1", check(DeformConv), "v2", check(ModulatedDeformConv, mask))
        importlib.reload(dc)
        print("reloaded v1", check(dc.DeformConv), "v2", check(dc.ModulatedDeformConv, mask))
        print("project imported", any(m.split(".")[0] == "projects" for m in sys.modules))
        """)
    assert "gap Deformable Conv is not supported on CPUs!" in out
    assert "v1 ok v2 ok" in out and "reloaded v1 ok v2 ok" in out
    assert "project imported False" in out


@pytest.mark.integration
def test_plain_detectron2_import_crops_polygons_without_shapely():
    _installed_stack_compat_or_skip()
    out = run_python("""
        import sys
        import numpy as np
        from detectron2.data import transforms as T
        polygons = [np.array([[0, 0], [20, 0], [20, 20], [0, 20]], float)]
        print("cropped", T.CropTransform(2, 3, 10, 8).apply_polygons(polygons)[0].tolist())
        print("project imported", any(m.split(".")[0] == "projects" for m in sys.modules))
        print("shapely imported", "shapely" in sys.modules)
        """)
    # The window [2, 12] x [3, 11] of the square, in window coordinates (any vertex order).
    cropped = eval(out.split("cropped ")[1].splitlines()[0])
    assert sorted(map(tuple, cropped)) == [(0.0, 0.0), (0.0, 8.0), (10.0, 0.0), (10.0, 8.0)]
    assert "project imported False" in out


@pytest.mark.integration
def test_post_import_fixes_apply_on_first_import_and_on_reload_through_one_finder(tmp_path):
    (tmp_path / "stack_probe_module.py").write_text("VALUE = 1\n\n\ndef source_me():\n    pass\n")
    out = run_python(f"""
        import importlib, inspect, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from projects.compat import stack  # imports detectron2 (its installed copy) too

        seen = []

        def patch_probe(module):
            seen.append(module.VALUE)
            module.VALUE += 10
            return True

        print("before import", stack.fix_after_import("stack_probe_module", patch_probe))
        import stack_probe_module as m
        print("first", seen, m.VALUE)
        importlib.reload(m)
        print("reload", seen, m.VALUE)
        print("source", inspect.getsource(m.source_me).split()[1])
        stack.apply_all()
        marked = [f for f in sys.meta_path if getattr(f, stack._FINDER_MARK, False)]
        print("finders", len(marked), sys.meta_path.index(marked[0]))
        """)
    assert "before import False" in out
    assert "first [1] 11" in out and "reload [1, 1] 11" in out
    assert "source source_me():" in out
    assert "finders 1 0" in out


def _fake_deform_conv_module(cpu_trains):
    """A stand-in for ``detectron2.layers.deform_conv`` whose functions train on CPU tensors
    (``cpu_trains``) or raise like v0.6's."""
    import types

    import torchvision

    def deform_conv(input, offset, weight, stride=1, padding=0, dilation=1, *args):
        if not cpu_trains:
            raise NotImplementedError("Deformable Conv is not supported on CPUs!")
        return torchvision.ops.deform_conv2d(input, offset, weight, None, stride, padding, dilation)

    def modulated_deform_conv(input, offset, mask, weight, bias=None, stride=1, padding=0, *args):
        if not cpu_trains:
            raise NotImplementedError("Deformable Conv is not supported on CPUs!")
        return torchvision.ops.deform_conv2d(
            input, offset, weight, bias, stride, padding, mask=mask
        )

    module = types.ModuleType("fake_deform_conv")
    module.deform_conv, module.modulated_deform_conv = deform_conv, modulated_deform_conv
    return module


def test_deform_conv_routing_only_where_cpu_training_fails():
    """The fix probes the installed functions: a Detectron2 whose deformable conv already trains
    on CPU tensors is left alone; one that refuses them gets the routing, once."""
    import torch

    from projects.compat import stack

    working = _fake_deform_conv_module(cpu_trains=True)
    originals = (working.deform_conv, working.modulated_deform_conv)
    assert stack.patch_deform_conv_cpu(working) is False
    assert (working.deform_conv, working.modulated_deform_conv) == originals

    refusing = _fake_deform_conv_module(cpu_trains=False)
    assert stack.patch_deform_conv_cpu(refusing) is True
    assert stack.patch_deform_conv_cpu(refusing) is False
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    weight = torch.randn(3, 2, 3, 3)
    offset = torch.zeros(1, 18, 3, 3)
    refusing.deform_conv(x, offset, weight).sum().backward()
    torch.testing.assert_close(
        refusing.deform_conv(x, offset, weight), torch.nn.functional.conv2d(x, weight)
    )
    assert x.grad is not None


@pytest.mark.integration
def test_fvcore_crop_polygons_gap_and_fix():
    out = run_python("""
        import numpy as np
        import fvcore.transforms.transform as ft  # before detectron2: fvcore's own method
        square = [np.array([[0, 0], [20, 0], [20, 20], [0, 20]], float)]
        try:
            ft.CropTransform(2, 3, 10, 8).apply_polygons(square)
            print("native works")
        except ImportError as e:
            print("native fails:", e)
        import projects  # noqa: F401
        print("fixed", len(ft.CropTransform(2, 3, 10, 8).apply_polygons(square)))
        """)
    if "native works" in out:
        pytest.skip("shapely is installed: fvcore's own polygon crop runs, the fix stays out")
    assert "native fails: No module named 'shapely'" in out and "fixed 1" in out


@pytest.mark.integration
def test_crop_fix_stays_out_when_shapely_is_importable():
    out = run_python("""
        import sys, types
        sys.modules["shapely"] = types.ModuleType("shapely")  # importable from here on
        import fvcore.transforms.transform as ft
        original = ft.CropTransform.apply_polygons
        from projects.compat import stack
        print("changed", stack.patch_crop_polygons_without_shapely(ft))
        print("same", ft.CropTransform.apply_polygons is original)
        """)
    assert "changed False" in out and "same True" in out


def _star(cx, cy, r_out, r_in, points, phase):
    """A concave star polygon, (2 * points, 2) float64 (x, y)."""
    import numpy as np

    angles = phase + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, r_out, r_in)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)


def test_v06_crops_of_polygons_rasterize_like_the_cropped_bitmask():
    """v0.6's ``RandomCrop`` and ``RandomCrop_CategoryAreaConstraint`` through
    ``transform_instance_annotations``: the cropped polygons rasterize to the crop of the full
    image's bitmask, up to pixels on the polygon's boundary (a one-pixel band of the full mask,
    so the crop edges get no tolerance of their own). Instances outside the window lose all
    polygons; a U the window cuts in two keeps both arms."""
    import numpy as np
    from detectron2.data import detection_utils as utils
    from detectron2.data import transforms as T
    from detectron2.structures.masks import polygons_to_bitmask
    from scipy import ndimage

    import projects  # noqa: F401  (the stack fixes, if the install predates them)

    H, W = 90, 120
    u_shape = np.array(
        [[20, 10], [80, 10], [80, 70], [60, 70], [60, 30], [40, 30], [40, 70], [20, 70]], float
    )
    far_away = np.array([[100, 75], [118, 75], [118, 88], [100, 88]], float)
    image = np.zeros((H, W, 3), np.uint8)
    sem_seg = np.zeros((H, W), np.uint8)
    sem_seg[:, : W // 2] = 1
    augmentations = [
        [T.RandomCrop("absolute", (40, 50))],
        [T.RandomCrop("relative_range", (0.4, 0.4))],
        [T.RandomCrop_CategoryAreaConstraint("absolute", (45, 60), 0.9, ignored_category=None)],
    ]
    rng = np.random.RandomState(0)
    checked_pixels = 0
    for trial in range(12):
        polygons = [
            [_star(*rng.uniform(10, 80, 2), rng.uniform(15, 35), 6, rng.randint(4, 8), trial)],
            [u_shape.copy(), far_away.copy()],
        ]
        np.random.seed(trial)  # v0.6's augmentations draw from numpy's global RNG
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = T.AugmentationList(augmentations[trial % 3])(aug_input)
        (crop,) = [t for t in transforms if isinstance(t, T.CropTransform)]
        h, w = aug_input.image.shape[:2]
        for instance in polygons:
            annotation = {
                "segmentation": [p.reshape(-1).tolist() for p in instance],
                "bbox": [0, 0, 1, 1],
                "bbox_mode": 0,
                "category_id": 0,
            }
            out = utils.transform_instance_annotations(annotation, transforms, (h, w))
            full = polygons_to_bitmask([p.reshape(-1) for p in instance], H, W)
            band = ndimage.binary_dilation(full) & ~ndimage.binary_erosion(full)
            window = (slice(crop.y0, crop.y0 + h), slice(crop.x0, crop.x0 + w))
            expected, tolerated = full[window], band[window]
            got = polygons_to_bitmask([np.asarray(p) for p in out["segmentation"]], h, w)
            wrong = got != expected
            assert not (wrong & ~tolerated).any(), (trial, np.argwhere(wrong & ~tolerated)[:5])
            assert wrong.sum() <= 0.5 * tolerated.sum() + 1, trial
            for p in out["segmentation"]:
                xy = np.asarray(p).reshape(-1, 2)
                assert len(xy) >= 3
                assert (xy >= -1e-9).all() and (xy <= np.array([w, h]) + 1e-9).all()
            if not expected.any():
                assert out["segmentation"] == [], trial
            checked_pixels += expected.sum()
    assert checked_pixels > 5000  # the windows did cover the instances

    # The window y >= 40 keeps the U's two arms (one polygon or two); nothing is left of it in
    # the window x >= 90; the far-away square is cut to its window part.
    arms = T.CropTransform(10, 40, 80, 40).apply_polygons([u_shape.copy()])
    arms_mask = polygons_to_bitmask([p.reshape(-1) for p in arms], 40, 80)
    assert ndimage.label(arms_mask)[1] == 2
    assert arms_mask.sum() == 2 * 20 * 30
    assert T.CropTransform(90, 0, 30, 70).apply_polygons([u_shape.copy()]) == []
    (part,) = T.CropTransform(110, 80, 10, 10).apply_polygons([far_away.copy()])
    assert sorted(map(tuple, part.tolist())) == [(0, 0), (0, 8), (8, 0), (8, 8)]
