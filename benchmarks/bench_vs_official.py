"""The authors' WeCLIP and ours side by side: seconds per training step and per MS+flip image.

Both codes run in this process, on the same device with the same torch threads, on the same
synthetic batches (:mod:`weclip.parity.synthetic`), from the same random CLIP ViT-B/16 weights
(:mod:`weclip.parity.random_clip`, written to a temporary file) and the same initial decoder
weights (the authors' initialisation after their ``setup_seed(1)``, loaded into ours through
:mod:`weclip.models.official_names`). The authors' code is imported at run time from the clone you
pass (:class:`weclip.parity.official.OfficialWeCLIP`, the parity harness); nothing of it is in
this repository.

Training: their training step (forward, pseudo-labels, losses, backward, ``PolyWarmupAdamW``) and
ours (``Trainer.train_step``: forward ``mode="loss"``, backward, AdamW + scheduler), alternating
(theirs first on even steps, ours first on odd ones), one batch of 4 crops of 320x320 per step.
``--refinement rfm`` runs both past their RFM start (theirs: forward counter > 15000; ours:
``model.refine.rfm_start_iter``). Inference: their ``test_msc_flip_voc.py`` procedure on one image
(which also computes validation-mode pseudo-labels, as their forward always does) and our
``SegmentationPredictor`` (decoder only), scales 1.0 and 0.75 with flip, long side 512.

Per step and per image: wall time (``time.perf_counter``, after a CUDA synchronisation) and the
process CPU time (``time.process_time``: all threads of this process; the figure to read on a
shared machine), their medians and the ratios theirs / ours. Peak memory: on CUDA
``torch.cuda.max_memory_allocated`` per call; on CPU the peak resident set size during a call
above the RSS before it (after glibc's ``malloc_trim`` returned freed heap memory), sampled from
``/proc/self/statm`` every 20 ms by a background thread: RSS, not allocations, so a lower bound
of the working set. The load average of the machine is printed before and after.

    git clone https://github.com/zbf1991/WeCLIP /tmp/WeCLIP-official   # commit 0f47db4
    python benchmarks/bench_vs_official.py --official-repo /tmp/WeCLIP-official --device cpu \
        --threads 1 --steps 3 --warmup 1 --images 3 --json work_dirs/bench/vs_official_cpu.json
    python benchmarks/bench_vs_official.py --official-repo /tmp/WeCLIP-official --refinement rfm
    python benchmarks/bench_vs_official.py --official-repo /tmp/WeCLIP-official --device cuda \
        --steps 20 --warmup 3 --images 20 --amp   # ours bf16 autocast, theirs fp16 as published
"""

import argparse
import ctypes
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from weclip.errors import ConfigError, MissingFileError
from weclip.utils.cli import run_main

