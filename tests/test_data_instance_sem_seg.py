"""The semantic target derived from instances (INPUT.INSTANCE_SEM_SEG) when no instance is left.

A crop can remove every instance of a training image; the target must then be all background,
with padding and crowd regions at the ignore value (it used to raise a ValueError).
"""

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog

from projects.config import get_cfg
from projects.data.annotations import filter_dataset_dicts
from projects.data.mapper_registry import build_dataset_mapper
from projects.data.masks import instances_to_sem_seg
from projects.data.toy import TOY_THING_CLASSES
from tests.helpers.learning import REPO

IGNORE = 255
NUM_TOY_CLASSES = len(TOY_THING_CLASSES)  # "last" background: the toy instance classes
MAX_TRIES = 400  # mappings tried per recipe before the search for an emptied crop gives up


@pytest.mark.parametrize("background, bg", [("last", 3), ("zero", 0)])
def test_no_instances_gives_background_with_crowd_ignored(background, bg):
    crowd = np.zeros((5, 6), bool)
    crowd[1:3, 2:5] = True
    expected = np.full((5, 6), bg)
    expected[crowd] = IGNORE
    for masks, classes in ((np.zeros((0, 5, 6), bool), np.zeros(0, np.int64)), ([], [])):
        sem = instances_to_sem_seg(
            masks, classes, (5, 6), num_classes=3, background=background, crowd_masks=[crowd]
        )
        assert sem.shape == (5, 6) and (sem.numpy() == expected).all()


def test_masks_and_classes_of_different_lengths_are_rejected():
    with pytest.raises(ValueError, match="2 masks but 1 classes"):
        instances_to_sem_seg(np.zeros((2, 3, 3), bool), [0], (3, 3), num_classes=2)


class _RecordingAugmentations:
    """Stands in for a mapper's ``AugmentationList`` and keeps the transforms it returned."""

    def __init__(self, augmentations):
        self.augmentations = augmentations
        self.transforms = None

    def __call__(self, aug_input):
        self.transforms = self.augmentations(aug_input)
        return self.transforms


def _crowd_rle(anno, height, width):
    """The annotation's mask as compressed RLE (polygons or RLE in the toy data)."""
    segm = anno["segmentation"]
    if isinstance(segm, list):
        return mask_util.merge(mask_util.frPyObjects(segm, height, width))
    return {"size": segm["size"], "counts": segm["counts"]}


def _with_a_crowd(d):
    """A copy of a toy dict whose first annotation, if it has two or more, is a crowd region
    (RLE), so the ignored crowd area is checked as well."""
    d = dict(d, annotations=[dict(a) for a in d["annotations"]])
    if len(d["annotations"]) >= 2:
        first = d["annotations"][0]
        first["segmentation"] = _crowd_rle(first, d["height"], d["width"])
        first["iscrowd"] = 1
    return d


def _framed(d):
    """A toy dict whose things are replaced by one 2-pixel frame along the image border: its box
    is the whole image and its centre lies in almost every SSD crop, but a crop off the border
    holds none of its pixels. (SSD crops keep the instances whose box centre they contain, so
    on the toy objects they almost never remove them all: 0 of 400 mappings.)"""
    d = _with_a_crowd(d)
    height, width = d["height"], d["width"]
    frame = np.zeros((height, width), np.uint8)
    frame[:2], frame[-2:], frame[:, :2], frame[:, -2:] = 1, 1, 1, 1
    rle = mask_util.encode(np.asfortranarray(frame))
    rle["counts"] = rle["counts"].decode("ascii")
    thing = dict(d["annotations"][-1], bbox=[0, 0, width, height], segmentation=rle, iscrowd=0)
    d["annotations"] = [a for a in d["annotations"] if a.get("iscrowd", 0)] + [thing]
    return d


@pytest.fixture(scope="module")
def toy_samples():
    """Toy training dicts with instances (as the trainer filters them)."""
    return filter_dataset_dicts(DatasetCatalog.get("toy_train"))


def _cfg(recipe):
    cfg = get_cfg()
    cfg.merge_from_file(f"{REPO}/configs/toy/mask_rcnn.yaml")
    cfg.INPUT.INSTANCE_SEM_SEG.ENABLED = True
    cfg.INPUT.MIN_SIZE_TRAIN = (96,)  # small sizes keep the mapping fast
    cfg.INPUT.MAX_SIZE_TRAIN = 160
    cfg.INPUT.LSJ.IMAGE_SIZE = 96
    cfg.INPUT.SSD.SIZE = 96
    if recipe == "default+crop":
        cfg.INPUT.AUGMENTATIONS_NAME = "default"
        cfg.INPUT.CROP.ENABLED = True
        cfg.INPUT.CROP.TYPE = "absolute"
        cfg.INPUT.CROP.SIZE = [48, 48]  # of the ~250 x 300 toy images, before the resize
    else:
        cfg.INPUT.AUGMENTATIONS_NAME = recipe
    return cfg


def _expected_target(d, transforms, image_hw):
    """Background everywhere but the transformed crowd regions and the pixels outside the
    transformed image (padding, canvas), which are ignored."""
    expected = np.full(image_hw, NUM_TOY_CLASSES)
    for anno in d["annotations"]:
        if anno.get("iscrowd", 0):
            crowd = mask_util.decode(_crowd_rle(anno, d["height"], d["width"]))
            expected[transforms.apply_segmentation(crowd).astype(bool)] = IGNORE
    ones = np.ones((d["height"], d["width"]), np.uint8)
    expected[~transforms.apply_segmentation(ones).astype(bool)] = IGNORE
    return expected


@pytest.mark.parametrize(
    "recipe, make_sample",
    [("ssd", _framed), ("lsj", _with_a_crowd), ("default+crop", _with_a_crowd)],
)
def test_crop_removing_every_instance_gives_background_target(toy_samples, recipe, make_sample):
    """Maps toy samples until a crop leaves no instance while some pixels are to be ignored
    (crowd or padding), then checks the whole target."""
    mapper = build_dataset_mapper(_cfg(recipe), True)
    recorder = _RecordingAugmentations(mapper.augmentations)
    mapper.augmentations = recorder
    samples = [make_sample(d) for d in toy_samples[:MAX_TRIES]]
    np.random.seed(0)
    for attempt in range(MAX_TRIES):
        d = samples[attempt % len(samples)]
        out = mapper(d)
        if out is None or len(out["instances"]) > 0:
            continue
        expected = _expected_target(d, recorder.transforms, tuple(out["image"].shape[1:]))
        if (expected == IGNORE).any() and (expected == NUM_TOY_CLASSES).any():
            break
    else:
        pytest.fail(f"{recipe}: no crop removed every instance in {MAX_TRIES} mappings")
    assert out["sem_seg"].shape == expected.shape
    assert (out["sem_seg"].numpy() == expected).all()


def test_image_without_annotations_gives_background_target(toy_samples):
    """With DATALOADER.FILTER_EMPTY_ANNOTATIONS False, images without any annotation reach the
    mapper (11 of the first 150 toy training images): same all-background target."""
    mapper = build_dataset_mapper(_cfg("ssd"), True)
    recorder = _RecordingAugmentations(mapper.augmentations)
    mapper.augmentations = recorder
    d = dict(toy_samples[0], annotations=[])
    np.random.seed(0)
    out = mapper(d)
    assert len(out["instances"]) == 0
    expected = _expected_target(d, recorder.transforms, tuple(out["image"].shape[1:]))
    assert (out["sem_seg"].numpy() == expected).all()
    assert (expected == NUM_TOY_CLASSES).any()
