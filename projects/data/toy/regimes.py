"""The two regimes of the toy dataset: what each split is for, and why it looks as it does.

* ``"instance"`` (``toy_train`` / ``toy_val``, under ``$DETECTRON2_DATASETS/toy_instance``) is the
  regime every instance-segmentation method is judged on. It is built so that the score measures
  *masks*, not recall of tiny objects or hard recognition:

  - **four classes** that keep what makes masks hard: a ring (a hole), a crescent (a concave curved
    boundary), a star (sharp corners, thin spikes) and a dumbbell (thin bar between two disks);
  - **a usable cue**: each class has its own hue (a quarter turn of the colour wheel apart, jitter
    0.02) on every object, so that a ResNet-18 trained from scratch recognises the classes within
    minutes and what is left to learn is where the boundary runs;
  - **medium and large objects**: radii of 24 to 140 px, log-uniform, in 176-224 px images, so that
    about 70 % of instances are COCO-medium, 12 % large and 18 % small (APs, APm and APl are all
    defined); up to three objects per image, placed next to each other with probability 0.35, so
    that occlusion still cuts masks;
  - **300 validation images** (about 540 instances), so that evaluation noise is small next to the
    differences the learning checks look for.

  Measured with the toy Mask R-CNN (R18-FPN 64, AdamW 1e-3, batch 4, 2 CPU cores): from scratch it
  reaches about 12 mask AP in 240 iterations and 31 in 720 (7 minutes); fine-tuned for 240
  iterations from the toy-pretrained ResNet-18 FPN (:mod:`projects.engine.toy_pretrained`) about
  23, where only the ResNet pretrained gives 18. Up to six objects per image learned slower per
  iteration (8 mask AP at 240 from scratch) rather than faster. The seven classes and 6-70 px radii
  of the semantic regime made the score a matter of finding tiny objects (69 % smaller than
  32 x 32 px, 7.5 mask AP).
* ``"semantic"`` (``toy_sem_seg_train`` / ``toy_sem_seg_val``, in ``$DETECTRON2_DATASETS/toy``) is
  the original regime (generator version 1's content, bytes unchanged): seven thing classes over an
  ~9x scale range on three stuff classes, which the semantic pair (Semantic FPN, semantic
  PointRend) is trained and judged on.
"""

from dataclasses import dataclass

from .render import ToyConfig

INSTANCE_CONFIG = ToyConfig(
    classes=("ring", "crescent", "star", "dumbbell"),
    hues=(0.0, 0.25, 0.5, 0.75),
    min_size=176,
    max_size=224,
    min_scale=24.0,
    max_scale=140.0,
    max_instances=3,
    hue_cue_prob=1.0,
    hue_jitter=0.02,
    second_hue_prob=1.0,
)
SEMANTIC_CONFIG = ToyConfig()


@dataclass(frozen=True)
class ToyRegime:
    """One regime: its generator knobs, directory and default image counts.

    Attributes:
        name (str): "instance" or "semantic".
        dirname (str): directory under the datasets root.
        config (ToyConfig): the generator's content knobs.
        num_train, num_val (int): default image counts of the two splits.
    """

    name: str
    dirname: str
    config: ToyConfig
    num_train: int
    num_val: int


REGIMES = {
    "instance": ToyRegime("instance", "toy_instance", INSTANCE_CONFIG, 400, 300),
    "semantic": ToyRegime("semantic", "toy", SEMANTIC_CONFIG, 400, 60),
}


def get_regime(name):
    """The :class:`ToyRegime` called ``name``; a ``KeyError`` names the known ones."""
    if name not in REGIMES:
        raise KeyError(f"Unknown toy regime {name!r}; expected one of {sorted(REGIMES)}")
    return REGIMES[name]
