"""Bad images and bad annotations: clear errors naming the file / annotation, or skip + warning."""

import logging

import numpy as np
import pytest
from detectron2.data.common import MapDataset
from detectron2.data.detection_utils import SizeMismatchError
from detectron2.structures import BoxMode
from PIL import Image

from projects.data.image_io import (
    CorruptImageError,
    ImageNotFoundError,
    ImageSizeError,
    read_image_for_dict,
    read_image_robust,
    read_label_map,
)
from projects.data.mappers import (
    ANNOTATION_STATS,
    BadAnnotationError,
    InstanceDatasetMapper,
    filter_dataset_dicts,
    sanitize_annotations,
)

H, W = 20, 30


def _png(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path)
    return str(path)


def _mapper(is_train=True, skip=False, bad="filter"):
    return InstanceDatasetMapper(
        is_train,
        augmentations=[],
        image_format="RGB",
        num_classes=3,
        skip_bad_images=skip,
        bad_annotations=bad,
    )


pytestmark = pytest.mark.usefixtures("fresh_annotation_stats")  # tests/conftest.py


@pytest.fixture
def good_png(tmp_path):
    return _png(tmp_path / "good.png", np.full((H, W, 3), 90, np.uint8))


@pytest.fixture
def bad_files(tmp_path, good_png):
    """name -> (path, expected exception type) for each unreadable image case."""
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"this is not an image at all" * 10)
    rng = np.random.RandomState(0)
    Image.fromarray(rng.randint(0, 255, (64, 64, 3)).astype(np.uint8)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    png_data = open(good_png, "rb").read()
    truncated_png = tmp_path / "truncated.png"
    truncated_png.write_bytes(png_data[: len(png_data) - 30])
    return {
        "missing": (str(tmp_path / "missing.png"), ImageNotFoundError),
        "corrupt": (str(corrupt), CorruptImageError),
        "truncated_jpeg": (str(truncated), CorruptImageError),
        "truncated_png": (str(truncated_png), CorruptImageError),
    }


@pytest.mark.parametrize("case", ["missing", "corrupt", "truncated_jpeg", "truncated_png"])
def test_unreadable_image_error_names_file(bad_files, case):
    path, exc = bad_files[case]
    with pytest.raises(exc, match=path.split("/")[-1]):
        read_image_robust(path, "RGB")
    with pytest.raises(exc, match=path.split("/")[-1]):
        _mapper()(dict(file_name=path, annotations=[]))


def test_missing_file_is_a_file_not_found_error(bad_files):
    with pytest.raises(FileNotFoundError):
        read_image_robust(bad_files["missing"][0])


@pytest.mark.parametrize("case", ["missing", "corrupt", "truncated_jpeg"])
def test_skip_bad_images_in_training(bad_files, case, caplog):
    path, exc = bad_files[case]
    before = ANNOTATION_STATS["skipped bad images"]
    with caplog.at_level(logging.WARNING, logger="projects.data.mappers"):
        assert _mapper(skip=True)(dict(file_name=path, annotations=[])) is None
    assert any(path in r.getMessage() and "Skipping" in r.getMessage() for r in caplog.records)
    assert ANNOTATION_STATS["skipped bad images"] == before + 1
    with pytest.raises(exc):  # never skipped at test time
        _mapper(is_train=False, skip=True)(dict(file_name=path))


def test_map_dataset_retries_other_index_when_skipped(bad_files, good_png):
    dicts = [dict(file_name=bad_files["missing"][0]), dict(file_name=good_png, annotations=[])]
    dataset = MapDataset(dicts, _mapper(skip=True))
    out = dataset[0]
    assert out is not None and out["file_name"] == good_png


def test_size_mismatch_names_file(good_png):
    d = dict(file_name=good_png, height=H + 1, width=W)
    with pytest.raises(ImageSizeError, match="good.png") as info:
        read_image_for_dict(d, "RGB")
    assert isinstance(info.value, SizeMismatchError)
    with pytest.raises(ImageSizeError, match="good.png"):
        _mapper()(dict(d, annotations=[]))


def test_mode_conversions(tmp_path):
    gray = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    out = read_image_robust(_png(tmp_path / "g.png", gray, "L"), "RGB")
    assert out.shape == (H, W, 3) and (out == gray[:, :, None]).all()
    assert read_image_robust(str(tmp_path / "g.png"), "L").shape == (H, W, 1)

    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 0
    out = read_image_robust(_png(tmp_path / "a.png", rgba, "RGBA"), "BGR")
    assert out.shape == (H, W, 3) and (out == [30, 20, 10]).all()

    pal = Image.fromarray((np.arange(H * W) % 2).reshape(H, W).astype(np.uint8), mode="P")
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.save(tmp_path / "p.png")
    out = read_image_robust(str(tmp_path / "p.png"), "RGB")
    assert (out[0, 0] == [255, 0, 0]).all() and (out[0, 1] == [0, 0, 255]).all()


def test_16bit_png_scaled_by_bit_depth(tmp_path):
    values = np.array([[0, 257, 1000, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "d16.png"
    Image.fromarray(values).save(path)
    out = read_image_robust(str(path), "RGB")
    expected = np.round(values.astype(float) * 255 / 65535).astype(np.uint8)
    assert out.shape == (1, 5, 3)
    np.testing.assert_array_equal(out[..., 0], expected)  # 1000 -> 4, not clipped to 255
    assert (out[..., 0] == out[..., 2]).all()


def _exif_jpeg(path, orientation):
    image = np.zeros((H, W, 3), np.uint8)  # stored 20 x 30, white block at top-left
    image[:5, :5] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(image).save(path, exif=exif.tobytes(), quality=95)
    return str(path)


def test_exif_rotation_applied(tmp_path):
    path = _exif_jpeg(tmp_path / "rot.jpg", 6)  # rotate 90 degrees clockwise to display
    out = read_image_for_dict(dict(file_name=path, height=W, width=H), "RGB")
    assert out.shape == (W, H, 3)
    assert out[:5, -5:].mean() > 200 and out[:5, :5].mean() < 50  # top-left -> top-right
    d = dict(file_name=path)
    assert read_image_for_dict(d, "RGB").shape == (W, H, 3)
    assert (d["height"], d["width"]) == (W, H)


def test_exif_stored_size_in_json_keeps_stored_pixels(tmp_path, caplog):
    path = _exif_jpeg(tmp_path / "rot2.jpg", 6)
    with caplog.at_level(logging.WARNING, logger="projects.data.image_io"):
        out = read_image_for_dict(dict(file_name=path, height=H, width=W), "RGB")
    assert out.shape == (H, W, 3) and out[:5, :5].mean() > 200
    assert any("rot2.jpg" in r.getMessage() for r in caplog.records)


def test_exif_size_mismatch_beyond_rotation(tmp_path):
    path = _exif_jpeg(tmp_path / "rot3.jpg", 6)
    with pytest.raises(ImageSizeError, match="rot3.jpg"):
        read_image_for_dict(dict(file_name=path, height=W + 2, width=H), "RGB")


def test_label_map_errors_name_file(tmp_path):
    rgb = _png(tmp_path / "rgb_label.png", np.zeros((H, W, 3), np.uint8))
    with pytest.raises(CorruptImageError, match="rgb_label.png"):
        read_label_map(rgb)
    gray = _png(tmp_path / "lbl.png", np.zeros((H, W), np.uint8))
    with pytest.raises(ImageSizeError, match="lbl.png"):
        read_label_map(gray, (H + 1, W))


# ---------------------------------------------------------------------------------------------
# Annotations
# ---------------------------------------------------------------------------------------------
def _anno(i, **kw):
    a = dict(
        id=i,
        category_id=1,
        bbox=[2.0, 2.0, 10.0, 8.0],
        bbox_mode=BoxMode.XYWH_ABS,
        segmentation=[[2.0, 2.0, 12.0, 2.0, 12.0, 10.0, 2.0, 10.0]],
        iscrowd=0,
    )
    a.update(kw)
    return a


BAD_ANNOTATIONS = {
    "zero_area_box": dict(bbox=[2.0, 2.0, 0.0, 5.0]),
    "negative_box": dict(bbox=[12.0, 2.0, 2.0, 8.0], bbox_mode=BoxMode.XYXY_ABS),
    "nan_box": dict(bbox=[2.0, float("nan"), 10.0, 8.0]),
    "nan_polygon": dict(segmentation=[[2.0, 2.0, 12.0, float("nan"), 12.0, 10.0]]),
    "short_polygon": dict(segmentation=[[2.0, 2.0, 12.0, 2.0]]),
    "category_out_of_range": dict(category_id=3),
    "category_negative": dict(category_id=-1),
    "category_missing": dict(category_id=None),
    "rle_wrong_size": dict(segmentation={"size": [5, 5], "counts": "0"}),
    # pycocotools decodes runs that do not add up to h x w into uninitialised memory
    "rle_runs_not_adding_up": dict(segmentation={"size": [H, W], "counts": [10, 5]}),
    "rle_string_not_adding_up": dict(segmentation={"size": [H, W], "counts": "0"}),
    # Detectron2 failed on these with errors that name neither the annotation nor the file
    "missing_segmentation": dict(segmentation=None),
    "ragged_bbox": dict(bbox=[[2.0, 2.0], [10.0]]),
    "non_numeric_polygon": dict(segmentation=[["a", 2.0, 12.0, 2.0, 12.0, 10.0]]),
    "category_bool": dict(category_id=True),
}


@pytest.mark.parametrize("case", sorted(BAD_ANNOTATIONS))
def test_bad_annotation_error_names_id_and_file(good_png, case):
    d = dict(
        file_name=good_png,
        height=H,
        width=W,
        annotations=[_anno(41), _anno(42, **BAD_ANNOTATIONS[case])],
    )
    with pytest.raises(BadAnnotationError, match=r"id=42.*good\.png"):
        _mapper(bad="error")(d)


@pytest.mark.parametrize("case", sorted(BAD_ANNOTATIONS))
def test_bad_annotation_filtered_with_count_and_warning(good_png, case, caplog):
    d = dict(
        file_name=good_png,
        height=H,
        width=W,
        annotations=[_anno(41), _anno(42, **BAD_ANNOTATIONS[case])],
    )
    with caplog.at_level(logging.WARNING, logger="projects.data.mappers"):
        out = _mapper()(d)
    assert len(out["instances"]) == 1  # only the good one is left
    assert sum(ANNOTATION_STATS.values()) == 1
    assert any("id=42" in r.getMessage() and "good.png" in r.getMessage() for r in caplog.records)


def test_short_polygon_dropped_but_annotation_kept():
    a = _anno(5, segmentation=[[1.0, 1.0, 2.0, 2.0], [2.0, 2.0, 12.0, 2.0, 12.0, 10.0]])
    kept = sanitize_annotations([a], file_name="x.png", image_hw=(H, W), num_classes=3)
    assert len(kept) == 1 and kept[0]["segmentation"] == [[2.0, 2.0, 12.0, 2.0, 12.0, 10.0]]
    with pytest.raises(BadAnnotationError, match="id=5.*x.png"):
        sanitize_annotations(
            [_anno(5, segmentation=[[1.0, 1.0, 2.0, 2.0], [2.0, 2.0, 12.0, 2.0, 12.0, 10.0]])],
            file_name="x.png",
            mode="error",
        )


def test_warning_names_annotation(caplog):
    with caplog.at_level(logging.WARNING, logger="projects.data.mappers"):
        sanitize_annotations([_anno(77, category_id=9)], file_name="y.png", num_classes=3)
    assert any("id=77" in r.getMessage() and "y.png" in r.getMessage() for r in caplog.records)
    assert ANNOTATION_STATS["category_id out of range"] == 1


@pytest.mark.parametrize("annos", [[], [_anno(1, iscrowd=1)]], ids=["empty", "all_crowd"])
def test_images_without_instances(good_png, annos):
    d = dict(file_name=good_png, height=H, width=W, annotations=annos)
    out = _mapper()(d)
    assert len(out["instances"]) == 0 and out["instances"].has("gt_masks")
    before = ANNOTATION_STATS["images without valid non-crowd annotations"]
    assert filter_dataset_dicts([d], num_classes=3) == []
    assert ANNOTATION_STATS["images without valid non-crowd annotations"] == before + 1


def test_filter_dataset_dicts_keeps_good_and_does_not_mutate(good_png):
    d = dict(file_name=good_png, height=H, width=W, annotations=[_anno(1), _anno(2, category_id=7)])
    out = filter_dataset_dicts([d], num_classes=3)
    assert [a["id"] for a in out[0]["annotations"]] == [1]
    assert len(d["annotations"]) == 2
    with pytest.raises(BadAnnotationError, match="id=2"):
        filter_dataset_dicts([d], num_classes=3, mode="error")
