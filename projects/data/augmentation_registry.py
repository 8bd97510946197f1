"""The registry from which the mappers take the augmentation recipe named by the config."""

from detectron2.utils.registry import Registry

AUGMENTATION_REGISTRY = Registry("AUGMENTATION")
AUGMENTATION_REGISTRY.__doc__ = """
Registry for augmentation recipes: functions that build the augmentations of a dataset mapper.

The registered object is called as ``builder(cfg, is_train) -> list[Augmentation]`` (Detectron2
``Augmentation`` objects, applied in list order, for training or for testing) and is chosen by
``cfg.INPUT.AUGMENTATIONS_NAME``; the registered name is the function's name. The built-in
recipes (``default``, ``lsj``, ``ssd``, ``semantic``) live in :mod:`projects.data.augmentations`.
Methods register their own recipes here when their package is imported, naming with
:func:`input_size_keys` the config keys that set the size of the images it produces (the test
contract requires every CPU-sized toy config to set them)::

    @AUGMENTATION_REGISTRY.register()
    @input_size_keys("INPUT.MY_RECIPE.SIZE")
    def my_recipe(cfg, is_train):
        return [...]
"""


def input_size_keys(*keys):
    """Decorator of a recipe: ``keys`` are the config keys that set the size of the images it
    produces (train or test), read back by :func:`recipe_input_size_keys`."""

    def mark(builder):
        builder.input_size_keys = tuple(keys)
        return builder

    return mark


def may_drop_instances(predicate):
    """Decorator of a recipe whose training augmentations may crop instances out of an image:
    ``predicate(cfg) -> bool`` says whether they do under ``cfg`` (read back by
    :func:`recipe_may_drop_instances`; a recipe without it keeps every instance)."""

    def mark(builder):
        builder.may_drop_instances = predicate
        return builder

    return mark


def recipe_may_drop_instances(cfg):
    """Whether the training augmentations of ``cfg``'s recipe may remove every pixel of an
    instance (a crop), so that a mapped image can hold fewer instances than its annotations."""
    predicate = getattr(_recipe(cfg.INPUT.AUGMENTATIONS_NAME), "may_drop_instances", None)
    return bool(predicate(cfg)) if predicate is not None else False


def recipe_input_size_keys(cfg):
    """The config keys that set the input size under ``cfg``'s recipe
    (``cfg.INPUT.AUGMENTATIONS_NAME``); empty for a recipe that does not declare them.

    Raises:
        KeyError: naming the unknown recipe and the registered ones.
    """
    return getattr(_recipe(cfg.INPUT.AUGMENTATIONS_NAME), "input_size_keys", ())


def _recipe(name):
    if name not in AUGMENTATION_REGISTRY:
        known = ", ".join(sorted(k for k, _ in AUGMENTATION_REGISTRY))
        raise KeyError(f"INPUT.AUGMENTATIONS_NAME={name!r} is not registered; known: {known}")
    return AUGMENTATION_REGISTRY.get(name)


def build_augmentations(cfg, is_train):
    """Build the augmentation list of the recipe named by ``cfg.INPUT.AUGMENTATIONS_NAME``.

    Args:
        cfg (CfgNode): the config (with :func:`projects.data.config.add_data_config`'s keys).
        is_train (bool): training (random augmentations) or testing (the resize only).

    Returns:
        list[Augmentation]: what the recipe returns.

    Raises:
        KeyError: naming the unknown recipe and the registered ones.
    """
    return _recipe(cfg.INPUT.AUGMENTATIONS_NAME)(cfg, is_train)
