"""CAM -> pseudo-mask: threshold and power rules, multi-scale + flip, sweeps, CSV."""

import csv
import math

import pytest
import torch

from weclip.baselines.cam import (
    DEFAULT_THRESHOLDS,
    ThresholdSweep,
    background_scores,
    best_row,
    cams_to_labels,
    format_sweep_table,
    multiscale_flip_cams,
    scores_with_background,
    sweep_rows,
    write_sweep_csv,
)
from weclip.evaluation.metrics import ConfusionMatrix


def _cams():
    # K = 2 classes on a 1 x 3 map: class 0 (0.2, 0.6, 0.1), class 1 (0.5, 0.3, 0.05)
    return torch.tensor([[[[0.2, 0.6, 0.1]], [[0.5, 0.3, 0.05]]]])


def test_threshold_rule():
    # t = 0.4: pixel 0 max 0.5 (class 1) > 0.4 -> label 2; pixel 1 max 0.6 (class 0) -> 1;
    # pixel 2 max 0.1 <= 0.4 -> background 0
    assert cams_to_labels(_cams(), bg_threshold=0.4).tolist() == [[[2, 1, 0]]]
    # class 1 absent from the image-level labels: pixel 0 now has only 0.2 <= 0.4 -> 0
    assert cams_to_labels(_cams(), torch.tensor([[1.0, 0.0]]), 0.4).tolist() == [[[0, 1, 0]]]
    # a tie with the threshold goes to the background: t = 0.6 = class 0's value at pixel 1
    assert cams_to_labels(_cams(), bg_threshold=0.6).tolist() == [[[0, 0, 0]]]
    # out_size: bilinear upsampling before the argmax (1 x 3 -> 2 x 6 keeps each column pair)
    up = cams_to_labels(_cams(), bg_threshold=0.4, out_size=(2, 6))
    assert up.shape == (1, 2, 6) and up[0, 0, 0] == 2 and up[0, 0, -1] == 0


def test_power_background_equals_its_threshold():
    # alpha = 4: foreground iff m > (1 - m)^4, i.e. m > t* = 0.2755 (root of (1 - t)^4 = t):
    # m = 0.27 -> 0.73^4 = 0.2840 > 0.27 -> background; m = 0.28 -> 0.72^4 = 0.2687 < 0.28 -> fg
    cams = torch.tensor([[[[0.27, 0.28]]]])
    assert cams_to_labels(cams, bg_threshold=4, mode="power").tolist() == [[[0, 1]]]
    assert background_scores(cams, mode="power", value=4)[0, 0, 0].tolist() == pytest.approx(
        [0.73**4, 0.72**4], rel=1e-5
    )
    # the power background uses the max over PRESENT classes only
    two = torch.tensor([[[[0.9]], [[0.1]]]])
    bg = background_scores(two, torch.tensor([[0.0, 1.0]]), mode="power", value=2)
    assert bg.item() == pytest.approx(0.81, rel=1e-6)  # (1 - 0.1)^2
    scores = scores_with_background(two, torch.tensor([[0.0, 1.0]]), mode="threshold", value=0.3)
    assert scores.flatten().tolist() == pytest.approx([0.3, 0.0, 0.1])
    with pytest.raises(ValueError, match="'threshold' or 'power'"):
        background_scores(two, mode="alpha")


def test_multiscale_flip_mirrors_back():
    # raw CAM = image x position weights w = (1, 2, 3, 4): not flip-equivariant. With flip the sum
    # is x w + flip(flip(x) w) = x (w + flip(w)) = 5 x: a constant image gives a constant map
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])

    def raw(x):
        return x[:, :1] * w

    images = torch.ones(1, 3, 1, 4)
    both = multiscale_flip_cams(raw, images, scales=(1.0,), flip=True)
    # 5 / (5 + 1e-5) everywhere
    assert both.flatten().tolist() == pytest.approx([5 / (5 + 1e-5)] * 4, rel=1e-6)
    one = multiscale_flip_cams(raw, images, scales=(1.0,), flip=False)
    assert one.flatten().tolist() == pytest.approx([v / (4 + 1e-5) for v in (1, 2, 3, 4)], rel=1e-6)


def test_multiscale_sizes_and_sum():
    seen = []

    def raw(x):
        seen.append(tuple(x.shape[-2:]))
        return torch.ones(x.shape[0], 2, x.shape[2], x.shape[3])

    out = multiscale_flip_cams(raw, torch.zeros(2, 3, 5, 7), scales=(1.0, 0.5, 1.5), flip=True)
    # round(5 * 0.5) = 2 (round half to even), round(7 * 0.5) = 4; round(7.5) = 8, round(10.5) = 10
    assert seen == [(5, 7), (5, 7), (2, 4), (2, 4), (8, 10), (8, 10)]
    # 6 views of ones, each upsampled to 5 x 7 -> 6 everywhere -> normalised 6 / (6 + 1e-5)
    assert out.shape == (2, 2, 5, 7)
    assert torch.allclose(out, torch.full_like(out, 6 / (6 + 1e-5)))
    assert multiscale_flip_cams(raw, torch.zeros(1, 3, 5, 7), out_size=(3, 3)).shape == (1, 2, 3, 3)


