"""Augmentations keep image, boxes, polygons and bitmasks consistent; LSJ/SSD bounds; builder."""

import pickle

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.config import get_cfg
from detectron2.data import detection_utils as d2_utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode, polygons_to_bitmask

from projects.data import augmentations
from projects.data.augmentations import (
    AUGMENTATION_REGISTRY,
    CanvasTransform,
    ClipCropTransform,
    Expand,
    FixedSizeCrop,
    MinIoURandomCrop,
    PhotometricDistortion,
    PhotometricTransform,
    ResizeScale,
    build_augmentations,
    centre_keep_mask,
    clip_polygon,
)
from projects.data.config import add_data_config

H, W = 60, 80
RECT = (20, 15, 50, 45)  # x0, y0, x1, y1 of the bright object


def _scene():
    image = np.zeros((H, W, 3), dtype=np.uint8)
    x0, y0, x1, y1 = RECT
    image[y0:y1, x0:x1] = 255
    poly = [x0, y0, x1, y0, x1, y1, x0, y1]
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    anno = dict(bbox=list(RECT), bbox_mode=BoxMode.XYXY_ABS, category_id=0)
    rle = mask_util.encode(np.asfortranarray(mask))
    return image, dict(anno, segmentation=[poly]), dict(anno, segmentation=rle)


def _apply(augs, seed):
    """Run ``augs`` on the scene; return image, polygon annotation, bitmask annotation."""
    np.random.seed(seed)
    image, poly_anno, mask_anno = _scene()
    aug_input = T.AugInput(image, boxes=np.array([RECT], dtype=np.float64))
    tfm = T.AugmentationList(augs)(aug_input)
    hw = aug_input.image.shape[:2]
    poly_out = d2_utils.transform_instance_annotations(poly_anno, tfm, hw)
    mask_out = d2_utils.transform_instance_annotations(mask_anno, tfm, hw)
    return aug_input.image, poly_out, mask_out, tfm


def _dilate(m, r=1):
    out = np.zeros_like(m)
    padded = np.pad(m, r)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= padded[dy : dy + m.shape[0], dx : dx + m.shape[1]]
    return out


def _agree(a, b):
    """a and b differ at most by a 1-pixel band on the boundary (interpolation)."""
    return not (a & ~_dilate(b)).any() and not (b & ~_dilate(a)).any()


def _check_consistent(image, poly_out, mask_out, bright_thresh=128):
    hw = image.shape[:2]
    bright = image.mean(axis=2) > bright_thresh
    mask = mask_out["segmentation"].astype(bool)
    polys = poly_out["segmentation"]
    poly_mask = (
        polygons_to_bitmask([np.asarray(p) for p in polys], *hw) if polys else np.zeros(hw, bool)
    )
    assert _agree(bright, mask)
    assert _agree(poly_mask, mask)
    if mask.any():
        x0, y0, x1, y1 = poly_out["bbox"]
        ys, xs = np.nonzero(mask)
        assert x0 <= xs.min() + 1 and xs.max() <= x1 and y0 <= ys.min() + 1 and ys.max() <= y1


@pytest.mark.parametrize(
    "name,augs",
    [
        ("resize_scale", [ResizeScale(0.5, 1.5, 64, 64)]),
        ("fixed_size_crop", [FixedSizeCrop((40, 50), pad=True, pad_value=0)]),
        ("lsj", [ResizeScale(0.3, 2.0, 64, 64), FixedSizeCrop((64, 64), pad_value=0)]),
        ("expand", [Expand(fill=(0, 0, 0), max_ratio=3.0, prob=1.0)]),
        ("min_iou_crop", [MinIoURandomCrop()]),
        ("ssd_geometry", [Expand((0, 0, 0), 4.0, 0.7), MinIoURandomCrop(), T.Resize((50, 50))]),
    ],
)
def test_geometry_consistent(name, augs):
    for seed in range(12):
        image, poly_out, mask_out, _ = _apply(augs, seed)
        _check_consistent(image, poly_out, mask_out)


def test_photometric_changes_colours_not_geometry():
    image, poly_out, mask_out, tfm = _apply([PhotometricDistortion("RGB")], 3)
    np.testing.assert_array_equal(
        mask_out["segmentation"], mask_util.decode(_scene()[2]["segmentation"])
    )
    np.testing.assert_allclose(poly_out["bbox"], RECT)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8


def test_photometric_transform_steps():
    rng = np.random.RandomState(0)
    img = rng.randint(0, 256, size=(8, 9, 3)).astype(np.uint8)
    same = PhotometricTransform(saturation=1.0, hue=0.0, image_format="BGR").apply_image(img)
    assert np.abs(same.astype(int) - img).max() <= 1  # HSV round trip
    bright = PhotometricTransform(brightness=20.0).apply_image(img)
    np.testing.assert_array_equal(bright, np.clip(img.astype(int) + 20, 0, 255))
    # Order matters: contrast before vs after brightness differs.
    a = PhotometricTransform(brightness=-30.0, contrast=1.5, contrast_first=True).apply_image(img)
    gray = np.clip(img.astype(float) - 30, 0, 255)
    np.testing.assert_allclose(a, np.clip(np.round(gray * 1.5), 0, 255), atol=1)
    full_hue = PhotometricTransform(hue=360.0, image_format="RGB").apply_image(img)
    assert np.abs(full_hue.astype(int) - img).max() <= 1
    desat = PhotometricTransform(saturation=0.0, image_format="RGB").apply_image(img)
    assert (desat.max(axis=2) - desat.min(axis=2)).max() <= 1  # gray


