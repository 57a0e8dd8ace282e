"""Seconds per training iteration and peak memory at the paper setting, with a per-stage breakdown.

Paper setting (spec §8): CLIP ViT-B/16 (random weights: the timing does not depend on them), batch 4 of
320x320 crops, the 21 VOC classes, 1-3 random image-level labels per image, synthetic images.

Two measurements per refinement mode (static CLIP-ES refinement before ``rfm_start_iter``, RFM after):

* ``train_step``: the real ``Trainer.train_step`` (model forward, losses, zero_grad, backward, AdamW and
  scheduler step), i.e. what one training iteration costs without data loading;
* the breakdown: one more ``train_step`` under ``torch.profiler``, read through the library's
  ``record_function`` labels (CLIP blocks 0..N-2, decoder + A_f, Grad-CAM, refinement = transition matrix +
  box masks + propagation, PAR + argmax, the losses, the backward pass, the optimiser step).

``--clock cpu`` measures process CPU seconds instead of wall seconds (the figure to read on a shared
machine): the steps with ``time.process_time``, the stages by timing the same ``record_function`` labels
with it (the library modules' ``record_function`` is swapped for a CPU-time recorder during the
profiled step; the profiler itself is not used then).

Figures are printed (and written with ``--json``); nothing is asserted.

    python benchmarks/bench_train_step.py --device cpu --iters 3 --warmup 1 --threads 1 --clock cpu
    python benchmarks/bench_train_step.py --device cuda --iters 20 --warmup 3 --amp
"""

import argparse
import contextlib
import importlib
import json
import resource
import statistics
import tempfile
import time
from typing import Dict, Iterator, List

import numpy as np
import torch

from weclip.config import load_config
from weclip.engine.trainer import Trainer, process_memory_mib
from weclip.utils.dist import DistInfo
from weclip.utils.io import atomic_write_text

# stage -> the record_function labels of weclip/models/weclip.py, refine/pipeline.py and engine/trainer.py
STAGES = {
    "clip_forward": ("model/clip_blocks",),
    "decoder": ("model/decoder",),
    "gradcam": ("pseudo/gradcam",),
    "refinement": ("pseudo/transition", "pseudo/propagate"),
    "par": ("pseudo/par",),
    "losses": ("model/losses",),
    "backward": ("train/backward",),
    "optimizer": ("train/optimizer",),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/voc.py")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per mode")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations per mode")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop", type=int, default=320)
    parser.add_argument("--modes", default="static,rfm", help="comma list of static, rfm")
    parser.add_argument(
        "--amp", action="store_true", help="bf16 autocast (CUDA only), as train.amp"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall seconds (profiler stages) or process CPU seconds (CPU-time stage recorder)",
    )
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    return parser.parse_args()


def synthetic_batch(batch: int, size: int, num_fg: int, seed: int = 0) -> Dict:
    """Smooth random uint8 images (the datasets' format) and 1-3 random labels per image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images, labels = [], []
    for _ in range(batch):
        freq = rng.uniform(1, 6, size=3)
        phase = rng.uniform(0, 6.3, size=3)
        img = np.stack(
            [127 + 120 * np.sin(freq[c] * (xx + yy * (c + 1)) * 3.1 + phase[c]) for c in range(3)],
            0,
        )
        images.append(np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8))
        multi_hot = np.zeros(num_fg, np.float32)
        multi_hot[rng.choice(num_fg, size=rng.integers(1, 4), replace=False)] = 1.0
        labels.append(multi_hot)
    return {
        "image": torch.from_numpy(np.stack(images)),
        "cls_labels": torch.from_numpy(np.stack(labels)),
        "valid": torch.ones(batch, size, size, dtype=torch.bool),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: the library modules whose ``record_function`` labels are the stages above
LABELLED_MODULES = ("weclip.models.weclip", "weclip.refine.pipeline", "weclip.engine.trainer")


@contextlib.contextmanager
def cpu_time_labels(totals: Dict[str, float]) -> Iterator[None]:
    """While active, every ``record_function(label)`` block of the labelled modules adds its process
    CPU seconds to ``totals[label]``."""

    @contextlib.contextmanager
    def recorder(label: str) -> Iterator[None]:
        start = time.process_time()
        try:
            yield
        finally:
            totals[label] = totals.get(label, 0.0) + time.process_time() - start

    modules = [importlib.import_module(name) for name in LABELLED_MODULES]
    saved = [module.record_function for module in modules]
    for module in modules:
        module.record_function = recorder
    try:
        yield
    finally:
        for module, original in zip(modules, saved):
            module.record_function = original


def cpu_stages(trainer: Trainer, batch: Dict, iteration: int) -> Dict[str, float]:
    """CPU seconds per stage of one ``train_step``, from the library's labels."""
    totals: Dict[str, float] = {}
    with cpu_time_labels(totals):
        trainer.train_step(batch, iteration)
    return {stage: sum(totals.get(k, 0.0) for k in keys) for stage, keys in STAGES.items()}


