"""Register the toy dataset in Detectron2's catalogs (generation happens on first load).

Names (with the default ``prefix="toy"``):

* ``toy_train``, ``toy_val``: instance segmentation on the instance regime (four classes, medium
  and large objects; :mod:`.regimes`), loaded by Detectron2's own ``load_coco_json``
  (pycocotools, polygons and RLE, category id mapping), evaluator "coco". Polygon and RLE
  annotations are mixed, so train with ``INPUT.MASK_FORMAT: bitmask``.
* ``toy_sem_seg_train``, ``toy_sem_seg_val``: semantic segmentation on the semantic regime
  (``file_name``, ``sem_seg_file_name``, ``height``, ``width``), ``stuff_classes`` = its seven
  things + stuff, ``ignore_label`` 255, evaluator "sem_seg".
"""

import functools
import json
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .regimes import INSTANCE_CONFIG, SEMANTIC_CONFIG
from .textures import STUFF_CLASSES, STUFF_COLORS, hsv_color
from .writer import DEFAULT_SEED, default_root, ensure_toy_dataset, toy_dir_of, toy_paths

logger = logging.getLogger(__name__)

TOY_THING_CLASSES = list(INSTANCE_CONFIG.classes)
"""The thing classes of ``toy_train`` / ``toy_val`` (the instance regime), in contiguous order."""
TOY_SEM_SEG_CLASSES = list(SEMANTIC_CONFIG.classes) + list(STUFF_CLASSES)
"""The classes of ``toy_sem_seg_*`` (the semantic regime): its things, then stuff."""
IGNORE_LABEL = 255


def _thing_colors(config):
    return [
        [int(c) for c in hsv_color(config.hue(i), 0.8, 0.9)] for i in range(len(config.classes))
    ]


def _load_instances(name, split, root, generation):
    ensure_toy_dataset(root, regime="instance", **generation)
    paths = toy_paths(toy_dir_of(root, "instance"), split)
    return load_coco_json(paths["json_file"], paths["image_root"], name)


def _load_sem_seg(split, root, generation):
    ensure_toy_dataset(root, regime="semantic", **generation)
    paths = toy_paths(toy_dir_of(root, "semantic"), split)
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
    num_train=None,
    num_val=None,
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
        num_train, num_val (int): image counts of both regimes; default: each regime's own
            (:data:`~projects.data.toy.regimes.REGIMES`).
        seed (int): dataset seed.

    Returns:
        list[str]: the names registered by this call.
    """
    root = os.path.abspath(os.path.expanduser(root)) if root else default_root()
    generation = {"num_train": num_train, "num_val": num_val, "seed": seed}
    registered = set(DatasetCatalog.list())
    thing_ids = [shape.dataset_id for shape in INSTANCE_CONFIG.shapes]
    # load_coco_json maps category ids to contiguous ones in sorted order
    assert thing_ids == sorted(thing_ids), "instance classes must be in dataset-id order"
    new_names = []
    for split in ("train", "val"):
        paths = toy_paths(toy_dir_of(root, "instance"), split)
        sem_paths = toy_paths(toy_dir_of(root, "semantic"), split)
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
                thing_colors=_thing_colors(INSTANCE_CONFIG),
            )
            new_names.append(name)
        sem_name = f"{prefix}_sem_seg_{split}"
        if sem_name not in registered:
            DatasetCatalog.register(
                sem_name, functools.partial(_load_sem_seg, split, root, generation)
            )
            MetadataCatalog.get(sem_name).set(
                image_root=sem_paths["image_root"],
                sem_seg_root=sem_paths["sem_seg_root"],
                evaluator_type="sem_seg",
                stuff_classes=list(TOY_SEM_SEG_CLASSES),
                stuff_colors=_thing_colors(SEMANTIC_CONFIG) + [list(c) for c in STUFF_COLORS],
                ignore_label=IGNORE_LABEL,
            )
            new_names.append(sem_name)
    if new_names:
        logger.debug("Registered toy datasets %s under %s", new_names, root)
    return new_names
