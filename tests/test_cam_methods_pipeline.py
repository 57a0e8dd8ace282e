"""Every CAM-improvement method end to end at CI size.

For the plain CAM classifier and each method of ``model.method`` (configs/baselines/toy_cam_<method>.py,
shrunk: 64 px toy images, 160 training images, 30 steps at batch 8): the trainer of tools/train.py
(``run_training``, in this process: seven interpreter starts fewer) trains it and writes its checkpoint,
the threshold sweep of tools/sweep_cams.py (``sweep_checkpoint``) picks its background threshold,
tools/eval_pseudo.py scores its CAM row with that threshold, and tools/report.py's pseudo-label table must
hold one row per method beside the plain classifier's. SC-CAM's round clusters with the plain run's
checkpoint (``model.method.sc_cam.previous``). The full-size toy runs of docs/cam_methods.md go through
tools/train.py and tools/sweep_cams.py themselves.

At this size nothing localises (the toy classifier needs ~800 steps at 64 px, docs/baselines.md): the test
asserts that each method trains (finite loss, its own terms logged), that the sweep and the evaluation
produce valid mIoUs, and that the report names each method; docs/cam_methods.md has the measured numbers.
"""

import json
import math
import os
import textwrap

import pytest
from helpers import make_toy_root, run_tool, single_thread

from weclip.apis import init_model
from weclip.baselines.cam import best_row, sweep_rows
from weclip.baselines.sweep import sweep_checkpoint
from weclip.config import load_config
from weclip.data import build_dataset
from weclip.engine.trainer import run_training
from weclip.utils.dist import init_distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs", "baselines")

COMMON = """
toy = dict(image_size=64, num_train=160, num_val=32)
data = dict(root={root!r}, split_dir={root!r}, crop_size=64)
train = dict(max_iters=30, batch_size=8, ckpt_interval=30, log_interval=10)
sched = dict(warmup_iters=5)
"""
# method -> (config, extra config text, loss terms its training log must show)
METHODS = {
    "none": ("toy_cam.py", "", ("cls_loss",)),
    "mixup_cam": ("toy_cam_mixup_cam.py", "", ("cls_loss", "ent_loss", "con_loss")),
    "manifold_mixup": ("toy_cam_manifold_mixup.py", "", ("cls_loss",)),
    "fmix": ("toy_cam_fmix.py", "", ("cls_loss",)),
    "seam": ("toy_cam_seam.py", "", ("cls_loss", "er_loss", "ecr_loss", "rvmin_loss")),
    # a 32 px second view: a 4x4 grid at stride 8, as the 0.5 rescale of toy_cam_seam.py
    "p2p": (
        "toy_cam_p2p.py",
        "model = dict(method=dict(p2p=dict(view_size=(32, 32))))",
        ("cls_loss", "er_loss", "ecr_loss", "cross_nce", "cross_label_nce", "intra_nce"),
    ),
    # k = 3 sub-categories of ~60 images per class; the previous round is the plain run
    "sc_cam": (
        "toy_cam_sc_cam.py",
        "model = dict(method=dict(sc_cam=dict(previous={previous!r}, k=3, kmeans_n_init=2, "
        "distill=True)))",
        ("cls_loss", "sub_loss", "kd_loss"),
    ),
}


def _train_log(work_dir):
    """The last 'train' record of the run's scalars.jsonl."""
    with open(os.path.join(work_dir, "scalars.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if r.get("kind") == "train"][-1]


@pytest.mark.slow
def test_every_method_trains_sweeps_and_reports(tmp_path):
    root = make_toy_root(str(tmp_path), image_size=64, num_train=160, num_val=32)
    work = tmp_path / "work"
    previous = str(work / "none" / "checkpoints" / "iter_30.pth")
    for method, (name, extra, terms) in METHODS.items():
        config = tmp_path / f"{method}.py"
        text = f"_base_ = [{os.path.join(CONFIGS, name)!r}]\n" + COMMON.format(root=root)
        config.write_text(text + textwrap.dedent(extra.format(previous=previous)) + "\n")
        work_dir = str(work / method)
        cfg = load_config(str(config))
        cfg.work_dir = work_dir
        with single_thread():
            run_training(cfg, work_dir, init_distributed("none", "cpu"))
        log = _train_log(work_dir)
        assert math.isfinite(log["loss"]), (method, log)
        missing = [t for t in terms if t not in log]
        assert not missing, f"{method}: terms {missing} not logged ({sorted(log)})"
        ckpt = os.path.join(work_dir, "checkpoints", "iter_30.pth")
        thresholds = [0.1 * i for i in range(1, 10)]
        with single_thread():
            model = init_model(cfg, ckpt, "cpu")
            train_set = build_dataset(cfg.data, "train", train=False, with_labels=True)
            sweep = sweep_checkpoint(model, train_set, thresholds, max_images=32)
        rows = sweep_rows({ckpt: sweep})
        assert len(rows) == 9
        best = best_row(rows)
        assert 0.0 < float(best["miou"]) <= 1.0
        run_tool(
            "eval_pseudo",
            [str(config), ckpt, "--split", "val", "--rows", "cam", "--device", "cpu",
             "--out-dir", os.path.join(work_dir, "pseudo"),
             "--cfg-options", f"model.pseudo.threshold={best['threshold']}"],
        )  # fmt: skip
        with open(os.path.join(work_dir, "pseudo", "cam", "metrics.json")) as f:
            record = json.load(f)
        expected = "CAMClassifier" + ("" if method == "none" else f" + {method}")
        assert record["model"] == expected
        assert 0.0 < record["miou"] <= 1.0

    report = tmp_path / "report.md"
    run_tool("report", [str(work), "--out", str(report)])
    table = report.read_text().split("\nSources:")[0]
    assert "| CAMClassifier: CAM, background threshold |" in table
    for method in METHODS:
        if method != "none":
            assert f"| CAMClassifier + {method}: CAM, background threshold |" in table, method
