"""Pseudo-label quality on a split, with the ablation rows of the paper (spec §3-§5).

Rows (``--rows``, default all; ``<row>+crf`` rows are added with ``--crf``)::

    cam          initial Grad-CAMs (spec §3), bilinearly resized to the mask size, bg = (1 - max)^p, argmax
    cam_par      the same scores refined by PAR (spec §5.1) before the argmax
    static       static refinement: CLIP-ES affinity, mean of the last `static_layers` attention maps (§4.2)
    static_par   static refinement + PAR
    rfm          RFM: filtered CLIP attention x decoder affinity A_f (§4.3); needs CHECKPOINT (the decoder)
    rfm_par      RFM + PAR = WeCLIP's online pseudo-labels (what ``WeCLIP.forward`` returns in validation)
    <row>_crf    the row's scores [bg; r_1..r_K] divided by their per-pixel sum, as probabilities into the
                 DenseCRF of spec §9 (``test.crf``), argmax

p = ``model.pseudo_label.bg_power`` (1 in WeCLIP; ``--cfg-options model.pseudo_label.bg_power=2`` gives
CLIP-ES's raw-CAM evaluation). Without a checkpoint the RFM rows are skipped with a message.

Which classes: the image-level labels come from the label file (``data.label_file``), never from the masks;
the masks only score. Image size: the network needs H and W multiples of the patch size p. ``--fit crop``
(default) drops the bottom rows and right columns beyond a multiple of p, which is exactly what the authors'
stride-p patch convolution does when they validate at the original size (spec §1.3, §8); ``--fit resize``
resizes the normalised image bilinearly (align_corners=False) to the nearest multiples of p instead. Either
way the refined CAMs are resized to the original mask size (spec §4.6, validation mode), PAR runs there
(guided by the network input resized to it, spec §5.1) and the pseudo-labels have the mask's size. The model
runs in eval mode (Dropout2d off; the authors' in-training validation left it on, spec §12.7).

    python tools/eval_pseudo.py configs/voc.py work_dirs/voc/checkpoints/iter_30000.pth --split train
    python tools/eval_pseudo.py configs/voc.py --split train --rows cam,static,static_par     # no checkpoint
    python tools/eval_pseudo.py configs/voc.py CKPT --split train_aug --rows rfm_par --export-dir data/pl

Outputs: ``OUT_DIR/<row>/metrics.json`` (OUT_DIR = ``--out-dir``, default ``WORK_DIR/pseudo/<checkpoint>_<split>``
or ``work_dirs/<config>/pseudo/<split>_no_checkpoint``), a summary table on stdout, and with ``--export-dir``
the pseudo-labels as VOC-palette PNGs ``DIR/<row>/<name>.png`` (``--export-rows`` picks rows; default all).
``--launcher pytorch`` shards the images over ranks and sums the confusion matrices.
"""

import argparse
import json
import logging
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(TOOLS))  # the repository, for `weclip`
sys.path.insert(0, TOOLS)  # the tools' shared module

from _weclip_tools import (  # noqa: E402
    checkpoint_work_dir,
    dataset_name,
    load_model,
    save_label_png,
    shard_indices,
)

from weclip.cam.gradcam import gradcam  # noqa: E402
from weclip.config import dump_config, load_config, resolve_work_dir  # noqa: E402
from weclip.data import build_dataset, read_rgb  # noqa: E402
from weclip.engine.inference import crop_to_patch_multiple  # noqa: E402
from weclip.evaluation.metrics import ConfusionMatrix, metrics_payload, write_metrics_json  # noqa: E402
from weclip.refine.boxes import box_masks  # noqa: E402
from weclip.refine.crf import CRFPool  # noqa: E402
from weclip.refine.propagate import propagate_cams, resize_cams  # noqa: E402
from weclip.refine.pseudo_label import pack_scores, scores_to_labels  # noqa: E402
from weclip.refine.transition import (  # noqa: E402
    patch_attention,
    rfm_affinity,
    static_affinity,
    transition_matrix,
)
from weclip.utils.cli import add_runtime_args  # noqa: E402
from weclip.utils.dist import barrier, cleanup, init_distributed  # noqa: E402
from weclip.utils.logging import setup_logger  # noqa: E402

logger = logging.getLogger("weclip")

