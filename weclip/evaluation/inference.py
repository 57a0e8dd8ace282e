"""Multi-scale + flip inference (spec §9, the authors' ``test_msc_flip_voc.py``).

Written over a callable ``logits_fn(images Bx3xHxW 0-255) -> logits BxCxhxw`` (for a model of the
library: ``lambda x: model(x)["seg_logits"]``), so the merge can be tested on a toy model. The images
are 0-255 RGB (float after a resize); the model normalises them.

The authors' procedure, step by step (``msc_flip_inference``):

1. Long side → ``resize_long`` (512): ratio = 512 / max(H, W), size (int(H·ratio), int(W·ratio)),
   bilinear, align_corners=False, on the normalised tensor.
2. For each scale s in ``scales`` (the first one is the reference, 1.0 in the configs): the input
   is resized with ``F.interpolate(scale_factor=s)`` (bilinear, align_corners=False; skipped for
   s = 1.0), and [x, flip(x)] go through the network as one batch.
3. Sizes that are not multiples of the patch size: the authors' ``conv1`` (16×16, stride 16) drops
   the remainder rows at the bottom and the remainder columns at the right (floor), so the network
   only ever sees the top-left ``(H//p·p, W//p·p)`` block. The model does the same crop on whatever it
   receives (the model interface), so the flipped input is cropped *after* the flip, exactly like
   ``conv1`` on the flipped tensor: the flipped branch sees x[..., r:] (r = W mod p) mirrored.
4. Flip average: s = (l(x) + flip(l(flip x))) / 2 (``flip=False``/``--no-flip``: s = l(x)).
   Non-reference scales are resized bilinearly to the reference scale's logit size *before* this
   average (the authors' order).
5. Mean of the raw logits over the scales (no softmax before merging).
6. Bilinear (align_corners=False) to the original image size → logits and argmax.
"""

import logging
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "InferenceOutput",
    "fit_long_side",
    "flip_merged_logits",
    "msc_flip_inference",
    "multi_scale_logits",
    "resize_long_side",
]

logger = logging.getLogger("weclip")

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class InferenceOutput:
    """Result of ``msc_flip_inference``.

    Attributes:
        logits (torch.Tensor): BxCxHxW merged logits at the output (original image) size.
        labels (torch.Tensor): BxHxW int64 argmax of ``logits``.
        msc_logits (torch.Tensor): BxCxhxw merged logits at the reference scale's logit size
            (the authors' ``msc_segs``, what they save for DenseCRF).
        single_logits (torch.Tensor): BxCxhxw logits of the un-flipped input at the reference
            scale only (the authors' single-scale "segs" prediction).
    """

    logits: torch.Tensor
    labels: torch.Tensor
    msc_logits: torch.Tensor
    single_logits: torch.Tensor


def resize_long_side(images: torch.Tensor, long_side: int) -> torch.Tensor:
    """Resize so that the long side is ``long_side`` (spec §9).

    Args:
        images (torch.Tensor): BxCxHxW float.
        long_side (int): target long side (512).

    Returns:
        torch.Tensor: Bx Cx int(H·r) x int(W·r), r = long_side / max(H, W); bilinear,
        align_corners=False.
    """
    H, W = images.shape[-2:]
    ratio = long_side / max(H, W)
    size = (int(H * ratio), int(W * ratio))  # int() truncates, as the authors
    if size == (H, W):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def _run(logits_fn: LogitsFn, batch: torch.Tensor, expected_batch: int) -> torch.Tensor:
    logits = logits_fn(batch)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
        raise ValueError(f"logits_fn must return a BxCxhxw tensor, got {type(logits).__name__}")
    if logits.shape[0] != expected_batch:
        raise ValueError(
            f"logits_fn returned batch {logits.shape[0]} for an input batch of {expected_batch}"
        )
    return logits.float()


