"""Time the batched pseudo-label pipeline against a per-image, per-class reference loop (spec §3-§5).

The reference is written here the way the authors' code runs (spec App. A): for every image and
every present class, one last-block forward and one backward; the transition matrix at the image's
first class; per class a box mask, (T ⊙ box columns) · CAM, min-max and a resize; then PAR per image
with its 48 neighbours stacked into a (1, K+1, 48, H, W) tensor at every iteration, gathered with
dilated one-hot convolutions as the authors' (AFA's) PAR does (``--reference-par slice`` gathers
them with shifted slices instead). Both paths use the same building blocks (FrozenCLIP's last block,
the CAM formula, the transition matrix, the box search, PAR's affinity), so they must give the same
pseudo-labels: the script checks that and prints the agreement.

Setup: ViT-B/16 with random weights (open_clip ``ViT-B-16-quickgelu``, pretrained=None, through
FrozenCLIP; query/key projections scaled by ``--qk-scale`` as in the authors' fixture, so that the
attention, hence the refinement, is not degenerate), a batch of 4 synthetic 320x320 images with 1,
2, 3 and 2 present classes (8 CAMs). Blocks 0..10 run once, outside the timing (both paths start
from their outputs).

    python benchmarks/bench_pseudo_labels.py --device cpu --repeats 3
    python benchmarks/bench_pseudo_labels.py --device cuda --repeats 10 --mode rfm

Prints per-stage times, process CPU time, peak memory (CPU: growth of the resident set during the
call, sampled every millisecond; CUDA: peak allocated), the agreement, and as its last line
``speedup: X.Xx`` (median wall time of the reference / of the batched pipeline). The pipeline's stage
times come from one extra run under ``torch.profiler`` (its ``pseudo/*`` record_function labels).
"""

import argparse
import ctypes
import json
import os
import statistics
import threading
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from weclip.cam.gradcam import gradcam_from_activations, minmax_normalize
from weclip.config import load_config
from weclip.models.clip_backbone import build_backbone
from weclip.refine.boxes import box_masks
from weclip.refine.pipeline import PseudoLabelPipeline
from weclip.refine.propagate import resize_cams
from weclip.refine.transition import (
    patch_attention,
    rfm_affinity,
    static_affinity,
    transition_matrix,
)
from weclip.utils.io import atomic_write_text

# the 8 neighbour directions (row, column) in the spec's order (spec §5.1)
_DIRECTIONS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/voc.py")
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device, choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (after one warm-up)")
    parser.add_argument("--mode", default="static", choices=("static", "rfm"))
    parser.add_argument("--size", type=int, default=320, help="crop size")
    parser.add_argument("--classes", default="1,2,3,2", help="present classes per image")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument(
        "--qk-scale",
        type=float,
        default=4.0,
        help="multiply the vision blocks' query/key projections (1 = plain random init)",
    )
    parser.add_argument(
        "--reference-par",
        default="conv",
        choices=("conv", "slice"),
        help="how the reference PAR gathers its 48 neighbours: dilated one-hot convolutions "
        "(the authors' code) or shifted slices",
    )
    parser.add_argument("--json", default=None, help="also write the figures here")
    return parser.parse_args()


# ------------------------------------------------------------------------------------------ inputs
def synthetic_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Piecewise-smooth RGB images (gradients, discs, mild noise), ImageNet-normalised (§1.2)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = []
    for _ in range(batch):
        wave = 0.5 + 0.5 * np.sin(xx / rng.uniform(20, 60))
        img = np.stack([xx / size, yy / size, wave], -1) * 200
        for _ in range(5):
            cy, cx = rng.uniform(0, size, 2)
            radius = rng.uniform(20, size / 3)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = rng.uniform(0, 255, 3)
        out.append(np.clip(img + rng.normal(0, 3, img.shape), 0, 255))
    x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    return (x - mean) / std


def make_labels(counts: List[int], num_fg: int, seed: int = 0) -> torch.Tensor:
    """(B, num_fg) multi-hot labels with ``counts[i]`` random classes present in image i."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(len(counts), num_fg)
    for i, k in enumerate(counts):
        labels[i, torch.randperm(num_fg, generator=g)[:k]] = 1
    return labels


# --------------------------------------------------------------------------------------- reference
def _one_hot_kernels(device: torch.device) -> torch.Tensor:
    """(8, 1, 3, 3) kernels picking the 8 neighbours of a 3x3 window, in the spec's order."""
    kernels = torch.zeros(8, 1, 3, 3, device=device)
    for i, (dy, dx) in enumerate(_DIRECTIONS):
        kernels[i, 0, dy + 1, dx + 1] = 1.0
    return kernels


