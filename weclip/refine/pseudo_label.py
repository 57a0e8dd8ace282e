"""Pseudo-labels from refined CAMs: background score, PAR, argmax (spec §5).

Per image the authors build [bg; r_1..r_K] with bg = (1 − max_k r_k)^bg_power, refine it with PAR
and map the argmax channel to the class ids [0, id_1+1, ..., id_K+1]. Here all images share one PAR
call: each image's channels are packed as [bg; its present classes] and padded to the batch's
largest K with all-zero channels.

Why a padding channel never wins the argmax: PAR updates every channel only from its own values with
non-negative weights, so an all-zero channel stays exactly 0 through all iterations, and the real
channels stay ≥ 0 (r_k ∈ [0, 1) after min-max and a bilinear resize; bg = (1 − max r)^bg_power ≥ 0).
At a pixel where every real channel is 0 the maximum is a tie, and ``argmax`` returns the first
maximal index; padding channels come after every real channel (the bg channel 0 always exists), so
the first maximum is always a real channel.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    "IGNORE_INDEX",
    "background_score",
    "pack_scores",
    "scores_to_labels",
]

IGNORE_INDEX = 255  # ignored pixels and keys of padding channels


def background_score(
    cams: Tensor, batch_index: Tensor, batch_size: int, bg_power: float = 1.0
) -> Tensor:
    """bg = (1 − max_k r_k)^bg_power per image (spec §5 step 1); 1 for an image without classes.

    Args:
        cams (Tensor): (P, H, W) refined CAMs (≥ 0).
        batch_index (Tensor): (P,) image of each CAM.
        batch_size (int): B.
        bg_power (float): exponent (``cfg.model.pseudo_label.bg_power``, 1 in WeCLIP).

    Returns:
        Tensor: (B, H, W) background scores.
    """
    size = cams.shape[-2:]
    flat = cams.reshape(cams.shape[0], -1)
    # max over each image's CAMs; the zero start value is harmless because the CAMs are ≥ 0
    peak = cams.new_zeros(batch_size, flat.shape[1])
    peak.scatter_reduce_(0, batch_index[:, None].expand_as(flat), flat, "amax", include_self=True)
    return (1 - peak.view(batch_size, *size)).pow(bg_power)


def pack_scores(
    cams: Tensor,
    batch_index: Tensor,
    class_index: Tensor,
    batch_size: int,
    bg_power: float = 1.0,
    counts: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Stack [bg; r_1..r_K] per image into one zero-padded tensor (spec §5 steps 1-2).

    Args:
        cams (Tensor): (P, H, W) refined CAMs, pairs of an image contiguous with ascending class ids
            (the order of :func:`weclip.cam.gradcam.present_pairs`).
        batch_index (Tensor): (P,) image of each CAM.
        class_index (Tensor): (P,) 0-based foreground id of each CAM.
        batch_size (int): B.
        bg_power (float): background exponent.
        counts (Tensor, optional): (B,) pairs per image on the CPU (``GradCAMResult.counts``): the
            channel layout is then built on the host and nothing waits for the device; the grouping
            of ``batch_index`` is taken as given. Default: read from ``batch_index`` (checked).

    Returns:
        Tuple[Tensor, Tensor]: ``scores`` (B, 1+Kmax, H, W) and ``keys`` (B, 1+Kmax) long, the class
        id of each channel (0 = background, fg id + 1, ``IGNORE_INDEX`` for padding channels, which
        hold zeros).
    """
    num_pairs = batch_index.numel()
    if counts is None:
        if num_pairs > 1 and bool((batch_index[1:] < batch_index[:-1]).any()):
            raise ValueError(
                "pack_scores needs the CAMs grouped by image in batch order "
                "(batch_index non-decreasing)"
            )
        counts = torch.bincount(batch_index, minlength=batch_size).cpu()
    elif counts.device.type != "cpu" or tuple(counts.shape) != (batch_size,):
        raise ValueError(
            f"counts must be a CPU tensor of shape ({batch_size},), got {tuple(counts.shape)} on "
            f"{counts.device}"
        )
    elif int(counts.sum()) != num_pairs:
        raise ValueError(f"counts sum to {int(counts.sum())} but there are {num_pairs} CAMs")
    k_max = int(counts.max()) if num_pairs > 0 else 0
    scores = cams.new_zeros(batch_size, 1 + k_max, *cams.shape[-2:])
    keys = torch.full((batch_size, 1 + k_max), IGNORE_INDEX, dtype=torch.long, device=cams.device)
    scores[:, 0] = background_score(cams, batch_index, batch_size, bg_power)
    keys[:, 0] = 0
    # channel of pair p inside its image = 1 + its rank among that image's pairs (on the host)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(num_pairs) - torch.repeat_interleave(starts, counts, output_size=num_pairs)
    rank = rank.to(cams.device, non_blocking=True)
    scores[batch_index, 1 + rank] = cams
    keys[batch_index, 1 + rank] = class_index.long() + 1
    return scores, keys


def scores_to_labels(scores: Tensor, keys: Tensor) -> Tensor:
    """Argmax over channels mapped to class ids (spec §5 step 4); ties go to the lowest channel.

    Args:
        scores (Tensor): (B, K', H, W).
        keys (Tensor): (B, K') class id of each channel.

    Returns:
        Tensor: (B, H, W) long class ids.
    """
    # first maximal index on ties, as numpy/torch argmax in the authors' code
    if scores.device.type == "cpu" and scores.dim() == 4:
        # the same argmax over a contiguous last dimension: ~8x faster on CPU than over dim 1
        channel = scores.permute(0, 2, 3, 1).contiguous().argmax(dim=-1)
    else:
        channel = scores.argmax(dim=1)
    return torch.gather(keys, 1, channel.flatten(1)).view_as(channel)
