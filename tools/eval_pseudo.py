"""Pseudo-label quality on a split, with the ablation rows of the paper (spec §3-§5).

WeCLIP's rows (``--rows``, default all; ``<row>_crf`` rows are added with ``--crf``)::

    cam          initial Grad-CAMs (spec §3), bilinearly resized to the mask size, bg = (1 - max)^p, argmax
    cam_par      the same scores refined by PAR (spec §5.1) before the argmax
    static       static refinement: CLIP-ES affinity, mean of the last `static_layers` attention maps (§4.2)
    static_par   static refinement + PAR
    rfm          RFM: filtered CLIP attention x decoder affinity A_f (§4.3); needs CHECKPOINT (the decoder)
    rfm_par      RFM + PAR = WeCLIP's online pseudo-labels (what the model computes in validation)
    <row>_crf    the row's scores [bg; r_1..r_K] divided by their per-pixel sum, as probabilities into the
                 DenseCRF of spec §9 (``test.crf``), argmax

p = ``model.pseudo_label.bg_power`` (1 in WeCLIP; 2 gives CLIP-ES's raw-CAM evaluation). The image-level labels
come from the label file (``data.label_file``), never from the masks; the masks only score. The network sees
the image cropped to a multiple of the patch size (``--fit crop``, what the authors' patch convolution does;
``--fit resize``: resized to the nearest multiples); the refined CAMs and pseudo-labels are produced at the mask
size, PAR guided by the whole image (the authors' validation mode). Eval mode (Dropout2d off).

    python tools/eval_pseudo.py configs/voc.py work_dirs/voc/checkpoints/iter_30000.pth --split train
    python tools/eval_pseudo.py configs/voc.py --split train --rows cam,static,static_par     # no checkpoint
    python tools/eval_pseudo.py configs/voc.py CKPT --split train_aug --rows rfm_par --export-dir data/pl

Outputs: ``OUT_DIR/<row>/metrics.json`` (OUT_DIR = ``--out-dir``, default ``WORK_DIR/pseudo/<checkpoint>_<split>``
or ``work_dirs/<config>/pseudo/<split>_no_checkpoint``), a summary table, and with ``--export-dir`` the
pseudo-labels as VOC-palette PNGs ``DIR/<row>/<name>.png`` (``--export-rows`` picks rows; default all).
``--launcher pytorch`` (``tools/dist_test.sh``) shards the images over ranks and sums the confusion matrices.
"""

import argparse
import logging
import os
from typing import Any, Dict, List, Optional

from mmengine import dist as mmdist

from weclip.apis import init_model
from weclip.config import dump_config, load_config, resolve_work_dir
from weclip.data import build_dataset
from weclip.engine.checkpoint import checkpoint_work_dir
from weclip.errors import UserInputError
from weclip.evaluation.evaluators import CRFEvaluator, PNGWriter, SegmentationEvaluator
from weclip.evaluation.loop import run_on_dataset
from weclip.evaluation.metrics import metrics_payload, write_metrics_json
from weclip.evaluation.predictors import PseudoLabelRows, parse_rows
from weclip.evaluation.records import pseudo_extras
from weclip.utils.cli import add_runtime_args, run_main
from weclip.utils.dist import cleanup, init_distributed
from weclip.utils.logging import add_log_file

logger = logging.getLogger("weclip")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Pseudo-label quality (mIoU) with the paper's ablation rows (spec §3-§5)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("config", help="config file, e.g. configs/voc.py")
    parser.add_argument("checkpoint", nargs="?", default=None, help="checkpoint (RFM rows need it)")
    parser.add_argument("--split", default="train", help="split list name (default: train)")
    parser.add_argument("--rows", default=None, help="comma list of rows (default: all)")
    parser.add_argument("--crf", action="store_true", help="add the <row>_crf rows")
    parser.add_argument(
        "--crf-workers", "--workers", dest="crf_workers", type=int, default=0,
        help="DenseCRF processes (0: CRF inline)",
    )  # fmt: skip
    parser.add_argument(
        "--fit", choices=("crop", "resize"), default="crop", help="patch-multiple rule"
    )
    parser.add_argument(
        "--export-dir", default=None, help="pseudo-labels as PNGs: DIR/<row>/<name>.png"
    )
    parser.add_argument("--export-rows", default=None, help="rows to export (default: every row)")
    parser.add_argument("--out-dir", default=None, help="where <row>/metrics.json go")
    parser.add_argument("--max-images", type=int, default=None, help="only the first N images")
    parser.add_argument("--data-workers", type=int, default=0, help="data-loading processes")
    add_runtime_args(parser, cfg_options_help="override existing config keys")
    args = parser.parse_args(argv)
    if args.crf_workers < 0 or args.data_workers < 0:
        parser.error("--crf-workers and --data-workers must be >= 0")
    if args.max_images is not None and args.max_images < 1:
        parser.error("--max-images must be >= 1")
    return args


