"""Confusion-matrix metrics (spec §9) on hand-worked matrices."""

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from weclip.evaluation.metrics import (
    ConfusionMatrix,
    format_table,
    metrics_payload,
    scores_from_hist,
    write_metrics_json,
)


def test_brief_example_ignores_255():
    # gt [[0,1],[1,255]] vs pred [[0,1],[0,1]]: (gt,pred) pairs (0,0), (1,1), (1,0); 255 dropped
    # hist = [[1,0],[1,1]]; IoU_0 = 1/(1+2-1) = 0.5, IoU_1 = 1/(2+1-1) = 0.5
    # pixel acc = 2/3, class acc = [1/1, 1/2] -> mean 0.75
    cm = ConfusionMatrix(2)
    cm.update(np.array([[0, 1], [0, 1]]), np.array([[0, 1], [1, 255]], dtype=np.uint8))
    assert cm.hist.tolist() == [[1, 0], [1, 1]]
    s = cm.scores()
    np.testing.assert_allclose(s["iou"], [0.5, 0.5])
    assert s["miou"] == pytest.approx(0.5) and s["miou_gt_or_pred"] == pytest.approx(0.5)
    assert s["pixel_acc"] == pytest.approx(2 / 3) and s["mean_acc"] == pytest.approx(0.75)
    assert s["num_pixels"] == 3 and cm.num_images == 1


def test_absent_classes_and_the_two_means():
    # C = 4, gt [[0,0],[1,1]], pred [[0,2],[1,1]] -> hist[0,0]=1, hist[0,2]=1, hist[1,1]=2
    # class 0: TP 1, GT 2, Pred 1 -> IoU 1/2;  class 1: TP 2, GT 2, Pred 2 -> IoU 1
    # class 2: predicted once, no GT -> IoU 0/(0+1-0) = 0 (defined), acc undefined
    # class 3: neither -> IoU undefined (NaN / null)
    # authors' mIoU (classes with GT: 0, 1) = (0.5 + 1) / 2 = 0.75
    # GT-or-pred mIoU (classes 0, 1, 2)     = (0.5 + 1 + 0) / 3 = 0.5
    # pixel acc = 3/4; mean acc = (1/2 + 2/2) / 2 = 0.75
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([[0, 2], [1, 1]]), torch.tensor([[0, 0], [1, 1]]))
    s = cm.scores()
    np.testing.assert_allclose(s["iou"][:3], [0.5, 1.0, 0.0])
    assert math.isnan(s["iou"][3])
    assert math.isnan(s["acc"][2]) and math.isnan(s["acc"][3])
    assert s["miou"] == pytest.approx(0.75)
    assert s["miou_gt_or_pred"] == pytest.approx(0.5)
    assert s["pixel_acc"] == pytest.approx(0.75) and s["mean_acc"] == pytest.approx(0.75)

    payload = metrics_payload(cm, ["bg", "a", "b", "c"], extra={"split": "val"})
    assert payload["per_class_iou"] == {"bg": 0.5, "a": 1.0, "b": 0.0, "c": None}
    assert payload["per_class_acc"]["b"] is None and payload["per_class_gt_pixels"]["bg"] == 2
    assert payload["miou"] == pytest.approx(0.75) and isinstance(payload["miou"], float)
    assert payload["split"] == "val" and payload["num_images"] == 1 and payload["num_pixels"] == 4
    json.dumps(payload, allow_nan=False)  # strict JSON: NaN became null

    table = format_table(payload, title="toy")
    assert table.splitlines()[0] == "toy"
    assert "mIoU 75.00" in table and "(GT-or-pred classes: 50.00)" in table
    assert any(line.startswith("c ") and line.split()[1] == "-" for line in table.splitlines())


def test_torch_numpy_and_batches_agree():
    g = torch.Generator().manual_seed(0)
    gt = torch.randint(0, 5, (3, 7, 9), generator=g)
    gt[:, 0, :] = 255  # an ignored band
    pred = torch.randint(0, 5, (3, 7, 9), generator=g)
    a, b = ConfusionMatrix(5), ConfusionMatrix(5)
    a.update(pred, gt)  # one batched call
    for i in range(3):
        b.update(pred[i].numpy().astype(np.int16), gt[i].numpy().astype(np.uint8))
    # the reference: count (gt, pred) pairs over the non-ignored pixels by hand
    ref = np.zeros((5, 5), dtype=np.int64)
    for t, p in zip(gt.reshape(-1).tolist(), pred.reshape(-1).tolist()):
        if t != 255:
            ref[t, p] += 1
    assert a.hist.tolist() == b.hist.tolist() == ref.tolist()
    assert a.num_images == b.num_images == 3
    assert int(a.hist.sum()) == 3 * 6 * 9  # row 0 of every image ignored


