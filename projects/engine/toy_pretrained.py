"""The toy-pretrained backbone, ``toy-pretrained://R-18.pkl``: what the toy configs start from.

COCO configs start their ResNet from ImageNet weights (``detectron2://ImageNetPretrained/...``);
nothing can be downloaded here, so the toy configs start theirs from a ResNet-18 (and FPN)
pretrained on the toy instance regime's training split. Every toy instance method fine-tunes from
the same weights, so a method's learning check measures its heads rather than how fast a ResNet
learns from scratch, and paired comparisons with the yardstick share their initialisation.

On first use (``MODEL.WEIGHTS`` or any path given to Detectron2's ``PathManager``), the weights are
made like a download is, once per machine, with progress and ETA in the log: the toy Mask R-CNN
recipe (``configs/toy/mask_rcnn.yaml`` with :data:`RECIPE_OPTS`) trains in a subprocess (so that a
distributed worker that resolves the path does not train inside its process group), and its
``backbone.*`` weights are written as a Detectron2 model-zoo pickle with matching heuristics on, so
that any meta-architecture built on Detectron2's ResNet (and FPN) loads them by name, as it would
ImageNet's. The file lives under ``$DETECTRON2_DATASETS/toy_pretrained/``, next to a stamp of what
it was made from (the resolved recipe config's hash, the generator version and the instance
regime's knobs and counts): a changed recipe or dataset is retrained, concurrent processes wait on a
file lock, and the file is replaced atomically (its old stamp removed first).

``python -m projects.engine.toy_pretrained`` makes (or finds) the weights and prints their path.
"""

import hashlib
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time

from detectron2.utils.file_io import PathManager
from iopath.common.file_io import PathHandler

logger = logging.getLogger(__name__)

PREFIX = "toy-pretrained://"
RECIPE_CONFIG = "toy/mask_rcnn.yaml"
RECIPE_ITERATIONS = 720
RECIPE_OPTS = (
    "MODEL.WEIGHTS", "",
    "SOLVER.BASE_LR", "0.001",
    "SOLVER.LR_SCHEDULER_NAME", "WarmupMultiStepLR",
    "SOLVER.MAX_ITER", str(RECIPE_ITERATIONS),
    "SOLVER.STEPS", f"({RECIPE_ITERATIONS * 4 // 5},)",
    "SOLVER.CHECKPOINT_PERIOD", str(RECIPE_ITERATIONS),
    "TEST.EVAL_PERIOD", "0",
    "DATASETS.TEST", "()",
    "SEED", "7",
)  # fmt: skip
"""Options over ``RECIPE_CONFIG``: from scratch, 720 iterations at 1e-3 with one step down, no
evaluation."""
# Keys (or key prefixes) the recipe's training never reads: changing them keeps the cached weights.
INFERENCE_ONLY_KEYS = ("TEST.DETECTIONS_PER_IMAGE", "TEST.AUG.")
WEIGHT_PREFIX = "backbone."
STAMP_SUFFIX = ".stamp.json"
KNOWN_FILES = ("R-18.pkl",)


def _recipe_config(output_dir):
    from projects.engine.setup import load_config
    from projects.methods import resolve_config

    return load_config(resolve_config(RECIPE_CONFIG), [*RECIPE_OPTS, "OUTPUT_DIR", output_dir])


def recipe_stamp():
    """What the weights depend on: the recipe's resolved config (its hash), the toy data's
    generator version and the instance regime it trains on (knobs and image counts).

    The config hash covers Detectron2's keys and the shared ones (``projects``), not the keys a
    method package adds (a method landing does not change the recipe, so it keeps the cache) nor
    those only inference reads (:data:`INFERENCE_ONLY_KEYS`: the recipe evaluates nothing).
    """
    from detectron2.config import get_cfg as detectron2_cfg

    from projects.config import add_projects_config, config_items
    from projects.data.toy.regimes import get_regime
    from projects.data.toy.writer import GENERATOR_VERSION

    shared = {key for key, _ in config_items(add_projects_config(detectron2_cfg()))}
    items = [
        (k, v)
        for k, v in config_items(_recipe_config(""))
        if k in shared and not k.startswith(INFERENCE_ONLY_KEYS)
    ]
    dump = repr(items)
    return {
        "generator_version": GENERATOR_VERSION,
        "regime_sha1": hashlib.sha1(repr(get_regime("instance")).encode()).hexdigest(),
        "recipe": RECIPE_CONFIG,
        "config_sha1": hashlib.sha1(dump.encode()).hexdigest(),
    }


def pretrained_dir(root=None):
    """``<datasets root>/toy_pretrained`` (beside the datasets, which are replaced as a whole when
    regenerated)."""
    from projects.data.toy.writer import default_root

    root = os.path.abspath(os.path.expanduser(root)) if root else default_root()
    return os.path.join(root, "toy_pretrained")


