"""Segmentation inference with a trained model: palette PNGs, mIoU, metrics.json (spec §9).

What one image goes through (``weclip.evaluation.predictors.SegmentationPredictor``, the authors'
``test_msc_flip_voc.py``): the long side is resized to ``test.resize_long`` (512), every scale of
``test.scales`` runs [x, flip(x)] through the model and averages the two (flip back), the raw logits are
averaged over the scales, resized bilinearly to the original image size and argmaxed. With ``--crf`` the merged
logits go to a DenseCRF worker pool instead (softmax at the original size, ``test.crf``) while the model works
on the next image. Defaults are the config's (VOC: scales 1.0 and 0.75, flip); ``--ms 1.0 --no-flip`` is plain
single-scale inference.

    python tools/infer.py configs/voc.py work_dirs/voc/checkpoints/iter_30000.pth         # MS+flip, val
    python tools/infer.py configs/voc.py CKPT --ms 1.0 --no-flip                          # single scale
    python tools/infer.py configs/voc.py CKPT --crf --crf-workers 8                       # + DenseCRF
    tools/dist_test.sh configs/voc.py CKPT 4 --crf --crf-workers 4                        # 4 GPUs
    python tools/infer.py configs/voc.py CKPT --split test --crf --crf-workers 8          # VOC test server

Outputs in OUT_DIR (``--out-dir``, default ``WORK_DIR/infer/<checkpoint>_<split>_<setting>``)::

    pred/<name>.png                  prediction of the requested setting, VOC palette (pixel value = class id)
    results/VOC2012/Segmentation/comp6_test_cls/<name>.png   instead of pred/ on splits without masks (VOC
                                     test): tar the results/ folder and upload it to the evaluation server
    metrics.json                     the requested setting (weclip.evaluation.records.INFER_EXTRAS)
    variants/<setting>/metrics.json  free by-products: "single-scale" (reference scale, un-flipped input: the
                                     authors' "segs" line) and, with --crf, the same merged logits without CRF
    logits/<name>.npz                with --save-logits: merged logits at the network's resolution, float16
    config.py, <timestamp>.log       resolved config and log

``--skip-existing`` reuses the PNGs of an interrupted run: they are read back and scored, the other images are
predicted (the by-products are then not written, their predictions being incomplete).
"""

import argparse
import logging
import os
import sys
from typing import Any, Dict, List, Optional

from mmengine import dist as mmdist

from weclip.apis import init_model
from weclip.config import dump_config, load_config
from weclip.data import build_dataset
from weclip.engine.checkpoint import checkpoint_work_dir
from weclip.evaluation.evaluators import (
    SERVER_DIR,
    CRFEvaluator,
    LogitsWriter,
    PNGWriter,
    SegmentationEvaluator,
)
from weclip.evaluation.loop import run_on_dataset
from weclip.evaluation.metrics import format_table, metrics_payload, write_metrics_json
from weclip.evaluation.predictors import SegmentationPredictor
from weclip.evaluation.records import infer_extras, setting_label, slug
from weclip.utils.cli import add_runtime_args, parse_scales, run_main
from weclip.utils.dist import cleanup, init_distributed
from weclip.utils.logging import add_log_file

logger = logging.getLogger("weclip")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Segmentation inference: predictions as PNGs, mIoU and metrics.json (spec §9)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("config", help="config file, e.g. configs/voc.py")
    parser.add_argument(
        "checkpoint", help="checkpoint (WORK_DIR/checkpoints/iter_N.pth, or the authors')"
    )
    parser.add_argument("--split", default=None, help="split list name (default: data.val_split)")
    parser.add_argument(
        "--ms", type=parse_scales, default=None, metavar="S1,S2",
        help="test scales, the first one is the reference size (default: test.scales)",
    )  # fmt: skip
    parser.add_argument("--no-flip", action="store_true", help="no flip averaging (test.flip)")
    parser.add_argument("--crf", action="store_true", help="DenseCRF (test.crf parameters)")
    parser.add_argument(
        "--crf-workers", "--workers", dest="crf_workers", type=int, default=0,
        help="DenseCRF processes (0: CRF inline)",
    )  # fmt: skip
    parser.add_argument("--data-workers", type=int, default=0, help="data-loading processes")
    parser.add_argument(
        "--out-dir", default=None, help="output folder (default: WORK_DIR/infer/...)"
    )
    parser.add_argument("--save-logits", action="store_true", help="write logits/<name>.npz")
    parser.add_argument(
        "--skip-existing", action="store_true", help="reuse and score existing PNGs"
    )
    parser.add_argument("--max-images", type=int, default=None, help="only the first N images")
    add_runtime_args(parser, cfg_options_help="override existing config keys, e.g. data.root=DIR")
    args = parser.parse_args(argv)
    if args.crf_workers < 0 or args.data_workers < 0:
        parser.error("--crf-workers and --data-workers must be >= 0")
    if args.max_images is not None and args.max_images < 1:
        parser.error("--max-images must be >= 1")
    return args


