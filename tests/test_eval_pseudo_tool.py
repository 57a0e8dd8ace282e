"""Pseudo-label rows: the ablation rows reproduce the model's own pseudo-labels (one pipeline: eval_pseudo,
Trainer.validate, visualize and the API agree), the CAM row's hand-worked rule, labels only from the label
file, the RFM rows' checkpoint requirement, and tools/eval_pseudo.py end to end."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from helpers import SIZES, make_checkpoint, make_synth_dataset, run_tool, write_config
from PIL import Image

from weclip.apis import init_model, pseudo_labels
from weclip.cam.gradcam import gradcam
from weclip.config import load_config
from weclip.data import build_dataset
from weclip.evaluation.predictors import (
    PseudoLabelPredictor,
    PseudoLabelRows,
    crf_logits,
    parse_rows,
)
from weclip.evaluation.records import PSEUDO_EXTRAS
from weclip.refine.propagate import resize_cams

PAYLOAD_KEYS = {
    "schema", "miou", "miou_gt_or_pred", "pixel_acc", "mean_acc", "per_class_iou", "per_class_acc",
    "per_class_gt_pixels", "num_images", "num_pixels", "num_classes", "ignore_index",
}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("pseudo"))
    root = make_synth_dataset(base)
    config = write_config(base, root)
    ckpt = make_checkpoint(config, os.path.join(base, "work"), iteration=3, seed=1)
    cfg = load_config(config)
    model = init_model(cfg, ckpt, "cpu")
    dataset = build_dataset(cfg.data, "train", train=False, with_labels=True)
    return {
        "base": base,
        "root": root,
        "config": config,
        "ckpt": ckpt,
        "model": model,
        "data": dataset,
    }


def test_rows_parsing():
    rows = ("cam", "cam_par", "static", "static_par", "rfm", "rfm_par")
    assert parse_rows(None, False, rows) == list(rows)
    assert parse_rows("rfm_par,cam", True, rows) == ["cam", "rfm_par", "cam_crf", "rfm_par_crf"]
    with pytest.raises(ValueError, match="known: cam, cam_par"):
        parse_rows("cam,gradcam", False, rows)


def test_crf_logits_give_back_normalised_scores():
    scores = torch.tensor([[[1.0]], [[3.0]]])  # two channels at one pixel
    # softmax(log(s / sum s)) = s / sum s = [0.25, 0.75]
    probs = torch.softmax(crf_logits(scores), dim=0)
    torch.testing.assert_close(probs[:, 0, 0], torch.tensor([0.25, 0.75]))


def test_rows_equal_the_models_own_pseudo_labels_everywhere(world):
    # one pipeline: the rfm_par row (eval_pseudo), the model's validation forward (Trainer.validate and
    # visualize: PseudoLabelPredictor) and the API give the same labels at the mask size, on images whose
    # sides are not multiples of the patch
    model = world["model"]
    rows = PseudoLabelRows(model, ["static_par", "rfm_par"])
    predictor = PseudoLabelPredictor(model)
    for index in (0, 1):  # one and two present classes
        item = world["data"][index]
        out = rows(item)
        validated = predictor(item)["pseudo"]
        assert torch.equal(out["rfm_par"], validated)
        assert tuple(validated.shape) == SIZES[index] == tuple(item["mask"].shape)
        names = [
            model.class_names[i + 1] for i in torch.nonzero(item["cls_labels"]).flatten().tolist()
        ]
        api = pseudo_labels(model, item["image"].permute(1, 2, 0).numpy(), names)
        assert np.array_equal(api.labels, validated.numpy())
        # static + PAR is what the training forward computes before rfm_start_iter
        with torch.no_grad():
            static = model(
                item["image"][None], item["cls_labels"][None], mode="pseudo", iteration=1,
                out_size=SIZES[index],
            )["pseudo_labels"][0]  # fmt: skip
        assert torch.equal(out["static_par"], static)


def test_cam_row_is_the_thresholded_cam_for_one_class(world):
    model = world["model"]
    both_sides = 0
    for index in (0, 2, 4):  # the images with exactly one class c
        item = world["data"][index]
        (c,) = torch.nonzero(item["cls_labels"]).flatten().tolist()
        labels = PseudoLabelRows(model, ["cam"])(item)["cam"]
        # independent recomputation: r = bilinear(CAM), bg = (1 - r)^1; class c wins where r > 1 - r,
        # i.e. r > 0.5 (a tie goes to the first channel, the background)
        x, feats, _, grid = model.encode(item["image"][None])
        assert grid == (SIZES[index][0] // 8, SIZES[index][1] // 8)  # the patch-multiple crop
        cam = gradcam(
            model.backbone, feats[-1], item["cls_labels"][None], model.text_fg, model.text_bg, grid
        )
        r = resize_cams(cam.cams, SIZES[index])[0]
        expected = torch.where(r > 1 - r, torch.tensor(c + 1), torch.tensor(0))
        assert torch.equal(labels, expected)
        both_sides += set(labels.unique().tolist()) == {0, c + 1}
    # a min-max CAM reaches ~1 at its peak unless ReLU zeroed it (random weights): at least one image here
    # has both sides of the threshold
    assert both_sides >= 1


def test_pseudo_labels_use_only_label_file_classes(world, tmp_path):
    # a copy of the data whose label file claims class id 3 ("cross", class 4) for img_001 whatever its mask
    root = str(tmp_path / "relabelled")
    shutil.copytree(world["root"], root)
    lines = open(os.path.join(root, "cls_labels.txt")).read().splitlines()
    mask_ids = [int(v) for v in lines[1].split()[1:]]
    lines[1] = "img_001 3"
    with open(os.path.join(root, "cls_labels.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    cfg = load_config(world["config"], {"data.root": root, "data.split_dir": root})
    item = build_dataset(cfg.data, "train", train=False, with_labels=True)[1]
    out = PseudoLabelRows(world["model"], ["cam", "rfm_par"])(item)
    for row in ("cam", "rfm_par"):
        values = set(out[row].unique().tolist())
        assert values <= {0, 4}  # background and the label file's class, never the mask's
        if row == "cam":  # a min-max CAM reaches ~1 somewhere, where it beats bg = 1 - r
            assert 4 in values
        assert not values & {i + 1 for i in mask_ids if i != 3}


def test_cli_end_to_end_with_crf_export_and_missing_checkpoint(world):
    out, export = os.path.join(world["base"], "out"), os.path.join(world["base"], "export")
    proc = run_tool(
        "eval_pseudo",
        [world["config"], world["ckpt"], "--device", "cpu", "--split", "train", "--rows", "cam,static_par,rfm_par",
         "--crf", "--export-dir", export, "--export-rows", "rfm_par,rfm_par_crf", "--out-dir", out],
    )  # fmt: skip
    assert "RFM + PAR (WeCLIP) + CRF" in proc.stdout
    rows = ["cam", "static_par", "rfm_par", "cam_crf", "static_par_crf", "rfm_par_crf"]
    for row in rows:
        with open(os.path.join(out, row, "metrics.json")) as f:
            payload = json.load(f)
        assert set(payload) == PAYLOAD_KEYS | set(PSEUDO_EXTRAS)
        assert tuple(k for k in payload if k in PSEUDO_EXTRAS) == PSEUDO_EXTRAS
        assert payload["row"] == row and payload["num_images"] == len(SIZES)
        assert payload["crf"] == row.endswith("_crf") and payload["iteration"] == 3
        assert (
            payload["refine"]
            == {"cam": "none", "static": "static", "rfm": "rfm"}[row.split("_")[0]]
        )
    assert sorted(os.listdir(export)) == ["rfm_par", "rfm_par_crf"]
    labels = {
        line.split()[0]: {int(v) + 1 for v in line.split()[1:]}
        for line in open(os.path.join(world["root"], "cls_labels.txt"))
    }
    for i, (h, w) in enumerate(SIZES):
        with Image.open(os.path.join(export, "rfm_par_crf", f"img_{i:03d}.png")) as png:
            assert png.mode == "P" and png.size == (w, h)  # the original mask size
            assert set(np.unique(np.array(png)).tolist()) <= {0} | labels[f"img_{i:03d}"]
    # without a checkpoint the RFM rows (they need the trained decoder's A_f) are skipped with a message
    out2 = os.path.join(world["base"], "out_no_ckpt")
    proc = run_tool(
        "eval_pseudo",
        [world["config"], "--device", "cpu", "--rows", "cam,rfm", "--max-images", "2", "--out-dir", out2],
    )  # fmt: skip
    assert "skipping rfm" in proc.stdout
    assert sorted(os.listdir(out2)) == sorted(
        ["cam", "config.py"] + [f for f in os.listdir(out2) if f.endswith(".log")]
    )
    with open(os.path.join(out2, "cam", "metrics.json")) as f:
        payload = json.load(f)
    assert payload["checkpoint"] is None and payload["num_images"] == 2
