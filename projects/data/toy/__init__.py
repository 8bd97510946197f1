"""The bundled toy dataset: generated deterministically, written as COCO JSON + PNG, registered
through Detectron2's COCO loader.

Thing classes with curves, thin parts and holes (ring, crescent, star, ellipse, bar, blob,
dumbbell), textured, occluding each other on textured stuff (sky, grass, gravel), in two regimes
(:mod:`.regimes`): the instance regime (four classes, medium and large objects, 300 validation
images) that instance methods are judged on, and the semantic regime (seven classes over an ~9x
scale range) of the semantic pair. See :mod:`.render` for how annotations stay pixel-exact,
:mod:`.writer` for the on-disk layout and lazy, locked generation, :mod:`.register` for the
dataset names.
"""

from .regimes import INSTANCE_CONFIG, REGIMES, SEMANTIC_CONFIG, ToyRegime, get_regime
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
    GENERATOR_VERSION,
    ensure_toy_dataset,
    generate_toy_dataset,
    toy_dir_of,
    toy_paths,
)

__all__ = [
    "GENERATOR_VERSION",
    "IGNORE_LABEL",
    "INSTANCE_CONFIG",
    "REGIMES",
    "SEMANTIC_CONFIG",
    "STUFF_CLASSES",
    "THING_SHAPES",
    "TOY_SEM_SEG_CLASSES",
    "TOY_THING_CLASSES",
    "ToyConfig",
    "ToyRegime",
    "ToySample",
    "ensure_toy_dataset",
    "generate_toy_dataset",
    "get_regime",
    "register_toy_datasets",
    "render_sample",
    "toy_dir_of",
    "toy_paths",
]
