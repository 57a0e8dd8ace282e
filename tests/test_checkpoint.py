"""Checkpoints (weclip/engine/checkpoint.py) and RNG-state capture (weclip/utils/seed.py)."""

import os
import random

import numpy as np
import pytest
import torch
from mmengine.config import Config

import weclip.engine.checkpoint as checkpoint_module
from weclip.engine.checkpoint import (
    check_resume_compatible,
    checkpoint_name,
    find_latest_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from weclip.engine.optim import build_optimizer, build_scheduler
from weclip.errors import CheckpointError
from weclip.models.decoder import WeCLIPDecoder
from weclip.utils.seed import get_rng_state, seed_everything, set_rng_state


class _Model(torch.nn.Module):
    """A WeCLIP-shaped holder: a frozen 'backbone' and a trainable 'decoder' (the model interface's
    trainable_module)."""

    def __init__(self, num_classes=5, embed_dim=8):
        super().__init__()
        self.backbone = torch.nn.Linear(3, 3).requires_grad_(False)
        self.decoder = WeCLIPDecoder(
            in_dim=8, num_inputs=2, embed_dim=embed_dim, num_heads=2, num_layers=1,
            num_classes=num_classes,
        )  # fmt: skip

    def trainable_module(self):
        return self.decoder


def _config(**train):
    return Config(
        dict(
            model=dict(decoder=dict(embed_dim=8), backbone=dict(weights="a.pt")),
            data=dict(root="data/x", split_dir="data/x", num_classes=5, crop_size=32),
            loss=dict(seg_weight=1.0, aff_weight=0.1),
            optim=dict(
                type="AdamW",
                lr=2e-4,
                head_lr_mult=10.0,
                betas=(0.9, 0.999),
                eps=1e-8,
                weight_decay=0.01,
            ),
            sched=dict(warmup_iters=2, warmup_ratio=1e-6, power=1.0),
            train=dict(max_iters=10, batch_size=4, seed=1, log_interval=5, **train),
        )
    )


def _save(work_dir, model, iteration=3, cfg=None, world=1):
    cfg = cfg or _config()
    optimizer = build_optimizer(model.decoder, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.sched, cfg.train.max_iters)
    return save_checkpoint(
        str(work_dir),
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        iteration=iteration,
        config=cfg,
        rng_states=[get_rng_state()] * world,
        data_positions=[iteration * 4 // world] * world,
        num_classes=5,
    )


def test_rng_state_roundtrip():
    seed_everything(3)
    state = get_rng_state()
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)


def test_save_layout_and_contents(tmp_path):
    model = _Model()
    path = _save(tmp_path, model, iteration=2000)
    assert path == str(tmp_path / "checkpoints" / "iter_2000.pth")  # no zero padding
    assert checkpoint_name(30000) == "iter_30000.pth"
    assert (tmp_path / "checkpoints" / "latest").read_text() == "iter_2000.pth\n"
    assert find_latest_checkpoint(str(tmp_path)) == path
    ckpt = load_checkpoint(path)
    assert ckpt["iteration"] == 2000 and ckpt["world_size"] == 1
    assert ckpt["data_positions"] == [8000]
    # decoder keys only, relative to the decoder; no CLIP ("backbone.") key
    assert set(ckpt["model"]) == set(model.decoder.state_dict())
    assert ckpt["config"]["optim"]["betas"] == [0.9, 0.999]  # plain containers
    assert set(ckpt["rng_states"][0]) >= {"python", "numpy", "torch"}
    assert ckpt["meta"]["num_classes"] == 5
    # no temporary files left next to it
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["iter_2000.pth", "latest"]


def test_failed_save_keeps_previous_latest(tmp_path, monkeypatch):
    model = _Model()
    _save(tmp_path, model, iteration=2)

    def broken_save(obj, f):
        with open(f, "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, model, iteration=4)
    assert (tmp_path / "checkpoints" / "latest").read_text() == "iter_2.pth\n"
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["iter_2.pth", "latest"]


def test_latest_pointer_errors(tmp_path):
    assert find_latest_checkpoint(str(tmp_path)) is None  # nothing yet: fresh start
    os.makedirs(tmp_path / "checkpoints")
    (tmp_path / "checkpoints" / "latest").write_text("iter_7.pth\n")
    with pytest.raises(FileNotFoundError, match=r"latest names iter_7.pth"):
        find_latest_checkpoint(str(tmp_path))
    # a pointer holding garbage (not text, or not a file name) names itself and says what to do
    for garbage in (b"\xff\xfe\x00garbage", b"../../etc/passwd", b""):
        (tmp_path / "checkpoints" / "latest").write_bytes(garbage)
        with pytest.raises(CheckpointError, match=r"checkpoints/latest.*delete it"):
            find_latest_checkpoint(str(tmp_path))
    torch.save({"model": {}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="missing .*optimizer"):
        load_checkpoint(str(tmp_path / "other.pth"))


def test_resume_compatibility_names_differing_keys(tmp_path):
    model = _Model()
    ckpt = load_checkpoint(_save(tmp_path, model))
    check_resume_compatible(ckpt, model, _config(), 1, "c.pth")  # same settings: fine
    # locations may move; intervals may change
    moved = _config(eval_interval=100)
    moved.data.root, moved.data.split_dir, moved.model.backbone.weights = "/new", "/new", "/w/b.pt"
    check_resume_compatible(ckpt, model, moved, 1, "c.pth")
    changed = _config()
    changed.optim.lr, changed.train.max_iters, changed.data.crop_size = 1e-3, 20, 64
    with pytest.raises(ValueError) as err:
        check_resume_compatible(ckpt, model, changed, 2, "c.pth")
    message = str(err.value)
    for key in (
        "optim.lr",
        "train.max_iters",
        "data.crop_size",
        "world size: checkpoint 1 vs now 2",
    ):
        assert key in message
    assert "optim.weight_decay" not in message


def test_architecture_mismatch_is_reported(tmp_path):
    ckpt = load_checkpoint(_save(tmp_path, _Model(num_classes=5)))
    other = _Model(num_classes=21)
    with pytest.raises(
        ValueError, match=r"classifier.weight: checkpoint \(5, 8, 1, 1\) vs model \(21, 8, 1, 1\)"
    ):
        check_resume_compatible(ckpt, other, _config(), 1, "c.pth")
    with pytest.raises(ValueError, match=r"class count differs \(5 in the checkpoint, 21 in"):
        load_weights(other, str(tmp_path / "checkpoints" / "iter_3.pth"))
    # another width with the same class count: the class count is not blamed
    wider = _Model(num_classes=5, embed_dim=16)
    with pytest.raises(CheckpointError) as err:
        load_weights(wider, str(tmp_path / "checkpoints" / "iter_3.pth"))
    assert "class count" not in str(err.value) and "another architecture" in str(err.value)


def test_load_weights_for_inference(tmp_path):
    torch.manual_seed(0)
    trained = _Model()
    path = _save(tmp_path, trained, iteration=5)
    torch.manual_seed(1)
    fresh = _Model()
    info = load_weights(fresh, path)
    assert info["iteration"] == 5 and info["config"]["train"]["max_iters"] == 10
    for key, value in trained.decoder.state_dict().items():
        assert torch.equal(value, fresh.decoder.state_dict()[key])
    # a bare decoder state dict is accepted as well
    torch.save(trained.decoder.state_dict(), tmp_path / "bare.pth")
    assert load_weights(_Model(), str(tmp_path / "bare.pth"))["iteration"] is None
    # a whole-model state dict of the authors' layout needs the model's load_official_state
    torch.save(
        {"encoder.visual.proj": torch.zeros(2), **trained.decoder.state_dict()},
        tmp_path / "whole.pth",
    )
    with pytest.raises(CheckpointError, match="authors' code"):
        load_weights(_Model(), str(tmp_path / "whole.pth"))
    # our names with CLIP keys mixed in: refused with a hint
    torch.save({"backbone.x": torch.zeros(2), **trained.decoder.state_dict()}, tmp_path / "mix.pth")
    with pytest.raises(CheckpointError, match="CLIP/whole-model keys"):
        load_weights(_Model(), str(tmp_path / "mix.pth"))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_weights(_Model(), str(tmp_path / "nope.pth"))
    (tmp_path / "trunc.pth").write_bytes(open(path, "rb").read()[:200])
    with pytest.raises(CheckpointError, match="trunc.pth"):
        load_weights(_Model(), str(tmp_path / "trunc.pth"))