def test_expand_bounds_and_fill():
    mean = (10, 20, 30)
    aug = Expand(fill=mean, max_ratio=4.0, prob=1.0)
    image = np.full((H, W, 3), 200, np.uint8)
    for seed in range(20):
        np.random.seed(seed)
        t = aug.get_transform(image)
        assert isinstance(t, CanvasTransform)
        assert W <= t.canvas_w <= 4 * W and H <= t.canvas_h <= 4 * H
        assert 0 <= t.x0 <= t.canvas_w - W and 0 <= t.y0 <= t.canvas_h - H
        out = t.apply_image(image)
        assert out.shape == (t.canvas_h, t.canvas_w, 3)
        assert (out[t.y0 : t.y0 + H, t.x0 : t.x0 + W] == 200).all()
        outside = np.ones(out.shape[:2], bool)
        outside[t.y0 : t.y0 + H, t.x0 : t.x0 + W] = False
        assert (out[outside] == mean).all()
        seg = t.apply_segmentation(np.ones((H, W), np.uint8))
        assert seg.sum() == H * W  # masks are zero on the canvas
        np.testing.assert_allclose(
            t.apply_box(np.array([[1.0, 2, 3, 4]])), [[1 + t.x0, 2 + t.y0, 3 + t.x0, 4 + t.y0]]
        )
    np.random.seed(0)
    assert isinstance(Expand(mean, 4.0, prob=0.0).get_transform(image), T.NoOpTransform)


def test_min_iou_crop_respects_iou_and_centres():
    boxes = np.array([[10, 10, 40, 40], [45, 30, 75, 55]], dtype=np.float64)
    image = np.zeros((H, W, 3), np.uint8)
    aug = MinIoURandomCrop(min_ious=(0.3,), keep_original=False, allow_any=False)
    for seed in range(30):
        np.random.seed(seed)
        t = aug.get_transform(image, boxes)
        if isinstance(t, T.NoOpTransform):
            continue
        assert isinstance(t, ClipCropTransform) and t.keep_centres_only
        assert t.x0 >= 0 and t.y0 >= 0 and t.x0 + t.w <= W and t.y0 + t.h <= H
        assert t.w >= int(0.3 * W) - 1 and t.h >= int(0.3 * H) - 1
        patch = np.array([t.x0, t.y0, t.x0 + t.w, t.y0 + t.h], dtype=float)
        for b in boxes:
            iw = max(0, min(patch[2], b[2]) - max(patch[0], b[0]))
            ih = max(0, min(patch[3], b[3]) - max(patch[1], b[1]))
            inter = iw * ih
            union = t.w * t.h + (b[2] - b[0]) * (b[3] - b[1]) - inter
            assert inter / union >= 0.3 - 1e-9
        keep = centre_keep_mask(t, boxes, (t.h, t.w))
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = (
            (centres[:, 0] >= t.x0)
            & (centres[:, 0] < t.x0 + t.w)
            & (centres[:, 1] >= t.y0)
            & (centres[:, 1] < t.y0 + t.h)
        )
        np.testing.assert_array_equal(keep, inside)
        assert keep.any()


def test_centre_keep_mask_all_true_without_ssd_crop():
    t = ClipCropTransform(0, 0, 10, 10)
    assert centre_keep_mask(t, np.array([[50.0, 50, 60, 60]]), (10, 10)).all()


def test_lsj_output_size_and_scale():
    size = 64
    resize = ResizeScale(0.1, 2.0, size, size)
    crop = FixedSizeCrop((size, size), pad=True, pad_value=128.0)
    image = np.zeros((H, W, 3), np.uint8)
    for seed in range(20):
        np.random.seed(seed)
        rt = resize.get_transform(image)
        assert max(rt.new_h, rt.new_w) <= 2.0 * size + 1
        resized = rt.apply_image(image)
        ct = crop.get_transform(resized)
        out = ct.apply_image(resized)
        assert out.shape == (size, size, 3)
        if resized.shape[0] < size:  # padded rows carry pad_value
            assert (out[resized.shape[0] :] == 128).all()
        seg = ct.apply_segmentation(np.ones(resized.shape[:2], np.uint8))
        assert seg.shape == (size, size)
    no_pad = FixedSizeCrop((size, size), pad=False).get_transform(np.zeros((10, 20, 3), np.uint8))
    assert no_pad.apply_image(np.zeros((10, 20, 3), np.uint8)).shape == (10, 20, 3)