BASE_ROWS = ("cam", "cam_par", "static", "static_par", "rfm", "rfm_par")
ROW_TITLES = {
    "cam": "initial CAM",
    "cam_par": "initial CAM + PAR",
    "static": "static refinement",
    "static_par": "static refinement + PAR",
    "rfm": "RFM",
    "rfm_par": "RFM + PAR (WeCLIP)",
}
FITS = ("crop", "resize")
# Keys tools/eval_pseudo.py adds to the metrics.json payload of weclip.evaluation.metrics.
METRIC_EXTRAS = (
    "source",  # "tools/eval_pseudo.py"
    "row",  # e.g. "static_par_crf"
    "row_title",
    "refine",  # "none" | "static" | "rfm"
    "par",
    "crf",
    "crf_params",
    "bg_power",
    "fit",  # "crop" | "resize"
    "dataset",
    "split",
    "checkpoint",
    "iteration",
    "train_seed",
    "config",
    "cfg_options",
    "world_size",
)


def row_title(row: str) -> str:
    """Human-readable name of a row ("static_par_crf" -> "static refinement + PAR + CRF")."""
    base = row[: -len("_crf")] if row.endswith("_crf") else row
    return ROW_TITLES[base] + (" + CRF" if row.endswith("_crf") else "")


def parse_rows(text: Optional[str], crf: bool) -> List[str]:
    """The rows to evaluate, in table order: ``--rows`` (comma list of base rows or ``<row>_crf``) or all base
    rows; with ``crf`` every base row also gets its ``_crf`` row.

    Raises:
        ValueError: an unknown row name (the known ones are listed).
    """
    known = list(BASE_ROWS) + [r + "_crf" for r in BASE_ROWS]
    wanted = [r.strip() for r in text.split(",") if r.strip()] if text else list(BASE_ROWS)
    bad = [r for r in wanted if r not in known]
    if bad:
        raise ValueError(f"unknown row(s) {bad}; known: {', '.join(known)}")
    if crf:
        wanted += [r + "_crf" for r in wanted if not r.endswith("_crf")]
    return [r for r in known if r in wanted]


