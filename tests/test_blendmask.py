"""BlendMask (blendmask/) against independent computations written here: the blender's merge
and loss against per-instance loops, the basis module's semantic loss on the targets derived from
the instance masks, the state dict against the published checkpoints' (every key and shape,
nothing extra), and the bad inputs of the issue (no instances, boxes smaller than a stride,
nothing above the threshold)."""

import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage
from torch.nn import functional as F

from blendmask import Blender, ProtoNet, add_blendmask_config, merge_bases
from projects.config import get_cfg
from projects.modeling.fcos import FCOSPositives
from tests.helpers.contract import build_tiny_model, tiny_cfg, toy_config_path, training_samples

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "blendmask")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_merge_equals_a_per_instance_loop():
    torch.manual_seed(0)
    rois = torch.randn(5, 4, 12, 12)
    attns = torch.randn(5, 4 * 3 * 3)
    merged = merge_bases(rois, attns, 3)
    for p in range(5):
        a = attns[p].view(1, 4, 3, 3)
        a = F.interpolate(a, size=(12, 12), mode="bilinear", align_corners=False)[0]
        weights = torch.exp(a) / torch.exp(a).sum(dim=0, keepdim=True)
        expected = sum(rois[p, k] * weights[k] for k in range(4))
        assert torch.allclose(merged[p].view(12, 12), expected, atol=1e-5)


def _gt(boxes, classes, masks, size=(64, 64)):
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    inst.gt_masks = BitMasks(torch.as_tensor(masks, dtype=torch.bool).reshape(-1, *size))
    return inst


def test_blender_loss_equals_a_per_positive_loop():
    torch.manual_seed(0)
    blender = Blender(resolution=8, attn_size=2, num_bases=3, pooler_scales=(0.25,))
    bases = [torch.randn(2, 3, 16, 16)]
    masks_a = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks_a[0, 8:30, 10:40] = True
    masks_a[1, 30:60, 30:50] = True
    masks_b = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks_b[0, 0:20, 0:20] = True
    gts = [
        _gt([[10, 8, 40, 30], [30, 30, 50, 60]], [0, 1], masks_a),
        _gt([[0, 0, 20, 20]], [2], masks_b),
    ]
    gt_inds = torch.tensor([0, 0, 1, 2, 2, 1])
    ctr = torch.rand(6)
    attns = torch.randn(6, 3 * 2 * 2)
    pos = FCOSPositives(
        gt_inds=gt_inds,
        im_inds=torch.tensor([0, 0, 0, 1, 1, 0]),
        labels=torch.zeros(6).long(),
        fpn_levels=torch.zeros(6).long(),
        locations=torch.zeros(6, 2),
        reg_targets=torch.ones(6, 4),
        ctrness_targets=ctr,
        loss_denorm=float(ctr.sum()),
        top_feats=attns,
    )
    loss = blender.losses(bases, pos, gts)["loss_mask"]
    flat_boxes = [(0, b) for b in gts[0].gt_boxes.tensor] + [(1, b) for b in gts[1].gt_boxes.tensor]
    flat_masks = [gts[0].gt_masks[i] for i in range(2)] + [gts[1].gt_masks[0]]
    total = 0.0
    for p in range(6):
        image, box = flat_boxes[gt_inds[p]]
        roi = blender.pooler([bases[0][image : image + 1]], [Boxes(box[None])])
        logits = merge_bases(roi, attns[p : p + 1], 2).view(8, 8)
        target = flat_masks[gt_inds[p]].crop_and_resize(box[None], 8)[0].float()
        total += F.binary_cross_entropy_with_logits(logits, target) * ctr[p]
    assert float(loss) == pytest.approx(float(total / ctr.sum()), rel=1e-5)


def test_blender_without_positives_gives_a_connected_zero():
    blender = Blender(resolution=8, attn_size=2, num_bases=3)
    bases = [torch.randn(1, 3, 16, 16, requires_grad=True)]
    attns = torch.randn(0, 12, requires_grad=True)
    empty = torch.zeros(0, dtype=torch.long)
    pos = FCOSPositives(
        empty,
        empty,
        empty,
        empty,
        torch.zeros(0, 2),
        torch.zeros(0, 4),
        torch.zeros(0),
        1e-6,
        attns,
    )
    loss = blender.losses(bases, pos, [_gt([], [], torch.zeros(0, 64, 64))])["loss_mask"]
    loss.backward()
    assert float(loss) == 0.0 and bases[0].grad is not None


