"""The bundled toy dataset: generated deterministically, written as COCO JSON + PNG, registered
through Detectron2's COCO loader.

Seven thing classes with curves, thin parts and holes (ring, crescent, star, ellipse, bar, blob,
dumbbell), textured and colour-varying, occluding each other over an ~9x scale range on textured
stuff (sky, grass, gravel). See :mod:`.render` for how annotations stay pixel-exact, :mod:`.writer`
for the on-disk layout and lazy, locked generation, :mod:`.register` for the dataset names.
"""

from .register import (
    IGNORE_LABEL,
    TOY_SEM_SEG_CLASSES,
    TOY_THING_CLASSES,
    register_toy_datasets,
)
from .render import ToyConfig, ToySample, render_sample
from .shapes import THING_SHAPES
from .textures import STUFF_CLASSES
from .writer import (
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    GENERATOR_VERSION,
    ensure_toy_dataset,
    generate_toy_dataset,
    toy_paths,
)

__all__ = [
    "DEFAULT_NUM_TRAIN",
    "DEFAULT_NUM_VAL",
    "GENERATOR_VERSION",
    "IGNORE_LABEL",
    "STUFF_CLASSES",
    "THING_SHAPES",
    "TOY_SEM_SEG_CLASSES",
    "TOY_THING_CLASSES",
    "ToyConfig",
    "ToySample",
    "ensure_toy_dataset",
    "generate_toy_dataset",
    "register_toy_datasets",
    "render_sample",
    "toy_paths",
]
