"""Dataset registration: COCO (Detectron2's builtin), the bundled toy set, and users' COCO sets.

What is registered where:

* **COCO 2017, COCO panoptic / stuff, LVIS, Cityscapes, VOC, ADE20k**: Detectron2 registers them
  itself when ``detectron2.data`` is imported (``detectron2.data.datasets.builtin``), with paths
  under ``$DETECTRON2_DATASETS`` (default ``./datasets``) read at that import, e.g.
  ``coco_2017_train`` reads ``$DETECTRON2_DATASETS/coco/annotations/instances_train2017.json`` and
  ``.../coco/train2017``; also ``coco_2017_train_panoptic`` and
  ``coco_2017_train_panoptic_stuffonly`` (semantic stuff). Nothing here changes them.
* **The toy set** (``toy_train``, ``toy_val``, ``toy_sem_seg_train``, ``toy_sem_seg_val``):
  :func:`register_all_datasets` registers it under ``$DETECTRON2_DATASETS/toy_instance`` (instances)
  and ``$DETECTRON2_DATASETS/toy`` (semantic); each is generated on first load.
* **Your own COCO-format set**, either in Python::

      from projects.data.datasets import register_coco_dataset
      register_coco_dataset("my_train", "/data/my/train.json", "/data/my/images")

  or from the config alone, naming the dataset ``coco_format:<json_file>:<image_root>``::

      DATASETS:
        TRAIN: ("coco_format:/data/my/train.json:/data/my/images",)

  which the trainer registers through :func:`ensure_datasets_registered` before building loaders
  (paths may not contain ':'; relative paths are taken from the working directory).
"""

import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from .toy import register_toy_datasets

logger = logging.getLogger(__name__)

COCO_FORMAT_PREFIX = "coco_format:"


def register_coco_dataset(name, json_file, image_root, **metadata):
    """Register a COCO-format instance dataset (a thin check around ``register_coco_instances``).

    The JSON is read on first ``DatasetCatalog.get(name)`` (Detectron2's ``load_coco_json``:
    polygons or RLE, any category ids); ``evaluator_type`` is "coco". Registering the same name
    with the same files again is a no-op.

    Args:
        name (str): dataset name to use in ``DATASETS.TRAIN`` / ``DATASETS.TEST``.
        json_file (str): COCO instances JSON.
        image_root (str): directory the JSON's ``file_name`` entries are relative to.
        **metadata: extra metadata (e.g. ``thing_colors``).

    Raises:
        FileNotFoundError: naming the missing JSON file or image directory.
        ValueError: if ``name`` is already registered with other files.
    """
    json_file = os.path.abspath(os.path.expanduser(json_file))
    image_root = os.path.abspath(os.path.expanduser(image_root))
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"COCO dataset {name!r}: annotation file {json_file} does not exist"
        )
    if not os.path.isdir(image_root):
        raise FileNotFoundError(
            f"COCO dataset {name!r}: image directory {image_root} does not exist"
        )
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if meta.get("json_file") == json_file and meta.get("image_root") == image_root:
            return
        raise ValueError(
            f"Dataset {name!r} is already registered (json_file={meta.get('json_file')!r}, "
            f"image_root={meta.get('image_root')!r}); pick another name"
        )
    register_coco_instances(name, dict(metadata), json_file, image_root)
    logger.info("Registered COCO-format dataset %r: %s (images in %s)", name, json_file, image_root)


def parse_coco_format_name(name):
    """Split ``coco_format:<json_file>:<image_root>`` into ``(json_file, image_root)``.

    Raises:
        ValueError: if ``name`` does not have exactly that form.
    """
    if not name.startswith(COCO_FORMAT_PREFIX):
        raise ValueError(f"Dataset name {name!r} does not start with {COCO_FORMAT_PREFIX!r}")
    parts = name[len(COCO_FORMAT_PREFIX) :].split(":")
    if len(parts) != 2 or not all(parts):
        raise ValueError(
            f"Dataset name {name!r} must be '{COCO_FORMAT_PREFIX}<json_file>:<image_root>' "
            "(two non-empty paths without ':')"
        )
    return parts[0], parts[1]


def ensure_datasets_registered(names):
    """Register every ``coco_format:`` name in ``names`` and check the others exist.

    The trainer calls this with ``cfg.DATASETS.TRAIN + cfg.DATASETS.TEST`` before building data
    loaders or evaluators, so a config alone can point at a user's COCO-format files.

    Args:
        names (Iterable[str]): dataset names.

    Returns:
        list[str]: names registered by this call.

    Raises:
        KeyError: naming a dataset that is neither registered nor of the ``coco_format:`` form.
        FileNotFoundError: naming a missing file of a ``coco_format:`` dataset.
    """
    registered, new = set(DatasetCatalog.list()), []
    for name in names:
        if name in registered:
            continue
        if name.startswith(COCO_FORMAT_PREFIX):
            json_file, image_root = parse_coco_format_name(name)
            register_coco_dataset(name, json_file, image_root)
            registered.add(name)
            new.append(name)
            continue
        raise KeyError(
            f"Dataset {name!r} is not registered. Register it with "
            "projects.data.datasets.register_coco_dataset(name, json_file, image_root), or name "
            f"it '{COCO_FORMAT_PREFIX}<json_file>:<image_root>' in the config. "
            f"Registered: {', '.join(sorted(registered))}"
        )
    return new


def register_all_datasets():
    """Register the toy datasets (Detectron2's builtin ones are registered by its own import).

    Idempotent; called by ``import projects.data``.
    """
    import detectron2.data.datasets.builtin  # noqa: F401  (registers COCO & co. on import)

    register_toy_datasets()
