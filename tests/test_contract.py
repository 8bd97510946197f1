"""The test contract, run on every toy config of every registered method (a method joins by
listing a toy config in its :class:`projects.methods.Method`): the declaration is complete, the
CPU-sized model builds, trains (also on an image without ground truth), infers at the requested
size in a batch, survives a checkpoint round trip, trains deterministically and does not grow in
memory under load. The hostile-input suite (``tests/test_hostile_*.py``) and the learning checks
(``tests/test_learning.py``) run on the same list.
"""

import os

import pytest
import torch
import yaml
from detectron2.data import DatasetCatalog
from detectron2.utils.env import seed_all_rng

from projects.data.mapper_registry import build_dataset_mapper
from projects.demo import Predictor, draw, metadata_for
from projects.engine.trainer import Trainer
from projects.methods import config_root, method_of_toy_config
from tests.helpers.contract import (
    TINY_INPUT_BOUND,
    ContractError,
    build_tiny_model,
    check_checkpoint_round_trip,
    check_inference_at_requested_size,
    check_training_pass,
    contract_names,
    empty_ground_truth,
    input_size_bound,
    load_contract,
    random_images,
    tiny_cfg,
    toy_config_files,
    toy_config_path,
    training_samples,
)

TOY_CONFIGS = contract_names()


def test_every_toy_config_is_declared_by_one_method_and_has_bars():
    """The files of configs/toy/ are exactly the methods' toy configs, each with its bars."""
    declared = [name for name in TOY_CONFIGS if not os.path.isabs(name)]
    assert sorted(declared) == toy_config_files()
    with open(os.path.join(config_root(), "toy", "bars.yaml")) as f:
        bars = yaml.safe_load(f)
    assert sorted(bars) == sorted(declared)
    for name in declared:
        assert method_of_toy_config(name).name


@pytest.mark.parametrize("config_name", TOY_CONFIGS)
def test_declaration_is_complete_and_makes_a_tiny_model(config_name, tmp_path):
    """The declaration loads, and its tiny model maps images no longer than the contract's bound
    (the declared input-size keys are really the ones the recipe reads)."""
    contract = load_contract(toy_config_path(config_name))
    cfg = tiny_cfg(toy_config_path(config_name), tmp_path)
    assert 0 < input_size_bound(cfg) <= TINY_INPUT_BOUND
    assert contract.num_classes > 0
    sample = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[0]
    for is_train in (True, False):
        x = build_dataset_mapper(cfg, is_train=is_train)(dict(sample))
        assert max(x["image"].shape[1:]) <= input_size_bound(cfg), (is_train, x["image"].shape)


@pytest.mark.parametrize("config_name", TOY_CONFIGS)
def test_trains_infers_and_round_trips(config_name, tmp_path):
    cfg = tiny_cfg(toy_config_path(config_name), tmp_path)
    model = build_tiny_model(cfg)
    batch = training_samples(cfg, 2)
    check_training_pass(cfg, model, batch)
    check_training_pass(cfg, model, [empty_ground_truth(cfg, batch[0]), batch[1]])
    check_training_pass(cfg, model, [empty_ground_truth(cfg, batch[0])])
    check_inference_at_requested_size(cfg, model)
    check_checkpoint_round_trip(cfg, model, tmp_path / "checkpoint")


# ------------------------------------------------------------------------------ bad declarations
def _write_variant(tmp_path, config_name, edit):
    """A copy of toy config ``config_name`` next to it (so ``_BASE_`` resolves) with ``edit``
    applied to its TEST_CONTRACT node; removed by the caller's ``tmp_path`` fixture teardown."""
    source = toy_config_path(config_name)
    with open(source) as f:
        data = yaml.safe_load(f)
    edit(data.setdefault("TEST_CONTRACT", {}))
    if "_BASE_" in data:
        data["_BASE_"] = os.path.join(os.path.dirname(source), data["_BASE_"])
    path = tmp_path / f"variant_{config_name}"
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return str(path)


def _drop_key(key):
    def edit(node):
        opts = node["TINY_OPTS"]
        i = opts.index(key)
        node["TINY_OPTS"] = opts[:i] + opts[i + 2 :]

    return edit