def stacked_par(
    par, image: torch.Tensor, scores: torch.Tensor, gather: str = "conv"
) -> torch.Tensor:
    """PAR as the authors iterate it: the 48 neighbours stacked, weighted and summed.

    Args:
        par (PAR): provides the affinity (the same building block as the pipeline) and the settings.
        image (Tensor): (1, 3, H, W).
        scores (Tensor): (1, K+1, H, W).
        gather (str): "conv" (dilated one-hot convolutions, as the authors) or "slice".

    Returns:
        Tensor: (1, K+1, H, W).
    """
    weights = par.affinity(image)[:, None]  # (1, 1, 48, H, W)
    h, w = scores.shape[-2:]
    kernels = _one_hot_kernels(scores.device)
    x = scores
    for _ in range(par.num_iter):
        neighbours = []
        for d in par.dilations:
            padded = F.pad(x, [d] * 4, mode="replicate")
            if gather == "conv":
                flat = padded.reshape(-1, 1, h + 2 * d, w + 2 * d)
                neighbours.append(F.conv2d(flat, kernels, dilation=d).view(*x.shape[:2], 8, h, w))
            else:
                views = [
                    padded[..., d + dy * d : d + dy * d + h, d + dx * d : d + dx * d + w]
                    for dy, dx in _DIRECTIONS
                ]
                neighbours.append(torch.stack(views, dim=2))
        x = (torch.cat(neighbours, dim=2) * weights).sum(dim=2)  # (1, K+1, 48, H, W) -> sum
    return x


def reference_loop(
    backbone,
    engine: PseudoLabelPipeline,
    images: torch.Tensor,
    cls_labels: torch.Tensor,
    feats: List[torch.Tensor],
    attns: List[torch.Tensor],
    text_fg: torch.Tensor,
    text_bg: torch.Tensor,
    aff: torch.Tensor,
    use_rfm: bool,
    timings: Dict[str, float],
    par_gather: str = "conv",
) -> Dict[str, torch.Tensor]:
    """Per image, per class, as spec App. A.

    Returns:
        Dict[str, Tensor]: cams (P, h, w), cams_refined (P, H, W), pseudo_labels (B, H, W).
    """
    device = images.device
    grid = backbone.grid_size(*images.shape[-2:])
    size = tuple(images.shape[-2:])
    all_cams, all_refined, labels = [], [], []

    def tick(name: str, start: float) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - start
        return now

    for i in range(images.shape[0]):
        present = torch.nonzero(cls_labels[i]).flatten().tolist()
        text = F.normalize(torch.cat([text_fg[present], text_bg]), dim=-1)
        refined_i = []
        for j, _ in enumerate(present):
            # Grad-CAM: one forward and one backward of the last block per class (spec §3)
            t0 = time.perf_counter()
            act, attn_last, emb = backbone.forward_last(feats[-1][i : i + 1])
            with torch.enable_grad():
                logits = backbone.logit_scale * F.normalize(emb, dim=-1) @ text.t()
                (grad,) = torch.autograd.grad(logits.softmax(dim=-1)[0, j], act)
            cam = gradcam_from_activations(
                act[:, 1:].detach(), grad[:, 1:], grid, engine.cam_norm_eps, engine.cam_norm_passes
            )
            t0 = tick("gradcam", t0)
            with torch.no_grad():
                if j == 0:  # the transition matrix once per image, at its first class
                    attn_i = [a[i : i + 1] for a in attns]
                    if use_rfm:
                        maps = patch_attention(attn_i, attn_last, engine.rfm_layers)
                        affinity, _ = rfm_affinity(
                            maps, aff[i : i + 1], engine.layer_filter, engine.filter_eps
                        )
                    else:
                        maps = patch_attention(attn_i, attn_last, engine.static_layers)
                        affinity = static_affinity(maps)
                    trans = transition_matrix(affinity, engine.sinkhorn_iters, engine.power)[0]
                    t0 = tick("transition", t0)
                mask, _ = box_masks(cam, engine.box_threshold, engine.box_mode)
                trans_k = trans * mask.reshape(1, -1).float()  # T ⊙ 1·vec(B)ᵀ (spec §4.6)
                r = (trans_k @ cam.reshape(-1, 1)).reshape(1, *grid)
                r = resize_cams(minmax_normalize(r, engine.refine_norm_eps), size)
                tick("propagate", t0)
            all_cams.append(cam)
            refined_i.append(r)
        with torch.no_grad():
            t0 = time.perf_counter()
            if refined_i:
                cams_i = torch.cat(refined_i)
                bg = (1 - cams_i.amax(dim=0, keepdim=True)).pow(engine.bg_power)
            else:
                cams_i = images.new_zeros(0, *size)
                bg = images.new_ones(1, *size)
            scores = torch.cat([bg, cams_i])[None]  # (1, K+1, H, W)
            keys = torch.tensor([0] + [c + 1 for c in present], device=device)
            refined_scores = stacked_par(engine.par, images[i : i + 1], scores, par_gather)
            labels.append(keys[refined_scores[0].argmax(dim=0)])
            tick("par", t0)
        all_refined.extend(refined_i)
    return {
        "cams": torch.cat(all_cams),
        "cams_refined": torch.cat(all_refined),
        "pseudo_labels": torch.stack(labels),
    }


