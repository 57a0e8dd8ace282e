"""Time multi-scale + flip inference and DenseCRF per image (spec §9).

The network is a *stand-in* for now (patch average pooling + a fixed 1×1 projection to C logits,
the same input/output contract as ``WeCLIP(...)["seg_logits"]``), so the multi-scale figure is the
merge overhead only; the lead will switch ``build_logits_fn`` to the real model. The DenseCRF
figures do not depend on the network: only the image size, its content and C matter.

    python benchmarks/bench_inference.py                          # 500x375 synthetic, 21 classes
    python benchmarks/bench_inference.py --image some.jpg --crf-workers 2 --json out/bench.json
"""

import argparse
import json
import statistics
import time
from typing import Callable, Dict, List

import numpy as np
import torch
import torch.nn.functional as F

from weclip.config import load_config
from weclip.engine.inference import predict_from_cfg
from weclip.refine.crf import CRFPool, crf_from_logits
from weclip.utils.io import atomic_write_text


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/voc.py")
    parser.add_argument("--image", default=None, help="RGB image file; default a synthetic one")
    parser.add_argument("--height", type=int, default=375, help="synthetic image height")
    parser.add_argument("--width", type=int, default=500, help="synthetic image width")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--crf-workers", type=int, default=0, help="also time a CRFPool")
    parser.add_argument("--crf-images", type=int, default=4, help="jobs for the pool timing")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="write the figures here")
    return parser.parse_args()


def synthetic_image(height: int, width: int) -> np.ndarray:
    """A deterministic, piecewise-smooth HxWx3 uint8 image (gradients and discs)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin(xx / 40.0)], -1) * 200
    rng = np.random.default_rng(0)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(20, 90)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.uniform(0, 255, 3)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def build_logits_fn(num_classes: int, patch_size: int, device: str) -> Callable:
    """Stand-in network: BxCinxHxW -> Bx num_classes x H/p x W/p."""
    weight = torch.randn(num_classes, 3, 1, 1, generator=torch.Generator().manual_seed(0))
    weight = (weight * 3).to(device)

    def logits_fn(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.avg_pool2d(x, patch_size), weight)

    return logits_fn


def _time(fn: Callable[[], object], repeats: int, sync: bool) -> List[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def main(args: argparse.Namespace) -> None:
    cfg = load_config(args.config)
    if args.image:
        from PIL import Image

        image = np.array(Image.open(args.image).convert("RGB"))
    else:
        image = synthetic_image(args.height, args.width)
    H, W = image.shape[:2]
    mean = torch.tensor(cfg.data.norm_constants.imagenet.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.data.norm_constants.imagenet.std).view(1, 3, 1, 1)
    x = ((torch.from_numpy(image).permute(2, 0, 1)[None].float() - mean) / std).to(args.device)
    logits_fn = build_logits_fn(args.classes, args.patch_size, args.device)
    sync = args.device.startswith("cuda")

    out = predict_from_cfg(logits_fn, x, cfg.test, patch_size=args.patch_size)  # warm-up
    msc = _time(
        lambda: predict_from_cfg(logits_fn, x, cfg.test, patch_size=args.patch_size),
        args.repeats,
        sync,
    )
    logits = out.msc_logits[0].cpu()
    crf = _time(lambda: crf_from_logits(image, logits, cfg.test.crf), args.repeats, False)
    figures: Dict[str, object] = {
        "image_size": [H, W],
        "num_classes": args.classes,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "msc_flip_s_per_image_standin": statistics.median(msc),
        "crf_s_per_image": statistics.median(crf),
        "crf_s_all": crf,
    }
    if args.crf_workers > 0:
        start = time.perf_counter()
        with CRFPool(cfg.test.crf, num_workers=args.crf_workers) as pool:
            for i in range(args.crf_workers):  # start every worker (spawn imports torch)
                pool.submit(f"warm{i}", image[:16, :16], logits[:, :1, :1])
            pool.finish()
            figures["crf_pool_startup_s"] = time.perf_counter() - start
            start = time.perf_counter()
            for i in range(args.crf_images):
                pool.submit(f"img{i}", image, logits)
                pool.collect()
            pool.finish()
        figures["crf_pool_workers"] = args.crf_workers
        figures["crf_pool_s_per_image"] = (time.perf_counter() - start) / args.crf_images
    for key, value in figures.items():
        print(f"{key:32s} {value}")
    if args.json:
        atomic_write_text(args.json, json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main(parse_args())
