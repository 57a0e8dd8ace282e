"""The CNN baselines end to end on the toy world, beside WeCLIP, in one command (CPU, minutes).

Every step is an ordinary tool run, printed before it starts (run them yourself to explore), with the
stage configs of CONFIG_DIR (``configs/baselines``: toy_cam.py, toy_affinitynet.py, toy_segnet.py,
toy_segnet_gt.py, toy_weclip.py):

 1. make the toy dataset if missing                          tools/make_toy_data.py
 2. train the CAM classifier                                 tools/train.py toy_cam.py
 3. sweep background thresholds x its checkpoints (train)    tools/sweep_cams.py -> best (t, checkpoint)
 4. CAM pseudo-labels, threshold and region growing (train)  tools/eval_pseudo.py --rows cam,cam_rg
 5. train AffinityNet on the best checkpoint's CAMs          tools/train.py toy_affinitynet.py
    (the random walk's background: the config's, not the sweep's threshold)
 6. random-walk pseudo-labels, exported as masks (train)     tools/eval_pseudo.py --rows rw --export-dir
 7. train the second stage on them                           tools/train.py toy_segnet.py
 8. train the fully supervised upper bound (ground truth)    tools/train.py toy_segnet_gt.py
 9. train WeCLIP; its pseudo-label rows (train)              tools/train.py, tools/eval_pseudo.py
10. segment the val split with each model                    tools/infer.py
11. the table                                                tools/report.py WORK_DIR --out WORK_DIR/report.md

    python tools/baseline_pipeline.py configs/baselines
    python tools/baseline_pipeline.py configs/baselines --work-dir work_dirs/baselines_s2 \\
        --cfg-options train.seed=2

Resumable: training steps continue from their last checkpoint (``--resume auto``; a finished run does
nothing) and evaluation steps whose outputs exist are skipped, so an interrupted run is restarted with
the same command. ``--cfg-options`` go to every tool (keys every config has: ``data.*``, ``train.*``,
``toy.*``). Pseudo-labels are scored on the training split (where they are used), segmentation on val.
"""

import argparse
import csv
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional

