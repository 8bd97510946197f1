"""The test contract every toy config joins: what a method's toy config declares, and the checks
run on it (``tests/test_contract.py`` runs them on every toy config of every registered method).

A toy config (a file of ``configs/toy/`` that a :class:`projects.methods.Method` lists in its
``toy_configs``) declares under ``TEST_CONTRACT`` how a CPU-sized copy of its model is made
(``TINY_OPTS``) and which key holds its class count (``NUM_CLASSES_KEY``); see
:func:`projects.methods.add_test_contract_config`. :func:`load_contract` checks the declaration
and raises :class:`ContractError` naming the file and the key at fault, so a config that forgets
to shrink its input never runs the quick checks at its published size.

The checks take a config *file*, so they run as they are on a config built inside a test (a
throwaway method) as on the repository's: R-CNN heads, one-stage and query-based
meta-architectures alike. What they need to know of a model comes from its outputs (instances
or ``sem_seg``) and from the dataset's ``evaluator_type``, never from its config keys.
"""

import copy
import os
import re
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from projects.data.augmentation_registry import recipe_input_size_keys
from projects.data.mapper_registry import build_dataset_mapper
from projects.engine.checkpoint import ProjectCheckpointer
from projects.engine.setup import load_config
from projects.methods import config_root, toy_config_names

__all__ = [
    "ContractError",
    "ToyContract",
    "assert_finite_losses",
    "assert_output_size",
    "build_tiny_model",
    "check_checkpoint_round_trip",
    "check_inference_at_requested_size",
    "check_training_pass",
    "empty_ground_truth",
    "input_size_bound",
    "is_semantic",
    "load_contract",
    "num_classes",
    "tiny_cfg",
    "toy_config_files",
    "toy_config_path",
    "training_samples",
]

INSTANCE, SEMANTIC = "instance", "semantic"
# A tiny model's largest input side may not exceed this (its TINY_OPTS' sizes are 48-64 px).
TINY_INPUT_BOUND = 128


class ContractError(ValueError):
    """A toy config whose test-contract declaration is missing or wrong (names file and key)."""


def toy_config_path(name: str) -> str:
    """The file of toy config ``name`` (a name under ``configs/toy/``, or an absolute path)."""
    return name if os.path.isabs(name) else os.path.join(config_root(), "toy", name)


def toy_config_files() -> List[str]:
    """The YAML files of ``configs/toy/`` that are configs (not ``Base-*`` nor ``bars.yaml``)."""
    folder = os.path.join(config_root(), "toy")
    return sorted(
        name
        for name in os.listdir(folder)
        if name.endswith(".yaml") and not name.startswith("Base-") and name != "bars.yaml"
    )


def _get_key(cfg, key):
    node = cfg
    for part in key.split("."):
        if not hasattr(node, "get") or part not in node:
            return None, False
        node = node[part]
    return node, True


def _opts_keys(opts):
    return set(opts[0::2])


@dataclass(frozen=True)
class ToyContract:
    """What a toy config declares to the contract, checked by :func:`load_contract`.

    Attributes:
        path: the config file.
        tiny_opts: ``KEY VALUE`` overrides of its CPU-sized model.
        num_classes_key: the key holding its class count.
        num_classes: the class count of its training dataset.
        task: ``"instance"`` (COCO-style evaluation) or ``"semantic"``.
    """

    path: str
    tiny_opts: Tuple[str, ...]
    num_classes_key: str
    num_classes: int
    task: str

    @property
    def name(self):
        return os.path.basename(self.path)