def test_clip_polygon_concave_matches_cropped_mask():
    # A "U" shape cut across its arms by the crop window.
    u = np.array(
        [[5, 5], [35, 5], [35, 35], [25, 35], [25, 15], [15, 15], [15, 35], [5, 35]], float
    )
    full = polygons_to_bitmask([u.reshape(-1)], 40, 40)
    t = ClipCropTransform(0, 20, 40, 20)
    clipped = t.apply_polygons([u])
    got = polygons_to_bitmask([p.reshape(-1) for p in clipped], 20, 40)
    assert (got == full[20:40]).mean() > 0.99
    assert clip_polygon(np.array([[50.0, 50], [60, 50], [60, 60]]), 40, 40).shape == (0, 2)


def test_augmentations_and_transforms_pickle():
    objs = [
        ResizeScale(0.1, 2.0, 64, 64),
        FixedSizeCrop((32, 32)),
        Expand((1, 2, 3)),
        MinIoURandomCrop(),
        PhotometricDistortion("BGR"),
        ClipCropTransform(1, 2, 3, 4, keep_centres_only=True),
        CanvasTransform(1, 2, 30, 40, (1, 2, 3)),
        PhotometricTransform(brightness=3.0, contrast=1.2, saturation=0.9, hue=4.0),
    ]
    image = np.random.RandomState(0).randint(0, 255, (20, 20, 3)).astype(np.uint8)
    for obj in objs:
        copy = pickle.loads(pickle.dumps(obj))
        assert type(copy) is type(obj)
        if hasattr(obj, "apply_image"):
            np.testing.assert_array_equal(copy.apply_image(image), obj.apply_image(image))
    np.random.seed(1)
    t = pickle.loads(pickle.dumps(PhotometricDistortion("BGR"))).get_transform(image)
    assert isinstance(t, PhotometricTransform)


def _cfg(name):
    cfg = get_cfg()
    add_data_config(cfg)
    cfg.INPUT.AUGMENTATIONS_NAME = name
    return cfg


def test_build_augmentations_by_name():
    train = build_augmentations(_cfg("lsj"), True)
    assert [type(a) for a in train][-2:] == [ResizeScale, FixedSizeCrop]
    assert isinstance(build_augmentations(_cfg("lsj"), False)[0], T.ResizeShortestEdge)
    ssd = [type(a) for a in build_augmentations(_cfg("ssd"), True)]
    assert ssd[:3] == [PhotometricDistortion, Expand, MinIoURandomCrop] and ssd[-1] is T.Resize
    assert [type(a) for a in build_augmentations(_cfg("ssd"), False)] == [T.Resize]
    default = build_augmentations(_cfg("default"), True)
    assert isinstance(default[0], T.ResizeShortestEdge)
    with pytest.raises(KeyError, match="INPUT.AUGMENTATIONS_NAME='nope' is not registered"):
        build_augmentations(_cfg("nope"), True)


BUILT_IN_RECIPES = ("default", "lsj", "semantic", "ssd")


def test_unknown_recipe_error_lists_the_registered_names():
    with pytest.raises(KeyError) as info:
        build_augmentations(_cfg("nope"), True)
    known = str(info.value).split("known: ")[1].rstrip("'\"").split(", ")
    assert set(BUILT_IN_RECIPES) <= set(known) and known == sorted(known)
    assert set(known) == {name for name, _ in AUGMENTATION_REGISTRY}


@pytest.mark.parametrize("name", BUILT_IN_RECIPES)
def test_built_in_recipes_are_registered_under_their_config_names(name):
    assert AUGMENTATION_REGISTRY.get(name) is getattr(augmentations, name)
    for is_train in (True, False):
        augs = build_augmentations(_cfg(name), is_train)
        assert augs and all(isinstance(a, T.Augmentation) for a in augs)


def test_a_recipe_registered_outside_projects_is_built_by_name(monkeypatch):
    # A private copy of the registry's table, so the recipe is gone after the test.
    monkeypatch.setattr(AUGMENTATION_REGISTRY, "_obj_map", dict(AUGMENTATION_REGISTRY))

    @AUGMENTATION_REGISTRY.register()
    def method_square_resize(cfg, is_train):  # what a method package does on import
        size = cfg.INPUT.MIN_SIZE_TEST
        return [T.Resize((size, size))] + ([T.RandomFlip()] if is_train else [])

    cfg = _cfg("method_square_resize")
    cfg.INPUT.MIN_SIZE_TEST = 32
    train, test = build_augmentations(cfg, True), build_augmentations(cfg, False)
    assert [type(a) for a in train] == [T.Resize, T.RandomFlip] and [type(a) for a in test] == [
        T.Resize
    ]
    image = np.zeros((H, W, 3), dtype=np.uint8)
    assert T.AugmentationList(test)(T.AugInput(image)).apply_image(image).shape == (32, 32, 3)


def test_default_crop_clips_polygons_without_shapely():
    cfg = _cfg("default")
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = [30, 30]
    cfg.INPUT.MIN_SIZE_TRAIN = (60,)
    augs = build_augmentations(cfg, True)
    for seed in range(6):
        image, poly_out, mask_out, _ = _apply(augs, seed)
        _check_consistent(image, poly_out, mask_out)