def fit_to_patches(image: Tensor, patch: int, fit: str) -> Tensor:
    """Make H and W multiples of the patch size (see the module docstring).

    Args:
        image (Tensor): Bx3xHxW normalised.
        patch (int): p.
        fit (str): "crop" (drop the bottom/right remainder, the authors' conv1) or "resize" (bilinear to the
            nearest multiples, at least one patch).

    Returns:
        Tensor: Bx3xH'xW' with H', W' multiples of p.
    """
    if fit == "crop":
        return crop_to_patch_multiple(image, patch)
    if fit != "resize":
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    H, W = image.shape[-2:]
    size = (max(patch, round(H / patch) * patch), max(patch, round(W / patch) * patch))
    if size == (H, W):
        return image
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def pseudo_label_scores(
    model: torch.nn.Module,
    images: Tensor,
    cls_labels: Tensor,
    out_size: Tuple[int, int],
    rows: Sequence[str],
) -> Tuple[Dict[str, Tensor], Tensor]:
    """The packed scores [bg; r_1..r_K] of every requested base row for a batch (spec §3-§5).

    The same building blocks, in the same order, as ``PseudoLabelEngine.forward``: one Grad-CAM call, then per
    refinement the transition matrix, box masks, propagation and resize; ``*_par`` rows pass the scores
    through the model's PAR. ``rfm_par`` therefore equals ``model(images, cls_labels, out_size=...)``'s
    ``pseudo_labels`` (tested).

    Args:
        model (nn.Module): ``WeCLIP`` (its backbone, decoder, engine settings and prompt embeddings are used).
        images (Tensor): Bx3xHxW normalised, H and W multiples of the patch size.
        cls_labels (Tensor): Bx(C-1) multi-hot labels from the label file.
        out_size (Tuple[int, int]): (H_out, W_out), the mask size.
        rows (Sequence[str]): base rows (``_crf`` suffixes are ignored here).

    Returns:
        Tuple[Dict[str, Tensor], Tensor]: row -> scores (B, 1+Kmax, H_out, W_out), and ``keys`` (B, 1+Kmax), the
        class id of each channel (255 for padding channels); labels = ``scores_to_labels(scores, keys)``.
    """
    base = {r[: -len("_crf")] if r.endswith("_crf") else r for r in rows}
    refines = {r[: -len("_par")] if r.endswith("_par") else r for r in base}
    engine, backbone = model.engine, model.backbone
    feats, attns = backbone.forward_blocks(images)
    grid = tuple(backbone.grid_size(images.shape[-2], images.shape[-1]))
    cam = gradcam(
        backbone,
        feats[-1],
        cls_labels,
        model.text_fg,
        model.text_bg,
        grid,
        norm_eps=engine.cam_norm_eps,
        norm_passes=engine.cam_norm_passes,
    )
    refined: Dict[str, Tensor] = {}
    if "cam" in refines:
        refined["cam"] = resize_cams(cam.cams, out_size)  # spec §3 CAMs, bilinear to the mask size
    if refines & {"static", "rfm"}:
        masks, _ = box_masks(cam.cams, engine.box_threshold, engine.box_mode)  # spec §4.5
        for kind in ("static", "rfm"):
            if kind not in refines:
                continue
            if kind == "static":  # spec §4.2 static mode
                affinity = static_affinity(
                    patch_attention(attns, cam.attn_last, engine.static_layers)
                )
            else:  # spec §4.3 RFM, with the decoder affinity A_f of this image
                _, fused = model.decoder(feats, grid)
                maps = patch_attention(attns, cam.attn_last, engine.rfm_layers)
                affinity, _ = rfm_affinity(
                    maps, model.decoder.affinity(fused), engine.layer_filter, engine.filter_eps
                )
            trans = transition_matrix(affinity, engine.sinkhorn_iters, engine.power)  # spec §4.4
            refined[kind], _ = propagate_cams(
                trans, cam.cams, masks, cam.batch_index, out_size, engine.refine_norm_eps
            )  # spec §4.6
    scores: Dict[str, Tensor] = {}
    keys: Optional[Tensor] = None
    for kind, cams in refined.items():
        packed, keys = pack_scores(
            cams, cam.batch_index, cam.class_index, images.shape[0], engine.bg_power
        )
        if kind in base:
            scores[kind] = packed
        if kind + "_par" in base:
            scores[kind + "_par"] = engine.par(images, packed)  # spec §5.1
    assert keys is not None
    return scores, keys


