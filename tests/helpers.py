"""What the tests share: the tiny random CLIP, tiny data (the toy world and non-square synthetic images), ONE
tiny config builder, a checkpoint writer, a stand-in model of the model interface and a tool runner.

Tests import the library; tools run only as subprocesses (``run_tool``), as a user runs them.
"""

import contextlib
import os
import subprocess
import sys
import textwrap
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from weclip.config import load_config
from weclip.data.toy import ToyWorldConfig, write_toy_dataset
from weclip.engine.checkpoint import save_checkpoint
from weclip.models.clip_backbone import FrozenCLIP, build_clip_model, build_tokenizer
from weclip.models.decoder import WeCLIPDecoder
from weclip.models.registry import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable

# A CLIP of the same family as ViT-B/16 (open_clip.CLIP, QuickGELU, ViT image tower), small enough for CPU
# tests: 32 px images, 8 px patches -> 4x4 grid, 3 blocks. pool_type="avg" makes open_clip's own encode_image
# pool like WeCLIP (mean of the patch tokens).
TINY_ARCH = dict(
    embed_dim=32,
    quick_gelu=True,
    vision_cfg=dict(
        image_size=32, patch_size=8, width=64, layers=3, head_width=32, pool_type="avg"
    ),
    text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1),
)
CLASS_NAMES = ("background", "circle", "square", "triangle", "cross")
# (H, W) of the synthetic images of make_synth_dataset: non-square, not multiples of 8
SIZES: Tuple[Tuple[int, int], ...] = ((30, 44), (40, 26), (36, 36), (28, 41), (44, 30))


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one CPU thread (tiny ops on a busy 2-core machine are ~100x faster than with 2
    spinning OpenMP threads), restoring the previous setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_toy_root(
    directory: str, image_size: int = 32, num_train: int = 8, num_val: int = 4
) -> str:
    """A toy world in the VOC layout (4 shape classes) under ``directory/toy``."""
    root = os.path.join(directory, "toy")
    world = ToyWorldConfig(image_size=image_size, num_classes=4, min_objects=1, max_objects=2)
    write_toy_dataset(root, world, seed=0, num_train=num_train, num_val=num_val)
    return root


