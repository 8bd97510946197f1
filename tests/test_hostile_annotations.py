"""Generated hostile annotations through ``InstanceDatasetMapper`` (hypothesis), in both
``DATALOADER.BAD_ANNOTATIONS`` modes and both mask formats: boxes outside the image,
degenerate / collinear / bow-tie / huge / non-finite polygons, RLEs of the wrong size or with run
lengths that do not add up, missing or bad category ids, both box modes, crowds. Each case must
end in valid instances or in :class:`BadAnnotationError` naming the first bad annotation's id and
the file; which one is decided by the generator's own bookkeeping of what it made, not by asking
the code under test. Then the regressions of the bugs the generated cases found.
"""

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.structures import BoxMode, polygons_to_bitmask
from detectron2.utils.events import EventStorage
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from projects.data.annotations import ANNOTATION_STATS, BadAnnotationError
from projects.data.augmentations import ResizeShortestEdge
from projects.data.mappers import InstanceDatasetMapper
from tests.helpers.contract import assert_finite_losses, build_tiny_model
from tests.helpers.hostile import (
    DOCUMENTED_ERROR,
    MASK_FORMATS,
    NUM_CLASSES,
    OUTCOMES,
    VALID,
    H,
    W,
    annotation_lists,
    assert_valid_instances,
    check_mapped,
    derandomized,
    print_outcomes,
    run_lengths,
    tiny_cfg,
)

# ANNOTATION_STATS are counted per test (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("fresh_annotation_stats")


# ---------------------------------------------------------------------------------------------
# 1a. The mapper: both modes, both mask formats
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["filter", "error"])
@pytest.mark.parametrize("mask_format", MASK_FORMATS)
@derandomized(max_examples=300)
@given(
    data=annotation_lists(NUM_CLASSES),
    short_edge=st.sampled_from([12, 24, 40]),
    flip=st.booleans(),
)
def test_mapper_gives_valid_instances_or_names_the_bad_annotation(
    image_file, mask_format, mode, data, short_edge, flip
):
    annos, records = data
    mapper = InstanceDatasetMapper(
        True,
        augmentations=[
            ResizeShortestEdge((short_edge,), 1000, "choice"),
            T.RandomFlip(prob=1.0 if flip else 0.0),
        ],
        image_format="RGB",
        num_classes=NUM_CLASSES,
        instance_mask_format=mask_format,
        bad_annotations=mode,
    )
    dataset_dict = {"file_name": image_file, "height": H, "width": W, "annotations": annos}
    outcome, _ = check_mapped(
        mapper, dataset_dict, records, NUM_CLASSES, mask_format, mode, image_file
    )
    OUTCOMES["mapper", f"{mode}/{mask_format}", outcome] += 1


# ---------------------------------------------------------------------------------------------
# Regressions of the bugs the generated cases found
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask_format", ["polygon", "bitmask"])
def test_huge_polygon_coordinates_are_clipped_not_rasterized(image_file, mask_format):
    """pycocotools crashed the process (1e9) or took minutes (1e8) on such polygons."""
    mapper = InstanceDatasetMapper(
        True, augmentations=[], image_format="RGB", instance_mask_format=mask_format
    )
    triangle = [-1e12, -1e12, 1e12, -5.0, -3.0, 1e12]  # covers the whole image
    anno = {
        "id": 1,
        "category_id": 0,
        "bbox": [0.0, 0.0, W, H],
        "bbox_mode": BoxMode.XYXY_ABS,
        "segmentation": [triangle],
    }
    out = mapper({"file_name": image_file, "height": H, "width": W, "annotations": [anno]})
    assert_valid_instances(out, 1, mask_format)
    masks = out["instances"].gt_masks
    mask = masks.tensor[0] if mask_format == "bitmask" else masks.polygons[0]
    if mask_format == "polygon":
        mask = torch.from_numpy(polygons_to_bitmask(mask, H, W))
    assert mask.all()


def test_uncompressed_rle_with_bitmasks(image_file):
    """Detectron2 decoded only compressed RLE: a TypeError without the annotation's name."""
    mask = np.zeros((H, W), dtype=bool)
    mask[3:9, 5:20] = True
    mapper = InstanceDatasetMapper(
        True, augmentations=[], image_format="RGB", instance_mask_format="bitmask"
    )
    anno = {
        "id": 1,
        "category_id": 0,
        "bbox": [5.0, 3.0, 15.0, 6.0],
        "bbox_mode": BoxMode.XYWH_ABS,
        "segmentation": {"size": [H, W], "counts": run_lengths(mask)},
    }
    out = mapper({"file_name": image_file, "height": H, "width": W, "annotations": [anno]})
    assert torch.equal(out["instances"].gt_masks.tensor[0], torch.from_numpy(mask))


