"""tools/eval_pseudo.py: the ablation rows reproduce the model's own pseudo-labels, the CAM row's hand-worked
rule, labels only from the label file, the RFM rows' checkpoint requirement, and an end-to-end subprocess run."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from tools_helpers import (
    SIZES,
    import_tool,
    make_checkpoint,
    make_dataset,
    run_tool,
    write_config,
)

from weclip.cam.gradcam import gradcam
from weclip.config import load_config
from weclip.data import build_dataset
from weclip.refine.propagate import resize_cams
from weclip.refine.pseudo_label import scores_to_labels

ep = import_tool("eval_pseudo")
common = import_tool("_weclip_tools")

PAYLOAD_KEYS = {
    "schema", "miou", "miou_gt_or_pred", "pixel_acc", "mean_acc", "per_class_iou", "per_class_acc",
    "per_class_gt_pixels", "num_images", "num_pixels", "num_classes", "ignore_index",
}  # fmt: skip
PSEUDO_KEYS = {
    "source", "row", "row_title", "refine", "par", "crf", "crf_params", "bg_power", "fit", "dataset",
    "split", "checkpoint", "iteration", "train_seed", "config", "cfg_options", "world_size",
}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("pseudo"))
    root = make_dataset(base)
    config = write_config(base, root)
    ckpt = make_checkpoint(config, os.path.join(base, "work"), iteration=3, seed=1)
    cfg = load_config(config)
    model, _ = common.load_model(cfg, ckpt, torch.device("cpu"))
    dataset = build_dataset(cfg.data, "train", train=False, with_labels=True)
    return {
        "base": base,
        "root": root,
        "config": config,
        "ckpt": ckpt,
        "model": model,
        "data": dataset,
    }


def test_rows_parsing_and_titles():
    assert ep.parse_rows(None, False) == [
        "cam",
        "cam_par",
        "static",
        "static_par",
        "rfm",
        "rfm_par",
    ]
    assert ep.parse_rows("rfm_par,cam", True) == ["cam", "rfm_par", "cam_crf", "rfm_par_crf"]
    with pytest.raises(ValueError, match="known: cam, cam_par"):
        ep.parse_rows("cam,gradcam", False)
    assert ep.row_title("static_par_crf") == "static refinement + PAR + CRF"


def test_fit_to_patches_sizes():
    image = torch.zeros(1, 3, 30, 44)
    assert tuple(ep.fit_to_patches(image, 8, "crop").shape[-2:]) == (24, 40)  # floor: 3x5 patches
    # resize: round(30/8) = 4 -> 32, round(44/8) = round(5.5) = 6 -> 48
    assert tuple(ep.fit_to_patches(image, 8, "resize").shape[-2:]) == (32, 48)
    assert tuple(ep.fit_to_patches(torch.zeros(1, 3, 3, 5), 8, "resize").shape[-2:]) == (8, 8)


def test_crf_logits_give_back_normalised_scores():
    scores = torch.tensor([[[1.0]], [[3.0]]])  # two channels at one pixel
    # softmax(log(s / sum s)) = s / sum s = [0.25, 0.75]
    probs = torch.softmax(ep.crf_logits(scores), dim=0)
    torch.testing.assert_close(probs[:, 0, 0], torch.tensor([0.25, 0.75]))


def _item(world, index):
    item = world["data"][index]
    image = ep.fit_to_patches(item["image"][None], 8, "crop")
    return item, image, item["cls_labels"][None], tuple(item["mask"].shape)


def test_rows_equal_the_models_own_pseudo_labels(world):
    model = world["model"]
    for index in (0, 1):  # one and two present classes
        item, image, cls_labels, size = _item(world, index)
        scores, keys = ep.pseudo_label_scores(
            model, image, cls_labels, size, ["static_par", "rfm_par"]
        )
        with torch.no_grad():
            rfm = model(image, cls_labels, iteration=None, out_size=size)[
                "pseudo_labels"
            ]  # validation: RFM
            static = model(image, cls_labels, iteration=1, out_size=size)[
                "pseudo_labels"
            ]  # 1 < 9145: static
        assert torch.equal(scores_to_labels(scores["rfm_par"], keys), rfm)
        assert torch.equal(scores_to_labels(scores["static_par"], keys), static)
        assert tuple(rfm.shape[-2:]) == size == tuple(SIZES[index])  # the mask's size


def test_cam_row_is_the_thresholded_cam_for_one_class(world):
    model = world["model"]
    item, image, cls_labels, size = _item(world, 0)  # img_000 has exactly one class c
    (c,) = torch.nonzero(cls_labels[0]).flatten().tolist()
    scores, keys = ep.pseudo_label_scores(model, image, cls_labels, size, ["cam"])
    labels = scores_to_labels(scores["cam"], keys)[0]
    # independent recomputation: r = bilinear(CAM), bg = (1 - r)^1; class c wins where r > 1 - r, i.e.
    # r > 0.5 (a tie goes to the first channel, the background)
    feats, _ = model.backbone.forward_blocks(image)
    cam = gradcam(model.backbone, feats[-1], cls_labels, model.text_fg, model.text_bg, (3, 5))
    r = resize_cams(cam.cams, size)[0]
    expected = torch.where(r > 1 - r, torch.tensor(c + 1), torch.tensor(0))
    assert torch.equal(labels, expected)
    assert set(labels.unique().tolist()) == {0, c + 1}  # both sides of the threshold occur


def test_pseudo_labels_use_only_label_file_classes(world, tmp_path):
    # a copy of the data whose label file claims class id 3 ("cross", class 4) for img_000 whatever its mask
    root = str(tmp_path / "relabelled")
    shutil.copytree(world["root"], root)
    lines = open(os.path.join(root, "cls_labels.txt")).read().splitlines()
    mask_ids = [int(v) for v in lines[0].split()[1:]]
    lines[0] = "img_000 3"
    with open(os.path.join(root, "cls_labels.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    export = str(tmp_path / "export")
    ep.main(
        [world["config"], world["ckpt"], "--device", "cpu", "--rows", "cam,rfm_par", "--max-images", "1",
         "--export-dir", export, "--out-dir", str(tmp_path / "out"),
         "--cfg-options", f"data.root={root}", f"data.split_dir={root}"]
    )  # fmt: skip
    for row in ("cam", "rfm_par"):
        values = set(
            np.unique(np.array(Image.open(os.path.join(export, row, "img_000.png")))).tolist()
        )
        assert values <= {0, 4}  # background and the label file's class, never the mask's
        if row == "cam":  # a min-max CAM reaches ~1 somewhere, where it beats bg = 1 - r
            assert 4 in values
        assert not values & {i + 1 for i in mask_ids if i != 3}


def test_without_checkpoint_rfm_rows_are_skipped(world, tmp_path, capsys):
    payloads = ep.main(
        [world["config"], "--device", "cpu", "--rows", "cam,static,rfm,rfm_par", "--max-images", "2",
         "--out-dir", str(tmp_path)]
    )  # fmt: skip
    assert list(payloads) == ["cam", "static"]
    assert "skipping rfm, rfm_par" in capsys.readouterr().out
    assert not os.path.exists(tmp_path / "rfm")
    assert payloads["static"]["checkpoint"] is None and payloads["static"]["num_images"] == 2


def test_subprocess_end_to_end_with_crf_and_export(world):
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
        assert set(payload) == PAYLOAD_KEYS | PSEUDO_KEYS
        assert tuple(k for k in payload if k in PSEUDO_KEYS) == ep.METRIC_EXTRAS
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