def select_rows(args: argparse.Namespace, model: Any) -> List[str]:
    """Rows to evaluate; rows that need trained weights are dropped (with a message) without a checkpoint."""
    if not hasattr(model, "pseudo_rows"):
        raise UserInputError(f"model type {type(model).__name__} has no pseudo-label rows")
    try:
        rows = parse_rows(args.rows, args.crf, list(model.pseudo_rows))
    except ValueError as err:
        raise UserInputError(f"--rows: {err}") from None
    if args.checkpoint is None:
        trained = set(getattr(model, "trained_rows", ()))
        dropped = [r for r in rows if r.removesuffix("_crf") in trained]
        if dropped:
            msg = (
                f"skipping {', '.join(dropped)}: these rows need the trained model; pass CHECKPOINT"
            )
            logger.warning(msg)
            print(f"eval_pseudo: {msg}")
        rows = [r for r in rows if r not in dropped]
    if not rows:
        raise UserInputError("no row left to evaluate")
    return rows


def build_evaluators(args: argparse.Namespace, cfg: Any, rows: List[str], with_mask: bool) -> list:
    """A confusion matrix per row (with masks), a PNG writer per exported row, CRF for ``_crf`` rows."""
    try:
        export = parse_rows(args.export_rows, False, rows) if args.export_rows else list(rows)
    except ValueError as err:
        raise UserInputError(f"--export-rows: {err}") from None
    if args.export_rows and any(r not in rows for r in export):
        raise UserInputError(
            f"--export-rows {export} are not all evaluated (rows: {', '.join(rows)})"
        )
    evaluators = []
    for row in rows:
        sinks = [SegmentationEvaluator(row, cfg.data.num_classes, key=row)] if with_mask else []
        if args.export_dir and row in export:
            sinks.append(PNGWriter(os.path.join(args.export_dir, row), key=row))
        if row.endswith("_crf"):
            base = row.removesuffix("_crf")
            evaluators.append(
                CRFEvaluator(
                    cfg.test.crf, args.crf_workers, f"{base}/logits", row, sinks, f"{base}/keys"
                )
            )
        else:
            evaluators.extend(sinks)
    return evaluators


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    dist_info = init_distributed(args.launcher, args.device)
    try:
        cfg = load_config(args.config, args.cfg_options)
        if args.out_dir:
            out_dir = args.out_dir
        elif args.checkpoint:
            stem = os.path.splitext(os.path.basename(args.checkpoint))[0]
            out_dir = os.path.join(
                checkpoint_work_dir(args.checkpoint), "pseudo", f"{stem}_{args.split}"
            )
        else:
            out_dir = os.path.join(
                resolve_work_dir(cfg, args.config), "pseudo", f"{args.split}_no_checkpoint"
            )
        add_log_file(out_dir, rank=dist_info.rank)
        if dist_info.rank == 0:
            dump_config(cfg, out_dir)
        dataset = build_dataset(cfg.data, args.split, train=False, with_labels=True)
        if not dataset.with_mask and args.export_dir is None:
            raise UserInputError(
                f"split {args.split!r} has no masks (data.mask_free_splits): nothing to score; "
                "use --export-dir to only export pseudo-labels"
            )
        model = init_model(cfg, args.checkpoint, dist_info.device)
        rows = select_rows(args, model)
        logger.info("rows %s on %s %s -> %s", ", ".join(rows), cfg.data.name, args.split, out_dir)
        run = run_on_dataset(
            PseudoLabelRows(model, rows, fit=args.fit),
            dataset,
            build_evaluators(args, cfg, rows, dataset.with_mask),
            max_images=args.max_images,
            data_workers=args.data_workers,
            desc="pseudo",
        )
        payloads: Dict[str, Dict[str, Any]] = {}
        if dist_info.rank == 0 and dataset.with_mask:
            titles = model.pseudo_rows
            for row in rows:
                base = row.removesuffix("_crf")
                title = titles[base] + (" + CRF" if row != base else "")
                extras = pseudo_extras(
                    row=row, row_title=title, cfg=cfg, split=args.split, fit=args.fit,
                    model_info=model.checkpoint_info, config_path=args.config,
                    cfg_options=args.cfg_options, world_size=dist_info.world_size,
                    bg_power=cfg.model.get("pseudo_label", {}).get("bg_power"),
                )  # fmt: skip
                payloads[row] = metrics_payload(
                    run["results"][row]["matrix"], cfg.data.class_names, extras
                )
                write_metrics_json(os.path.join(out_dir, row, "metrics.json"), payloads[row])
            width = max(len(p["row_title"]) for p in payloads.values())
            print(f"Pseudo-labels on {cfg.data.name} {args.split} ({run['num_images']} images)")
            print(f"{'row':<{width}}  {'mIoU':>6}  {'pix acc':>7}")
            for payload in payloads.values():
                miou, acc = (100 * (payload[k] or 0.0) for k in ("miou", "pixel_acc"))
                print(f"{payload['row_title']:<{width}}  {miou:6.2f}  {acc:7.2f}")
        mmdist.barrier()
        return payloads
    finally:
        cleanup()


if __name__ == "__main__":
    run_main(main)
