"""Generated hostile annotations (instance configs) and label maps (semantic configs) through the
mapper and the model of every toy config: finite ``loss_*`` in training, outputs of the input's
size in inference, or the documented error / skip.
"""

import os

import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.utils.events import EventStorage
from hypothesis import given
from hypothesis import strategies as st

from projects.data.annotations import BadAnnotationError
from projects.data.augmentation_registry import recipe_may_drop_instances
from projects.data.image_io import ImageSizeError
from projects.data.mapper_registry import build_dataset_mapper
from tests.helpers.contract import (
    assert_finite_losses,
    assert_output_size,
    build_tiny_model,
    is_semantic,
    num_classes,
)
from tests.helpers.hostile import (
    DOCUMENTED_ERROR,
    OUTCOMES,
    SKIPPED,
    TOY_CONFIGS,
    VALID,
    H,
    W,
    annotation_lists,
    check_mapped,
    derandomized,
    label_image,
    label_maps,
    print_outcomes,
    tiny_cfg,
)

# ANNOTATION_STATS are counted per test (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("fresh_annotation_stats")


# ---------------------------------------------------------------------------------------------
# 1b. The model of every toy config
# ---------------------------------------------------------------------------------------------
class _Models(dict):
    def __repr__(self):  # hypothesis prints the arguments of a failing case
        return f"<tiny models of {sorted(self)}>"


@pytest.fixture(scope="module")
def hostile_models(tmp_path_factory):
    """config name -> (cfg of each mode, model), built once."""
    out = _Models()
    for name in TOY_CONFIGS:
        root = tmp_path_factory.mktemp(os.path.basename(name).replace(".yaml", ""))
        cfgs = {
            mode: tiny_cfg(name, root, "DATALOADER.BAD_ANNOTATIONS", mode)
            for mode in ("filter", "error")
        }
        out[name] = cfgs, build_tiny_model(cfgs["filter"])
    return out


@pytest.mark.parametrize("config_name", TOY_CONFIGS)
@derandomized(max_examples=12)
@given(data=st.data())
def test_model_on_hostile_input(hostile_models, image_file, tmp_path_factory, config_name, data):
    cfgs, model = hostile_models[config_name]
    mode = data.draw(st.sampled_from(["filter", "error"]), label="mode")
    cfg = cfgs[mode]
    dataset_dict = {"file_name": image_file, "height": H, "width": W, "image_id": 1}
    if is_semantic(cfg):
        classes = num_classes(cfg)
        labels, pil_mode, kind = data.draw(label_maps(classes), label="label map")
        label_file = str(tmp_path_factory.mktemp("labels") / "hostile_label.png")
        label_image(labels, pil_mode).save(label_file)
        dataset_dict["sem_seg_file_name"] = label_file
        records = None
    else:
        classes = num_classes(cfg)
        annos, records = data.draw(annotation_lists(classes), label="annotations")
        dataset_dict["annotations"] = annos
    train_mapper = build_dataset_mapper(cfg, is_train=True)

    if records is not None:
        mask_format = cfg.INPUT.MASK_FORMAT
        outcome, out = check_mapped(
            train_mapper,
            dataset_dict,
            records,
            classes,
            mask_format,
            mode,
            image_file,
            may_drop=recipe_may_drop_instances(cfg),
        )
        batch = [out] if outcome == VALID else None
    else:
        batch, outcome = _map_label_map(train_mapper, dataset_dict, labels, kind, mode, cfg)
    if batch is not None:
        model.train()
        with EventStorage():
            assert_finite_losses(model(batch))
        model.eval()
        with torch.no_grad():
            test_input = build_dataset_mapper(cfg, is_train=False)(dataset_dict)
            assert_output_size(model([test_input])[0], H, W, cfg)
    OUTCOMES["model", f"{config_name}/{mode}", outcome] += 1


def _map_label_map(mapper, dataset_dict, labels, kind, mode, cfg):
    """Map a dict with a generated label map; returns (batch or None, outcome)."""
    classes = num_classes(cfg)
    ignore = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).ignore_label
    out_of_range = ((labels >= classes) & (labels != ignore)).any()
    label_name = os.path.basename(dataset_dict["sem_seg_file_name"])
    try:
        out = mapper(dataset_dict)
    except ImageSizeError as e:
        assert kind == "size" and label_name in str(e)
        return None, DOCUMENTED_ERROR
    except BadAnnotationError as e:
        assert mode == "error" and out_of_range, f"unexpected error: {e}"
        assert label_name in str(e) and os.path.basename(dataset_dict["file_name"]) in str(e)
        return None, DOCUMENTED_ERROR
    assert kind != "size" and (mode == "filter" or not out_of_range)
    labelled = (labels < classes).any()
    if out is None:
        assert not labelled, "a label map with labelled pixels was skipped"
        return None, SKIPPED
    sem_seg = out["sem_seg"]
    assert sem_seg.shape == out["image"].shape[1:] and sem_seg.dtype == torch.int64
    assert (((sem_seg >= 0) & (sem_seg < classes)) | (sem_seg == ignore)).all()
    assert (sem_seg != ignore).any()
    return [out], VALID


def test_zz_model_case_counts():
    """Some generated cases reached the model of every toy config."""
    configs = {setting.split("/")[0] for stage, setting, _ in OUTCOMES if stage == "model"}
    if configs != set(TOY_CONFIGS):
        pytest.skip("the generated cases did not all run in this session (run the whole file)")
    print_outcomes("model")
    for config in TOY_CONFIGS:
        valid = sum(OUTCOMES["model", f"{config}/{mode}", VALID] for mode in ("filter", "error"))
        assert valid > 0, f"no generated case reached the model of {config}"