#: (H, W) of the inference images: VOC-like landscape and portrait sizes and one square
INFER_SIZES: Tuple[Tuple[int, int], ...] = ((375, 500), (500, 333), (480, 480))
CROP = 320
BATCH = 4


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--official-repo",
        required=True,
        help="local clone of zbf1991/WeCLIP (or its WeCLIP/ folder), imported at run time",
    )
    parser.add_argument("--config", default="configs/voc.py", help="our config (VOC, ViT-B/16)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (both codes)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per code")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps (and images) first")
    parser.add_argument("--refinement", choices=["static", "rfm"], default="static")
    parser.add_argument(
        "--amp",
        action="store_true",
        help="CUDA only: ours with bf16 autocast (train.amp), theirs fp16 as published",
    )
    parser.add_argument(
        "--images", type=int, default=3, help="MS+flip inference images per code (0: none)"
    )
    parser.add_argument("--scene-seed", type=int, default=0, help="synthetic scene stream")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--debug", action="store_true", help="tracebacks for user errors")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.images < 0 or args.threads < 1:
        raise ConfigError("--steps and --threads must be >= 1, --warmup and --images >= 0")
    return args


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------
def _rss_bytes() -> Optional[int]:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class RSSPeak:
    """Peak resident set size above the starting RSS while the ``with`` block runs (Linux)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak_mib: Optional[float] = None
        self._stop = threading.Event()

    def _sample(self, start: int) -> None:
        peak = start
        while not self._stop.wait(self.interval):
            peak = max(peak, _rss_bytes() or 0)
        peak = max(peak, _rss_bytes() or 0)
        self.peak_mib = (peak - start) / 2**20

    def __enter__(self) -> "RSSPeak":
        start = _rss_bytes()
        self._thread = None
        if start is not None:
            self._thread = threading.Thread(target=self._sample, args=(start,), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _release_free_heap() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``), so that the RSS before a call
    does not include memory the other code freed; a no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], Any], device: torch.device) -> Dict[str, Optional[float]]:
    """Wall and process CPU seconds of ``fn()`` and its peak memory (MiB, see the docstring)."""
    _sync(device)
    _release_free_heap()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start_alloc = torch.cuda.memory_allocated(device)
    with RSSPeak() if device.type == "cpu" else _Null() as rss:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        extra = (torch.cuda.max_memory_allocated(device) - start_alloc) / 2**20
        return {"wall_s": wall, "cpu_s": cpu, "peak_mib": peak, "peak_above_start_mib": extra}
    return {"wall_s": wall, "cpu_s": cpu, "peak_mib": rss.peak_mib}


class _Null:
    peak_mib = None

    def __enter__(self) -> "_Null":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def summary(rows: List[Dict[str, Optional[float]]]) -> Dict[str, Optional[float]]:
    out: Dict[str, Optional[float]] = {}
    for key in ("wall_s", "cpu_s"):
        out[key] = statistics.median(r[key] for r in rows)
    peaks = [r["peak_mib"] for r in rows if r.get("peak_mib") is not None]
    out["peak_mib"] = max(peaks) if peaks else None
    return out


def machine() -> Dict[str, Any]:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {"cpu": name, "cores": os.cpu_count(), "python": platform.python_version()}


# --------------------------------------------------------------------------------------------
# the two codes
# --------------------------------------------------------------------------------------------
def build_both(args: argparse.Namespace, clip_file: str, work_dir: str) -> Tuple[Any, Any]:
    """The authors' harness and our Trainer, with the same CLIP and the same initial decoder."""
    from weclip.config import load_config
    from weclip.engine.trainer import Trainer
    from weclip.models.official_names import load_official_decoder_state
    from weclip.parity.official import OfficialWeCLIP
    from weclip.utils.dist import DistInfo

    theirs = OfficialWeCLIP(
        args.official_repo, clip_file, seed=1, device=args.device, fp32=not args.amp
    )
    cfg = load_config(
        args.config,
        {
            "model.backbone.weights": clip_file,
            "train.batch_size": BATCH,
            "train.amp": bool(args.amp),
        },
    )
    device = torch.device(args.device)
    info = DistInfo(rank=0, local_rank=0, world_size=1, device=device, backend=None)
    ours = Trainer(cfg, work_dir, info, train_dataset=[])
    # the same initial decoder weights (loaded in place: the optimizer holds these parameters)
    load_official_decoder_state(ours.model_without_ddp.decoder, theirs.decoder_state())
    return theirs, ours


def training(args: argparse.Namespace, theirs: Any, ours: Any) -> Dict[str, Any]:
    from weclip.parity.synthetic import scene_batch

    device = torch.device(args.device)
    rfm = args.refinement == "rfm"
    our_start = int(ours.cfg.model.refine.rfm_start_iter) if rfm else 1
    their_start = 15001 if rfm else 1  # their RFM: forward counter > 15000
    rows: Dict[str, List[Dict[str, Optional[float]]]] = {"theirs": [], "ours": []}
    pairs: List[int] = []
    total = args.warmup + args.steps
    for step in range(total):
        images, labels, _ = scene_batch(args.scene_seed, BATCH * step, BATCH, (CROP, CROP))
        images_t, labels_t = torch.from_numpy(images), torch.from_numpy(labels)
        their_inputs = theirs.normalize(images_t)  # their data pipeline's job, not timed
        batch = {
            "image": images_t,
            "cls_labels": labels_t,
            "valid": torch.ones(BATCH, CROP, CROP, dtype=torch.bool),
        }
        runs = {
            "theirs": partial(
                theirs.train_step,
                their_inputs,
                labels_t,
                iteration=their_start + step,
                optimize=True,
            ),
            "ours": partial(ours.train_step, batch, our_start + step),
        }
        order = ("theirs", "ours") if step % 2 == 0 else ("ours", "theirs")
        result = {name: measure(runs[name], device) for name in order}
        timed = step >= args.warmup
        if timed:
            for name in rows:
                rows[name].append(result[name])
            pairs.append(int(labels.sum()))
        t, o = result["theirs"], result["ours"]
        print(
            f"step {step + 1}/{total} {'timed ' if timed else 'warmup'} ({int(labels.sum())} "
            f"image-class pairs): theirs wall {t['wall_s']:6.2f} s cpu {t['cpu_s']:6.2f} s | "
            f"ours wall {o['wall_s']:6.2f} s cpu {o['cpu_s']:6.2f} s | theirs/ours cpu "
            f"{t['cpu_s'] / o['cpu_s']:.2f}",
            flush=True,
        )
    return {"rows": rows, "pairs": pairs, "median": {k: summary(v) for k, v in rows.items()}}