def build_evaluators(args: argparse.Namespace, cfg: Any, model: Any, out_dir: str, server: bool):
    """The requested setting's evaluators (PNG writer, confusion matrix, CRF) and the free by-products.

    Returns:
        tuple: (evaluators, settings {name: (scales, flip, crf)}, the PNG writer).
    """
    scales, flip = tuple(cfg.test.scales), bool(cfg.test.flip)
    label = setting_label(scales, flip, args.crf)
    writer = PNGWriter(os.path.join(out_dir, SERVER_DIR if server else "pred"))
    final = [writer] + ([] if server else [SegmentationEvaluator(label, model.num_classes)])
    settings = {label: (scales, flip, args.crf)}
    if args.crf:
        evaluators = [CRFEvaluator(cfg.test.crf, args.crf_workers, "logits", "labels", final)]
    else:
        evaluators = list(final)
    byproducts = {}  # free, scored only: the reference scale un-flipped; the logits without CRF
    if not server and scales[0] == 1.0:
        byproducts[setting_label((1.0,), False, False)] = ("single_labels", ((1.0,), False, False))
    if not server and args.crf:
        byproducts[setting_label(scales, flip, False)] = ("labels", (scales, flip, False))
    for name, (key, setting) in byproducts.items():
        if name not in settings:
            evaluators.append(SegmentationEvaluator(name, model.num_classes, key=key))
            settings[name] = setting
    if args.save_logits:
        evaluators.append(LogitsWriter(os.path.join(out_dir, "logits")))
    return evaluators, settings, writer


def write_results(
    run: Dict[str, Any], settings, args, cfg, split, model, out_dir
) -> Dict[str, Any]:
    """Rank 0: metrics.json of the requested setting and of the complete by-products; printed tables."""
    payloads: Dict[str, Any] = {}
    label = next(iter(settings))
    for name, (scales, flip, crf) in settings.items():
        result = run["results"].get(name)
        if result is None:
            continue
        if name != label and (run["reused"] or result["missing"]):
            logger.warning("%s: not written, %d images were reused from PNGs", name, run["reused"])
            continue
        extras = infer_extras(
            cfg=cfg, split=split, scales=scales, flip=flip, crf=crf,
            model_info=model.checkpoint_info, config_path=args.config,
            cfg_options=args.cfg_options, world_size=mmdist.get_world_size(),
        )  # fmt: skip
        payloads[name] = metrics_payload(result["matrix"], cfg.data.class_names, extras)
        folder = out_dir if name == label else os.path.join(out_dir, "variants", slug(name))
        write_metrics_json(os.path.join(folder, "metrics.json"), payloads[name])
    if label in payloads:
        title = f"{label} on {cfg.data.name} {split} ({args.checkpoint})"
        print(format_table(payloads[label], title=title))
        for name, payload in payloads.items():
            if name != label:
                print(f"  by-product {name:<24s} mIoU {100 * (payload['miou'] or 0):6.2f}")
    else:
        print(f"{run['num_images']} predictions in {out_dir}: split {split!r} has no masks")
        print(f"Evaluation-server layout: cd {out_dir} && tar -czf results.tgz results")
    return payloads


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    dist_info = init_distributed(args.launcher, args.device)
    try:
        options = dict(args.cfg_options)
        if args.ms is not None:
            options["test.scales"] = args.ms
        if args.no_flip:
            options["test.flip"] = False
        cfg = load_config(args.config, options)
        split = args.split or cfg.data.val_split
        label = setting_label(cfg.test.scales, cfg.test.flip, args.crf)
        out_dir = args.out_dir or os.path.join(
            checkpoint_work_dir(args.checkpoint), "infer",
            f"{os.path.splitext(os.path.basename(args.checkpoint))[0]}_{split}_{slug(label)}",
        )  # fmt: skip
        add_log_file(out_dir, rank=dist_info.rank)
        if dist_info.rank == 0:
            dump_config(cfg, out_dir)
            logger.info("Command: %s", " ".join(sys.argv))
        dataset = build_dataset(cfg.data, split, train=False)
        model = init_model(cfg, args.checkpoint, dist_info.device)
        server = not dataset.with_mask
        evaluators, settings, writer = build_evaluators(args, cfg, model, out_dir, server)
        predictor = SegmentationPredictor(
            model, scales=cfg.test.scales, flip=cfg.test.flip, resize_long=cfg.test.resize_long,
            single_scale=not server,
        )  # fmt: skip
        logger.info(
            "%s on %s %s (%d images), %d rank(s) -> %s",
            label, cfg.data.name, split, len(dataset), dist_info.world_size, out_dir,
        )  # fmt: skip
        run = run_on_dataset(
            predictor, dataset, evaluators, max_images=args.max_images,
            reuse=writer.existing if args.skip_existing else None,
            data_workers=args.data_workers, desc="infer",
        )  # fmt: skip
        logger.info(
            "%d images in %.1f s (%d reused)", run["num_images"], run["seconds"], run["reused"]
        )
        run["payloads"] = (
            write_results(run, settings, args, cfg, split, model, out_dir)
            if dist_info.rank == 0
            else {}
        )
        run["out_dir"] = out_dir
        mmdist.barrier()
        return run
    finally:
        cleanup()


if __name__ == "__main__":
    run_main(main)
