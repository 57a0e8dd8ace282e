"""Multi-scale + flip inference (spec §9, the authors' ``test_msc_flip_voc.py``).

Written over a callable ``logits_fn(images BxCinxHxW) -> logits BxCxhxw`` (for WeCLIP:
``lambda x: model(x)["seg_logits"]``), so the merge can be tested on a toy model.

The authors' procedure, step by step (``msc_flip_inference``):

1. Long side → ``resize_long`` (512): ratio = 512 / max(H, W), size (int(H·ratio), int(W·ratio)),
   bilinear, align_corners=False, on the normalised tensor.
2. For each scale s in ``scales`` (the first one is the reference, 1.0 in the configs): the input
   is resized with ``F.interpolate(scale_factor=s)`` (bilinear, align_corners=False; skipped for
   s = 1.0), and [x, flip(x)] go through the network as one batch.
3. Sizes that are not multiples of the patch size: the authors' ``conv1`` (16×16, stride 16) drops
   the remainder rows at the bottom and the remainder columns at the right (floor), so the network
   only ever sees the top-left ``(H//p·p, W//p·p)`` block. ``crop_to_patch_multiple`` makes that
   explicit, and it is applied *after* the flip, exactly like ``conv1`` on the flipped tensor:
   the flipped branch therefore sees x[..., r:] (r = W mod p) mirrored, not x[..., :W−r].
4. Flip average: s = (l(x) + flip(l(flip x))) / 2 (``flip=False``/``--no-flip``: s = l(x)).
   Non-reference scales are resized bilinearly to the reference scale's logit size *before* this
   average (the authors' order).
5. Mean of the raw logits over the scales (no softmax before merging).
6. Bilinear (align_corners=False) to the original image size → logits (or probabilities on
   request) and argmax.
"""

