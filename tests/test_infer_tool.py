"""tools/infer.py: end to end on synthetic VOC-layout data (subprocess and in-process), the metrics.json schema,
the VOC test server layout, the free by-products, --skip-existing, multi-process sharding."""

import argparse
import json
import os
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from tools_helpers import (
    PYTHON,
    REPO,
    SIZES,
    import_tool,
    make_checkpoint,
    make_dataset,
    run_tool,
    write_config,
)
from torch import nn

from weclip.config import load_config
from weclip.data import build_dataset, read_mask
from weclip.evaluation.metrics import ConfusionMatrix

infer = import_tool("infer")

# metrics.json keys: those of weclip.evaluation.metrics.metrics_payload, then tools/infer.py's extras
PAYLOAD_KEYS = {
    "schema", "miou", "miou_gt_or_pred", "pixel_acc", "mean_acc", "per_class_iou", "per_class_acc",
    "per_class_gt_pixels", "num_images", "num_pixels", "num_classes", "ignore_index",
}  # fmt: skip
INFER_KEYS = {
    "source", "setting", "dataset", "split", "scales", "flip", "crf", "crf_params", "resize_long",
    "checkpoint", "iteration", "train_seed", "config", "cfg_options", "world_size",
}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic data (5 images, val/train with masks, test without), config, checkpoint."""
    base = str(tmp_path_factory.mktemp("infer"))
    root = make_dataset(base)
    config = write_config(base, root)
    ckpt = make_checkpoint(config, os.path.join(base, "work"), iteration=2, seed=1)
    return {"base": base, "root": root, "config": config, "ckpt": ckpt}


@pytest.fixture(scope="module")
def crf_run(world):
    """The subprocess run: val, MS+flip+CRF (CRF inline: a worker process would cost seconds), logits saved."""
    out = os.path.join(world["base"], "out_crf")
    run_tool(
        "infer",
        [world["config"], world["ckpt"], "--device", "cpu", "--crf", "--workers", "0",
         "--save-logits", "--out-dir", out],
    )  # fmt: skip
    return out


def _load(path):
    with open(path) as f:
        return json.load(f)


def test_setting_labels_and_scale_parsing():
    assert infer.setting_label((1.0,), False, False) == "single-scale"
    assert infer.setting_label((1.0,), True, False) == "single-scale+flip"
    assert infer.setting_label((1.0, 0.75), True, True) == "MS(1,0.75)+flip+CRF"
    assert infer.parse_scales("1.0,0.75") == (1.0, 0.75)
    with pytest.raises(argparse.ArgumentTypeError, match="positive"):
        infer.parse_scales("1.0,-2")
    opts = infer.InferOptions(out_dir="x", scales=(1.0, 0.75), flip=True, resize_long=512, crf=True)
    # requested first, then the free by-products: reference scale un-flipped, and the same logits w/o CRF
    assert list(infer.computed_settings(opts)) == [
        "MS(1,0.75)+flip+CRF", "single-scale", "MS(1,0.75)+flip",
    ]  # fmt: skip
    # a reference scale other than 1.0 gives no "single-scale" by-product
    opts = infer.InferOptions(out_dir="x", scales=(0.75, 1.0), flip=False, resize_long=512)
    assert list(infer.computed_settings(opts)) == ["MS(0.75,1)"]


def test_subprocess_run_writes_pngs_logits_and_exact_schema(world, crf_run):
    payload = _load(os.path.join(crf_run, "metrics.json"))
    assert set(payload) == PAYLOAD_KEYS | INFER_KEYS
    assert tuple(k for k in payload if k in INFER_KEYS) == infer.METRIC_EXTRAS
    assert payload["setting"] == "MS(1,0.75)+flip+CRF" and payload["crf"] is True
    assert payload["scales"] == [1.0, 0.75] and payload["flip"] is True
    assert payload["iteration"] == 2 and payload["train_seed"] == 1 and payload["world_size"] == 1
    assert payload["dataset"] == "synth" and payload["split"] == "val"
    assert set(payload["crf_params"]) == {
        "iter_max", "pos_xy_std", "pos_w", "bi_xy_std", "bi_rgb_std", "bi_w", "prob_clip",
    }  # fmt: skip
    assert list(payload["per_class_iou"]) == ["background", "circle", "square", "triangle", "cross"]
    for variant in ("single_scale", "ms_1_0.75_flip"):
        extra = _load(os.path.join(crf_run, "variants", variant, "metrics.json"))
        assert set(extra) == PAYLOAD_KEYS | INFER_KEYS and extra["crf"] is False

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
    logits, size = infer.load_logits(os.path.join(crf_run, "logits", "img_000.npz"))
    with np.load(os.path.join(crf_run, "logits", "img_000.npz")) as raw:
        assert raw["logits"].dtype == np.float16
    assert tuple(logits.shape) == (5, 3, 5) and size == (30, 44)


def test_byproducts_equal_direct_runs(world, crf_run):
    # single-scale, no flip, run directly == the "single-scale" by-product of the CRF run
    direct = infer.main(
        [world["config"], world["ckpt"], "--device", "cpu", "--ms", "1.0", "--no-flip",
         "--out-dir", os.path.join(world["base"], "out_ss")]
    )  # fmt: skip
    assert list(direct["payloads"]) == ["single-scale"]  # nothing else is free here
    byproduct = _load(os.path.join(crf_run, "variants", "single_scale", "metrics.json"))
    for key in ("miou", "per_class_iou", "per_class_gt_pixels", "pixel_acc"):
        assert direct["payloads"]["single-scale"][key] == byproduct[key]
    # MS+flip without CRF, run directly == the CRF run's no-CRF by-product
    direct = infer.main(
        [
            world["config"],
            world["ckpt"],
            "--device",
            "cpu",
            "--out-dir",
            os.path.join(world["base"], "out_ms"),
        ]
    )
    byproduct = _load(os.path.join(crf_run, "variants", "ms_1_0.75_flip", "metrics.json"))
    assert direct["payloads"]["MS(1,0.75)+flip"]["per_class_iou"] == byproduct["per_class_iou"]


def test_test_split_writes_server_layout(world):
    out = os.path.join(world["base"], "out_test")
    result = infer.main(
        [
            world["config"],
            world["ckpt"],
            "--device",
            "cpu",
            "--split",
            "test",
            "--ms",
            "1.0",
            "--out-dir",
            out,
        ]
    )
    server = os.path.join(out, "results", "VOC2012", "Segmentation", "comp6_test_cls")
    assert sorted(os.listdir(server)) == [f"img_{i:03d}.png" for i in range(len(SIZES))]
    for i, (h, w) in enumerate(SIZES):
        with Image.open(os.path.join(server, f"img_{i:03d}.png")) as png:
            assert png.mode == "P" and png.size == (w, h)
    assert not os.path.exists(os.path.join(out, "metrics.json"))  # no masks: nothing scored
    assert not os.path.exists(os.path.join(out, "pred")) and result["payloads"] == {}


class _ConstantModel(nn.Module):
    """Stand-in for WeCLIP: the logits favour class 2 everywhere (patch 8, 5 classes)."""

    num_classes = 5

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.patch_size = 8
        self.bias = nn.Parameter(torch.tensor([0.0, 0.0, 3.0, 0.0, 0.0]))

    def forward(self, x):
        b, _, h, w = x.shape
        return {"seg_logits": self.bias.view(1, 5, 1, 1).expand(b, 5, h // 8, w // 8)}


def test_constant_prediction_gives_the_hand_worked_scores(world, tmp_path):
    cfg = load_config(world["config"])
    dataset = build_dataset(cfg.data, "val", train=False)
    opts = infer.InferOptions(out_dir=str(tmp_path), scales=(1.0, 0.75), flip=True, resize_long=40)
    result = infer.run_inference(_ConstantModel(), dataset, opts)
    masks = [
        read_mask(os.path.join(world["root"], "SegmentationClassAug", f"img_{i:03d}.png"))
        for i in range(len(SIZES))
    ]
    counted = sum(int((m != 255).sum()) for m in masks)  # N: pixels with GT in [0, 5)
    gt2 = sum(int((m == 2).sum()) for m in masks)  # GT pixels of class 2 ("square")
    classes_with_gt = len({int(v) for m in masks for v in np.unique(m) if v != 255})
    # every counted pixel predicted 2: TP_2 = GT_2, Pred_2 = N -> IoU_2 = GT_2 / N, other IoUs 0;
    # mIoU = IoU_2 / (classes with GT); pixel acc = GT_2 / N
    scores = result["matrices"]["MS(1,0.75)+flip"].scores()
    assert scores["pixel_acc"] == pytest.approx(gt2 / counted)
    assert scores["miou"] == pytest.approx(gt2 / counted / classes_with_gt)
    assert result["num_images"] == 5 and result["skipped"] == 0


def test_skip_existing_rescores_existing_pngs(world, tmp_path):
    args = [world["config"], world["ckpt"], "--device", "cpu", "--ms", "1.0", "--max-images", "3"]
    first = infer.main(args + ["--out-dir", str(tmp_path)])
    png = os.path.join(str(tmp_path), "pred", "img_001.png")
    stamp = os.path.getmtime(png)
    again = infer.main(args + ["--out-dir", str(tmp_path), "--skip-existing"])
    assert again["skipped"] == 3 and again["num_images"] == 3
    assert os.path.getmtime(png) == stamp  # reused, not rewritten
    label = "single-scale+flip"
    assert again["payloads"][label]["per_class_iou"] == first["payloads"][label]["per_class_iou"]
    assert list(again["payloads"]) == [label]  # by-products not written from reused PNGs


def test_bad_checkpoint_is_named(world, tmp_path):
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="garbage.pth"):
        infer.main([world["config"], str(bad), "--device", "cpu", "--out-dir", str(tmp_path / "o")])


@pytest.mark.slow
def test_two_process_run_shards_and_merges(world, crf_run):
    out = os.path.join(world["base"], "out_ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         os.path.join(REPO, "tools", "infer.py"), world["config"], world["ckpt"], "--launcher", "pytorch",
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
