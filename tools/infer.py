"""Segmentation inference with a trained WeCLIP decoder: palette PNGs, mIoU, metrics.json (spec §9).

What one image goes through (``weclip.engine.inference``, the authors' ``test_msc_flip_voc.py``): the long
side is resized to ``test.resize_long`` (512), every scale of ``test.scales`` runs [x, flip(x)] through CLIP +
decoder and averages the two (flip back), the raw logits are averaged over the scales, resized bilinearly to
the original image size and argmaxed. With ``--crf`` the merged logits go to a DenseCRF worker pool instead
(softmax at the original size, spec §9 parameters from ``test.crf``) while the model works on the next image.

Defaults are the config's: ``test.scales`` = (1.0, 0.75) and ``test.flip`` = True (the authors' setting).
``--ms 1.0 --no-flip`` is plain single-scale inference.

    # MS+flip on VOC val (the config's setting), 1 GPU
    python tools/infer.py configs/voc.py work_dirs/voc/checkpoints/iter_30000.pth
    # single scale, no flip
    python tools/infer.py configs/voc.py CKPT --ms 1.0 --no-flip
    # MS+flip+CRF, 8 CRF processes working while the GPU runs the next images
    python tools/infer.py configs/voc.py CKPT --crf --workers 8
    # 4 GPUs: images sharded over the ranks, confusion matrices summed
    torchrun --nproc_per_node=4 tools/infer.py configs/voc.py CKPT --launcher pytorch --crf --workers 4
    # VOC test: PNGs in the evaluation-server layout (no masks, no metrics)
    python tools/infer.py configs/voc.py CKPT --split test --crf --workers 8
    # COCO val
    torchrun --nproc_per_node=4 tools/infer.py configs/coco.py CKPT --launcher pytorch

Outputs in OUT_DIR (``--out-dir``, default ``WORK_DIR/infer/<checkpoint>_<split>_<setting>`` next to the
checkpoints folder)::

    pred/<name>.png                  prediction of the requested setting, VOC palette (pixel value = class id)
    results/VOC2012/Segmentation/comp6_test_cls/<name>.png   instead of pred/ on splits without masks (VOC
                                     test): tar the results/ folder and upload it to the evaluation server
    metrics.json                     the requested setting (schema: weclip.evaluation.metrics + METRIC_EXTRAS)
    variants/<setting>/metrics.json  by-products that cost nothing extra: "single-scale" (reference scale,
                                     un-flipped input: the authors' "segs" line) and, with --crf, the same
                                     merged logits without CRF
    logits/<name>.npz                with --save-logits: merged logits at the network's resolution, float16,
                                     plus the original size ("size"); never full-resolution float maps
    config.py, <timestamp>.log       resolved config and log

``--skip-existing`` reuses the PNGs of a previous, interrupted run: they are read back and scored, the other
images are predicted (the by-product variants are then not written, their predictions being incomplete).
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(TOOLS))  # the repository, for `weclip`
sys.path.insert(0, TOOLS)  # the tools' shared module

from _weclip_tools import (  # noqa: E402
    checkpoint_work_dir,
    dataset_name,
    load_model,
    read_label_png,
    save_label_png,
    shard_indices,
    slug,
)

from weclip.config import dump_config, load_config  # noqa: E402
from weclip.data import build_dataset, read_rgb  # noqa: E402
from weclip.engine.inference import predict_from_cfg  # noqa: E402
from weclip.evaluation.metrics import (  # noqa: E402
    ConfusionMatrix,
    format_table,
    metrics_payload,
    write_metrics_json,
)
from weclip.refine.crf import CRFPool  # noqa: E402
from weclip.utils.cli import add_runtime_args  # noqa: E402
from weclip.utils.dist import all_reduce_sum, barrier, cleanup, init_distributed  # noqa: E402
from weclip.utils.io import atomic_path  # noqa: E402
from weclip.utils.logging import setup_logger  # noqa: E402

logger = logging.getLogger("weclip")

# Keys tools/infer.py adds to the metrics.json payload of weclip.evaluation.metrics (a stable schema).
METRIC_EXTRAS = (
    "source",  # "tools/infer.py"
    "setting",  # "single-scale", "MS(1,0.75)+flip", "MS(1,0.75)+flip+CRF", ... (setting_label)
    "dataset",  # "VOC", "COCO", or the data root's folder name
    "split",
    "scales",  # list of floats; the first is the reference size
    "flip",
    "crf",
    "crf_params",  # test.crf when crf is true, else null
    "resize_long",
    "checkpoint",
    "iteration",  # training iteration of the checkpoint (null for a bare decoder state dict)
    "train_seed",  # train.seed stored in the checkpoint (runs differing only here are averaged by report.py)
    "config",
    "cfg_options",
    "world_size",
)
SERVER_DIR = os.path.join("results", "VOC2012", "Segmentation", "comp6_test_cls")


def parse_scales(text: str) -> Tuple[float, ...]:
    """``"1.0,0.75"`` -> (1.0, 0.75); positive numbers only."""
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--ms expects comma-separated numbers, got {text!r}"
        ) from None
    if not scales or any(s <= 0 for s in scales):
        raise argparse.ArgumentTypeError(f"--ms expects positive scales, got {text!r}")
    return scales


def setting_label(scales: Sequence[float], flip: bool, crf: bool) -> str:
    """The name of an inference setting, as it appears in metrics.json and in report tables.

    Args:
        scales (Sequence[float]): test scales (the first is the reference).
        flip (bool): flip averaging.
        crf (bool): DenseCRF post-processing.

    Returns:
        str: "single-scale" for (1.0,) without flip, "single-scale+flip", "MS(1,0.75)+flip", and "+CRF" when
        ``crf``.
    """
    scales = [float(s) for s in scales]
    base = "single-scale" if scales == [1.0] else "MS(" + ",".join(f"{s:g}" for s in scales) + ")"
    return base + ("+flip" if flip else "") + ("+CRF" if crf else "")


def prediction_path(out_dir: str, name: str, server_layout: bool) -> str:
    """Where the PNG of ``name`` goes: ``pred/`` or the VOC evaluation-server layout."""
    folder = SERVER_DIR if server_layout else "pred"
    return os.path.join(out_dir, folder, name + ".png")


def save_logits(path: str, logits: torch.Tensor, size: Tuple[int, int]) -> None:
    """Write merged logits compactly: float16 at the network's resolution plus the original size.

    Args:
        path (str): ``.npz`` file.
        logits (torch.Tensor): Cxhxw.
        size (Tuple[int, int]): original (H, W); ``weclip.refine.crf.crf_from_logits`` resizes to it.
    """
    with atomic_path(path) as tmp:
        np.savez_compressed(
            tmp,
            logits=logits.detach().cpu().to(torch.float16).numpy(),
            size=np.asarray(size, dtype=np.int64),
        )


def load_logits(path: str) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Read a file of :func:`save_logits`: (Cxhxw float32 logits, (H, W))."""
    try:
        with np.load(path) as data:
            logits, size = data["logits"], data["size"]
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path}: not a logits file of tools/infer.py ({err})") from err
    return torch.from_numpy(logits.astype(np.float32)), (int(size[0]), int(size[1]))


