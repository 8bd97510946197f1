"""ProjectCheckpointer: formats, safe loading with opt-in, clear errors, atomic saving."""

import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

import projects.engine.checkpoint as ckpt_module
from projects.engine.checkpoint import CheckpointError, ProjectCheckpointer, UnsafeCheckpointError


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def _fresh():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"model": sd},
        lambda sd: {"state_dict": sd, "meta": {"epoch": 3}},
        lambda sd: {"module." + k: v for k, v in sd.items()},
    ],
    ids=["bare", "model", "state_dict", "ddp_prefix"],
)
def test_loads_state_dict_layouts(tmp_path, wrap):
    src = _model()
    path = str(tmp_path / "w.pth")
    torch.save(wrap(src.state_dict()), path)
    dst = _fresh()
    ProjectCheckpointer(dst).load(path)
    _assert_same_weights(src, dst)


def test_loads_detectron2_model_zoo_pkl(tmp_path):
    src = _model()
    path = str(tmp_path / "w.pkl")
    arrays = {k: v.numpy() for k, v in src.state_dict().items()}
    with open(path, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "test"}, f)
    dst = _fresh()
    ProjectCheckpointer(dst).load(path)
    _assert_same_weights(src, dst)


def test_logs_and_keeps_incompatible_keys(tmp_path):
    sd = _model().state_dict()
    sd.pop("0.weight")
    sd["extra.weight"] = torch.zeros(1)
    path = str(tmp_path / "w.pth")
    torch.save(sd, path)
    checkpointer = ProjectCheckpointer(_fresh())
    checkpointer.load(path)
    assert "0.weight" in checkpointer.last_incompatible.missing_keys
    assert "extra.weight" in checkpointer.last_incompatible.unexpected_keys


def test_missing_path_error(tmp_path):
    path = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ProjectCheckpointer(_fresh()).load(path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_error_names_file(tmp_path, damage):
    path = str(tmp_path / "bad.pth")
    torch.save({"model": _model().state_dict()}, path)
    data = open(path, "rb").read()
    data = {"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint", "empty": b""}[
        damage
    ]
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(CheckpointError, match="bad.pth.*corrupt or truncated"):
        ProjectCheckpointer(_fresh()).load(path)


def test_unsafe_file_needs_opt_in(tmp_path):
    src = _model()
    path = str(tmp_path / "foreign.pth")
    # numpy scalars: what the safe loader refuses in real foreign checkpoints
    torch.save({"model": src.state_dict(), "best_score": np.float64(0.5)}, path)
    with pytest.raises(UnsafeCheckpointError, match="foreign.pth.*MODEL.WEIGHTS_TRUSTED"):
        ProjectCheckpointer(_fresh()).load(path)
    dst = _fresh()
    ProjectCheckpointer(dst, trusted=True).load(path)
    _assert_same_weights(src, dst)


def test_non_weights_file_error(tmp_path):
    path = str(tmp_path / "cfg.pth")
    torch.save({"config": "x", "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="No weights found in .*cfg.pth"):
        ProjectCheckpointer(_fresh()).load(path)


def test_save_roundtrip_with_checkpointables(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 3, 8, 8)).sum().backward()
    opt.step()
    ProjectCheckpointer(model, str(tmp_path), optimizer=opt).save("model_0000001", iteration=1)
    assert open(tmp_path / "last_checkpoint").read() == "model_0000001.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]  # no temp
    model2 = _fresh()
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    rest = ProjectCheckpointer(model2, str(tmp_path), optimizer=opt2).resume_or_load(
        "", resume=True
    )
    _assert_same_weights(model, model2)
    assert rest["iteration"] == 1
    assert torch.equal(
        opt.state_dict()["state"][0]["momentum_buffer"],
        opt2.state_dict()["state"][0]["momentum_buffer"],
    )


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = _model()
    checkpointer = ProjectCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000009")
    good = {k: v.clone() for k, v in model.state_dict().items()}
    real_save = torch.save

    def save_then_crash(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.seek(0)
        f.truncate(100)  # a partial file on disk ...
        raise OSError("disk full")  # ... and the process dies mid-save

    with torch.no_grad():
        model[0].weight.add_(1.0)
    monkeypatch.setattr(ckpt_module.torch, "save", save_then_crash)
    for name in ("model_0000009", "model_0000019"):  # overwrite in place, and a new file
        with pytest.raises(OSError, match="disk full"):
            checkpointer.save(name)
    monkeypatch.setattr(ckpt_module.torch, "save", real_save)
    assert open(tmp_path / "last_checkpoint").read() == "model_0000009.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]
    dst = _fresh()
    ProjectCheckpointer(dst, str(tmp_path)).resume_or_load("", resume=True)
    assert all(torch.equal(dst.state_dict()[k], good[k]) for k in good)