def make_synth_dataset(
    directory: str, sizes: Sequence[Tuple[int, int]] = SIZES, seed: int = 0
) -> str:
    """Write ``directory/synth`` in the VOC layout: val (masks), train (= val names), test (no masks).

    Each image holds one or two axis-aligned rectangles of distinct classes (1..4) on noise; the mask marks
    them, with a 1-pixel 255 (ignore) border around the first rectangle. Images are lossless PNGs.

    Returns:
        str: the dataset root (also the split dir).
    """
    rng = np.random.default_rng(seed)
    root = os.path.join(directory, "synth")
    os.makedirs(os.path.join(root, "JPEGImages"), exist_ok=True)
    os.makedirs(os.path.join(root, "SegmentationClassAug"), exist_ok=True)
    names, labels = [], []
    for i, (h, w) in enumerate(sizes):
        name = f"img_{i:03d}"
        image = rng.integers(0, 80, size=(h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), dtype=np.uint8)
        classes = sorted(rng.choice(4, size=1 + i % 2, replace=False).tolist())
        for k, c in enumerate(classes):
            y0, x0 = 2 + k * (h // 2), 2 + k * (w // 3)
            y1, x1 = min(h - 2, y0 + h // 2 - 2), min(w - 2, x0 + w // 2)
            image[y0:y1, x0:x1] = np.array(
                [60 * (c + 1), 250 - 50 * c, 40 * c + 30], dtype=np.uint8
            )
            if k == 0:
                mask[max(0, y0 - 1) : y1 + 1, max(0, x0 - 1) : x1 + 1] = 255
            mask[y0:y1, x0:x1] = c + 1
        Image.fromarray(image).save(os.path.join(root, "JPEGImages", name + ".png"))
        Image.fromarray(mask).save(os.path.join(root, "SegmentationClassAug", name + ".png"))
        names.append(name)
        labels.append(" ".join([name] + [str(c) for c in classes]))
    for split in ("train", "val", "test"):
        with open(os.path.join(root, f"{split}.txt"), "w") as f:
            f.write("".join(n + "\n" for n in names))
    with open(os.path.join(root, "cls_labels.txt"), "w") as f:
        f.write("".join(line + "\n" for line in labels))
    return root


def tiny_config_text(root: str, resize_long: int = 40, **train: Any) -> str:
    """A python config inheriting configs/voc.py for data at ``root`` (VOC layout, PNG images, the 5 classes
    of the toy world) and the tiny random CLIP; ``train`` overrides the train section."""
    train_cfg = dict(
        max_iters=6,
        batch_size=2,
        num_workers=0,
        log_interval=2,
        vis_interval=3,
        ckpt_interval=2,
        eval_interval=3,
        eval_split="val",
        eval_max_images=3,
    )
    train_cfg.update(train)
    return textwrap.dedent(
        f"""
        _base_ = [{os.path.join(REPO, "configs", "voc.py")!r}]
        data = dict(
            name="tiny", root={root!r}, split_dir={root!r}, img_suffix=".png", train_split="train",
            val_split="val", num_classes=5, class_names={CLASS_NAMES!r},
            prompt_class_names={CLASS_NAMES[1:]!r},
            prompt_bg_names=("stripes", "checkerboard", "gradient", "noise"),
            crop_size=32, scale_range=(0.75, 1.25),
        )
        model = dict(
            backbone=dict(arch=dict(_delete_=True, **{TINY_ARCH!r}), weights="random"),
            decoder=dict(embed_dim=16, num_layers=1, num_heads=2),
            refine=dict(static_layers=2, rfm_layers=2, rfm_start_iter=4),
            par=dict(num_iter=2, dilations=(1, 2)),
        )
        sched = dict(warmup_iters=2)
        train = dict(**{train_cfg!r})
        test = dict(resize_long={resize_long})
        """
    )


def write_config(directory: str, root: str, name: str = "tiny.py", **kwargs: Any) -> str:
    """Write :func:`tiny_config_text` to ``directory/name``; returns the path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(tiny_config_text(root, **kwargs))
    return path


def tiny_config(directory: str, root: str, options: Optional[Dict[str, Any]] = None, **train: Any):
    """Write and load the tiny config (``options`` as ``--cfg-options``)."""
    return load_config(write_config(directory, root, **train), options)


def make_checkpoint(config_path: str, work_dir: str, iteration: int = 2, seed: int = 1) -> str:
    """A training checkpoint ``work_dir/checkpoints/iter_<iteration>.pth`` of a seeded random decoder (the
    CLIP drawn with the same seed, as the trainer does)."""
    cfg = load_config(config_path, {"train.seed": seed})
    torch.manual_seed(seed)
    model = build_model(cfg)
    optimizer = torch.optim.AdamW(model.decoder.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0)
    return save_checkpoint(
        work_dir,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        iteration=iteration,
        config=cfg,
        rng_states=[{}],
        data_positions=[0],
        num_classes=5,
    )


def run_tool(
    name: str,
    args: List[str],
    env: Optional[Dict[str, str]] = None,
    timeout: int = 240,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run ``python tools/<name>.py ARGS`` from the repository root, as a user does; with ``check``, fail
    the test with its output on a non-zero exit."""
    # PYTHONPATH: this checkout's weclip, even when another one is the installed (editable) package
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    full_env.update(env or {})
    proc = subprocess.run(
        [PYTHON, os.path.join(REPO, "tools", name + ".py"), *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert proc.returncode == 0, (
            f"tools/{name}.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


class StandInModel(nn.Module):
    """A model of the library's interface with the real tiny CLIP and decoder but a fixed, cheap pseudo-label
    rule: pixels brighter than the image mean get the smallest present class, the others background. Lets
    the trainer be tested without the pseudo-label machinery (and shows what a second model needs)."""

    num_classes = 5
    patch_size = 8

    def __init__(self, num_classes: int = 5, dropout: float = 0.1) -> None:
        super().__init__()
        clip = build_clip_model(dict(TINY_ARCH), "random")
        self.backbone = FrozenCLIP(clip, build_tokenizer(dict(TINY_ARCH), clip.context_length))
        self.decoder = WeCLIPDecoder(
            in_dim=self.backbone.width,
            num_inputs=self.backbone.num_blocks - 1,
            embed_dim=16,
            num_heads=2,
            num_layers=1,
            num_classes=num_classes,
            dropout=dropout,
        )
        self.register_buffer("pixel_mean", torch.full((3,), 127.5), persistent=False)
        self.register_buffer("pixel_std", torch.full((3,), 64.0), persistent=False)
        self.calls: List[Any] = []  # iterations seen by forward, for tests

    def trainable_module(self) -> nn.Module:
        return self.decoder

    def forward(
        self, images, cls_labels=None, *, mode="predict", iteration=None, out_size=None, valid=None
    ):
        self.calls.append(iteration)
        x = (images.float() - self.pixel_mean[:, None, None]) / self.pixel_std[:, None, None]
        h, w = x.shape[-2] // 8 * 8, x.shape[-1] // 8 * 8
        feats, _ = self.backbone.forward_blocks(x[..., :h, :w])
        grid = self.backbone.grid_size(h, w)
        seg_logits, fused = self.decoder(feats, grid)
        out: Dict[str, Any] = {"seg_logits": seg_logits}
        if mode == "predict":
            return out
        with torch.no_grad():
            brightness = x.mean(dim=1)  # (B, H, W)
            if out_size is not None:
                brightness = F.interpolate(brightness[:, None], size=out_size, mode="bilinear")[
                    :, 0
                ]
            bright = brightness > brightness.flatten(1).mean(dim=1)[:, None, None]
            first = cls_labels.float().argmax(dim=1) + 1  # smallest present class id
            pseudo = torch.where(
                bright, first[:, None, None], torch.zeros_like(first)[:, None, None]
            )
            batch_index, class_index = cls_labels.nonzero(as_tuple=True)
            low, high = (
                brightness.amin(dim=(1, 2), keepdim=True),
                brightness.amax(dim=(1, 2), keepdim=True),
            )
            cams_refined = ((brightness - low) / (high - low + 1e-7))[batch_index]  # (P, H, W)
            cams = F.adaptive_avg_pool2d(cams_refined[:, None], grid)[:, 0]  # (P, h, w)
        out.update(
            pseudo_labels=pseudo.long(),
            cams=cams,
            cams_refined=cams_refined,
            batch_index=batch_index,
            class_index=class_index,
        )
        if mode == "loss":
            loss = F.cross_entropy(
                F.interpolate(seg_logits, size=pseudo.shape[-2:], mode="bilinear"), pseudo.long()
            )
            out["loss"] = loss
            out["log"] = {"seg_loss": loss.detach()}
        return out
