"""Segmentation inference: the evaluation loop with the segmentation predictor and evaluators (hand-worked
scores, by-products, --skip-existing), and tools/infer.py end to end as a user runs it (metrics.json schema,
PNGs, logits, the VOC test server layout, errors, sharding over 2 processes)."""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REPO, SIZES, make_checkpoint, make_synth_dataset, run_tool, write_config
from PIL import Image
from torch import nn

from weclip.apis import init_model
from weclip.config import load_config
from weclip.data import build_dataset, read_mask
from weclip.evaluation.evaluators import PNGWriter, SegmentationEvaluator, load_logits
from weclip.evaluation.loop import run_on_dataset
from weclip.evaluation.metrics import ConfusionMatrix
from weclip.evaluation.predictors import SegmentationPredictor
from weclip.evaluation.records import INFER_EXTRAS, setting_label
from weclip.utils.cli import parse_scales

# metrics.json keys: those of weclip.evaluation.metrics.metrics_payload, then tools/infer.py's extras
PAYLOAD_KEYS = {
    "schema", "miou", "miou_gt_or_pred", "pixel_acc", "mean_acc", "per_class_iou", "per_class_acc",
    "per_class_gt_pixels", "num_images", "num_pixels", "num_classes", "ignore_index",
}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic data (5 images, val/train with masks, test without), config, checkpoint."""
    base = str(tmp_path_factory.mktemp("infer"))
    root = make_synth_dataset(base)
    config = write_config(base, root)
    ckpt = make_checkpoint(config, os.path.join(base, "work"), iteration=2, seed=1)
    return {"base": base, "root": root, "config": config, "ckpt": ckpt}


@pytest.fixture(scope="module")
def crf_run(world):
    """The CLI run: val, MS+flip+CRF (CRF inline: a worker process would cost seconds), logits saved."""
    out = os.path.join(world["base"], "out_crf")
    run_tool(
        "infer",
        [world["config"], world["ckpt"], "--device", "cpu", "--crf", "--crf-workers", "0",
         "--save-logits", "--out-dir", out],
    )  # fmt: skip
    return out


def _load(path):
    with open(path) as f:
        return json.load(f)


def test_setting_labels_and_scale_parsing():
    assert setting_label((1.0,), False, False) == "single-scale"
    assert setting_label((1.0,), True, False) == "single-scale+flip"
    assert setting_label((1.0, 0.75), True, True) == "MS(1,0.75)+flip+CRF"
    assert parse_scales("1.0,0.75") == (1.0, 0.75)
    with pytest.raises(argparse.ArgumentTypeError, match="positive"):
        parse_scales("1.0,-2")


def test_cli_run_writes_pngs_logits_and_exact_schema(world, crf_run):
    payload = _load(os.path.join(crf_run, "metrics.json"))
    assert set(payload) == PAYLOAD_KEYS | set(INFER_EXTRAS)
    assert tuple(k for k in payload if k in INFER_EXTRAS) == INFER_EXTRAS
    assert payload["setting"] == "MS(1,0.75)+flip+CRF" and payload["crf"] is True
    assert (
        payload["scales"] == [1.0, 0.75]
        and payload["flip"] is True
        and payload["model"] == "WeCLIP"
    )
    assert payload["iteration"] == 2 and payload["train_seed"] == 1 and payload["world_size"] == 1
    assert payload["dataset"] == "tiny" and payload["split"] == "val"
    assert set(payload["crf_params"]) == {
        "iter_max", "pos_xy_std", "pos_w", "bi_xy_std", "bi_rgb_std", "bi_w", "prob_clip",
    }  # fmt: skip
    assert list(payload["per_class_iou"]) == ["background", "circle", "square", "triangle", "cross"]
    for variant in ("single_scale", "ms_1_0.75_flip"):
        extra = _load(os.path.join(crf_run, "variants", variant, "metrics.json"))
        assert set(extra) == PAYLOAD_KEYS | set(INFER_EXTRAS) and extra["crf"] is False

    # the metrics are those of the written PNGs against the masks (recomputed here)
    cm = ConfusionMatrix(5)
    for i, (h, w) in enumerate(SIZES):
        name = f"img_{i:03d}"
        with Image.open(os.path.join(crf_run, "pred", name + ".png")) as png:
            assert png.mode == "P" and png.size == (w, h)  # palette PNG at the original size
            pred = np.array(png)
        assert pred.max() < 5
        cm.update(
            pred, read_mask(os.path.join(world["root"], "SegmentationClassAug", name + ".png"))
        )
    assert payload["per_class_gt_pixels"] == dict(
        zip(payload["per_class_iou"], cm.hist.sum(1).tolist())
    )
    assert payload["miou"] == pytest.approx(cm.scores()["miou"], abs=1e-12)
    assert payload["num_images"] == 5

    # compact logits: float16 at the network's resolution + the original size.
    # img_000 is 30x44: long side 44 -> 40, size (int(30*40/44), 40) = (27, 40), cropped to (24, 40): 3x5 patches
    logits, size = load_logits(os.path.join(crf_run, "logits", "img_000.npz"))
    with np.load(os.path.join(crf_run, "logits", "img_000.npz")) as raw:
        assert raw["logits"].dtype == np.float16
    assert tuple(logits.shape) == (5, 3, 5) and size == (30, 44)


def _run(world, scales, flip, evaluators, reuse=None, model=None):
    cfg = load_config(world["config"])
    model = model or init_model(cfg, world["ckpt"], "cpu")
    predictor = SegmentationPredictor(
        model, scales=scales, flip=flip, resize_long=cfg.test.resize_long, single_scale=True
    )
    dataset = build_dataset(cfg.data, "val", train=False)
    return run_on_dataset(predictor, dataset, evaluators, reuse=reuse)


def test_evaluating_leaves_the_global_rng_alone(world):
    # a DataLoader draws its worker seed from the global RNG unless it has its own generator: evaluating
    # inside a training run (or a user's script) must not move that run's random stream
    state = torch.random.get_rng_state()
    _run(world, (1.0,), False, [SegmentationEvaluator("ss", 5)])
    assert torch.equal(torch.random.get_rng_state(), state)


def test_byproducts_equal_direct_runs(world, crf_run):
    # single-scale, no flip, run directly == the "single-scale" by-product of the CRF run
    run = _run(world, (1.0,), False, [SegmentationEvaluator("ss", 5)])
    byproduct = _load(os.path.join(crf_run, "variants", "single_scale", "metrics.json"))
    scores = run["results"]["ss"]["matrix"].scores()
    assert scores["miou"] == pytest.approx(byproduct["miou"], abs=1e-12)
    assert run["results"]["ss"]["matrix"].hist.sum(1).tolist() == list(
        byproduct["per_class_gt_pixels"].values()
    )
    # MS+flip without CRF, run directly == the CRF run's no-CRF by-product
    run = _run(world, (1.0, 0.75), True, [SegmentationEvaluator("ms", 5)])
    byproduct = _load(os.path.join(crf_run, "variants", "ms_1_0.75_flip", "metrics.json"))
    assert run["results"]["ms"]["matrix"].scores()["miou"] == pytest.approx(byproduct["miou"])


class _ConstantModel(nn.Module):
    """A model of the interface whose logits favour class 2 everywhere (patch 8, 5 classes)."""

    num_classes = 5
    patch_size = 8

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.0, 0.0, 3.0, 0.0, 0.0]))

    def forward(self, x):
        b, _, h, w = x.shape
        return {"seg_logits": self.bias.view(1, 5, 1, 1).expand(b, 5, h // 8, w // 8)}


def test_constant_prediction_gives_the_hand_worked_scores(world):
    run = _run(world, (1.0, 0.75), True, [SegmentationEvaluator("c", 5)], model=_ConstantModel())
    masks = [
        read_mask(os.path.join(world["root"], "SegmentationClassAug", f"img_{i:03d}.png"))
        for i in range(len(SIZES))
    ]
    counted = sum(int((m != 255).sum()) for m in masks)  # N: pixels with GT in [0, 5)
    gt2 = sum(int((m == 2).sum()) for m in masks)  # GT pixels of class 2 ("square")
    classes_with_gt = len({int(v) for m in masks for v in np.unique(m) if v != 255})
    # every counted pixel predicted 2: TP_2 = GT_2, Pred_2 = N -> IoU_2 = GT_2 / N, other IoUs 0;
    # mIoU = IoU_2 / (classes with GT); pixel acc = GT_2 / N
    scores = run["results"]["c"]["matrix"].scores()
    assert scores["pixel_acc"] == pytest.approx(gt2 / counted)
    assert scores["miou"] == pytest.approx(gt2 / counted / classes_with_gt)
    assert run["num_images"] == 5 and run["reused"] == 0


def test_skip_existing_rescores_existing_pngs(world, tmp_path):
    writer = PNGWriter(str(tmp_path / "pred"))
    first = _run(world, (1.0,), True, [writer, SegmentationEvaluator("a", 5)])
    png = str(tmp_path / "pred" / "img_001.png")
    stamp = os.path.getmtime(png)
    os.remove(str(tmp_path / "pred" / "img_003.png"))  # an interrupted run: one image missing
    by = SegmentationEvaluator("single", 5, key="single_labels")
    again = _run(world, (1.0,), True, [writer, SegmentationEvaluator("a", 5), by], writer.existing)
    assert again["reused"] == 4 and again["num_images"] == 5
    assert os.path.getmtime(png) == stamp  # reused, not rewritten
    assert os.path.isfile(str(tmp_path / "pred" / "img_003.png"))  # predicted again
    hist = first["results"]["a"]["matrix"].hist
    assert torch.equal(again["results"]["a"]["matrix"].hist, hist)
    assert again["results"]["single"]["missing"] == 4  # a by-product cannot be scored from PNGs


def test_test_split_writes_server_layout_and_errors_are_one_line(world):
    out = os.path.join(world["base"], "out_test")
    run_tool(
        "infer", [world["config"], world["ckpt"], "--device", "cpu", "--split", "test", "--ms", "1.0",
                  "--out-dir", out],
    )  # fmt: skip
    server = os.path.join(out, "results", "VOC2012", "Segmentation", "comp6_test_cls")
    assert sorted(os.listdir(server)) == [f"img_{i:03d}.png" for i in range(len(SIZES))]
    for i, (h, w) in enumerate(SIZES):
        with Image.open(os.path.join(server, f"img_{i:03d}.png")) as png:
            assert png.mode == "P" and png.size == (w, h)
    assert not os.path.exists(os.path.join(out, "metrics.json"))  # no masks: nothing scored
    assert not os.path.exists(os.path.join(out, "pred"))
    bad = os.path.join(world["base"], "garbage.pth")
    with open(bad, "wb") as f:
        f.write(b"not a checkpoint")
    proc = run_tool("infer", [world["config"], bad, "--device", "cpu"], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: cannot read checkpoint {bad}" in proc.stderr


@pytest.mark.slow
def test_two_process_run_shards_and_merges(world, crf_run):
    out = os.path.join(world["base"], "out_ddp")
    env = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHON=sys.executable, PORT="29611"
    )
    proc = subprocess.run(
        ["bash", os.path.join(REPO, "tools", "dist_test.sh"), world["config"], world["ckpt"], "2",
         "--device", "cpu", "--out-dir", out],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    merged = _load(os.path.join(out, "metrics.json"))
    single = _load(os.path.join(crf_run, "variants", "ms_1_0.75_flip", "metrics.json"))
    # rank 0 took images 0, 2, 4 and rank 1 images 1, 3: every image once, matrices summed
    assert merged["num_images"] == 5 and merged["world_size"] == 2
    assert merged["per_class_gt_pixels"] == single["per_class_gt_pixels"]
    assert merged["per_class_iou"] == single["per_class_iou"]
    assert sorted(os.listdir(os.path.join(out, "pred"))) == [f"img_{i:03d}.png" for i in range(5)]