def flip_merged_logits(
    logits_fn: LogitsFn,
    images: torch.Tensor,
    flip: bool,
    size: Optional[Tuple[int, int]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Logits of one scale, flip-averaged (spec §9).

    Args:
        logits_fn (Callable): Bx3xHxW → BxCxhxw.
        images (torch.Tensor): Bx3xHxW input of this scale (uncropped: the model crops what it gets to
            a multiple of its patch size, so the flipped view is cropped after the flip, as conv1 does).
        flip (bool): average with the mirrored input's mirrored logits.
        size (Tuple[int, int], optional): resize the logits to this (h, w) (bilinear,
            align_corners=False) before the flip average; ``None`` keeps them.

    Returns:
        Tuple[torch.Tensor, torch.Tensor]: merged BxCxhxw logits, and the un-flipped input's
        logits (after the optional resize).
    """
    B = images.shape[0]
    views = [images, images.flip(-1)] if flip else [images]
    logits = _run(logits_fn, torch.cat(views, dim=0), len(views) * B)
    if size is not None and tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    plain = logits[:B]
    if not flip:
        return plain, plain
    return (plain + logits[B:].flip(-1)) / 2, plain


def multi_scale_logits(
    logits_fn: LogitsFn, images: torch.Tensor, scales: Sequence[float], flip: bool
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean over scales of the flip-averaged raw logits, at the reference scale's logit size.

    Args:
        logits_fn (Callable): Bx3xHxW → BxCxhxw.
        images (torch.Tensor): Bx3xHxW (already resized to the long side).
        scales (Sequence[float]): the first is the reference (its logit size is kept).
        flip (bool): flip averaging.

    Returns:
        Tuple[torch.Tensor, torch.Tensor]: ``msc_logits`` BxCxhxw and ``single_logits`` (the
        reference scale, un-flipped input) BxCxhxw.
    """
    if len(scales) == 0 or any(float(s) <= 0 for s in scales):
        raise ValueError(f"scales must be a non-empty list of positive numbers, got {scales}")
    merged: List[torch.Tensor] = []
    ref_size: Optional[Tuple[int, int]] = None
    single = None
    for s in scales:
        x = images
        if float(s) != 1.0:
            x = F.interpolate(images, scale_factor=float(s), mode="bilinear", align_corners=False)
        logits, plain = flip_merged_logits(logits_fn, x, flip, size=ref_size)
        if ref_size is None:
            ref_size = (int(logits.shape[-2]), int(logits.shape[-1]))
            single = plain
        merged.append(logits)
    assert single is not None
    return torch.stack(merged, dim=0).mean(dim=0), single


def fit_long_side(
    size: Tuple[int, int], long_side: Optional[int], patch_size: int, min_scale: float = 1.0
) -> Optional[int]:
    """The long side to resize to so that the short side of every scaled view keeps one patch.

    ``resize_long`` (512) brings extreme aspect ratios below one patch on the short side (a 2000x20 image
    becomes 512x5): such an image is resized to the smallest long side that keeps ``patch_size`` pixels on
    the short side of its smallest view instead (training accepts any image, so inference must too). For
    every other image the answer is ``long_side`` itself, i.e. the authors' procedure.

    Args:
        size (Tuple[int, int]): (H, W) of the image.
        long_side (int, optional): ``test.resize_long``; None keeps the size.
        patch_size (int): the model's patch size.
        min_scale (float): the smallest of ``test.scales`` (a view's side is floor(side * scale)).

    Returns:
        int | None: the long side to use.
    """
    short, long = min(size), max(size)

    def keeps_a_patch(target: int) -> bool:
        side = int(short * target / long)  # resize_long_side's truncation
        return math.floor(side * min(min_scale, 1.0)) >= patch_size

    target = long if long_side is None else int(long_side)
    if keeps_a_patch(target):
        return long_side
    target = max(target, math.ceil(patch_size * long / (short * min(min_scale, 1.0))))
    while not keeps_a_patch(target):
        target += 1
    return target


def msc_flip_inference(
    logits_fn: LogitsFn,
    images: torch.Tensor,
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = True,
    resize_long: Optional[int] = 512,
    out_size: Optional[Tuple[int, int]] = None,
) -> InferenceOutput:
    """Multi-scale + flip prediction of a batch of same-sized images (spec §9).

    Runs under ``torch.no_grad()``; a ``logits_fn`` that needs autograd (e.g. to compute CAMs)
    must enable it itself (``torch.enable_grad()``).

    Args:
        logits_fn (Callable): Bx3xHxW → BxCxhxw raw logits (a model's ``seg_logits``).
        images (torch.Tensor): Bx3xHxW 0-255 RGB images (uint8 or float) at their original size.
        scales (Sequence[float]): ``cfg.test.scales``; the first is the reference size.
        flip (bool): ``cfg.test.flip``.
        resize_long (int, optional): ``cfg.test.resize_long``; ``None`` keeps the size.
        out_size (Tuple[int, int], optional): output (H, W); default the input's (H, W).

    Returns:
        InferenceOutput: ``logits`` BxCxHxW, ``labels`` BxHxW, ``msc_logits``/``single_logits``
        BxCxhxw.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be BxCxHxW, got shape {tuple(images.shape)}")
    if out_size is None:
        out_size = (int(images.shape[-2]), int(images.shape[-1]))
    with torch.no_grad():
        x = images.float()
        x = resize_long_side(x, int(resize_long)) if resize_long else x
        msc, single = multi_scale_logits(logits_fn, x, scales, flip)
        logits = F.interpolate(msc, size=tuple(out_size), mode="bilinear", align_corners=False)
        labels = logits.argmax(dim=1)
    return InferenceOutput(logits=logits, labels=labels, msc_logits=msc, single_logits=single)