def crf_logits(scores: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-pixel normalised scores as log-probabilities, so that the CRF pool's softmax gives them back.

    Args:
        scores (Tensor): KxHxW non-negative scores [bg; r_1..r_K].
        eps (float): floor before the log (far below the CRF's probability clip of 1e-5).

    Returns:
        Tensor: KxHxW float32 ``log(scores / sum_k scores)``.
    """
    scores = scores.float().clamp_min(0)
    probs = scores / scores.sum(dim=0, keepdim=True).clamp_min(eps)
    return probs.clamp_min(eps).log()


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Pseudo-label quality (mIoU) with the paper's ablation rows (spec §3-§5)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("config", help="config file, e.g. configs/voc.py")
    parser.add_argument(
        "checkpoint", nargs="?", default=None, help="training checkpoint (needed by the RFM rows)"
    )
    parser.add_argument("--split", default="train", help="split list name (default: train)")
    parser.add_argument(
        "--rows", default=None, help=f"comma list of rows (default: all of {', '.join(BASE_ROWS)})"
    )
    parser.add_argument("--crf", action="store_true", help="add the <row>_crf rows")
    parser.add_argument(
        "--workers", type=int, default=0, help="CRF worker processes (0: CRF inline)"
    )
    parser.add_argument(
        "--fit", choices=FITS, default="crop", help="how H, W become patch multiples"
    )
    parser.add_argument(
        "--export-dir", default=None, help="write pseudo-labels as PNGs to DIR/<row>/<name>.png"
    )
    parser.add_argument(
        "--export-rows", default=None, help="rows to export (default: every evaluated row)"
    )
    parser.add_argument("--out-dir", default=None, help="where <row>/metrics.json go")
    parser.add_argument(
        "--max-images", type=int, default=None, help="only the first N images of the split"
    )
    parser.add_argument("--data-workers", type=int, default=0, help="data-loading processes")
    add_runtime_args(parser, cfg_options_help="override existing config keys")
    args = parser.parse_args(argv)
    if args.workers < 0 or args.data_workers < 0:
        parser.error("--workers and --data-workers must be >= 0")
    if args.max_images is not None and args.max_images < 1:
        parser.error("--max-images must be >= 1")
    return args


def select_rows(args: argparse.Namespace) -> Tuple[List[str], List[str]]:
    """Rows to evaluate and rows to export; RFM rows are dropped (with a message) without a checkpoint."""
    try:
        rows = parse_rows(args.rows, args.crf)
        export = parse_rows(args.export_rows, False) if args.export_rows else None
    except ValueError as err:
        raise SystemExit(f"eval_pseudo: {err}") from None
    if args.checkpoint is None:
        dropped = [r for r in rows if r.startswith("rfm")]
        if dropped:
            msg = (
                f"skipping {', '.join(dropped)}: the RFM needs the trained decoder's affinity A_f (spec §4.3); "
                "pass CHECKPOINT to evaluate these rows"
            )
            logger.warning(msg)
            print(f"eval_pseudo: {msg}")
        rows = [r for r in rows if not r.startswith("rfm")]
    if not rows:
        raise SystemExit("eval_pseudo: no row left to evaluate")
    export = list(rows) if export is None else export
    missing = [r for r in export if r not in rows]
    if missing:
        raise SystemExit(
            f"eval_pseudo: --export-rows {missing} are not evaluated (rows: {', '.join(rows)})"
        )
    return rows, export


def run_rows(
    model: torch.nn.Module,
    dataset: Any,
    rows: Sequence[str],
    *,
    fit: str = "crop",
    crf_params: Optional[Mapping[str, Any]] = None,
    workers: int = 0,
    export_dir: Optional[str] = None,
    export_rows: Sequence[str] = (),
    max_images: Optional[int] = None,
    data_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> Dict[str, ConfusionMatrix]:
    """Score every row on this rank's share of ``dataset`` and all-reduce the confusion matrices.

    Args:
        model (nn.Module): ``WeCLIP`` in eval mode.
        dataset: evaluation dataset built with ``with_labels=True`` (items ``image``, ``cls_labels``, ``name``
            and ``mask`` unless the split has none, in which case only exporting is possible).
        rows (Sequence[str]): from :func:`parse_rows`.
        fit (str): "crop" | "resize".
        crf_params (Mapping, optional): ``test.crf``, needed by ``_crf`` rows.
        workers (int): CRF processes.
        export_dir (str, optional): PNG export folder.
        export_rows (Sequence[str]): rows to export.
        max_images (int, optional): first N images only.
        data_workers (int): data-loading processes.
        rank (int): this rank.
        world_size (int): number of ranks.

    Returns:
        Dict[str, ConfusionMatrix]: row -> all-reduced matrix (empty when the split has no masks).
    """
    device = next(model.parameters()).device
    patch = int(model.backbone.patch_size)
    has_gt = bool(getattr(dataset, "with_mask", True))
    num_classes = int(model.num_classes)
    matrices = (
        {r: ConfusionMatrix(num_classes, int(getattr(dataset, "ignore_index", 255))) for r in rows}
        if has_gt
        else {}
    )
    crf_rows = [r for r in rows if r.endswith("_crf")]
    total = len(dataset) if max_images is None else min(int(max_images), len(dataset))
    loader = DataLoader(
        Subset(dataset, shard_indices(total, rank, world_size)),
        batch_size=None,
        num_workers=data_workers,
    )
    waiting: Dict[str, Tuple[Tensor, Optional[Tensor]]] = {}  # "<row>/<name>" -> (keys, mask)

    def finish(row: str, name: str, labels: Tensor, mask: Optional[Tensor]) -> None:
        if mask is not None:
            matrices[row].update(labels, mask, name=name)
        if export_dir is not None and row in export_rows:
            save_label_png(os.path.join(export_dir, row, name + ".png"), labels)

    def drain(jobs: List[Tuple[str, Any]]) -> None:
        for job, channels in jobs:
            keys, mask = waiting.pop(job)
            row, name = job.split("/", 1)
            finish(row, name, keys[torch.as_tensor(channels).long()], mask)

    pool = CRFPool(crf_params, num_workers=workers) if crf_rows else None
    try:
        for item in tqdm(loader, desc="pseudo-labels", disable=rank != 0):
            name = item["name"]
            if "cls_labels" not in item:
                raise ValueError(
                    f"image {name}: no image-level labels (build the dataset with with_labels=True)"
                )
            mask = item.get("mask")
            size = (int(item["image"].shape[-2]), int(item["image"].shape[-1]))
            images = fit_to_patches(item["image"][None].to(device), patch, fit)
            scores, keys = pseudo_label_scores(
                model, images, item["cls_labels"][None].to(device), size, rows
            )
            for row in rows:
                if row.endswith("_crf"):
                    continue
                finish(row, name, scores_to_labels(scores[row], keys)[0].cpu(), mask)
            if pool is not None:
                rgb = read_rgb(dataset.image_path(name))
                for row in crf_rows:
                    job = f"{row}/{name}"
                    waiting[job] = (keys[0].cpu(), mask)
                    pool.submit(job, rgb, crf_logits(scores[row[: -len("_crf")]][0]))
                drain(pool.collect())
        if pool is not None:
            drain(pool.finish())
    finally:
        if pool is not None:
            pool.close()
    for cm in matrices.values():
        cm.all_reduce()
    return matrices


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, Any]]:
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
        setup_logger(out_dir, rank=dist_info.rank)
        rows, export_rows = select_rows(args)
        if dist_info.rank == 0:
            dump_config(cfg, out_dir)
        dataset = build_dataset(cfg.data, args.split, train=False, with_labels=True)
        if not dataset.with_mask and args.export_dir is None:
            raise SystemExit(
                f"eval_pseudo: split {args.split!r} has no masks (data.mask_free_splits): nothing to score; "
                "use --export-dir to only export pseudo-labels"
            )
        model, info = load_model(cfg, args.checkpoint, dist_info.device)
        logger.info(
            "rows %s on %s %s -> %s", ", ".join(rows), dataset_name(cfg.data), args.split, out_dir
        )
        matrices = run_rows(
            model,
            dataset,
            rows,
            fit=args.fit,
            crf_params=cfg.test.crf,
            workers=args.workers,
            export_dir=args.export_dir,
            export_rows=export_rows,
            max_images=args.max_images,
            data_workers=args.data_workers,
            rank=dist_info.rank,
            world_size=dist_info.world_size,
        )
        payloads: Dict[str, Dict[str, Any]] = {}
        if dist_info.rank == 0 and matrices:
            for row, cm in matrices.items():
                base = row[: -len("_crf")] if row.endswith("_crf") else row
                extras = {
                    "source": "tools/eval_pseudo.py",
                    "row": row,
                    "row_title": row_title(row),
                    "refine": {"cam": "none"}.get(base.split("_")[0], base.split("_")[0]),
                    "par": base.endswith("_par"),
                    "crf": row.endswith("_crf"),
                    "crf_params": dict(cfg.test.crf) if row.endswith("_crf") else None,
                    "bg_power": float(cfg.model.pseudo_label.bg_power),
                    "fit": args.fit,
                    "dataset": dataset_name(cfg.data),
                    "split": args.split,
                    "checkpoint": info["checkpoint"],
                    "iteration": info["iteration"],
                    "train_seed": info["train_seed"],
                    "config": args.config,
                    "cfg_options": json.loads(json.dumps(dict(args.cfg_options), default=str)),
                    "world_size": dist_info.world_size,
                }
                assert tuple(extras) == METRIC_EXTRAS
                payloads[row] = metrics_payload(cm, cfg.data.class_names, extras)
                write_metrics_json(os.path.join(out_dir, row, "metrics.json"), payloads[row])
            width = max(len(row_title(r)) for r in payloads)
            num_images = next(iter(matrices.values())).num_images
            print(f"Pseudo-labels on {dataset_name(cfg.data)} {args.split} ({num_images} images)")
            print(f"{'row':<{width}}  {'mIoU':>6}  {'pix acc':>7}")
            for row, payload in payloads.items():
                miou, acc = (100 * (payload[k] or 0.0) for k in ("miou", "pixel_acc"))
                print(f"{row_title(row):<{width}}  {miou:6.2f}  {acc:7.2f}")
        barrier()
        return payloads
    finally:
        cleanup()


if __name__ == "__main__":
    main()