@dataclasses.dataclass
class InferOptions:
    """What :func:`run_inference` does (the command-line flags)."""

    out_dir: str
    scales: Tuple[float, ...]
    flip: bool
    resize_long: Optional[int]
    crf: bool = False
    crf_params: Optional[Mapping[str, Any]] = None
    workers: int = 0
    save_logits: bool = False
    skip_existing: bool = False
    max_images: Optional[int] = None
    data_workers: int = 0
    show_progress: bool = True


Setting = Tuple[Tuple[float, ...], bool, bool]  # (scales, flip, crf)


def computed_settings(opts: InferOptions) -> Dict[str, Setting]:
    """The requested setting first, then the by-products that cost nothing extra (scored with ground truth):
    "single-scale" (reference scale 1.0, un-flipped input) and, with CRF, the merged logits without CRF.

    Returns:
        Dict[str, Setting]: setting label -> (scales, flip, crf).
    """
    scales = tuple(float(s) for s in opts.scales)
    out: Dict[str, Setting] = {
        setting_label(scales, opts.flip, opts.crf): (scales, bool(opts.flip), opts.crf)
    }
    if scales[0] == 1.0:
        out.setdefault(setting_label((1.0,), False, False), ((1.0,), False, False))
    if opts.crf:
        out.setdefault(setting_label(scales, opts.flip, False), (scales, bool(opts.flip), False))
    return out


