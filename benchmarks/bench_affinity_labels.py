"""Cost of AffinityNet's confident regions per training step: with and without the dense CRF.

AffinityNet (``model.type = "AffinityNet"``, docs/baselines.md) takes the confident foreground /
background of the classifier's CAMs on every training crop. With ``model.labels.crf`` (the default, the
paper's Sec. 3.2) each crop runs two dense CRFs (one per background power); without it the labels are
two comparisons. This benchmark times both label functions on one batch of synthetic crops of the VOC /
Pets AffinityNet configs' size (448 px, batch 8) with the configs' CRF parameters, so the figure can be
set against the rest of a training step (``tools/train.py`` logs img/s). Nothing is trained and no
weights are needed: the CAMs are smooth random maps.

    python benchmarks/bench_affinity_labels.py                          # 448 px, batch 8, 2 present classes
    python benchmarks/bench_affinity_labels.py --size 112 --repeats 5   # the toy world's crops
"""

import argparse
import dataclasses
import json
import statistics
import time
from typing import Any, Dict

import torch
import torch.nn.functional as F

from weclip.baselines.affinitynet import confident_labels, crf_confident_labels
from weclip.models.affinity_config import ConfidentLabelConfig


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=448, help="crop side (VOC / Pets configs: 448)")
    parser.add_argument("--batch", type=int, default=8, help="crops per step (the configs: 8)")
    parser.add_argument("--classes", type=int, default=20, help="K foreground classes (VOC: 20)")
    parser.add_argument("--present", type=int, default=2, help="labelled classes per crop")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per setting")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", default=None, help="also write the figures here")
    return parser.parse_args()


def synthetic_batch(args: argparse.Namespace) -> Dict[str, torch.Tensor]:
    """Images (B, 3, S, S) uint8, smooth CAMs (B, K, S, S) in [0, 1] with max 1, labels (B, K)."""
    g = torch.Generator().manual_seed(0)
    b, k, s = args.batch, args.classes, args.size
    images = (torch.rand(b, 3, s // 16, s // 16, generator=g) * 255).to(torch.uint8)
    images = F.interpolate(images.float(), size=(s, s), mode="bilinear").to(torch.uint8)
    cams = F.interpolate(
        torch.rand(b, k, s // 32, s // 32, generator=g), size=(s, s), mode="bilinear"
    )
    cams = cams / cams.flatten(2).amax(-1)[..., None, None]
    labels = torch.zeros(b, k)
    for i in range(b):
        labels[i, torch.randperm(k, generator=g)[: args.present]] = 1
    return {"images": images, "cams": cams * labels[..., None, None], "labels": labels}


def time_it(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> Dict[str, Any]:
    args = parse_args()
    torch.set_num_threads(args.threads)
    batch = synthetic_batch(args)
    # the defaults of model.labels: psa's powers 4 / 32 and its CRF parameters
    crf_params = dataclasses.asdict(ConfidentLabelConfig())["crf_params"]
    images, cams, labels = batch["images"], batch["cams"], batch["labels"]
    plain = time_it(lambda: confident_labels(cams, labels, "power", 4.0, 32.0), args.repeats)
    crf = time_it(
        lambda: crf_confident_labels(images, cams, labels, crf_params, "power", 4.0, 32.0),
        args.repeats,
    )
    figures = {
        "size": args.size,
        "batch": args.batch,
        "present_classes": args.present,
        "threads": args.threads,
        "labels_s_per_step": round(plain, 4),
        "crf_labels_s_per_step": round(crf, 3),
        "crf_labels_s_per_crop": round(crf / args.batch, 3),
    }
    for key, value in figures.items():
        print(f"{key:>24}: {value}")
    if args.json:
        from weclip.utils.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(figures, indent=1) + "\n")
    return figures


if __name__ == "__main__":
    main()