import logging
from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "InferenceOutput",
    "crop_to_patch_multiple",
    "flip_merged_logits",
    "msc_flip_inference",
    "multi_scale_logits",
    "predict_from_cfg",
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
        probs (torch.Tensor, optional): BxCxHxW softmax of ``logits`` when requested.
    """

    logits: torch.Tensor
    labels: torch.Tensor
    msc_logits: torch.Tensor
    single_logits: torch.Tensor
    probs: Optional[torch.Tensor] = None


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


def crop_to_patch_multiple(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Drop the bottom rows and right columns beyond a multiple of ``patch_size`` (floor).

    This is what a stride-``p`` patch embedding (``conv1``) does implicitly (spec §1.3).

    Args:
        images (torch.Tensor): BxCxHxW.
        patch_size (int): p.

    Returns:
        torch.Tensor: BxCx(H//p·p)x(W//p·p), a view.
    """
    H, W = images.shape[-2:]
    h, w = H // patch_size * patch_size, W // patch_size * patch_size
    if h == 0 or w == 0:
        raise ValueError(
            f"input of size {H}x{W} is smaller than one {patch_size}x{patch_size} patch "
            "(image too small for this scale / resize_long)"
        )
    return images[..., :h, :w]


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
    patch_size: int,
    size: Optional[Tuple[int, int]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Logits of one scale, flip-averaged (spec §9).

    Args:
        logits_fn (Callable): BxCinxHxW → BxCxhxw.
        images (torch.Tensor): BxCinxHxW input of this scale (not cropped; cropping to a multiple
            of ``patch_size`` happens here, after the flip).
        flip (bool): average with the mirrored input's mirrored logits.
        patch_size (int): p (1 = no cropping).
        size (Tuple[int, int], optional): resize the logits to this (h, w) (bilinear,
            align_corners=False) before the flip average; ``None`` keeps them.

    Returns:
        Tuple[torch.Tensor, torch.Tensor]: merged BxCxhxw logits, and the un-flipped input's
        logits (after the optional resize).
    """
    B = images.shape[0]
    views = [crop_to_patch_multiple(images, patch_size)]
    if flip:
        views.append(crop_to_patch_multiple(images.flip(-1), patch_size))  # crop after the flip
    logits = _run(logits_fn, torch.cat(views, dim=0), len(views) * B)
    if size is not None and tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    plain = logits[:B]
    if not flip:
        return plain, plain
    return (plain + logits[B:].flip(-1)) / 2, plain


def multi_scale_logits(
    logits_fn: LogitsFn,
    images: torch.Tensor,
    scales: Sequence[float],
    flip: bool,
    patch_size: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean over scales of the flip-averaged raw logits, at the reference scale's logit size.

    Args:
        logits_fn (Callable): BxCinxHxW → BxCxhxw.
        images (torch.Tensor): BxCinxHxW (already resized to the long side).
        scales (Sequence[float]): the first is the reference (its logit size is kept).
        flip (bool): flip averaging.
        patch_size (int): p.

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
        logits, plain = flip_merged_logits(logits_fn, x, flip, patch_size, size=ref_size)
        if ref_size is None:
            ref_size = (int(logits.shape[-2]), int(logits.shape[-1]))
            single = plain
        merged.append(logits)
    assert single is not None
    return torch.stack(merged, dim=0).mean(dim=0), single


def msc_flip_inference(
    logits_fn: LogitsFn,
    images: torch.Tensor,
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = True,
    resize_long: Optional[int] = 512,
    patch_size: int = 16,
    out_size: Optional[Tuple[int, int]] = None,
    return_probs: bool = False,
) -> InferenceOutput:
    """Multi-scale + flip prediction of a batch of same-sized images (spec §9).

    Runs under ``torch.no_grad()``; a ``logits_fn`` that needs autograd (e.g. to compute CAMs)
    must enable it itself (``torch.enable_grad()``).

    Args:
        logits_fn (Callable): BxCinxHxW → BxCxhxw raw logits (for WeCLIP, the decoder's
            ``seg_logits``).
        images (torch.Tensor): BxCinxHxW normalised images at their original size.
        scales (Sequence[float]): ``cfg.test.scales``; the first is the reference size.
        flip (bool): ``cfg.test.flip``.
        resize_long (int, optional): ``cfg.test.resize_long``; ``None`` or 0 keeps the size.
        patch_size (int): the backbone's patch size (remainders are dropped, see module doc).
        out_size (Tuple[int, int], optional): output (H, W); default the input's (H, W).
        return_probs (bool): also return the softmax of the output logits.

    Returns:
        InferenceOutput: ``logits`` BxCxHxW, ``labels`` BxHxW, ``msc_logits``/``single_logits``
        BxCxhxw, ``probs`` BxCxHxW or ``None``.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be BxCxHxW, got shape {tuple(images.shape)}")
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    if out_size is None:
        out_size = (int(images.shape[-2]), int(images.shape[-1]))
    with torch.no_grad():
        x = resize_long_side(images, int(resize_long)) if resize_long else images
        msc, single = multi_scale_logits(logits_fn, x, scales, flip, patch_size)
        logits = F.interpolate(msc, size=tuple(out_size), mode="bilinear", align_corners=False)
        labels = logits.argmax(dim=1)
        probs = torch.softmax(logits, dim=1) if return_probs else None
    return InferenceOutput(
        logits=logits, labels=labels, msc_logits=msc, single_logits=single, probs=probs
    )


def predict_from_cfg(
    logits_fn: LogitsFn,
    images: torch.Tensor,
    test_cfg: Mapping[str, Any],
    patch_size: int,
    out_size: Optional[Tuple[int, int]] = None,
    return_probs: bool = False,
) -> InferenceOutput:
    """``msc_flip_inference`` with ``scales``, ``flip`` and ``resize_long`` read from ``cfg.test``.

    Args:
        logits_fn (Callable): BxCinxHxW → BxCxhxw.
        images (torch.Tensor): BxCinxHxW normalised images at their original size.
        test_cfg (Mapping): ``cfg.test`` (``--no-flip`` sets ``test.flip=False``).
        patch_size (int): the backbone's patch size.
        out_size (Tuple[int, int], optional): output (H, W); default the input's.
        return_probs (bool): also return probabilities.

    Returns:
        InferenceOutput: see ``msc_flip_inference``.
    """
    missing = [k for k in ("scales", "flip", "resize_long") if k not in test_cfg]
    if missing:
        raise KeyError(f"cfg.test lacks {missing} (see configs/_base_/default_runtime.py)")
    return msc_flip_inference(
        logits_fn,
        images,
        scales=tuple(float(s) for s in test_cfg["scales"]),
        flip=bool(test_cfg["flip"]),
        resize_long=test_cfg["resize_long"],
        patch_size=patch_size,
        out_size=out_size,
        return_probs=return_probs,
    )
