"""Inference throughput of tools/infer.py's pipeline: single-scale, MS+flip, MS+flip+CRF (spec §9).

The real pipeline (the evaluation loop ``weclip.evaluation.loop.run_on_dataset`` with the segmentation
predictor and the evaluators of tools/infer.py: data loading, CLIP ViT-B/16 + decoder, multi-scale and flip
merge, PNG writing, the DenseCRF worker pool) on synthetic VOC-like images (default 500x375, written
as JPEGs to a temporary VOC-layout folder) with *random* ViT-B/16 weights: speed does not depend on the weight
values, so no download is needed. Numbers are images per second over ``--images`` images after a warm-up
on the first one; the CRF figure includes the start of the worker processes (amortised over long runs).

    python benchmarks/bench_inference.py                                  # cuda if available, 8 images
    python benchmarks/bench_inference.py --device cpu --images 4 --crf-workers 2
    python benchmarks/bench_inference.py --json work_dirs/bench_inference.json

Also printed: one DenseCRF call on one image in this process (``crf_s_per_image``), the cost a CRF worker
pays per image.
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from typing import Any, Dict, List

import numpy as np
import torch
from PIL import Image

from weclip.apis import init_model
from weclip.config import load_config
from weclip.data import build_dataset
from weclip.evaluation.evaluators import CRFEvaluator, PNGWriter, SegmentationEvaluator
from weclip.evaluation.loop import run_on_dataset
from weclip.evaluation.predictors import SegmentationPredictor
from weclip.refine.crf import crf_from_logits
from weclip.utils.io import atomic_write_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "voc.py"))
    parser.add_argument("--images", type=int, default=8, help="timed images per setting")
    parser.add_argument("--height", type=int, default=375, help="synthetic image height")
    parser.add_argument("--width", type=int, default=500, help="synthetic image width")
    parser.add_argument("--crf-workers", type=int, default=4, help="DenseCRF processes")
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
    if args.images < 1 or args.crf_workers < 0:
        raise SystemExit("--images must be >= 1 and --crf-workers >= 0")
    tmp = tempfile.mkdtemp(prefix="weclip_bench_")
    root = os.path.join(tmp, "data")
    options = {"model.backbone.weights": "random", "data.root": root, "data.split_dir": root}
    cfg = load_config(args.config, options)
    write_voc_like(root, args.images, args.height, args.width, int(cfg.data.num_classes))
    dataset = build_dataset(cfg.data, "val", train=False)
    model = init_model(cfg, None, args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    settings = [
        ("single-scale", (1.0,), False, False),
        ("MS+flip", tuple(cfg.test.scales), bool(cfg.test.flip), False),
        (
            f"MS+flip+CRF ({args.crf_workers} workers)",
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

    def predictor(scales, flip):
        return SegmentationPredictor(
            model, scales=scales, flip=flip, resize_long=cfg.test.resize_long, single_scale=True
        )

    # warm-up (first-call allocations, kernels): the first image once, not timed
    run_on_dataset(predictor((1.0,), False), dataset, [], max_images=1, progress=False)
    for label, scales, flip, crf in settings:
        final = [
            PNGWriter(os.path.join(tmp, label.split()[0], "pred")),
            SegmentationEvaluator(label, int(cfg.data.num_classes)),
        ]
        evaluators = (
            [CRFEvaluator(cfg.test.crf, args.crf_workers, "logits", "labels", final)]
            if crf
            else final
        )
        sync()
        start = time.perf_counter()
        run_on_dataset(predictor(scales, flip), dataset, evaluators, progress=False)
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
