"""Training engine (weclip/engine/trainer.py), overlays (weclip/utils/visualize.py), tools/train.py.

CPU only, tiny random CLIP, toy data at 32 px written to tmp_path. The in-process tests use a stand-in
model of the model interface (tests/helpers.py: the trainer trains any such model); the subprocess tests
run tools/train.py with the real WeCLIP.
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import REPO, StandInModel, make_toy_root, single_thread, tiny_config, write_config

import weclip.engine.trainer as trainer_module
from weclip.engine.checkpoint import find_latest_checkpoint, load_checkpoint
from weclip.engine.optim import lr_factor
from weclip.engine.trainer import Trainer, per_rank_batch_size, pixel_accuracy
from weclip.errors import ConfigError
from weclip.utils.dist import init_distributed
from weclip.utils.visualize import (
    blend,
    cam_heatmap,
    colorize_labels,
    hstack_panels,
    label_overlay,
    voc_palette,
)

SINGLE = init_distributed("none", "cpu")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return make_toy_root(str(tmp_path_factory.mktemp("toy_engine")))


def _trainer(tmp_path, toy_root, options=None, **train):
    cfg = tiny_config(str(tmp_path), toy_root, options, **train)
    return Trainer(cfg, str(tmp_path / "work"), SINGLE, model_builder=lambda c: StandInModel())


# ---------------------------------------------------------------------------------------------- helpers
def test_per_rank_batch_size():
    assert per_rank_batch_size(4, 1) == 4
    assert per_rank_batch_size(4, 4) == 1  # the paper setting on 4 GPUs: 1 image each
    assert per_rank_batch_size(8, 2) == 4
    with pytest.raises(
        ConfigError, match="TOTAL batch.*divisible by the number of processes \\(3\\)"
    ):
        per_rank_batch_size(4, 3)


def test_pixel_accuracy_hand_worked():
    # 1x2x1x2 logits upsampled to 1x2x2 labels (bilinear, align_corners=False): column 0 stays class 0,
    # column 1 class 1 -> pred [[0, 1], [0, 1]]; labels [[0, 0], [255, 1]]: 3 counted pixels, 2 right -> 2/3
    logits = torch.tensor([[[[5.0, -5.0]], [[-5.0, 5.0]]]])
    labels = torch.tensor([[[0, 0], [255, 1]]])
    assert pixel_accuracy(logits, labels) == pytest.approx(2 / 3)
    assert np.isnan(pixel_accuracy(logits, torch.full((1, 2, 2), 255)))


# ---------------------------------------------------------------------------------------------- steps
def test_first_step_uses_lr_zero_and_passes_iteration(tmp_path, toy_root):
    trainer = _trainer(tmp_path, toy_root)
    batch = next(trainer._train_batches())
    base = 2e-4 * 10  # optim.lr x head_lr_mult: the effective decoder lr (spec §8)
    out = trainer.train_step(batch, iteration=1)
    # optimizer step t = it - 1 = 0 runs with lr(0) = base * 1e-6 (warm-up ratio, App. C.9)
    assert out["lr"] == pytest.approx(base * lr_factor(0, 6, 2, 1e-6, 1.0))
    assert out["lr"] == pytest.approx(2e-9)
    out = trainer.train_step(batch, iteration=2)
    assert out["lr"] == pytest.approx(base * lr_factor(1, 6, 2, 1e-6, 1.0))  # 1 - 0.5 * (1 - 1e-6)
    assert trainer.model_without_ddp.calls == [1, 2]
    assert set(out["log"]) == {"seg_loss"} and out["loss"].requires_grad  # the model's own losses
    # CLIP is frozen: only decoder tensors are optimised
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in trainer.model_without_ddp.decoder.parameters()}
    trainer.close()


def test_loss_decreases_on_a_fixed_batch(tmp_path, toy_root):
    # no warm-up, no dropout noise in the comparison: the decoder must fit fixed pseudo-labels
    trainer = _trainer(
        tmp_path, toy_root, {"sched.warmup_iters": 0, "optim.lr": 1e-3, "train.max_iters": 1000}
    )
    batch = next(trainer._train_batches())
    losses = [float(trainer.train_step(batch, it)["loss"].detach()) for it in range(1, 31)]
    assert losses[-1] < 0.5 * losses[0], losses
    trainer.close()


def test_check_sync_detects_diverged_ranks(tmp_path, toy_root, monkeypatch):
    trainer = _trainer(tmp_path, toy_root)
    gather = trainer_module.mmdist
    monkeypatch.setattr(gather, "all_gather_object", lambda obj: [obj, [obj[0] + 1.0, obj[1]]])
    with pytest.raises(RuntimeError, match="differ between ranks after iteration 7"):
        trainer._check_sync(7)
    monkeypatch.setattr(gather, "all_gather_object", lambda obj: [obj, list(obj)])
    trainer._check_sync(8)  # equal checksums pass
    trainer.close()


# ---------------------------------------------------------------------------------------------- loop
def test_train_loop_writes_checkpoints_logs_and_validates(tmp_path, toy_root):
    trainer = _trainer(tmp_path, toy_root)
    result = trainer.train()
    trainer.close()
    work = tmp_path / "work"
    assert result["iteration"] == 6
    # ckpt_interval 2 -> 2, 4, 6; names without zero padding; latest -> the last one
    names = sorted(os.path.basename(p) for p in glob.glob(str(work / "checkpoints" / "*.pth")))
    assert names == ["iter_2.pth", "iter_4.pth", "iter_6.pth"]
    assert (work / "checkpoints" / "latest").read_text() == "iter_6.pth\n"
    assert find_latest_checkpoint(str(work)).endswith("iter_6.pth")
    ckpt = load_checkpoint(str(work / "checkpoints" / "iter_4.pth"))
    assert ckpt["iteration"] == 4 and ckpt["data_positions"] == [8]  # 4 iterations x 2 images
    assert not any(k.startswith("backbone") for k in ckpt["model"])
    # validation at 3 and 6 (eval_interval 3) on the first 3 val images; mIoUs are fractions
    val = result["last_val"]
    assert val["num_images"] == 3
    assert 0.0 <= val["pseudo_miou"] <= 1.0 and 0.0 <= val["decoder_miou"] <= 1.0
    assert (
        trainer.model_without_ddp.calls.count(None) == 6
    )  # 2 validations x 3 images, iteration=None
    assert trainer.model_without_ddp.training  # back in train mode
    log = result["last_log"]
    assert set(log) == {"loss", "seg_loss", "lr", "pixel_acc", "img_per_s", "memory_mib"}
    assert log["memory_mib"] > 0 and log["img_per_s"] > 0
    # scalars.jsonl: one record per log interval (2, 4, 6) and per validation (3, 6), for programs
    with open(work / "scalars.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [(r["kind"], r["iteration"]) for r in records] == [
        ("train", 2), ("val", 3), ("train", 4), ("train", 6), ("val", 6)
    ]  # fmt: skip
    assert records[-2] == dict(kind="train", iteration=6, **log)
    assert records[-1] == dict(kind="val", iteration=6, **val)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(work / "tb"))
    events.Reload()
    assert events.Tags()["images"] == [
        "train/input_cam_refined_pseudo_pred"
    ]  # vis_interval 3 -> 3, 6
    assert [e.step for e in events.Images("train/input_cam_refined_pseudo_pred")] == [3, 6]
    assert {
        "train/loss",
        "train/lr",
        "train/pixel_acc",
        "val/pseudo_miou",
        "val/decoder_miou",
    } <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6]  # log_interval 2


def test_in_process_resume_is_bit_identical(tmp_path, toy_root):
    # run A: 6 iterations in one go; run B: a new process state resumed from A's iteration-2 checkpoint
    a = _trainer(tmp_path / "a", toy_root)
    a.train()
    a.close()
    work_b = tmp_path / "b" / "work"
    os.makedirs(work_b / "checkpoints")
    shutil.copy(tmp_path / "a" / "work" / "checkpoints" / "iter_2.pth", work_b / "checkpoints")
    (work_b / "checkpoints" / "latest").write_text("iter_2.pth\n")
    torch.manual_seed(12345)  # disturb the global RNG: the resume must restore it
    b = _trainer(tmp_path / "b", toy_root)
    assert b.resume("auto") == 2
    b.train()
    b.close()
    final_a = load_checkpoint(str(tmp_path / "a" / "work" / "checkpoints" / "iter_6.pth"))
    final_b = load_checkpoint(str(work_b / "checkpoints" / "iter_6.pth"))
    for key, value in final_a["model"].items():
        assert torch.equal(value, final_b["model"][key]), key
    assert b.model_without_ddp.calls[0] == 3  # continued at iteration 3
    # the resumed run's scalars.jsonl holds every interval once, as the uninterrupted run's
    read = lambda d: [json.loads(x) for x in open(d / "scalars.jsonl")]  # noqa: E731
    a_its = [(r["kind"], r["iteration"]) for r in read(tmp_path / "a" / "work")]
    assert [(r["kind"], r["iteration"]) for r in read(work_b)] == [x for x in a_its if x[1] > 2]


def test_validation_leaves_the_training_run_unchanged(tmp_path, toy_root):
    # the decoder's Dropout2d draws from the global RNG: a validation that consumed it (e.g. a DataLoader
    # drawing its worker seed) would change every later dropout mask, so the final weights would depend on
    # how often the run validates. A: validates at iterations 3 and 6; B: never.
    a = _trainer(tmp_path / "a", toy_root, eval_interval=3)
    a.train()
    a.close()
    b = _trainer(tmp_path / "b", toy_root, eval_interval=0)
    b.train()
    b.close()
    validated = lambda d: [  # noqa: E731
        r["iteration"] for r in map(json.loads, open(d / "work" / "scalars.jsonl")) if r["kind"] == "val"
    ]
    assert validated(tmp_path / "a") == [3, 6] and validated(tmp_path / "b") == []
    final_a = load_checkpoint(str(tmp_path / "a" / "work" / "checkpoints" / "iter_6.pth"))
    final_b = load_checkpoint(str(tmp_path / "b" / "work" / "checkpoints" / "iter_6.pth"))
    for key, value in final_a["model"].items():
        assert torch.equal(value, final_b["model"][key]), key


def test_resume_auto_without_checkpoint_starts_fresh(tmp_path, toy_root, caplog):
    trainer = _trainer(tmp_path, toy_root)
    with caplog.at_level("INFO", logger="weclip"):
        assert trainer.resume("auto") == 0
    assert "no checkpoint" in caplog.text
    trainer.close()


# ---------------------------------------------------------------------------------------------- overlays
def test_voc_palette_known_colours():
    palette = voc_palette()
    # bit k of the id -> bit (7 - k // 3) of channel k % 3: 1 -> R 128, 2 -> G 128, 8 -> R 64 (cat)
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[1].tolist() == [128, 0, 0]
    assert palette[2].tolist() == [0, 128, 0]
    assert palette[15].tolist() == [192, 128, 128]  # person: 15 = 0b1111 -> R 128+64, G 128, B 128
    assert palette[255].tolist() == [255, 255, 255]  # ignore drawn white


def test_colorize_blend_overlays():
    labels = np.array([[0, 1], [2, 255]])
    colours = colorize_labels(labels)
    assert colours.shape == (2, 2, 3) and colours[1, 1].tolist() == [255, 255, 255]
    # blend: 0.75 * 100 + 0.25 * 200 = 125
    assert (
        blend(np.full((1, 1, 3), 100, np.uint8), np.full((1, 1, 3), 200, np.uint8), 0.25)[0, 0, 0]
        == 125
    )
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3)).astype(np.uint8)
    over = label_overlay(rgb, np.zeros((2, 2), np.int64), alpha=1.0)  # resized nearest, all black
    assert over.shape == (4, 5, 3) and not over.any()
    heat = cam_heatmap(np.array([[0.0, 1.0]]), size=(3, 4))
    assert heat.shape == (3, 4, 3) and heat[0, 0, 2] > heat[0, 0, 0]  # JET: 0 is blue
    panel = hstack_panels([rgb, rgb], gap=2)
    assert panel.shape == (4, 12, 3) and (panel[:, 5:7] == 255).all()


# ---------------------------------------------------------------------------------------------- CLI
def _env():
    return dict(os.environ, OMP_NUM_THREADS="1")  # two runs on a busy 2-core machine


def _train_cmd(config, work_dir, *extra):
    return [
        sys.executable,
        os.path.join(REPO, "tools", "train.py"),
        config,
        "--work-dir",
        work_dir,
        "--device",
        "cpu",
        *extra,
    ]


@pytest.mark.slow
def test_killed_run_resumes_bit_identical(tmp_path, toy_root):
    """SIGKILL a tools/train.py run once `latest` exists (iteration >= 2), resume it with --resume (auto), and
    compare the final decoder weights with an uninterrupted run: bit-identical on CPU."""
    config = write_config(
        str(tmp_path),
        toy_root,
        max_iters=30,
        ckpt_interval=2,
        eval_interval=10,
        eval_max_images=2,
        vis_interval=15,
        log_interval=10,
    )  # 30 iterations: a window of seconds between the first checkpoint and the end, for the kill
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    clean = subprocess.run(
        _train_cmd(config, full), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert clean.returncode == 0, clean.stderr[-3000:]

    proc = subprocess.Popen(
        _train_cmd(config, killed),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    latest = os.path.join(killed, "checkpoints", "latest")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.isfile(latest) and open(latest).read().strip():
            break
        time.sleep(0.05)
    assert proc.poll() is None, (
        "the run ended before it could be killed: " + proc.stderr.read()[-3000:]
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    killed_at = load_checkpoint(find_latest_checkpoint(killed))["iteration"]
    assert killed_at < 30 and not os.path.exists(os.path.join(killed, "checkpoints", "iter_30.pth"))

    resumed = subprocess.run(
        _train_cmd(config, killed, "--resume"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"iteration {killed_at} of 30" in resumed.stderr  # "Resumed from ...: iteration k of 30"
    a = load_checkpoint(os.path.join(full, "checkpoints", "iter_30.pth"))
    b = load_checkpoint(os.path.join(killed, "checkpoints", "iter_30.pth"))
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert os.path.isfile(os.path.join(full, "config.py"))
    assert glob.glob(os.path.join(full, "*.log"))
