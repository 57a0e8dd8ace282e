"""Seconds per training iteration and peak memory at the paper setting, with a per-stage breakdown.

Paper setting (spec §8): CLIP ViT-B/16 (random weights: the timing does not depend on them), batch 4 of
320x320 crops, the 21 VOC classes, 1-3 random image-level labels per image, synthetic images.

Two measurements per refinement mode (static CLIP-ES refinement before ``rfm_start_iter``, RFM after):

* ``train_step``: the real ``Trainer.train_step`` (model forward, losses, zero_grad, backward, AdamW and
  scheduler step), i.e. what one training iteration costs without data loading;
* the breakdown: the same work called stage by stage, in the order of ``WeCLIP.forward`` (CLIP blocks 0..N-2,
  decoder + A_f, Grad-CAM, refinement = transition matrix + box masks + propagation, PAR + argmax), then the
  losses, the backward pass and the optimiser step. CUDA is synchronised around every stage.

Figures are printed (and written with ``--json``); nothing is asserted.

    python benchmarks/bench_train_step.py --device cpu --iters 3 --warmup 1
    python benchmarks/bench_train_step.py --device cuda --iters 20 --warmup 3 --amp
"""

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from weclip.config import load_config  # noqa: E402
from weclip.engine.trainer import Trainer, process_memory_mib  # noqa: E402
from weclip.losses import total_loss  # noqa: E402
from weclip.models.weclip import build_weclip  # noqa: E402
from weclip.refine.engine import rfm_active  # noqa: E402
from weclip.utils.dist import DistInfo  # noqa: E402
from weclip.utils.io import atomic_write_text  # noqa: E402

STAGES = (
    "clip_forward",
    "decoder",
    "gradcam",
    "refinement",
    "par",
    "losses",
    "backward",
    "optimizer",
)


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
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    return parser.parse_args()


def synthetic_batch(batch: int, size: int, num_fg: int, mean, std, seed: int = 0) -> Dict:
    """Smooth random images (normalised like the datasets) and 1-3 random labels per image."""
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
        img += rng.normal(0, 8, img.shape)
        images.append((img - np.asarray(mean)[:, None, None]) / np.asarray(std)[:, None, None])
        multi_hot = np.zeros(num_fg, np.float32)
        multi_hot[rng.choice(num_fg, size=rng.integers(1, 4), replace=False)] = 1.0
        labels.append(multi_hot)
    return {
        "image": torch.from_numpy(np.stack(images).astype(np.float32)),
        "cls_labels": torch.from_numpy(np.stack(labels)),
        "valid": torch.ones(batch, size, size, dtype=torch.bool),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def staged_step(trainer: Trainer, batch: Dict, iteration: int) -> Dict[str, float]:
    """One training iteration, stage by stage (the wiring of ``WeCLIP.forward`` + ``train_step``)."""
    model, device = trainer.model_without_ddp, trainer.device
    images = batch["image"].to(device)
    cls_labels = batch["cls_labels"].to(device)
    times: Dict[str, float] = {}

    def timed(name, fn):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        times[name] = times.get(name, 0.0) + time.perf_counter() - start
        return result

    with trainer._autocast():
        feats, attns = timed("clip_forward", lambda: model.backbone.forward_blocks(images))
        grid = model.backbone.grid_size(images.shape[-2], images.shape[-1])

        def run_decoder():
            seg_logits, fused = model.decoder(feats, grid)
            return seg_logits, model.decoder.affinity(fused)

        seg_logits, aff = timed("decoder", run_decoder)
        use_rfm = rfm_active(iteration, model.rfm_start_iter)
        engine_times: Dict[str, float] = {}
        pseudo = model.engine(
            model.backbone,
            images,
            cls_labels,
            feats,
            attns,
            model.text_fg,
            model.text_bg,
            aff=aff.detach() if use_rfm else None,
            use_rfm=use_rfm,
            timings=engine_times,
        )
    times["gradcam"] = engine_times.get("gradcam", 0.0)
    times["refinement"] = engine_times.get("transition", 0.0) + engine_times.get("propagate", 0.0)
    times["par"] = engine_times.get("par", 0.0)
    losses = timed(
        "losses",
        lambda: total_loss(
            seg_logits.float(), aff.float(), pseudo["pseudo_labels"], trainer.cfg.loss
        ),
    )

    def backward():
        trainer.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()

    timed("backward", backward)

    def step():
        trainer.optimizer.step()
        trainer.scheduler.step()

    timed("optimizer", step)
    return times


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = load_config(args.config, {"model.backbone.weights": "random"})
    cfg.train.batch_size = args.batch_size
    cfg.train.amp = bool(args.amp)
    norm = cfg.data.norm_constants[cfg.data.normalize]
    batch = synthetic_batch(
        args.batch_size, args.crop, int(cfg.data.num_classes) - 1, norm["mean"], norm["std"]
    )
    info = DistInfo(rank=0, local_rank=0, world_size=1, device=device, backend=None)
    rfm_start = int(cfg.model.refine.rfm_start_iter)
    results: Dict[str, Dict] = {}
    with tempfile.TemporaryDirectory() as work_dir:
        t0 = time.perf_counter()
        trainer = Trainer(cfg, work_dir, info, model_builder=build_weclip, train_dataset=[])
        build_s = time.perf_counter() - t0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            iteration = 1 if mode == "static" else max(rfm_start, 1)
            step_times: List[float] = []
            stage_times: Dict[str, List[float]] = {s: [] for s in STAGES}
            for i in range(args.warmup + args.iters):
                _sync(device)
                start = time.perf_counter()
                trainer.train_step(batch, iteration)
                _sync(device)
                elapsed = time.perf_counter() - start
                staged = staged_step(trainer, batch, iteration)
                if i >= args.warmup:
                    step_times.append(elapsed)
                    for name in STAGES:
                        stage_times[name].append(staged.get(name, 0.0))
            results[mode] = {
                "train_step_s": statistics.median(step_times),
                "train_step_all_s": step_times,
                "stages_s": {k: statistics.median(v) for k, v in stage_times.items()},
            }
        memory = process_memory_mib(device)  # CUDA: peak allocated since the reset above
        trainer.close()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    setting = (
        f"ViT-B/16 random weights, batch {args.batch_size}, {args.crop}x{args.crop}, "
        f"{int(cfg.data.num_classes)} classes, 1-3 labels/image, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f", amp {'bf16' if trainer.use_amp else 'off'}, torch threads {torch.get_num_threads()}"
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
