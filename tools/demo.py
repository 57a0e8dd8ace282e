"""The WeCLIP pipeline end to end on the synthetic toy world, on a CPU, in minutes.

A tiny CLIP (open_clip, trained once on the toy shapes and committed under weclip/assets/toy_clip/) stays
frozen; WeCLIP learns to segment the shapes from image-level labels only:

1. make the toy dataset if missing                    (tools/make_toy_data.py)
2. train WeCLIP on it                                 (tools/train.py configs/toy.py, resumes if interrupted)
3. score the initial CAMs and the online pseudo-labels (tools/eval_pseudo.py, rows `cam` and `rfm_par`)
4. infer with the decoder: single scale, MS+flip, +CRF (tools/infer.py --crf)
5. print the table and write WORK_DIR/summary.json with the keys
   cam_miou, pseudo_miou, decoder_miou, ms_flip_miou, ms_flip_crf_miou (mIoU in [0, 1], on toy val).

    python tools/demo.py                       # or: make demo
    python tools/demo.py --cfg-options train.max_iters=100 --work-dir work_dirs/demo_short

Every step is an ordinary tool run, printed before it starts; run them yourself to explore.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional

from mmengine.config import DictAction

from weclip.config import load_config
from weclip.engine.checkpoint import find_latest_checkpoint
from weclip.utils.cli import run_main
from weclip.utils.io import atomic_write_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SUMMARY_KEYS = ("cam_miou", "pseudo_miou", "decoder_miou", "ms_flip_miou", "ms_flip_crf_miou")
ROWS = (
    ("cam_miou", "initial CAM (Grad-CAM, bg = 1 - max)"),
    ("pseudo_miou", "online pseudo-labels (RFM + PAR)"),
    ("decoder_miou", "decoder, single scale"),
    ("ms_flip_miou", "decoder, MS + flip"),
    ("ms_flip_crf_miou", "decoder, MS + flip + CRF"),
)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "config", nargs="?", default="configs/toy.py", help="default: configs/toy.py"
    )
    parser.add_argument("--work-dir", default="work_dirs/demo")
    parser.add_argument("--split", default="val", help="toy split to evaluate on")
    parser.add_argument("--crf-workers", type=int, default=2, help="DenseCRF processes")
    parser.add_argument(
        "--max-images",
        type=int,
        default=None,
        help="evaluate on the first N images only (quick runs)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per tool process (OMP_NUM_THREADS); 1 is fastest for these tiny models on a "
        "small or busy CPU, where more threads mostly wait on each other",
    )
    parser.add_argument(
        "--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="passed to every tool"
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of user errors")
    return parser.parse_args(argv)


def parse_options(items: List[str]) -> Dict[str, object]:
    """``key=value`` strings as mmengine's DictAction parses them for the tools."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    return parser.parse_args(["--cfg-options", *items]).cfg_options if items else {}


def run(cmd: List[str], threads: int) -> None:
    """Run one tool from the repository root, streaming its output; stop the demo if it fails."""
    print(f"\n$ OMP_NUM_THREADS={threads} " + " ".join(cmd), flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"error: demo step failed (exit {proc.returncode}): {' '.join(cmd)}")


def read_miou(path: str) -> float:
    with open(path) as f:
        return float(json.load(f)["miou"])


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    args = parse_args(argv)
    py = sys.executable
    work_dir = (
        os.path.join(REPO, args.work_dir) if not os.path.isabs(args.work_dir) else args.work_dir
    )
    options = ["--cfg-options", *args.cfg_options] if args.cfg_options else []
    limit = ["--max-images", str(args.max_images)] if args.max_images else []
    cfg = load_config(args.config, parse_options(args.cfg_options))  # fails early on unknown keys
    start = time.time()

    # 1. data (skipped when complete), where the (possibly overridden) config looks for it
    run(
        [py, "tools/make_toy_data.py", args.config, "--root", cfg.data.root],
        args.threads,
    )

    # 2. training on CPU; `--resume auto` continues an interrupted demo and skips a finished one
    run(
        [
            py,
            "tools/train.py",
            args.config,
            "--device",
            "cpu",
            "--work-dir",
            work_dir,
            "--resume",
            "auto",
        ]
        + options,
        args.threads,
    )
    checkpoint = find_latest_checkpoint(work_dir)
    if checkpoint is None:
        raise SystemExit(f"error: demo: training wrote no checkpoint under {work_dir}/checkpoints")

    # 3. pseudo-label quality: initial CAMs and WeCLIP's online pseudo-labels (labels from the label file)
    pseudo_dir = os.path.join(work_dir, "pseudo")
    run(
        [
            py,
            "tools/eval_pseudo.py",
            args.config,
            checkpoint,
            "--split",
            args.split,
            "--rows",
            "cam,rfm_par",
            "--device",
            "cpu",
            "--out-dir",
            pseudo_dir,
        ]
        + limit
        + options,
        args.threads,
    )

    # 4. decoder inference: the config's scales + flip, with CRF; single scale and no-CRF come for free
    infer_dir = os.path.join(work_dir, "infer")
    run(
        [
            py,
            "tools/infer.py",
            args.config,
            checkpoint,
            "--split",
            args.split,
            "--crf",
            "--crf-workers",
            str(args.crf_workers),
            "--device",
            "cpu",
            "--out-dir",
            infer_dir,
        ]
        + limit
        + options,
        args.threads,
    )
    variants = {
        os.path.basename(os.path.dirname(p)): p
        for p in glob.glob(os.path.join(infer_dir, "variants", "*", "metrics.json"))
    }
    no_crf = [p for name, p in variants.items() if name != "single_scale"]
    if "single_scale" not in variants or len(no_crf) != 1:
        raise SystemExit(
            f"error: demo: unexpected inference outputs in {infer_dir}/variants: {sorted(variants)}"
        )

    summary = {
        "cam_miou": read_miou(os.path.join(pseudo_dir, "cam", "metrics.json")),
        "pseudo_miou": read_miou(os.path.join(pseudo_dir, "rfm_par", "metrics.json")),
        "decoder_miou": read_miou(variants["single_scale"]),
        "ms_flip_miou": read_miou(no_crf[0]),
        "ms_flip_crf_miou": read_miou(os.path.join(infer_dir, "metrics.json")),
    }
    elapsed = time.time() - start
    atomic_write_text(
        os.path.join(work_dir, "summary.json"),
        json.dumps(
            dict(
                summary,
                split=args.split,
                config=args.config,
                checkpoint=checkpoint,
                seconds=round(elapsed, 1),
            ),
            indent=2,
        )
        + "\n",
    )

    print(f"\nWeCLIP on the toy world ({args.split} split, mIoU):")
    for key, label in ROWS:
        print(f"  {label:<40s} {100 * summary[key]:5.1f}")
    print(f"done in {elapsed / 60:.1f} min; summary: {os.path.join(work_dir, 'summary.json')}")
    return summary


if __name__ == "__main__":
    run_main(main)
