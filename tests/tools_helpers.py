"""Shared pieces of the tool tests (infer, eval_pseudo, visualize): a small synthetic VOC-layout dataset with
non-square images whose sides are not multiples of the patch, a tiny config on the random tiny CLIP, and a
training checkpoint written with the checkpoint module."""

import importlib.util
import os
import subprocess
import sys
import textwrap
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from tiny_clip import TINY_ARCH

from weclip.config import load_config
from weclip.engine.checkpoint import save_checkpoint
from weclip.models.weclip import build_weclip

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable

CLASS_NAMES = ("background", "circle", "square", "triangle", "cross")
# (H, W) of the synthetic images: non-square, not multiples of 8
SIZES: Tuple[Tuple[int, int], ...] = ((30, 44), (40, 26), (36, 36), (28, 41), (44, 30))


def make_dataset(directory: str, sizes: Sequence[Tuple[int, int]] = SIZES, seed: int = 0) -> str:
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


def config_text(root: str, resize_long: int = 40) -> str:
    """A config inheriting configs/voc.py for the synthetic data and the tiny random CLIP."""
    return textwrap.dedent(
        f"""
        _base_ = [{os.path.join(REPO, "configs", "voc.py")!r}]
        data = dict(
            root={root!r}, split_dir={root!r}, img_suffix=".png", train_split="train", val_split="val",
            num_classes=5, class_names={CLASS_NAMES!r},
            prompt_class_names={CLASS_NAMES[1:]!r},
            prompt_bg_names=("stripes", "noise"),
            crop_size=32,
        )
        model = dict(
            backbone=dict(arch=dict(_delete_=True, **{TINY_ARCH!r}), weights="random"),
            decoder=dict(embed_dim=16, num_layers=1, num_heads=2),
            refine=dict(static_layers=2, rfm_layers=2),
            par=dict(num_iter=2, dilations=(1, 2)),
        )
        test = dict(resize_long={resize_long})
        """
    )


def write_config(directory: str, root: str, **kwargs: Any) -> str:
    """Write :func:`config_text` to ``directory/tiny.py``; returns the path."""
    path = os.path.join(directory, "tiny.py")
    with open(path, "w") as f:
        f.write(config_text(root, **kwargs))
    return path


def make_checkpoint(config_path: str, work_dir: str, iteration: int = 2, seed: int = 1) -> str:
    """A training checkpoint ``work_dir/checkpoints/iter_<iteration>.pth`` of a seeded random decoder."""
    cfg = load_config(config_path)
    cfg.train.seed = seed
    torch.manual_seed(seed)
    model = build_weclip(cfg)
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


def import_tool(name: str) -> Any:
    """Import ``tools/<name>.py`` as a module (tools/ is not a package)."""
    path = os.path.join(REPO, "tools", name + ".py")
    spec = importlib.util.spec_from_file_location(f"weclip_tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def run_tool(name: str, args: List[str], env: Optional[Dict[str, str]] = None, timeout: int = 240):
    """Run ``python tools/<name>.py ARGS`` in the repository; fail the test with its output on error."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env or {}))
    proc = subprocess.run(
        [PYTHON, os.path.join(REPO, "tools", name + ".py"), *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"tools/{name}.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )
    return proc