def load_contract(path: str) -> ToyContract:
    """Read and check the ``TEST_CONTRACT`` declaration of the toy config ``path``.

    Raises:
        ContractError: naming ``path`` and the missing or wrong key: ``TINY_OPTS`` is not a list
            of ``KEY VALUE`` pairs or does not set an input-size key of the config's
            augmentation recipe; ``NUM_CLASSES_KEY`` is unset, names no key, or its value is not
            the training dataset's class count.
    """
    cfg = load_config(path)
    opts = tuple(str(v) for v in cfg.TEST_CONTRACT.TINY_OPTS)
    if not opts or len(opts) % 2:
        raise ContractError(
            f"{path}: TEST_CONTRACT.TINY_OPTS must be a non-empty list of KEY VALUE pairs (the "
            f"overrides of a CPU-sized model), got {list(opts)}"
        )
    declared = _opts_keys(opts)
    for key in recipe_input_size_keys(cfg):
        if key not in declared:
            raise ContractError(
                f"{path}: TEST_CONTRACT.TINY_OPTS does not set {key}, which the augmentation "
                f"recipe INPUT.AUGMENTATIONS_NAME={cfg.INPUT.AUGMENTATIONS_NAME!r} sizes its "
                f"images with (the quick checks would run at {_get_key(cfg, key)[0]})"
            )
    key = cfg.TEST_CONTRACT.NUM_CLASSES_KEY
    if not key:
        raise ContractError(
            f"{path}: TEST_CONTRACT.NUM_CLASSES_KEY is not set (the key holding the number of "
            "classes, e.g. MODEL.ROI_HEADS.NUM_CLASSES)"
        )
    value, found = _get_key(cfg, key)
    if not found:
        raise ContractError(f"{path}: TEST_CONTRACT.NUM_CLASSES_KEY names {key}, no config key")
    dataset = cfg.DATASETS.TRAIN[0]
    meta = MetadataCatalog.get(dataset)
    task = SEMANTIC if meta.get("evaluator_type") == "sem_seg" else INSTANCE
    classes = meta.get("stuff_classes" if task == SEMANTIC else "thing_classes")
    if classes is None:  # metadata filled in by loading the dataset (COCO JSON)
        DatasetCatalog.get(dataset)
        classes = meta.get("stuff_classes" if task == SEMANTIC else "thing_classes")
    if classes is not None and int(value) != len(classes):
        raise ContractError(
            f"{path}: {key} (TEST_CONTRACT.NUM_CLASSES_KEY) is {value}, but its training dataset "
            f"{dataset!r} has {len(classes)} classes"
        )
    return ToyContract(path, opts, key, int(value), task)


def tiny_cfg(path: str, output_dir, *opts):
    """The frozen config of toy config ``path`` made CPU-sized by its ``TINY_OPTS``, with random
    initialisation (``MODEL.WEIGHTS ""``), then ``opts``.

    Raises:
        ContractError: see :func:`load_contract`.
    """
    contract = load_contract(path)
    overrides = list(contract.tiny_opts) + ["MODEL.WEIGHTS", "", "OUTPUT_DIR", str(output_dir)]
    return load_config(path, overrides + list(opts))


def build_tiny_model(cfg, seed=0):
    """``cfg``'s model with a seeded random initialisation."""
    torch.manual_seed(seed)
    return build_model(cfg)


def is_semantic(cfg) -> bool:
    """Whether ``cfg`` trains semantic segmentation (its training dataset is evaluated as such)."""
    return MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("evaluator_type") == "sem_seg"


def num_classes(cfg) -> int:
    """The class count of ``cfg`` (its ``TEST_CONTRACT.NUM_CLASSES_KEY``)."""
    return int(_get_key(cfg, cfg.TEST_CONTRACT.NUM_CLASSES_KEY)[0])


def input_size_bound(cfg) -> int:
    """The largest number among ``cfg``'s input-size keys: no mapped image is longer."""
    numbers = []
    for key in recipe_input_size_keys(cfg):
        value = _get_key(cfg, key)[0]
        numbers += [float(v) for v in re.findall(r"\d+(?:\.\d+)?", str(value))]
    return int(max(numbers)) if numbers else 0


def training_samples(cfg, count=2):
    """``count`` mapped training samples of ``cfg``'s training dataset that hold ground truth."""
    mapper = build_dataset_mapper(cfg, is_train=True)
    out = []
    for d in DatasetCatalog.get(cfg.DATASETS.TRAIN[0]):
        if not is_semantic(cfg) and not d.get("annotations"):
            continue
        mapped = mapper(copy.deepcopy(d))
        if mapped is None or (not is_semantic(cfg) and len(mapped["instances"]) == 0):
            continue
        out.append(mapped)
        if len(out) == count:
            return out
    raise AssertionError(f"fewer than {count} usable samples in {cfg.DATASETS.TRAIN[0]}")


def empty_ground_truth(cfg, sample):
    """``sample`` without its ground truth: no instance, or a label map of one class only (the
    first stuff class: a semantic image always has some labelled pixel)."""
    empty = dict(sample)
    if is_semantic(cfg):
        classes = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).stuff_classes
        empty["sem_seg"] = torch.full_like(sample["sem_seg"], len(classes) - 1)
    else:
        empty["instances"] = sample["instances"][:0]
    return empty


