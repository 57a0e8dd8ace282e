"""Inference throughput of tools/infer.py: single-scale, MS+flip, MS+flip+CRF (spec §9).

The real pipeline (``tools/infer.py``'s ``run_inference``: data loading, CLIP ViT-B/16 + decoder, multi-scale
and flip merge, PNG writing, the DenseCRF worker pool) on synthetic VOC-like images (default 500x375, written
as JPEGs to a temporary VOC-layout folder) with *random* ViT-B/16 weights: speed does not depend on the weight
values, so no download is needed. Numbers are images per second over ``--images`` images after a warm-up
on the first one; the CRF figure includes the start of the worker processes (amortised over long runs).

    python benchmarks/bench_inference.py                                  # cuda if available, 8 images
    python benchmarks/bench_inference.py --device cpu --images 4 --workers 2
    python benchmarks/bench_inference.py --json work_dirs/bench_inference.json

Also printed: one DenseCRF call on one image in this process (``crf_s_per_image``), the cost a CRF worker
pays per image.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List

import numpy as np
import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tools"))

import infer  # noqa: E402  (tools/infer.py)
from _weclip_tools import load_model  # noqa: E402

from weclip.config import load_config  # noqa: E402
from weclip.data import build_dataset  # noqa: E402
from weclip.refine.crf import crf_from_logits  # noqa: E402
from weclip.utils.io import atomic_write_text  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "voc.py"))
    parser.add_argument("--images", type=int, default=8, help="timed images per setting")
    parser.add_argument("--height", type=int, default=375, help="synthetic image height")
    parser.add_argument("--width", type=int, default=500, help="synthetic image width")
    parser.add_argument("--workers", type=int, default=4, help="CRF worker processes")
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--json", default=None, help="also write the figures here")
    return parser.parse_args()


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic, piecewise-smooth HxWx3 uint8 image (gradients and discs)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin(xx / 40.0)], -1) * 200
    rng = np.random.default_rng(seed)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(20, 90)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.uniform(0, 255, 3)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def write_voc_like(root: str, count: int, height: int, width: int, num_classes: int) -> List[str]:
    """``count`` JPEG images with random masks in the VOC layout under ``root``; returns the names."""
    os.makedirs(os.path.join(root, "JPEGImages"))
    os.makedirs(os.path.join(root, "SegmentationClassAug"))
    rng = np.random.default_rng(0)
    names = [f"bench_{i:04d}" for i in range(count)]
    for i, name in enumerate(names):
        Image.fromarray(synthetic_image(height, width, seed=i)).save(
            os.path.join(root, "JPEGImages", name + ".jpg"), quality=90
        )
        mask = rng.integers(0, num_classes, size=(height, width), dtype=np.uint8)
        Image.fromarray(mask).save(os.path.join(root, "SegmentationClassAug", name + ".png"))
    with open(os.path.join(root, "val.txt"), "w") as f:
        f.write("".join(n + "\n" for n in names))
    with open(os.path.join(root, "cls_labels.txt"), "w") as f:
        f.write("".join(f"{n} 0\n" for n in names))
    return names


def main(args: argparse.Namespace) -> Dict[str, Any]:
    if args.images < 1 or args.workers < 0:
        raise SystemExit("--images must be >= 1 and --workers >= 0")
    tmp = tempfile.mkdtemp(prefix="weclip_bench_")
    root = os.path.join(tmp, "data")
    cfg = load_config(args.config, {"model.backbone.weights": "random"})
    write_voc_like(root, args.images, args.height, args.width, int(cfg.data.num_classes))
    cfg.data.root, cfg.data.split_dir, cfg.data.val_split = root, root, "val"
    dataset = build_dataset(cfg.data, "val", train=False)
    model, _ = load_model(cfg, None, torch.device(args.device))
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    settings = [
        ("single-scale", (1.0,), False, False),
        ("MS+flip", tuple(cfg.test.scales), bool(cfg.test.flip), False),
        (
            f"MS+flip+CRF ({args.workers} workers)",
            tuple(cfg.test.scales),
            bool(cfg.test.flip),
            True,
        ),
    ]
    figures: Dict[str, Any] = {
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
        "image_size": [args.height, args.width],
        "images": args.images,
        "num_classes": int(cfg.data.num_classes),
        "resize_long": cfg.test.resize_long,
        "scales": list(cfg.test.scales),
    }
    # warm-up (first-call allocations, kernels): the first image once, not timed
    warm = infer.InferOptions(
        out_dir=os.path.join(tmp, "warm"), scales=(1.0,), flip=False, resize_long=cfg.test.resize_long,
        max_images=1, show_progress=False,
    )  # fmt: skip
    infer.run_inference(model, dataset, warm)
    for label, scales, flip, crf in settings:
        opts = infer.InferOptions(
            out_dir=os.path.join(tmp, label.split()[0]), scales=scales, flip=flip,
            resize_long=cfg.test.resize_long, crf=crf, crf_params=cfg.test.crf if crf else None,
            workers=args.workers, show_progress=False,
        )  # fmt: skip
        sync()
        start = time.perf_counter()
        infer.run_inference(model, dataset, opts)
        sync()
        seconds = time.perf_counter() - start
        figures[f"{label} img/s"] = args.images / seconds

    # one CRF call in this process (what a worker spends per image)
    image = synthetic_image(args.height, args.width)
    logits = torch.randn(int(cfg.data.num_classes), 24, 32)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        crf_from_logits(image, logits, cfg.test.crf)
        times.append(time.perf_counter() - start)
    figures["crf_s_per_image"] = statistics.median(times)

    for key, value in figures.items():
        print(f"{key:36s} {value:.3f}" if isinstance(value, float) else f"{key:36s} {value}")
    if args.json:
        atomic_write_text(args.json, json.dumps(figures, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return figures


if __name__ == "__main__":
    main(parse_args())