def test_semantic_targets_come_from_the_masks_and_the_loss_ignores_crowd_and_padding(tmp_path):
    cfg = tiny_cfg(toy_config_path("blendmask.yaml"), tmp_path)
    (sample,) = training_samples(cfg, 1)
    sem, inst = sample["sem_seg"], sample["instances"]
    assert sem.shape == sample["image"].shape[1:]
    # background 0, each instance's pixels its class + 1 (the smaller instance on top)
    masks = inst.gt_masks.tensor
    order = masks.flatten(1).sum(1).argsort(descending=True)
    expected = torch.zeros_like(sem)
    for i in order.tolist():
        expected[masks[i]] = inst.gt_classes[i] + 1
    valid = sem != 255
    assert torch.equal(sem[valid], expected[valid]) and int(valid.sum()) > 0.9 * sem.numel()

    net = ProtoNet(
        in_features=["p3"],
        in_channels={"p3": 8},
        convs_dim=8,
        num_convs=1,
        norm="",
        loss_on=True,
        num_classes=4,
        common_stride=8,
    ).train()
    features = {"p3": torch.randn(2, 8, 4, 4)}
    targets = torch.randint(0, 5, (2, 32, 32))
    targets[1] = 255  # the second image is all crowd / padding
    _, losses = net(features, targets)
    logits = net.seg_head(features["p3"])
    kept = targets[:, ::8, ::8]
    expected = F.cross_entropy(logits[:1], kept[:1]) * 0.3
    assert float(losses["loss_basis_sem"]) == pytest.approx(float(expected), rel=1e-5)
    _, losses = net(features, torch.full((2, 32, 32), 255))
    assert float(losses["loss_basis_sem"]) == 0.0
    with pytest.raises(ValueError, match="INSTANCE_SEM_SEG.ENABLED"):
        net(features, None)


def _fixture(name):
    entries = {}
    with open(os.path.join(FIXTURES, f"adelaidet_blendmask_{name}.tsv")) as f:
        for line in f:
            if line.startswith("#"):
                continue
            key, shape, _dtype = line.rstrip("\n").split("\t")
            entries[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return entries


@pytest.mark.parametrize("name", ["R_50_1x", "R_101_3x", "RT_R_50_4x_syncbn_shtw"])
def test_state_dict_equals_adelaidet_s(name):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "BlendMask", f"{name}.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == _fixture(name)


def test_config_adder_adds_only_missing_keys():
    cfg = get_cfg()
    cfg.MODEL.BLENDMASK.ATTN_SIZE = 7
    add_blendmask_config(cfg)
    assert cfg.MODEL.BLENDMASK.ATTN_SIZE == 7 and cfg.MODEL.BASIS_MODULE.NUM_BASES == 4


@pytest.mark.parametrize(
    "opts, key",
    [
        (["MODEL.BASIS_MODULE.NUM_CLASSES", "5"], "MODEL.BASIS_MODULE.NUM_CLASSES"),
        (["INPUT.INSTANCE_SEM_SEG.BACKGROUND", "last"], "INPUT.INSTANCE_SEM_SEG.BACKGROUND"),
        (["MODEL.FCOS.BOX_QUALITY", "iou"], "MODEL.FCOS.BOX_QUALITY"),
        (["MODEL.FCOS.FPN_STRIDES", "[8, 16, 32, 64, 64]"], "MODEL.FCOS.FPN_STRIDES"),
    ],
)
def test_inconsistent_config_is_an_error_naming_the_key(tmp_path, opts, key):
    cfg = tiny_cfg(toy_config_path("blendmask.yaml"), tmp_path, *opts)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_model(cfg)


def _tiny(tmp_path, *opts):
    cfg = tiny_cfg(toy_config_path("blendmask.yaml"), tmp_path, *opts)
    return cfg, build_tiny_model(cfg)


def test_boxes_smaller_than_a_stride_train_with_finite_losses(tmp_path):
    cfg, model = _tiny(tmp_path)
    batch = training_samples(cfg, 2)
    for sample in batch:
        h, w = sample["image"].shape[1:]
        masks = torch.zeros(2, h, w, dtype=torch.bool)
        masks[0, 5:8, 5:7] = True
        masks[1, 20:21, 30:33] = True
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.tensor([[5.0, 5.0, 7.0, 8.0], [30.0, 20.0, 33.0, 21.0]]))
        inst.gt_classes = torch.tensor([0, 1])
        inst.gt_masks = BitMasks(masks)
        sample["instances"] = inst
    model.train()
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {
        "loss_fcos_cls",
        "loss_fcos_loc",
        "loss_fcos_ctr",
        "loss_mask",
        "loss_basis_sem",
    }
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_nothing_above_the_threshold_gives_empty_outputs(tmp_path):
    cfg, model = _tiny(tmp_path, "MODEL.FCOS.INFERENCE_TH_TEST", "1.0")
    (sample,) = training_samples(cfg, 1)
    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": sample["image"], "height": 50, "width": 70}])
    inst = out["instances"]
    assert len(inst) == 0 and inst.pred_masks.shape == (0, 50, 70)
    assert inst.pred_boxes.tensor.shape == (0, 4) and inst.scores.shape == (0,)