def test_sweep_hand_values():
    # K = 1; GT [[1, 0], [1, 255]]; CAM [[0.9, 0.3], [0.5, 0.8]] (the 255 pixel is not counted)
    gt = torch.tensor([[[1, 0], [1, 255]]])
    cams = torch.tensor([[[[0.9, 0.3], [0.5, 0.8]]]])
    sweep = ThresholdSweep(2, thresholds=(0.4, 0.6, 0.95))
    sweep.update(cams, gt)
    rows = sweep.rows("epoch_1")
    # t = 0.4: prediction [[1, 0], [1, .]] = GT -> IoU 1, 1 -> mIoU 1
    # t = 0.6: prediction [[1, 0], [0, .]]: bg TP 1, GT 1, pred 2 -> 1/2; fg TP 1, GT 2, pred 1
    #          -> 1/2; mIoU 0.5
    # t = 0.95: all background: bg 1/3, fg 0 -> mIoU 1/6
    assert [r["miou"] for r in rows] == pytest.approx([1.0, 0.5, 1 / 6])
    assert [r["pixel_acc"] for r in rows] == pytest.approx([1.0, 2 / 3, 1 / 3])
    assert rows[0]["checkpoint"] == "epoch_1" and rows[0]["num_images"] == 1


def test_sweep_equals_the_threshold_rule():
    torch.manual_seed(0)
    cams = torch.rand(3, 4, 6, 5)
    labels = (torch.rand(3, 4) > 0.4).float()
    gt = torch.randint(0, 5, (3, 12, 10))
    gt[:, 0, 0] = 255
    sweep = ThresholdSweep(5, thresholds=(0.2, 0.5, 0.7))
    sweep.update(cams, gt, labels)
    for t, matrix in zip(sweep.thresholds, sweep.matrices):
        reference = ConfusionMatrix(5)
        reference.update(cams_to_labels(cams, labels, t, out_size=(12, 10)), gt)
        assert torch.equal(matrix.hist, reference.hist)


def test_sweep_rows_table_csv_and_best(tmp_path):
    gt = torch.tensor([[[1, 0], [1, 255]]])
    cams = torch.tensor([[[[0.9, 0.3], [0.5, 0.8]]]])
    sweeps = {}
    for name, scale in (("e1", 1.0), ("e2", 0.5)):
        sweep = ThresholdSweep(2, thresholds=(0.4, 0.6, 0.95))
        sweep.update(cams * scale, gt)
        sweeps[name] = sweep
    rows = sweep_rows(sweeps)
    assert [(r["checkpoint"], r["threshold"]) for r in rows][:4] == [
        ("e1", 0.4),
        ("e1", 0.6),
        ("e1", 0.95),
        ("e2", 0.4),
    ]
    # e2's CAMs are halved: at t = 0.4 only 0.45 (pixel 0) stays foreground -> same as e1 at 0.6
    assert rows[3]["miou"] == pytest.approx(0.5)
    best = best_row(rows)
    assert (best["checkpoint"], best["threshold"]) == ("e1", 0.4)
    table = format_sweep_table(rows)
    assert "100.00" in table and table.splitlines()[1].split()[1:] == ["0.40", "0.60", "0.95"]
    path = tmp_path / "sweep.csv"
    write_sweep_csv(str(path), rows)
    with open(path) as f:
        read = list(csv.DictReader(f))
    assert len(read) == 6 and float(read[0]["miou"]) == 1.0 and read[5]["checkpoint"] == "e2"
    with pytest.raises(ValueError, match="no sweep row"):
        best_row([{"miou": math.nan}])


def test_default_thresholds():
    # 0.10 ... 0.90 in 0.05 steps: 17 values
    assert DEFAULT_THRESHOLDS[0] == 0.1 and DEFAULT_THRESHOLDS[-1] == 0.9
    assert len(DEFAULT_THRESHOLDS) == 17


def test_shape_errors():
    with pytest.raises(ValueError, match="cls_labels"):
        cams_to_labels(torch.rand(1, 2, 3, 3), torch.ones(1, 3))
    with pytest.raises(ValueError, match="K \\+ 1 = C"):
        ThresholdSweep(3).update(torch.rand(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


def test_parse_thresholds():
    from weclip.baselines.sweep import parse_thresholds

    # 0.1:0.9:0.1 -> 9 values, the stop included although 0.1 * 8 + 0.1 is not exactly 0.9 in floats
    assert parse_thresholds("0.1:0.9:0.1") == pytest.approx([0.1 * i for i in range(1, 10)])
    assert parse_thresholds("0.2,0.35") == [0.2, 0.35]
    assert parse_thresholds("0.5:0.5:0.1") == [0.5]
    for bad in ("0.9:0.1:0.1", "0.1:0.9:0", "a,b", "0.5:1.5:0.5", ""):
        with pytest.raises(ValueError, match="thresholds"):
            parse_thresholds(bad)


def test_sweep_evaluator_through_the_loop_equals_a_direct_sweep():
    from weclip.baselines.sweep import ThresholdSweepEvaluator
    from weclip.evaluation.loop import run_on_dataset

    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(3):  # images of different sizes, CAMs given at the image size
        h, w = 5 + i, 7
        items.append(
            {
                "name": f"im{i}",
                "image": torch.zeros(3, h, w, dtype=torch.uint8),
                "mask": torch.randint(0, 3, (h, w), generator=g),
                "cls_labels": torch.tensor([1.0, float(i % 2)]),
                "cams": torch.rand(2, h, w, generator=g),
            }
        )
    thresholds = (0.2, 0.5, 0.8)
    run = run_on_dataset(
        lambda item: {"cams": item["cams"]}, items, [ThresholdSweepEvaluator(3, thresholds)],
        progress=False,
    )  # fmt: skip
    direct = ThresholdSweep(3, thresholds)
    for item in items:
        direct.update(item["cams"][None], item["mask"][None], item["cls_labels"][None])
    got, want = run["results"]["sweep"].rows(), direct.rows()
    assert [r["miou"] for r in got] == [r["miou"] for r in want]
    assert got[0]["num_images"] == 3