def run_inference(
    model: torch.nn.Module,
    dataset: Any,
    opts: InferOptions,
    rank: int = 0,
    world_size: int = 1,
) -> Dict[str, Any]:
    """Predict this rank's share of ``dataset``, write PNGs (and logits), sum the confusion matrices.

    Every rank must call it (the matrices are all-reduced at the end). Nothing full-resolution is kept
    beyond the image in flight and the CRF jobs in flight (bounded by the pool).

    Args:
        model (nn.Module): ``WeCLIP`` in eval mode (only ``seg_logits`` of the label-free forward is used).
        dataset: an evaluation dataset (``build_dataset(..., train=False)``); items ``image``, ``name`` and,
            with ground truth, ``mask``.
        opts (InferOptions): settings.
        rank (int): this process's rank.
        world_size (int): number of ranks.

    Returns:
        dict: ``label`` (requested setting), ``settings`` (:func:`computed_settings`), ``matrices``
        {setting: ConfusionMatrix} (empty without ground truth; all-reduced), ``num_images`` (over all
        ranks), ``skipped`` (reused PNGs, over all ranks), ``seconds`` (this rank's loop time),
        ``server_layout`` (True on a split without masks).
    """
    device = next(model.parameters()).device
    patch = int(model.backbone.patch_size)
    num_classes = int(model.num_classes)
    test_cfg = dict(scales=tuple(opts.scales), flip=bool(opts.flip), resize_long=opts.resize_long)
    label = setting_label(opts.scales, opts.flip, opts.crf)
    has_gt = bool(getattr(dataset, "with_mask", True))
    server_layout = not has_gt
    total = len(dataset) if opts.max_images is None else min(int(opts.max_images), len(dataset))
    indices = shard_indices(total, rank, world_size)
    loader = DataLoader(
        Subset(dataset, indices), batch_size=None, shuffle=False, num_workers=opts.data_workers
    )

    settings = computed_settings(opts)
    single_label = setting_label((1.0,), False, False)
    matrices: Dict[str, ConfusionMatrix] = {}
    if has_gt:
        for key in settings:
            matrices[key] = ConfusionMatrix(num_classes, int(getattr(dataset, "ignore_index", 255)))
    waiting: Dict[str, Optional[torch.Tensor]] = {}  # CRF jobs in flight: name -> mask

    def finish(name: str, labels: Any, mask: Optional[torch.Tensor]) -> None:
        save_label_png(prediction_path(opts.out_dir, name, server_layout), labels)
        if mask is not None:
            matrices[label].update(labels, mask, name=name)

    def logits_fn(x: torch.Tensor) -> torch.Tensor:
        return model(x)["seg_logits"]

    pool = CRFPool(opts.crf_params, num_workers=opts.workers) if opts.crf else None
    skipped = 0
    start = time.perf_counter()
    try:
        with torch.no_grad():
            progress = tqdm(loader, desc="infer", disable=not (opts.show_progress and rank == 0))
            for item in progress:
                name = item["name"]
                image = item["image"]
                size = (int(image.shape[-2]), int(image.shape[-1]))
                mask = item.get("mask")
                if opts.skip_existing:
                    old = read_label_png(prediction_path(opts.out_dir, name, server_layout), size)
                    if old is not None:
                        skipped += 1
                        if mask is not None:
                            matrices[label].update(old, mask, name=name)
                        continue
                out = predict_from_cfg(
                    logits_fn, image[None].to(device), test_cfg, patch, out_size=size
                )
                if opts.save_logits:
                    save_logits(
                        os.path.join(opts.out_dir, "logits", name + ".npz"), out.msc_logits[0], size
                    )
                if mask is not None:
                    for key in settings:
                        if key == label:
                            continue  # scored in finish(), after the CRF when there is one
                        if key == single_label:
                            single = F.interpolate(
                                out.single_logits, size=size, mode="bilinear", align_corners=False
                            )
                            matrices[key].update(single.argmax(dim=1)[0], mask, name=name)
                        else:  # the same merged logits without CRF
                            matrices[key].update(out.labels[0], mask, name=name)
                if pool is None:
                    finish(name, out.labels[0].cpu().numpy(), mask)
                    continue
                waiting[name] = mask
                # the original pixels, for the bilateral term
                rgb = read_rgb(dataset.image_path(name))
                pool.submit(name, rgb, out.msc_logits[0])
                for done, labels in pool.collect():
                    finish(done, labels, waiting.pop(done))
            if pool is not None:
                for done, labels in pool.finish():
                    finish(done, labels, waiting.pop(done))
    finally:
        if pool is not None:
            pool.close()
    seconds = time.perf_counter() - start

    for cm in matrices.values():
        cm.all_reduce()
    counts = all_reduce_sum(torch.tensor([len(indices), skipped], dtype=torch.int64, device=device))
    return {
        "label": label,
        "settings": settings,
        "matrices": matrices,
        "num_images": int(counts[0]),
        "skipped": int(counts[1]),
        "seconds": seconds,
        "server_layout": server_layout,
    }