def assert_finite_losses(losses):
    assert losses and all(k.startswith("loss_") for k in losses), sorted(losses)
    for name, value in losses.items():
        assert value.dim() == 0, f"{name} is not a scalar: {tuple(value.shape)}"
        assert torch.isfinite(value).all(), f"{name} = {value}"


def check_training_pass(cfg, model, batch):
    """A training step on ``batch``: a flat dict of finite scalar ``loss_*``, whose sum
    back-propagates finite gradients into the model (some of them non-zero)."""
    model.train()
    model.zero_grad(set_to_none=True)
    with EventStorage():
        losses = model(batch)
    assert_finite_losses(losses)
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads), "non-finite gradients"
    assert any(bool(g.abs().sum() > 0) for g in grads), "every gradient is zero"
    return losses


def assert_output_size(output, height, width, cfg):
    """An inference output at the requested ``height`` x ``width``: instances with finite boxes
    (``pred_boxes``), scores in [0, 1], classes in range and masks of that size; or a finite
    ``(classes, height, width)`` ``sem_seg``."""
    if is_semantic(cfg):
        assert output["sem_seg"].shape == (num_classes(cfg), height, width)
        assert torch.isfinite(output["sem_seg"]).all()
        return
    instances = output["instances"]
    n = len(instances)
    assert tuple(instances.image_size) == (height, width)
    assert instances.pred_masks.shape == (n, height, width)
    box = instances.pred_boxes.tensor
    assert box.shape == (n, 4) and torch.isfinite(box).all()
    scores = instances.scores
    assert torch.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    classes = instances.pred_classes
    assert ((classes >= 0) & (classes < num_classes(cfg))).all()


def _test_inputs(cfg, count=2):
    """Mapped test samples of the test dataset, each asked for at another size than its own
    (taller and narrower), as Detectron2's ``height`` / ``width`` fields allow."""
    mapper = build_dataset_mapper(cfg, is_train=False)
    dicts = DatasetCatalog.get(cfg.DATASETS.TEST[0])[:count]
    inputs = []
    for d in dicts:
        x = mapper(copy.deepcopy(d))
        x["height"], x["width"] = int(d["height"] * 1.5) + 1, int(d["width"] * 0.75) + 1
        inputs.append(x)
    return inputs


def check_inference_at_requested_size(cfg, model):
    """Inference in one batch gives every output at its input's requested size."""
    inputs = _test_inputs(cfg)
    model.eval()
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == len(inputs)
    for x, output in zip(inputs, outputs):
        assert_output_size(output, x["height"], x["width"], cfg)
    return inputs, outputs


def _outputs_equal(a, b):
    if "sem_seg" in a:
        return torch.equal(a["sem_seg"], b["sem_seg"])
    x, y = a["instances"], b["instances"]
    fields = ("pred_boxes", "scores", "pred_classes", "pred_masks")
    return len(x) == len(y) and all(
        torch.equal(getattr(x.get(f), "tensor", x.get(f)), getattr(y.get(f), "tensor", y.get(f)))
        for f in fields
    )


def check_checkpoint_round_trip(cfg, model, output_dir):
    """Saved by the project's checkpointer and loaded into a model initialised differently, the
    weights and buffers are equal and so are the inference outputs."""
    ProjectCheckpointer(model, str(output_dir)).save("round_trip")
    other = build_tiny_model(cfg, seed=1)
    path = os.path.join(str(output_dir), "round_trip.pth")
    ProjectCheckpointer(other, str(output_dir)).load(path)
    saved, loaded = model.state_dict(), other.state_dict()
    assert set(saved) == set(loaded)
    for key in saved:
        assert torch.equal(saved[key], loaded[key]), key
    inputs = _test_inputs(cfg)
    model.eval()
    other.eval()
    with torch.no_grad():
        first, second = model(inputs), other(inputs)
    assert all(_outputs_equal(a, b) for a, b in zip(first, second))


def contract_names():
    """The toy configs of every registered method (what the contract runs on)."""
    return list(toy_config_names())


def random_images(count, height, width, seed=0):
    rng = np.random.RandomState(seed)
    return [rng.randint(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(count)]
