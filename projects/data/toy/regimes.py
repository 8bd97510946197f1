"""The two regimes of the toy dataset: what each split is for, and why it looks as it does.

* ``"instance"`` (``toy_train`` / ``toy_val``, under ``$DETECTRON2_DATASETS/toy_instance``) is the
  regime every instance-segmentation method is judged on. It is built so that the score measures
  *masks*, not recall of tiny objects or hard recognition:

  - **four classes** that keep what makes masks hard: a ring (a hole), a crescent (a concave curved
    boundary), a star (sharp corners, thin spikes) and a dumbbell (thin bar between two disks);
  - **a usable cue**: each class has its own hue (red, orange, violet, magenta: 0.11-0.36 of the
    colour wheel apart, jitter 0.02), in none of the stuff's hue ranges (grass 0.18-0.40, most
    skies 0.53-0.66) and saturated (0.6-1.0, value 0.5-1.0), on every object, so that a ResNet-18
    recognises the classes within minutes and what is left to learn is where the boundary runs.
    (Generator version 2 had hues a quarter turn apart, one of them grass's: its crescents were
    lost on grass and scored 0.0 mask AP with the toy Mask R-CNN, whose mask AP was 21.7 there
    against 39.4 here, seed 7);
  - **medium and large objects**: radii of 24 to 140 px, log-uniform, in 176-224 px images, so that
    about 70 % of instances are COCO-medium, 12 % large and 18 % small (APs, APm and APl are all
    defined); up to three objects per image, placed next to each other with probability 0.35, so
    that occlusion still cuts masks;
  - **300 validation images** (about 540 instances): bootstrapping one trained model's predictions
    over them gives a mask-AP SD of about 1.1, below the spread between training seeds (1.4).

  Measured with the toy Mask R-CNN (R18-FPN 64, AdamW 1e-3, batch 4, 2 CPU cores): fine-tuned for
  240 iterations (cosine annealing) from the toy-pretrained ResNet-18 FPN
  (:mod:`projects.engine.toy_pretrained`, itself 720 iterations from scratch with one step down) it
  reaches about 38 mask AP (seeds 7 / 8 / 9: 39.4 / 37.5 / 36.8), where a step schedule gives 33
  with twice the seed spread, a cosine-annealed pretraining 35 (720 iterations) or 30 (480), batch
  2 for 480 iterations 36, and a learning rate of 2e-3 28. Up to six objects per image learned
  slower per iteration than three; the semantic regime's seven classes and 6-70 px radii made the
  score a matter of finding tiny objects (69 % smaller than 32 x 32 px, 7.5 mask AP).
* ``"semantic"`` (``toy_sem_seg_train`` / ``toy_sem_seg_val``, in ``$DETECTRON2_DATASETS/toy``) is
  the original regime (generator version 1's content, bytes unchanged): seven thing classes over an
  ~9x scale range on three stuff classes, which the semantic pair (Semantic FPN, semantic
  PointRend) is trained and judged on.
"""

from dataclasses import dataclass

from .render import ToyConfig

INSTANCE_CONFIG = ToyConfig(
    classes=("ring", "crescent", "star", "dumbbell"),
    hues=(0.0, 0.11, 0.75, 0.87),
    min_size=176,
    max_size=224,
    min_scale=24.0,
    max_scale=140.0,
    max_instances=3,
    hue_cue_prob=1.0,
    hue_jitter=0.02,
    second_hue_prob=1.0,
    saturation=(0.6, 1.0),
    value=(0.5, 1.0),
    second_saturation=(0.5, 1.0),
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