from weclip.baselines.cam import best_row
from weclip.config import load_config
from weclip.engine.checkpoint import find_latest_checkpoint
from weclip.errors import MissingFileError
from weclip.utils.cli import run_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = {
    "cam": "toy_cam.py",
    "affinity": "toy_affinitynet.py",
    "segnet": "toy_segnet.py",
    "segnet_gt": "toy_segnet_gt.py",
    "weclip": "toy_weclip.py",
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("config_dir", help="folder of the stage configs, e.g. configs/baselines")
    parser.add_argument("--work-dir", default="work_dirs/baselines", help="one folder per stage")
    parser.add_argument("--thresholds", default="0.1:0.9:0.05", help="the sweep's thresholds")
    parser.add_argument("--pseudo-split", default="train", help="split of the pseudo-label rows")
    parser.add_argument("--split", default="val", help="split of the segmentation rows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per tool process")
    parser.add_argument(
        "--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="passed to every tool"
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of user errors")
    return parser.parse_args(argv)


class Runner:
    """Runs tools from the repository root with ``threads`` torch threads; stops at the first failure."""

    def __init__(self, threads: int, options: List[str]) -> None:
        self.env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.threads = threads
        self.options = options

    def tool(
        self, name: str, *args: str, options: Optional[List[str]] = None, common: bool = True
    ) -> None:
        """Run ``tools/<name>.py ARGS`` (with ``--cfg-options``: the common ones when ``common``, then
        ``options``)."""
        opts = (self.options if common else []) + (options or [])
        cmd = [sys.executable, f"tools/{name}.py", *args] + (
            ["--cfg-options", *opts] if opts else []
        )
        print(f"\n$ OMP_NUM_THREADS={self.threads} " + " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, cwd=REPO, env=self.env)
        if proc.returncode != 0:
            raise SystemExit(
                f"error: pipeline step failed (exit {proc.returncode}): {' '.join(cmd)}"
            )

    def train(self, config: str, work_dir: str, options: Optional[List[str]] = None) -> str:
        """Train (or resume, or find finished) and return the last checkpoint."""
        self.tool("train", config, "--device", "cpu", "--work-dir", work_dir, "--resume", "auto",
                  options=options)  # fmt: skip
        checkpoint = find_latest_checkpoint(work_dir)
        if checkpoint is None:
            raise SystemExit(f"error: training wrote no checkpoint under {work_dir}/checkpoints")
        return checkpoint

    def unless(self, done: str, name: str, *args: str, options: Optional[List[str]] = None) -> None:
        """Run the tool unless its output ``done`` exists (then say so)."""
        if os.path.exists(done):
            print(f"\n(skipped: {os.path.relpath(done, REPO)} exists) tools/{name}.py {args[0]}")
            return
        self.tool(name, *args, options=options)


def read_best(csv_path: str) -> Dict[str, object]:
    """The best (threshold, checkpoint) row of a sweep CSV."""
    with open(csv_path, newline="") as f:
        return dict(best_row(list(csv.DictReader(f))))


def main(argv: Optional[List[str]] = None) -> Dict[str, str]:
    args = parse_args(argv)
    configs = {k: os.path.abspath(os.path.join(args.config_dir, v)) for k, v in STAGES.items()}
    missing = [p for p in configs.values() if not os.path.isfile(p)]
    if missing:
        raise MissingFileError(f"{args.config_dir}: stage config(s) missing: {', '.join(missing)}")
    work = os.path.abspath(args.work_dir)
    dirs = {k: os.path.join(work, k) for k in STAGES}
    run = Runner(args.threads, list(args.cfg_options))
    overrides = dict(item.split("=", 1) for item in args.cfg_options if "=" in item)
    data_root = overrides.get("data.root") or load_config(configs["cam"]).data.root
    cpu, ps = ["--device", "cpu"], ["--split", args.pseudo_split]
    start = time.time()

    run.tool("make_toy_data", configs["cam"], "--root", data_root, common=False)  # 1
    run.train(configs["cam"], dirs["cam"])  # 2
    sweep_csv = os.path.join(dirs["cam"], f"sweep_{args.pseudo_split}.csv")  # 3
    checkpoints = sorted(
        (os.path.join(dirs["cam"], "checkpoints", n)
         for n in os.listdir(os.path.join(dirs["cam"], "checkpoints")) if n.endswith(".pth")),
        key=lambda p: int(os.path.basename(p)[len("iter_"): -len(".pth")]),
    )  # fmt: skip
    run.unless(sweep_csv, "sweep_cams", configs["cam"], *checkpoints, *ps, *cpu,
               "--thresholds", args.thresholds, "--out", sweep_csv)  # fmt: skip
    best = read_best(sweep_csv)
    cam_ckpt, cam_opts = str(best["checkpoint"]), [f"model.pseudo.threshold={best['threshold']}"]
    print(f"\nbest CAM threshold {float(best['threshold']):.2f} at {cam_ckpt}")
    pseudo = {k: os.path.join(dirs[k], "pseudo") for k in ("cam", "affinity", "weclip")}
    run.unless(os.path.join(pseudo["cam"], "cam_rg", "metrics.json"), "eval_pseudo",  # 4
               configs["cam"], cam_ckpt, *ps, *cpu, "--rows", "cam,cam_rg",
               "--out-dir", pseudo["cam"], options=cam_opts)  # fmt: skip

    aff_opts = [f"model.cam_checkpoint={cam_ckpt}"]
    aff_ckpt = run.train(configs["affinity"], dirs["affinity"], aff_opts)  # 5
    masks = os.path.join(work, "pseudo_masks")
    run.unless(os.path.join(pseudo["affinity"], "rw", "metrics.json"), "eval_pseudo",  # 6
               configs["affinity"], aff_ckpt, *ps, *cpu, "--rows", "rw", "--export-dir", masks,
               "--out-dir", pseudo["affinity"], options=aff_opts)  # fmt: skip

    seg_opts = [f"data.train_mask_dir={os.path.join(masks, 'rw')}"]
    seg_ckpt = run.train(configs["segnet"], dirs["segnet"], seg_opts)  # 7
    gt_ckpt = run.train(configs["segnet_gt"], dirs["segnet_gt"])  # 8
    weclip_ckpt = run.train(configs["weclip"], dirs["weclip"])  # 9
    run.unless(os.path.join(pseudo["weclip"], "rfm_par", "metrics.json"), "eval_pseudo",
               configs["weclip"], weclip_ckpt, *ps, *cpu, "--rows", "cam,rfm_par",
               "--out-dir", pseudo["weclip"])  # fmt: skip

    models = {
        "cam": (cam_ckpt, cam_opts), "affinity": (aff_ckpt, aff_opts), "segnet": (seg_ckpt, seg_opts),
        "segnet_gt": (gt_ckpt, []), "weclip": (weclip_ckpt, []),
    }  # fmt: skip
    for stage, (checkpoint, opts) in models.items():  # 10
        out_dir = os.path.join(dirs[stage], "infer")
        run.unless(os.path.join(out_dir, "metrics.json"), "infer", configs[stage], checkpoint,
                   "--split", args.split, *cpu, "--out-dir", out_dir, options=opts)  # fmt: skip

    report = os.path.join(work, "report.md")  # 11
    cmd = [sys.executable, "tools/report.py", work, "--out", report]
    print("\n$ " + " ".join(cmd), flush=True)
    if subprocess.run(cmd, cwd=REPO, env=run.env).returncode != 0:
        raise SystemExit("error: tools/report.py failed")
    with open(report, encoding="utf-8") as f:
        print("\n" + f.read().split("\nSources:")[0])
    print(f"done in {(time.time() - start) / 60:.1f} min; report: {report}")
    return {"report": report, "work_dir": work, **{k: v[0] for k, v in models.items()}}


if __name__ == "__main__":
    run_main(main)
