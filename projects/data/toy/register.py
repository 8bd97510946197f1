"""Register the toy dataset in Detectron2's catalogs (generation happens on first load).

Names (with the default ``prefix="toy"``):

* ``toy_train``, ``toy_val``: instance segmentation, loaded by Detectron2's own
  ``load_coco_json`` (pycocotools, polygons and RLE, category id mapping), evaluator "coco".
  Polygon and RLE annotations are mixed, so train with ``INPUT.MASK_FORMAT: bitmask``.
* ``toy_sem_seg_train``, ``toy_sem_seg_val``: semantic segmentation (``file_name``,
  ``sem_seg_file_name``, ``height``, ``width``), ``stuff_classes`` = things + stuff,
  ``ignore_label`` 255, evaluator "sem_seg".
"""

import functools
import json
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .shapes import THING_SHAPES
from .textures import STUFF_CLASSES, STUFF_COLORS, hsv_color
from .writer import (
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    DEFAULT_SEED,
    TOY_DIRNAME,
    default_root,
    ensure_toy_dataset,
    toy_paths,
)

logger = logging.getLogger(__name__)

TOY_THING_CLASSES = [shape.name for shape in sorted(THING_SHAPES, key=lambda s: s.dataset_id)]
TOY_SEM_SEG_CLASSES = TOY_THING_CLASSES + list(STUFF_CLASSES)
IGNORE_LABEL = 255


def _thing_colors():
    return [[int(c) for c in hsv_color(shape.hue, 0.8, 0.9)] for shape in THING_SHAPES]


def _load_instances(name, split, root, generation):
    ensure_toy_dataset(root, **generation)
    paths = toy_paths(os.path.join(root, TOY_DIRNAME), split)
    return load_coco_json(paths["json_file"], paths["image_root"], name)


def _load_sem_seg(split, root, generation):
    ensure_toy_dataset(root, **generation)
    paths = toy_paths(os.path.join(root, TOY_DIRNAME), split)
    with open(paths["json_file"]) as f:
        images = json.load(f)["images"]
    return [
        {
            "file_name": os.path.join(paths["image_root"], image["file_name"]),
            "sem_seg_file_name": os.path.join(paths["sem_seg_root"], image["file_name"]),
            "height": image["height"],
            "width": image["width"],
            "image_id": image["id"],
        }
        for image in sorted(images, key=lambda image: image["id"])
    ]


def register_toy_datasets(
    root=None,
    *,
    prefix="toy",
    num_train=DEFAULT_NUM_TRAIN,
    num_val=DEFAULT_NUM_VAL,
    seed=DEFAULT_SEED,
):
    """Register ``{prefix}_{train,val}`` and ``{prefix}_sem_seg_{train,val}``.

    Nothing is generated here: the first ``DatasetCatalog.get`` of any of them writes the dataset
    (see :func:`~projects.data.toy.writer.ensure_toy_dataset`). Names already registered are left
    alone, so calling this twice is harmless. ``root`` is resolved now (like Detectron2's builtin
    datasets, from ``$DETECTRON2_DATASETS`` at registration time).

    Args:
        root (str): datasets root; default ``$DETECTRON2_DATASETS`` or ``./datasets``.
        prefix (str): name prefix (tests use their own to stay apart from the default).
        num_train, num_val (int): image counts.
        seed (int): dataset seed.

    Returns:
        list[str]: the names registered by this call.
    """
    root = os.path.abspath(os.path.expanduser(root)) if root else default_root()
    generation = {"num_train": num_train, "num_val": num_val, "seed": seed}
    toy_dir = os.path.join(root, TOY_DIRNAME)
    registered = set(DatasetCatalog.list())
    thing_ids = sorted(shape.dataset_id for shape in THING_SHAPES)
    colors = _thing_colors()
    new_names = []
    for split in ("train", "val"):
        paths = toy_paths(toy_dir, split)
        name = f"{prefix}_{split}"
        if name not in registered:
            DatasetCatalog.register(
                name, functools.partial(_load_instances, name, split, root, generation)
            )
            MetadataCatalog.get(name).set(
                json_file=paths["json_file"],
                image_root=paths["image_root"],
                evaluator_type="coco",
                thing_classes=list(TOY_THING_CLASSES),
                thing_dataset_id_to_contiguous_id={d: i for i, d in enumerate(thing_ids)},
                thing_colors=colors,
            )
            new_names.append(name)
        sem_name = f"{prefix}_sem_seg_{split}"
        if sem_name not in registered:
            DatasetCatalog.register(
                sem_name, functools.partial(_load_sem_seg, split, root, generation)
            )
            MetadataCatalog.get(sem_name).set(
                image_root=paths["image_root"],
                sem_seg_root=paths["sem_seg_root"],
                evaluator_type="sem_seg",
                stuff_classes=list(TOY_SEM_SEG_CLASSES),
                stuff_colors=colors + [list(c) for c in STUFF_COLORS],
                ignore_label=IGNORE_LABEL,
            )
            new_names.append(sem_name)
    if new_names:
        logger.debug("Registered toy datasets %s under %s", new_names, toy_dir)
    return new_names
