"""Shared pieces of the training-engine tests: tiny toy data, tiny configs, a stand-in WeCLIP."""

import contextlib
import os
import textwrap
from typing import Any, Dict, Iterator, Optional

import torch
import torch.nn.functional as F
from tiny_clip import TINY_ARCH
from torch import nn

from weclip.config import load_config
from weclip.data.toy import ToyWorldConfig, write_toy_dataset
from weclip.models.clip_backbone import FrozenCLIP, build_clip_model, build_tokenizer
from weclip.models.decoder import WeCLIPDecoder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(os.path.abspath(os.sys.executable))


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


def tiny_config_text(root: str, **train: Any) -> str:
    """A python config (inheriting configs/voc.py) for the toy world at 32 px with the tiny random CLIP."""
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
            root={root!r}, split_dir={root!r}, img_suffix=".png", train_split="train", val_split="val",
            num_classes=5, class_names=("background", "circle", "square", "triangle", "cross"),
            prompt_class_names=("circle", "square", "triangle", "cross"),
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
        """
    )


def tiny_config(directory: str, root: str, options: Optional[Dict[str, Any]] = None, **train: Any):
    """Write :func:`tiny_config_text` to ``directory/tiny.py`` and load it."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "tiny.py")
    with open(path, "w") as f:
        f.write(tiny_config_text(root, **train))
    return load_config(path, options)


class StandInWeCLIP(nn.Module):
    """Follows the ``WeCLIP`` forward contract (docs/architecture.md) with the real tiny CLIP and decoder,
    but with a fixed, cheap pseudo-label rule: pixels brighter than the image mean get the smallest present
    class, the others background. Lets the engine be tested without the pseudo-label machinery."""

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
        self.calls = []  # iterations seen by forward, for tests

    def forward(
        self, images: torch.Tensor, cls_labels=None, iteration=None, out_size=None, valid=None
    ) -> Dict[str, torch.Tensor]:
        self.calls.append(iteration)
        b, _, height, width = images.shape
        feats, _ = self.backbone.forward_blocks(images)
        grid = self.backbone.grid_size(height, width)
        seg_logits, fused = self.decoder(feats, grid)
        out = {"seg_logits": seg_logits, "aff": self.decoder.affinity(fused)}
        if cls_labels is None:
            return out
        with torch.no_grad():
            brightness = images.mean(dim=1)  # (B, H, W)
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
            span = brightness.amax(dim=(1, 2), keepdim=True) - brightness.amin(
                dim=(1, 2), keepdim=True
            )
            norm = (brightness - brightness.amin(dim=(1, 2), keepdim=True)) / (span + 1e-7)
            cams_refined = norm[batch_index]  # (P, H, W)
            cams = F.adaptive_avg_pool2d(cams_refined[:, None], grid)[:, 0]  # (P, h, w)
        out.update(
            pseudo_labels=pseudo.long(),
            cams=cams,
            cams_refined=cams_refined,
            batch_index=batch_index,
            class_index=class_index,
        )
        return out