def metric_extras(
    *,
    label: str,
    cfg: Any,
    split: str,
    scales: Sequence[float],
    flip: bool,
    crf: bool,
    model_info: Mapping[str, Any],
    config_path: str,
    cfg_options: Mapping[str, Any],
    world_size: int,
) -> Dict[str, Any]:
    """The ``METRIC_EXTRAS`` of one setting (JSON-ready)."""
    extras = {
        "source": "tools/infer.py",
        "setting": label,
        "dataset": dataset_name(cfg.data),
        "split": split,
        "scales": [float(s) for s in scales],
        "flip": bool(flip),
        "crf": bool(crf),
        "crf_params": dict(cfg.test.crf) if crf else None,
        "resize_long": cfg.test.resize_long,
        "checkpoint": model_info.get("checkpoint"),
        "iteration": model_info.get("iteration"),
        "train_seed": model_info.get("train_seed"),
        "config": config_path,
        "cfg_options": json.loads(json.dumps(dict(cfg_options), default=str)),
        "world_size": int(world_size),
    }
    assert tuple(extras) == METRIC_EXTRAS
    return extras


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="WeCLIP inference: predictions as PNGs, mIoU and metrics.json (spec §9)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("config", help="config file, e.g. configs/voc.py")
    parser.add_argument("checkpoint", help="training checkpoint (WORK_DIR/checkpoints/iter_N.pth)")
    parser.add_argument(
        "--split", default=None, help="split list name (default: data.val_split): val|test|train"
    )
    parser.add_argument(
        "--ms",
        type=parse_scales,
        default=None,
        metavar="S1,S2",
        help="test scales, the first one is the reference size (default: test.scales, 1.0,0.75)",
    )
    parser.add_argument(
        "--no-flip", action="store_true", help="no flip averaging (default: test.flip)"
    )
    parser.add_argument(
        "--crf", action="store_true", help="DenseCRF post-processing (test.crf parameters)"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="CRF worker processes (0: CRF inline)"
    )
    parser.add_argument("--data-workers", type=int, default=0, help="data-loading processes")
    parser.add_argument(
        "--out-dir", default=None, help="output folder (default: WORK_DIR/infer/...)"
    )
    parser.add_argument(
        "--save-logits", action="store_true", help="write logits/<name>.npz (float16, 1/16 size)"
    )
    parser.add_argument(
        "--skip-existing", action="store_true", help="reuse (read back and score) existing PNGs"
    )
    parser.add_argument(
        "--max-images", type=int, default=None, help="only the first N images of the split"
    )
    add_runtime_args(
        parser,
        cfg_options_help="override existing config keys, e.g. data.root=/data/VOC2012 "
        "test.resize_long=512",
    )
    args = parser.parse_args(argv)
    if args.workers < 0 or args.data_workers < 0:
        parser.error("--workers and --data-workers must be >= 0")
    if args.max_images is not None and args.max_images < 1:
        parser.error("--max-images must be >= 1")
    return args