# ------------------------------------------------------------------------------------- measurement
def _release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc), so that RSS growth measures this run only."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the figure then also depends on earlier runs
        pass


class PeakRSS:
    """Peak growth of the resident set of this process while active, sampled every ms (Linux)."""

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE")
        self.peak = 0

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def __enter__(self) -> "PeakRSS":
        self._base = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self._base)
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss() - self._base)


def measure(
    fn: Callable[[Dict[str, float]], Dict[str, torch.Tensor]], repeats: int, device: torch.device
) -> Tuple[List[float], List[float], Dict[str, float], int, Dict[str, torch.Tensor]]:
    """One warm-up, then ``repeats`` timed runs.

    Returns:
        wall times, process CPU times (all threads; less affected than wall time by other processes
        sharing the cores), median wall time per stage, peak bytes, the last output.
    """
    fn({})
    times, cpu_times, stages, peak, out = [], [], [], 0, {}
    for _ in range(repeats):
        timings: Dict[str, float] = {}
        cpu_start = time.process_time()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            start = time.perf_counter()
            out = fn(timings)
            torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
            peak = max(peak, torch.cuda.max_memory_allocated(device) - base)
        else:
            _release_free_memory()
            with PeakRSS() as rss:
                start = time.perf_counter()
                out = fn(timings)
                times.append(time.perf_counter() - start)
            peak = max(peak, rss.peak)
        cpu_times.append(time.process_time() - cpu_start)
        stages.append(timings)
    median_stages = {k: statistics.median(s.get(k, 0.0) for s in stages) for k in stages[0]}
    return times, cpu_times, median_stages, peak, out