def test_bad_inputs_raise_clear_errors():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="image 'x'.*shape"):
        cm.update(np.zeros((2, 2), np.int64), np.zeros((2, 3), np.int64), name="x")
    with pytest.raises(ValueError, match=r"outside \[0, 3\).*\[255\]"):
        cm.update(np.array([[0, 255]]), np.array([[0, 1]]))
    with pytest.raises(TypeError, match="integer"):
        cm.update(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))
    # an out-of-range prediction on an ignored GT pixel is not counted, so it is fine
    cm.update(np.array([[0, 255]]), np.array([[0, 255]]))
    assert cm.hist.sum() == 1


def test_empty_matrix_gives_nulls(tmp_path):
    cm = ConfusionMatrix(2)
    payload = metrics_payload(cm)
    assert payload["miou"] is None and payload["pixel_acc"] is None
    assert payload["per_class_iou"] == {"0": None, "1": None}
    path = os.path.join(tmp_path, "sub", "metrics.json")
    write_metrics_json(path, payload)
    with open(path) as f:
        assert json.load(f) == payload
    assert os.listdir(os.path.dirname(path)) == ["metrics.json"]  # no temp file left behind
    with pytest.raises(KeyError, match="miou"):
        metrics_payload(cm, extra={"miou": 1.0})
    with pytest.raises(ValueError, match="3 class names"):
        metrics_payload(cm, ["a", "b", "c"])


def test_scores_from_hist_matches_authors_formula():
    # the authors' evaluate.scores on a random matrix with a GT-less but predicted class (row 3 = 0)
    rng = np.random.default_rng(1)
    hist = rng.integers(0, 20, (6, 6)).astype(np.float64)
    hist[3, :] = 0
    iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
    ref_miou = np.nanmean(iu[hist.sum(1) > 0])
    ref_macc = np.nanmean(np.diag(hist) / np.where(hist.sum(1) > 0, hist.sum(1), np.nan))
    s = scores_from_hist(hist)
    assert s["miou"] == pytest.approx(ref_miou)
    assert s["mean_acc"] == pytest.approx(ref_macc)
    assert s["pixel_acc"] == pytest.approx(np.diag(hist).sum() / hist.sum())
    assert s["miou_gt_or_pred"] == pytest.approx(np.nanmean(iu))
    assert s["miou_gt_or_pred"] < s["miou"]  # class 3 counts as IoU 0 only in the GT-or-pred mean


def test_all_reduce_without_process_group_is_a_no_op():
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 1]), np.array([0, 0]))
    cm.all_reduce()
    assert cm.hist.tolist() == [[1, 1], [0, 0]] and cm.num_images == 1


def _reduce_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cm = ConfusionMatrix(3)
        # rank r adds r+1 images whose pixels are all (gt=r, pred=r)
        for _ in range(rank + 1):
            cm.update(np.full((2, 2), rank), np.full((2, 2), rank))
        cm.all_reduce()
        torch.save({"hist": cm.hist, "n": cm.num_images}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_over_two_ranks(tmp_path):
    # rank 0: 1 image of 4 pixels (0,0); rank 1: 2 images of 4 pixels (1,1)
    # -> hist diag [4, 8, 0], 3 images, identical on both ranks
    # fork: this tests the reduction, not the start method (spawn would re-import torch twice)
    mp.start_processes(
        _reduce_worker,
        args=(2, str(tmp_path / "init"), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    for rank in range(2):
        out = torch.load(tmp_path / f"{rank}.pt")
        assert out["hist"].tolist() == [[4, 0, 0], [0, 8, 0], [0, 0, 0]] and out["n"] == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_label_maps_count_like_cpu():
    gt = torch.tensor([[0, 1], [1, 255]])
    pred = torch.tensor([[0, 1], [0, 1]])
    cpu, gpu = ConfusionMatrix(2), ConfusionMatrix(2)
    cpu.update(pred, gt)
    gpu.update(pred.cuda(), gt.cuda())
    assert gpu.hist.device.type == "cpu" and gpu.hist.tolist() == cpu.hist.tolist()