def test_missing_input_size_option_names_the_file_and_the_key(tmp_path):
    path = _write_variant(tmp_path, "mask_rcnn.yaml", _drop_key("INPUT.MIN_SIZE_TEST"))
    with pytest.raises(ContractError, match="INPUT.MIN_SIZE_TEST") as e:
        load_contract(path)
    assert path in str(e.value) and "TEST_CONTRACT.TINY_OPTS" in str(e.value)


def test_missing_tiny_options_or_class_key_name_the_file(tmp_path):
    no_opts = _write_variant(tmp_path, "mask_rcnn.yaml", lambda n: n.update(TINY_OPTS=[]))
    with pytest.raises(ContractError, match="TEST_CONTRACT.TINY_OPTS") as e:
        load_contract(no_opts)
    assert no_opts in str(e.value)
    no_key = _write_variant(tmp_path, "mask_rcnn.yaml", lambda n: n.update(NUM_CLASSES_KEY=""))
    with pytest.raises(ContractError, match="TEST_CONTRACT.NUM_CLASSES_KEY") as e:
        load_contract(no_key)
    assert no_key in str(e.value)


def test_wrong_class_count_names_the_key_and_the_dataset(tmp_path):
    def edit(node):
        node["NUM_CLASSES_KEY"] = "MODEL.RETINANET.NUM_CLASSES"  # Detectron2's default: 80

    path = _write_variant(tmp_path, "mask_rcnn.yaml", edit)
    with pytest.raises(ContractError, match="MODEL.RETINANET.NUM_CLASSES.*is 80") as e:
        load_contract(path)
    assert path in str(e.value)


# ------------------------------------------------------------------- determinism and memory
DETERMINISM_ITERATIONS = 10


def _loss_history(config_file, output_dir):
    cfg = tiny_cfg(
        config_file,
        output_dir,
        "SOLVER.MAX_ITER",
        str(DETERMINISM_ITERATIONS),
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.CHECKPOINT_PERIOD",
        "100000",
        "TEST.EVAL_PERIOD",
        "0",
        "DATASETS.TEST",
        "()",
    )
    seed_all_rng(cfg.SEED)  # as default_setup does
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    history = trainer.storage.histories()
    return {
        k: [v for v, _ in h.values()] for k, h in history.items() if k.startswith(("loss", "total"))
    }


@pytest.mark.integration
@pytest.mark.parametrize("config_name", TOY_CONFIGS)
def test_two_runs_give_bit_identical_losses(config_name, tmp_path):
    """Determinism on one CPU: two runs of the tiny model with the config's seed, data pipeline
    (its loader workers) and model give bit-identical losses (two runs on the same machine; no
    comparison across machines)."""
    config_file = toy_config_path(config_name)
    first = _loss_history(config_file, tmp_path / "first")
    second = _loss_history(config_file, tmp_path / "second")
    assert len(first["total_loss"]) == DETERMINISM_ITERATIONS
    assert set(first) == set(second)
    for key in first:
        assert first[key] == second[key], f"{config_name}: {key} differs between two runs"


MEMORY_IMAGES, MEMORY_WARMUP, MEMORY_BOUND_MB = 150, 50, 25.0


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.mark.integration
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
@pytest.mark.parametrize("config_name", TOY_CONFIGS)
def test_inference_over_150_images_does_not_grow_memory(config_name, tmp_path):
    """Memory under load: inference and drawing over 150 small images through the demo's
    predictor do not grow the resident memory after a 50-image warm-up by more than 25 MB (a
    leaked drawing per image, or the model's outputs, would)."""
    cfg = tiny_cfg(toy_config_path(config_name), tmp_path).clone()
    weights = tmp_path / "random.pth"
    torch.save({"model": build_tiny_model(cfg).state_dict()}, weights)
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(weights)
    cfg.freeze()
    predictor = Predictor(cfg, confidence_threshold=0.0)
    metadata = metadata_for(cfg)
    images = random_images(8, 72, 96)
    drawn = 0
    for i in range(MEMORY_IMAGES):
        image = images[i % len(images)]
        drawing = draw(image[:, :, ::-1], predictor(image), metadata)
        drawn += int(drawing.shape[:2] == image.shape[:2])
        if i + 1 == MEMORY_WARMUP:
            after_warmup = _rss_mb()
    growth = _rss_mb() - after_warmup
    assert drawn == MEMORY_IMAGES
    assert growth < MEMORY_BOUND_MB, f"{config_name}: RSS grew {growth:.1f} MB"
