"""Sweep the CAM background threshold over checkpoints: thresholds x checkpoints -> mIoU table and CSV.

The CAM rule labels a pixel argmax(t, CAMs of the image's classes) (``weclip.baselines.cam``); t and the
checkpoint are picked together on a split with masks (by default ``train``, where the pseudo-labels are
used, as IRN and AffinityNet tune it). One pass over the images per checkpoint scores every threshold
(``weclip.baselines.sweep``); the CAMs are the model's ``model.pseudo`` setting (scales, flip).

    python tools/sweep_cams.py configs/baselines/toy_cam.py work_dirs/toy_cam/checkpoints/iter_*.pth
    python tools/sweep_cams.py configs/baselines/voc_cam.py CKPT1 CKPT2 --thresholds 0.05:0.5:0.05 \\
        --split train --max-images 2000

Outputs: the table (mIoU % per checkpoint and threshold) and the best pair on stdout, and
``--out`` (default ``WORK_DIR/sweep_<split>.csv``, WORK_DIR of the first checkpoint) with the columns
``checkpoint, threshold, miou, miou_gt_or_pred, pixel_acc, mean_acc, num_images``. Pass the best
threshold on as ``--cfg-options model.pseudo.threshold=T`` to tools/eval_pseudo.py and tools/infer.py.
"""

import argparse
import logging
import os
from typing import Any, Dict, List, Optional

from mmengine import dist as mmdist

from weclip.apis import init_model
from weclip.baselines.cam import best_row, format_sweep_table, sweep_rows, write_sweep_csv
from weclip.baselines.sweep import parse_thresholds, sweep_checkpoint
from weclip.config import load_config
from weclip.data import build_dataset
from weclip.engine.checkpoint import checkpoint_work_dir
from weclip.errors import UserInputError
from weclip.utils.cli import add_runtime_args, run_main
from weclip.utils.dist import cleanup, init_distributed
from weclip.utils.logging import add_log_file

logger = logging.getLogger("weclip")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="CAM background-threshold sweep: thresholds x checkpoints -> mIoU",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "config", help="config of a CAMClassifier, e.g. configs/baselines/toy_cam.py"
    )
    parser.add_argument("checkpoints", nargs="+", help="training checkpoints to sweep")
    parser.add_argument(
        "--thresholds",
        default="0.1:0.9:0.1",
        help="START:STOP:STEP or a comma list (default 0.1:0.9:0.1)",
    )
    parser.add_argument("--split", default="train", help="split with masks (default: train)")
    parser.add_argument("--max-images", type=int, default=None, help="only the first N images")
    parser.add_argument("--data-workers", type=int, default=0, help="data-loading processes")
    parser.add_argument(
        "--out", default=None, help="CSV path (default: WORK_DIR/sweep_<split>.csv)"
    )
    add_runtime_args(parser, cfg_options_help="override existing config keys")
    args = parser.parse_args(argv)
    try:
        args.threshold_values = parse_thresholds(args.thresholds)
    except ValueError as err:
        parser.error(f"--thresholds: {err}")
    if args.max_images is not None and args.max_images < 1:
        parser.error("--max-images must be >= 1")
    return args


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    dist_info = init_distributed(args.launcher, args.device)
    try:
        cfg = load_config(args.config, args.cfg_options)
        out = args.out or os.path.join(
            checkpoint_work_dir(args.checkpoints[0]), f"sweep_{args.split}.csv"
        )
        add_log_file(os.path.dirname(os.path.abspath(out)), rank=dist_info.rank)
        dataset = build_dataset(cfg.data, args.split, train=False, with_labels=True)
        if not dataset.with_mask:
            raise UserInputError(f"split {args.split!r} has no masks (data.mask_free_splits)")
        sweeps = {}
        for checkpoint in args.checkpoints:
            model = init_model(cfg, checkpoint, dist_info.device)
            if not hasattr(model, "cam_maps"):
                raise UserInputError(
                    f"{args.config}: model type {cfg.model.type} has no CAMs to sweep "
                    "(expected a CAMClassifier config)"
                )
            logger.info("sweeping %s on %s %s", checkpoint, cfg.data.name, args.split)
            sweeps[checkpoint] = sweep_checkpoint(
                model, dataset, args.threshold_values, max_images=args.max_images,
                data_workers=args.data_workers, ignore_index=cfg.data.ignore_index,
                desc=os.path.basename(checkpoint),
            )  # fmt: skip
        rows = sweep_rows(sweeps)
        best = best_row(rows)
        if dist_info.rank == 0:
            write_sweep_csv(out, rows)
            images = rows[0]["num_images"]
            print(f"CAM threshold sweep on {cfg.data.name} {args.split} ({images} images)")
            print(format_sweep_table(rows))
            print(
                f"best: threshold {best['threshold']:.2f}, mIoU {100 * float(best['miou']):.2f} "
                f"({best['checkpoint']})"
            )
            print(f"CSV: {out}")
        mmdist.barrier()
        return {"rows": rows, "best": best, "csv": out}
    finally:
        cleanup()


if __name__ == "__main__":
    run_main(main)