def backbone_weights(state_dict):
    """The ``backbone.*`` entries of a model's ``state_dict`` without that prefix, as numpy arrays
    (Detectron2's model-zoo pickle layout)."""
    return {
        key[len(WEIGHT_PREFIX) :]: value.detach().cpu().numpy()
        for key, value in state_dict.items()
        if key.startswith(WEIGHT_PREFIX)
    }


def _stamp_matches(path, expected):
    try:
        with open(path + STAMP_SUFFIX) as f:
            return json.load(f) == expected
    except (OSError, ValueError):
        return False


def ensure_pretrained(name="R-18.pkl", root=None):
    """The local path of the toy-pretrained weights ``name``, made first if missing or stale.

    Args:
        name (str): file name (only ``R-18.pkl`` is known).
        root (str): datasets root; default ``$DETECTRON2_DATASETS`` or ``./datasets``.

    Returns:
        str: path of the pickle.
    """
    if name not in KNOWN_FILES:
        raise FileNotFoundError(
            f"{PREFIX}{name}: unknown toy-pretrained weights; known: {list(KNOWN_FILES)}"
        )
    from projects.data.toy.writer import file_lock

    directory = pretrained_dir(root)
    path = os.path.join(directory, name)
    expected = recipe_stamp()
    if os.path.isfile(path) and _stamp_matches(path, expected):
        return path
    os.makedirs(directory, exist_ok=True)
    with file_lock(os.path.join(directory, ".lock")):
        if os.path.isfile(path) and _stamp_matches(path, expected):
            return path
        _train(path, root, expected)
    return path


def _train(path, root, stamp):
    directory = os.path.dirname(path)
    work = tempfile.mkdtemp(prefix=".train-", dir=directory)
    logger.info(
        "Pretraining the toy backbone %s (%s, %d iterations; once per machine): logs in %s",
        path,
        RECIPE_CONFIG,
        RECIPE_ITERATIONS,
        work,
    )
    start = time.perf_counter()
    env = dict(os.environ)
    if root:
        env["DETECTRON2_DATASETS"] = os.path.abspath(os.path.expanduser(root))
    command = [sys.executable, "-m", "projects.engine.toy_pretrained", "--train-into", work]
    try:
        result = subprocess.run(command, env=env)
        if result.returncode != 0:
            raise RuntimeError(
                f"Pretraining the toy backbone failed (exit code {result.returncode}); its log: "
                f"{os.path.join(work, 'log.txt')}"
            )
        made = os.path.join(work, "backbone.pkl")
        if os.path.exists(path + STAMP_SUFFIX):  # never a new file beside the old stamp
            os.remove(path + STAMP_SUFFIX)
        os.replace(made, path)
        with open(path + STAMP_SUFFIX + ".tmp", "w") as f:
            json.dump(stamp, f, indent=1, sort_keys=True)
        os.replace(path + STAMP_SUFFIX + ".tmp", path + STAMP_SUFFIX)
    except BaseException:
        logger.error("Toy backbone pretraining failed; its output is kept in %s", work)
        raise
    shutil.rmtree(work, ignore_errors=True)
    logger.info("Toy backbone ready in %.0f s: %s", time.perf_counter() - start, path)


def _train_into(work):
    """Run the recipe in this process (as ``train_net.py`` would) with ``work`` as output dir, then
    write its backbone to ``work/backbone.pkl``."""
    import torch
    from detectron2.engine import default_argument_parser

    from projects.engine.main import main
    from projects.methods import resolve_config

    argv = ["--config-file", resolve_config(RECIPE_CONFIG), *RECIPE_OPTS, "OUTPUT_DIR", work]
    main(default_argument_parser().parse_args(argv))
    # written by this very run a moment ago
    final = torch.load(
        os.path.join(work, "model_final.pth"), map_location="cpu", weights_only=False
    )
    data = {
        "model": backbone_weights(final["model"]),
        "__author__": "toy pretraining",
        "matching_heuristics": True,
    }
    tmp = os.path.join(work, "backbone.pkl.tmp")
    with open(tmp, "wb") as f:
        pickle.dump(data, f)
    os.replace(tmp, os.path.join(work, "backbone.pkl"))


class ToyPretrainedHandler(PathHandler):
    """``toy-pretrained://<name>`` -> the local file made by :func:`ensure_pretrained`."""

    def _get_supported_prefixes(self):
        return [PREFIX]

    def _get_local_path(self, path, **kwargs):
        return ensure_pretrained(path[len(PREFIX) :])

    def _open(self, path, mode="r", **kwargs):
        return PathManager.open(self._get_local_path(path), mode, **kwargs)


def is_toy_pretrained(path):
    """Whether ``path`` names toy-pretrained initial weights (not a trained model)."""
    return str(path).startswith(PREFIX)


def register_handler():
    """Register :class:`ToyPretrainedHandler` with Detectron2's ``PathManager`` (idempotent)."""
    if PREFIX not in PathManager._path_handlers:
        PathManager.register_handler(ToyPretrainedHandler())


register_handler()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-into", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_into:
        _train_into(args.train_into)
    else:
        logging.basicConfig(level=logging.INFO)
        print(ensure_pretrained())