def profiled_stages(fn: Callable[[Dict[str, float]], Dict[str, torch.Tensor]]) -> Dict[str, float]:
    """Seconds per stage of one run of the pipeline, from its ``pseudo/*`` record_function labels."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn({})
    return {
        event.key[len("pseudo/") :]: event.cpu_time_total / 1e6
        for event in prof.key_averages()
        if event.key.startswith("pseudo/")
    }


def main(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = load_config(args.config)
    torch.manual_seed(0)
    backbone_cfg = dict(arch="ViT-B-16-quickgelu", weights="random", precision="fp32")
    backbone = build_backbone(backbone_cfg).to(device)
    with torch.no_grad():
        for block in backbone.clip.visual.transformer.resblocks:
            block.attn.in_proj_weight[: 2 * backbone.width] *= args.qk_scale  # W_q and W_k rows
    engine = PseudoLabelPipeline.from_config(cfg.model).to(device)
    counts = [int(c) for c in args.classes.split(",")]
    num_fg, num_bg = 20, 25
    images = synthetic_images(len(counts), args.size).to(device)
    cls_labels = make_labels(counts, num_fg).to(device)
    g = torch.Generator().manual_seed(1)
    text_fg = F.normalize(torch.randn(num_fg, backbone.embed_dim, generator=g), dim=-1).to(device)
    text_bg = F.normalize(torch.randn(num_bg, backbone.embed_dim, generator=g), dim=-1).to(device)
    feats, attns = backbone.forward_blocks(images)
    h, w = backbone.grid_size(args.size, args.size)
    fused = torch.randn(len(counts), 256, h * w, generator=g).to(device) / 16
    aff = torch.sigmoid(fused.transpose(1, 2) @ fused)  # A_f = σ(FᵀF), spec §4.1
    use_rfm = args.mode == "rfm"

    grid = backbone.grid_size(args.size, args.size)

    def batched(timings: Dict[str, float]) -> Dict[str, torch.Tensor]:
        return engine(
            backbone, images, cls_labels, feats, attns, grid, text_fg, text_bg, aff=aff,
            use_rfm=use_rfm,
        )  # fmt: skip

    def reference(timings: Dict[str, float]) -> Dict[str, torch.Tensor]:
        return reference_loop(
            backbone, engine, images, cls_labels, feats, attns, text_fg, text_bg, aff, use_rfm,
            timings, args.reference_par,
        )  # fmt: skip

    if device.type == "cpu":
        where = f"cpu, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    else:
        where = torch.cuda.get_device_name(device)
    print(
        f"device {where}; batch {len(counts)} x {args.size}x{args.size}, classes per image "
        f"{counts} ({sum(counts)} CAMs), mode {args.mode}, reference PAR gather "
        f"{args.reference_par}, qk-scale {args.qk_scale}, repeats {args.repeats}"
    )
    results = {}
    for name, fn in (("reference", reference), ("batched", batched)):
        times, cpu_times, stages, peak, out = measure(fn, args.repeats, device)
        if name == "batched":  # the library times its stages with torch.profiler labels
            stages = profiled_stages(fn)
        results[name] = dict(
            times=times,
            median=statistics.median(times),
            cpu_times=cpu_times,
            cpu_median=statistics.median(cpu_times),
            stages=stages,
            peak_bytes=peak,
            out=out,
        )
        memory = "CUDA peak allocated" if device.type == "cuda" else "peak RSS growth"
        runs = ", ".join(f"{t:.3f}" for t in times)
        stage_text = ", ".join(f"{k} {v:.3f}" for k, v in stages.items())
        print(
            f"{name:9s}: median {statistics.median(times):.3f} s wall (runs {runs}), "
            f"{statistics.median(cpu_times):.3f} s process CPU; {memory} {peak / 2**20:.0f} MiB; "
            f"stages [s, wall]: {stage_text}"
        )

    ref, bat = results["reference"]["out"], results["batched"]["out"]
    cam_diff = (ref["cams"] - bat["cams"]).abs().max().item()
    refined_diff = (ref["cams_refined"] - bat["cams_refined"]).abs().max().item()
    same = ref["pseudo_labels"] == bat["pseudo_labels"]
    agreement = same.float().mean().item()
    print(
        f"agreement: pseudo-labels {agreement * 100:.4f}% of pixels identical "
        f"({int((~same).sum())} differ); max |ΔCAM| {cam_diff:.2e}, "
        f"max |Δrefined CAM| {refined_diff:.2e}"
    )
    # discrete steps (box threshold, argmax) may flip on float rounding ties: allow a few pixels
    assert cam_diff < 1e-4, f"initial CAMs differ by {cam_diff}"
    assert agreement >= 0.9999, f"pseudo-labels agree on only {agreement:.6f} of the pixels"
    speedup = results["reference"]["median"] / results["batched"]["median"]
    cpu_speedup = results["reference"]["cpu_median"] / results["batched"]["cpu_median"]
    if args.json:
        payload = {k: {kk: vv for kk, vv in v.items() if kk != "out"} for k, v in results.items()}
        payload.update(
            speedup=speedup,
            cpu_speedup=cpu_speedup,
            agreement=agreement,
            device=str(device),
            threads=torch.get_num_threads(),
            mode=args.mode,
            classes=counts,
            size=args.size,
            reference_par=args.reference_par,
        )
        atomic_write_text(args.json, json.dumps(payload, indent=2))
    print(f"speedup in process CPU time: {cpu_speedup:.1f}x")
    print(f"speedup: {speedup:.1f}x")


if __name__ == "__main__":
    main(parse_args())