def inference(args: argparse.Namespace, theirs: Any, ours: Any) -> Dict[str, Any]:
    from weclip.evaluation.predictors import SegmentationPredictor
    from weclip.parity.synthetic import synthetic_scene

    device = torch.device(args.device)
    model = ours.model_without_ddp
    model.eval()
    predictor = SegmentationPredictor(
        model, scales=(1.0, 0.75), flip=True, resize_long=512, amp=bool(args.amp)
    )
    rows: Dict[str, List[Dict[str, Optional[float]]]] = {"theirs": [], "ours": []}
    total = args.warmup + args.images
    for i in range(total):
        h, w = INFER_SIZES[i % len(INFER_SIZES)]
        scene = synthetic_scene(args.scene_seed, 100 + i, h, w, num_objects=2, ignore_band=2)
        image = torch.from_numpy(scene.image.transpose(2, 0, 1).copy())
        runs = {
            "theirs": partial(
                theirs.msc_flip_inference, image, scene.mask, scales=(1.0, 0.75), resize_long=512
            ),
            "ours": partial(predictor, {"image": image}),
        }
        order = ("theirs", "ours") if i % 2 == 0 else ("ours", "theirs")
        # no torch.no_grad() around theirs: their validation forward computes Grad-CAMs; ours runs
        # under no_grad inside msc_flip_inference
        result = {name: measure(runs[name], device) for name in order}
        timed = i >= args.warmup
        if timed:
            for name in rows:
                rows[name].append(result[name])
        t, o = result["theirs"], result["ours"]
        print(
            f"image {i + 1}/{total} {'timed ' if timed else 'warmup'} ({h}x{w}): theirs wall "
            f"{t['wall_s']:6.2f} s cpu {t['cpu_s']:6.2f} s | ours wall {o['wall_s']:6.2f} s cpu "
            f"{o['cpu_s']:6.2f} s | theirs/ours cpu {t['cpu_s'] / o['cpu_s']:.2f}",
            flush=True,
        )
    model.train()
    return {"rows": rows, "median": {k: summary(v) for k, v in rows.items()}}


def _line(name: str, figures: Dict[str, Dict[str, Optional[float]]], unit: str) -> str:
    t, o = figures["theirs"], figures["ours"]
    mem = ""
    if t["peak_mib"] is not None and o["peak_mib"] is not None:
        mem = f" | peak memory theirs {t['peak_mib']:.0f} MiB, ours {o['peak_mib']:.0f} MiB"
    return (
        f"{name} (median {unit}): theirs wall {t['wall_s']:.2f} s cpu {t['cpu_s']:.2f} s; ours "
        f"wall {o['wall_s']:.2f} s cpu {o['cpu_s']:.2f} s; theirs/ours wall "
        f"{t['wall_s'] / o['wall_s']:.2f}x cpu {t['cpu_s'] / o['cpu_s']:.2f}x{mem}"
    )


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    from weclip.parity.official import find_official_root

    try:
        root = find_official_root(args.official_repo)
    except FileNotFoundError as err:
        raise MissingFileError(f"--official-repo {err}") from None
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available on this machine")
    if args.amp and args.device != "cuda":
        raise ConfigError(
            "--amp: bf16 (ours) and fp16 (theirs) run on CUDA only; use --device cuda"
        )
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_before = os.getloadavg()
    from weclip.parity.random_clip import write_random_clip

    with tempfile.TemporaryDirectory(prefix="weclip_bench_") as tmp:
        clip_file = os.path.join(tmp, "clip_qk4.pt")
        write_random_clip(clip_file, qk_scale=4.0)
        theirs, ours = build_both(args, clip_file, os.path.join(tmp, "work"))
        train = training(args, theirs, ours)
        infer = inference(args, theirs, ours) if args.images > 0 else None
        ours.close()
        theirs.close()
    load_after = os.getloadavg()

    info = machine()
    setting = (
        f"device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f", torch {torch.__version__}, {torch.get_num_threads()} thread(s), {info['cpu']} "
        f"({info['cores']} cores), precision "
        + ("ours bf16 autocast / theirs fp16" if args.amp else "fp32 (both)")
        + f", refinement {args.refinement}"
    )
    print(f"setting: {setting}")
    print(f"their code: {root}")
    print(
        f"load average (1, 5, 15 min): before {', '.join(f'{v:.2f}' for v in load_before)}; "
        f"after {', '.join(f'{v:.2f}' for v in load_after)}"
    )
    print(
        f"training: batch {BATCH} x {CROP}x{CROP}, {args.warmup} warm-up + {args.steps} timed "
        f"steps each, image-class pairs per timed step {train['pairs']}"
    )
    print(_line("training step", train["median"], f"of {args.steps}"))
    if infer is not None:
        print(_line("MS+flip inference per image", infer["median"], f"of {args.images}"))
    print(
        "memory: "
        + (
            "torch.cuda.max_memory_allocated per call"
            if device.type == "cuda"
            else "peak RSS above the RSS before the call (sampled every 20 ms)"
        )
    )
    if args.json:
        from weclip.utils.io import atomic_write_text

        payload = {
            "setting": setting,
            "machine": info,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "amp": bool(args.amp),
            "refinement": args.refinement,
            "load_before": load_before,
            "load_after": load_after,
            "training": train,
            "inference": infer,
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        atomic_write_text(args.json, json.dumps(payload, indent=1) + "\n")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    run_main(main)