def test_rle_whose_runs_do_not_add_up_is_rejected_not_decoded(image_file):
    """pycocotools decodes such an RLE into uninitialised memory (a random mask)."""
    anno = {
        "id": 7,
        "category_id": 0,
        "bbox": [5.0, 3.0, 15.0, 6.0],
        "bbox_mode": BoxMode.XYWH_ABS,
        "segmentation": {"size": [H, W], "counts": [10, 5]},
    }
    d = {"file_name": image_file, "height": H, "width": W, "annotations": [anno]}
    mapper = InstanceDatasetMapper(
        True, augmentations=[], image_format="RGB", instance_mask_format="bitmask"
    )
    assert len(mapper(dict(d, annotations=[dict(anno)]))["instances"]) == 0
    assert ANNOTATION_STATS["malformed RLE"] == 1
    mapper.bad_annotations = "error"
    with pytest.raises(BadAnnotationError, match=r"id=7 of image .*hostile_image\.png.*run length"):
        mapper(d)


def _semantic_mapper(mode="filter", num_classes=3, augmentations=()):
    return InstanceDatasetMapper(
        True,
        augmentations=list(augmentations),
        image_format="RGB",
        use_instance_mask=False,
        use_instances=False,
        require_sem_seg_file=True,
        sem_seg_num_classes=num_classes,
        bad_annotations=mode,
    )


def test_label_map_values_outside_the_classes(image_file, tmp_path):
    """Cross-entropy failed with a bare "Target 10 is out of bounds" deep in the model."""
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[:, :5] = 255
    labels[:3, 10:] = 7
    path = tmp_path / "labels_7.png"
    Image.fromarray(labels).save(path)
    d = {"file_name": image_file, "height": H, "width": W, "sem_seg_file_name": str(path)}
    out = _semantic_mapper()(dict(d))
    expected = labels.astype(np.int64)
    expected[expected == 7] = 255
    np.testing.assert_array_equal(out["sem_seg"].numpy(), expected)
    assert ANNOTATION_STATS["label-map values outside the classes"] == 1
    with pytest.raises(BadAnnotationError, match=r"labels_7\.png.*hostile_image\.png.*\[7\]"):
        _semantic_mapper("error")(dict(d))


def test_16_bit_label_map_is_resized(image_file, tmp_path):
    """Detectron2 resized it with torch, which has no nearest resize of int32 (NotImplementedError
    naming no file)."""
    labels = (np.arange(H * W).reshape(H, W) % 3).astype(np.uint16)
    labels[0, 0] = 1000  # not a class: ignored
    path = tmp_path / "deep_labels.png"
    Image.fromarray(labels).save(path)
    d = {"file_name": image_file, "height": H, "width": W, "sem_seg_file_name": str(path)}
    out = _semantic_mapper(augmentations=[ResizeShortestEdge((2 * H,), 1000, "choice")])(d)
    expected = labels.astype(np.int64)
    expected[0, 0] = 255
    np.testing.assert_array_equal(out["sem_seg"].numpy(), np.kron(expected, np.ones((2, 2))))


def test_label_map_without_labelled_pixels_is_skipped(image_file, tmp_path, caplog):
    """Its cross-entropy (Detectron2's SemSegFPNHead too) is a NaN loss."""
    path = tmp_path / "all_ignored.png"
    Image.fromarray(np.full((H, W), 255, dtype=np.uint8)).save(path)
    d = {"file_name": image_file, "height": H, "width": W, "sem_seg_file_name": str(path)}
    with caplog.at_level("WARNING", logger="projects.data.mappers"):
        assert _semantic_mapper()(d) is None
    assert ANNOTATION_STATS["training images without labelled pixels"] == 1
    assert any("all_ignored.png" in r.getMessage() for r in caplog.records)


def test_pointrend_semantic_losses_are_finite_without_labelled_pixels(tmp_path):
    """Nothing labelled in the batch (or at the sampled points): zero losses, not NaN."""
    cfg = tiny_cfg("pointrend_semseg.yaml", tmp_path)
    model = build_tiny_model(cfg).train()
    image = torch.rand(3, 48, 64) * 255
    batch = [{"image": image, "sem_seg": torch.full((48, 64), 255), "height": 48, "width": 64}]
    with EventStorage():
        losses = model(batch)
    assert_finite_losses(losses)
    assert sum(losses.values()) == 0
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_resize_of_a_thin_image_keeps_one_pixel():
    """Detectron2 resized 16 x 4000 to 0 x 64 ("height and width must be > 0")."""
    image = np.zeros((16, 4000, 3), dtype=np.uint8)
    transform = ResizeShortestEdge((48,), 64, "choice").get_transform(image)
    assert transform.apply_image(image).shape == (1, 64, 3)
    tall = np.zeros((4000, 16, 3), dtype=np.uint8)
    assert ResizeShortestEdge((48,), 64, "choice").get_transform(tall).apply_image(tall).shape == (
        64,
        1,
        3,
    )


def test_zz_mapper_case_counts():
    """Both ends were reached in "error" mode: valid instances and documented errors."""
    if {s for st_, s, _ in OUTCOMES if st_ == "mapper"} != {
        f"{mode}/{fmt}" for mode in ("filter", "error") for fmt in MASK_FORMATS
    }:
        pytest.skip("the generated cases did not all run in this session (run the whole file)")
    print_outcomes("mapper")
    for fmt in MASK_FORMATS:
        assert OUTCOMES["mapper", f"error/{fmt}", VALID] > 0
        assert OUTCOMES["mapper", f"error/{fmt}", DOCUMENTED_ERROR] > 0
