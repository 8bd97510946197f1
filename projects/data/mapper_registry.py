"""The registry from which the trainer picks the dataset mapper named by the config."""

from detectron2.data import DatasetMapper
from detectron2.utils.registry import Registry

DATASET_MAPPER_REGISTRY = Registry("DATASET_MAPPER")
DATASET_MAPPER_REGISTRY.__doc__ = """
Registry for dataset mappers: callables that turn one Detectron2 dataset dict into model input.

The registered object is called as ``obj(cfg, is_train)`` and must return a callable
``mapper(dataset_dict) -> dict`` (the format of Detectron2's ``DatasetMapper``). It is chosen by
``cfg.INPUT.DATASET_MAPPER_NAME``; the registered name is the class or function name.
Methods register their own mappers here.
"""


# Detectron2's own mapper, configured from ``cfg`` by its ``from_config``.
DATASET_MAPPER_REGISTRY.register(DatasetMapper)


def build_dataset_mapper(cfg, is_train):
    """Build the mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME``.

    Raises:
        KeyError: naming the unknown mapper and the registered ones.
    """
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in DATASET_MAPPER_REGISTRY:
        known = ", ".join(sorted(k for k, _ in DATASET_MAPPER_REGISTRY))
        raise KeyError(f"INPUT.DATASET_MAPPER_NAME={name!r} is not registered; known: {known}")
    return DATASET_MAPPER_REGISTRY.get(name)(cfg, is_train)