def profiled_stages(trainer: Trainer, batch: Dict, iteration: int) -> Dict[str, float]:
    """Seconds per stage of one ``train_step``, from the library's profiler labels."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if trainer.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        trainer.train_step(batch, iteration)
        _sync(trainer.device)
    totals = {e.key: e for e in prof.key_averages()}
    device_time = trainer.device.type == "cuda"
    return {
        stage: sum(
            (totals[k].device_time_total if device_time else totals[k].cpu_time_total) / 1e6
            for k in keys
            if k in totals
        )
        for stage, keys in STAGES.items()
    }


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = load_config(
        args.config,
        {
            "model.backbone.weights": "random",
            "train.batch_size": args.batch_size,
            "train.amp": bool(args.amp),
        },
    )
    batch = synthetic_batch(args.batch_size, args.crop, int(cfg.data.num_classes) - 1)
    info = DistInfo(rank=0, local_rank=0, world_size=1, device=device, backend=None)
    rfm_start = int(cfg.model.refine.rfm_start_iter)
    results: Dict[str, Dict] = {}
    with tempfile.TemporaryDirectory() as work_dir:
        t0 = time.perf_counter()
        trainer = Trainer(cfg, work_dir, info, train_dataset=[])
        build_s = time.perf_counter() - t0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            iteration = 1 if mode == "static" else max(rfm_start, 1)
            step_times: List[float] = []
            clock = time.process_time if args.clock == "cpu" else time.perf_counter
            for i in range(args.warmup + args.iters):
                _sync(device)
                start = clock()
                trainer.train_step(batch, iteration)
                _sync(device)
                if i >= args.warmup:
                    step_times.append(clock() - start)
            stages = cpu_stages if args.clock == "cpu" else profiled_stages
            results[mode] = {
                "train_step_s": statistics.median(step_times),
                "train_step_all_s": step_times,
                "stages_s": stages(trainer, batch, iteration),
            }
        memory = process_memory_mib(device)  # CUDA: peak allocated since the reset above
        trainer.close()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    setting = (
        f"ViT-B/16 random weights, batch {args.batch_size}, {args.crop}x{args.crop}, "
        f"{int(cfg.data.num_classes)} classes, 1-3 labels/image, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f", amp {'bf16' if trainer.use_amp else 'off'}, torch threads {torch.get_num_threads()}"
        + f", clock {'process CPU' if args.clock == 'cpu' else 'wall'} seconds"
    )
    print(f"setting: {setting}")
    print(
        f"model build: {build_s:.1f} s; iterations: {args.warmup} warm-up + {args.iters} timed per mode"
    )
    header = f"{'stage':<14}" + "".join(f"{m + ' (s)':>14}" for m in results)
    print(header)
    print("-" * len(header))
    for name in STAGES:
        print(f"{name:<14}" + "".join(f"{r['stages_s'][name]:>14.3f}" for r in results.values()))
    print(
        f"{'sum of stages':<14}"
        + "".join(f"{sum(r['stages_s'].values()):>14.3f}" for r in results.values())
    )
    print(f"{'train_step':<14}" + "".join(f"{r['train_step_s']:>14.3f}" for r in results.values()))
    if device.type == "cuda":
        print(f"peak CUDA memory allocated: {memory['memory_mib']:.0f} MiB")
    print(f"peak process RSS: {peak_rss:.0f} MiB")
    if args.json:
        payload = {
            "setting": setting,
            "results": results,
            "peak_rss_mib": peak_rss,
            "cuda_peak_mib": memory["memory_mib"] if device.type == "cuda" else None,
        }
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