def default_out_dir(checkpoint: str, split: str, label: str) -> str:
    """``WORK_DIR/infer/<checkpoint stem>_<split>_<setting>``."""
    stem = os.path.splitext(os.path.basename(checkpoint))[0]
    return os.path.join(checkpoint_work_dir(checkpoint), "infer", f"{stem}_{split}_{slug(label)}")


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    dist_info = init_distributed(args.launcher, args.device)
    try:
        cfg = load_config(args.config, args.cfg_options)
        if args.ms is not None:
            cfg.test.scales = args.ms
        if args.no_flip:
            cfg.test.flip = False
        scales = tuple(float(s) for s in cfg.test.scales)
        flip = bool(cfg.test.flip)
        split = args.split or cfg.data.val_split
        label = setting_label(scales, flip, args.crf)
        out_dir = args.out_dir or default_out_dir(args.checkpoint, split, label)
        setup_logger(out_dir, rank=dist_info.rank)
        if dist_info.rank == 0:
            dump_config(cfg, out_dir)
            logger.info("Command: %s", " ".join(sys.argv))
        dataset = build_dataset(cfg.data, split, train=False)
        model, info = load_model(cfg, args.checkpoint, dist_info.device)
        logger.info(
            "%s on %s %s (%d images%s), %d rank(s) -> %s",
            label,
            dataset_name(cfg.data),
            split,
            len(dataset),
            f", first {args.max_images}" if args.max_images else "",
            dist_info.world_size,
            out_dir,
        )
        opts = InferOptions(
            out_dir=out_dir,
            scales=scales,
            flip=flip,
            resize_long=cfg.test.resize_long,
            crf=args.crf,
            crf_params=cfg.test.crf if args.crf else None,
            workers=args.workers,
            save_logits=args.save_logits,
            skip_existing=args.skip_existing,
            max_images=args.max_images,
            data_workers=args.data_workers,
        )
        result = run_inference(model, dataset, opts, dist_info.rank, dist_info.world_size)
        payloads: Dict[str, Dict[str, Any]] = {}
        if dist_info.rank == 0:
            payloads = _write_results(result, cfg, args, split, info, out_dir, dist_info.world_size)
        barrier()
        result["payloads"] = payloads
        result["out_dir"] = out_dir
        return result
    finally:
        cleanup()


def _write_results(
    result: Mapping[str, Any],
    cfg: Any,
    args: argparse.Namespace,
    split: str,
    info: Mapping[str, Any],
    out_dir: str,
    world_size: int,
) -> Dict[str, Dict[str, Any]]:
    """Rank 0: metrics.json of the requested setting and of the by-products, printed tables."""
    label = result["label"]
    where = os.path.join(out_dir, SERVER_DIR if result["server_layout"] else "pred")
    logger.info("%d images in %.1f s; PNGs in %s", result["num_images"], result["seconds"], where)
    if not result["matrices"]:
        logger.info("split %s has no masks: predictions written, nothing to score", split)
        if result["server_layout"]:
            print(f"Evaluation-server layout written: cd {out_dir} && tar -czf results.tgz results")
        return {}
    payloads: Dict[str, Dict[str, Any]] = {}
    for key, cm in result["matrices"].items():
        if key != label and result["skipped"]:
            logger.warning(
                "%s: not written, %d images were reused from PNGs (--skip-existing)",
                key,
                result["skipped"],
            )
            continue
        scales, flip, crf = result["settings"][key]
        extras = metric_extras(
            label=key,
            cfg=cfg,
            split=split,
            scales=scales,
            flip=flip,
            crf=crf,
            model_info=info,
            config_path=args.config,
            cfg_options=args.cfg_options,
            world_size=world_size,
        )
        payload = metrics_payload(cm, cfg.data.class_names, extras)
        path = (
            os.path.join(out_dir, "metrics.json")
            if key == label
            else os.path.join(out_dir, "variants", slug(key), "metrics.json")
        )
        write_metrics_json(path, payload)
        payloads[key] = payload
    print(
        format_table(
            payloads[label],
            title=f"{label} on {dataset_name(cfg.data)} {split} ({args.checkpoint})",
        )
    )
    for key, payload in payloads.items():
        if key != label:
            print(f"  by-product {key:<24s} mIoU {100 * (payload['miou'] or 0):6.2f}")
    return payloads


if __name__ == "__main__":
    main()
