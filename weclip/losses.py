"""WeCLIP training losses (spec §7): bg/fg-balanced cross-entropy and the affinity loss on A_f.

Both come from AFA's code base (Ru et al., CVPR 2022, https://github.com/rulixiang/afa), reused by
the authors' WeCLIP code (spec §13.2); written here from the spec's description.

    L = seg_weight * L_seg + aff_weight * L_aff     (1 and 0.1, spec §7.3; ``cfg.loss``)
"""

from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F

__all__ = ["affinity_labels", "affinity_loss", "radius_window", "seg_loss", "total_loss"]


def seg_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Background/foreground-balanced cross-entropy (spec §7.1).

    The logits are upsampled bilinearly (align_corners=False) to the label size. L_bg is the mean CE
    over the pixels labelled 0, L_fg the mean CE over the pixels labelled 1..C-1, each pooled over
    the whole batch; pixels equal to ``ignore_index`` are in neither. Returns 0.5 * (L_bg + L_fg).

    Deviation, on purpose: the authors' code returns NaN when a batch has no background pixel or
    no foreground pixel (0/0, spec §12.6). Here an empty term contributes 0 (the loss is then
    0.5 * the other term) and the gradients stay finite. Otherwise the value is identical.

    Args:
        logits (torch.Tensor): BxCxhxw.
        labels (torch.Tensor): BxHxW integer class ids in [0, C) or ``ignore_index``.
        ignore_index (int): label excluded from both terms.

    Returns:
        torch.Tensor: scalar loss.
    """
    if logits.dim() != 4 or labels.dim() != 3 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"seg_loss expects logits (B, C, h, w) and labels (B, H, W) with the same B; got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    labels = labels.long()
    if logits.shape[-2:] != labels.shape[-2:]:  # (at the same size the resize is the identity)
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    # One CE per pixel; ignored pixels give 0 and no gradient.
    ce = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")  # (B, H, W)
    valid = labels != ignore_index
    is_bg = valid & (labels == 0)
    is_fg = valid & (labels != 0)
    # mean over each term's own pixels; clamp(min=1) turns an empty term's 0 / 0 into 0 / 1 = 0
    loss_bg = (ce * is_bg).sum() / is_bg.sum().clamp(min=1)
    loss_fg = (ce * is_fg).sum() / is_fg.sum().clamp(min=1)
    return 0.5 * (loss_bg + loss_fg)


def radius_window(grid: Tuple[int, int], radius: int, device: Any = None) -> torch.Tensor:
    """Patch pairs within Chebyshev distance ``radius`` (spec §7.2, AFA's ``get_mask_by_radius``).

    Args:
        grid (Tuple[int, int]): (h, w); patches are numbered row-major, p = row * w + col.
        radius (int): window half-size: |drow| <= radius and |dcol| <= radius (p itself included).
        device: where to build the mask.

    Returns:
        torch.Tensor: nxn bool, n = h*w, symmetric.
    """
    h, w = int(grid[0]), int(grid[1])
    index = torch.arange(h * w, device=device)
    rows, cols = index // w, index % w
    near_rows = (rows[:, None] - rows[None, :]).abs() <= radius
    near_cols = (cols[:, None] - cols[None, :]).abs() <= radius
    return near_rows & near_cols


def affinity_labels(
    pseudo_labels: torch.Tensor, grid: Tuple[int, int], radius: int = 8, ignore_index: int = 255
) -> torch.Tensor:
    """Pairwise affinity targets from pseudo-labels (spec §7.2, App. C.8).

    The labels are downsampled to the grid with PyTorch ``nearest`` (cell (i, j) takes pixel
    (floor(i*H/h), floor(j*W/w)); for 320 -> 20 that is (16i, 16j)). Then, for patches p, q:
    Y[p, q] = 1 if their labels are equal, 0 if not, and ``ignore_index`` when q is outside p's
    Chebyshev window of ``radius`` or either label is ``ignore_index``.

    Args:
        pseudo_labels (torch.Tensor): BxHxW integer labels (255 = ignore).
        grid (Tuple[int, int]): (h, w), the decoder's grid (A_f is B x hw x hw).
        radius (int): window radius on the grid (8).
        ignore_index (int): 2..255, the ignore value of the input and of the output.

    Returns:
        torch.Tensor: Bxnxn uint8 with values {0, 1, ignore_index}.
    """
    if pseudo_labels.dim() != 3:
        raise ValueError(
            f"affinity_labels expects pseudo_labels (B, H, W), got {tuple(pseudo_labels.shape)}"
        )
    if not 2 <= ignore_index <= 255 or radius < 0:
        raise ValueError(
            f"need 2 <= ignore_index <= 255, radius >= 0; got {ignore_index}, {radius}"
        )
    h, w = int(grid[0]), int(grid[1])
    b = pseudo_labels.shape[0]
    # label values <= 255 are exact in float32; 'nearest' is what the authors' code used
    small = F.interpolate(pseudo_labels[:, None].float(), size=(h, w), mode="nearest")
    small = small.reshape(b, h * w)
    aff = (small[:, :, None] == small[:, None, :]).to(torch.uint8)  # (B, n, n)
    ignored = small == ignore_index  # (B, n)
    ignored = ignored[:, :, None] | ignored[:, None, :]
    ignored = ignored | ~radius_window((h, w), radius, device=pseudo_labels.device)[None]
    return aff.masked_fill_(ignored, ignore_index)


def affinity_loss(
    aff: torch.Tensor, aff_label: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear affinity loss on A_f (spec §7.2, AFA's ``get_aff_loss``).

    L_aff = 0.5 * sum_{Y=1} (1 - A) / N+  +  0.5 * sum_{Y=0} A / N-, with N+ = #(Y=1) + 1 and
    N- = #(Y=0) + 1 counted over the whole batch (the +1 keeps an empty set finite). Other label
    values are ignored.

    Args:
        aff (torch.Tensor): Bxnxn predicted affinities in (0, 1) (``WeCLIPDecoder.affinity``).
        aff_label (torch.Tensor): Bxnxn targets from :func:`affinity_labels`.

    Returns:
        loss (torch.Tensor): scalar.
        pos_count (torch.Tensor): N+ (including the +1), int64 scalar.
        neg_count (torch.Tensor): N- (including the +1), int64 scalar.
    """
    if aff.shape != aff_label.shape:
        raise ValueError(
            f"affinity and labels differ in shape: {tuple(aff.shape)} vs {tuple(aff_label.shape)}"
        )
    pos = aff_label == 1
    neg = aff_label == 0
    pos_count = pos.sum() + 1
    neg_count = neg.sum() + 1
    pos_loss = ((1 - aff) * pos).sum() / pos_count
    neg_loss = (aff * neg).sum() / neg_count
    return 0.5 * pos_loss + 0.5 * neg_loss, pos_count, neg_count


def total_loss(
    seg_logits: torch.Tensor,
    aff: torch.Tensor,
    pseudo_labels: torch.Tensor,
    *,
    seg_weight: float,
    aff_weight: float,
    aff_radius: int,
    ignore_index: int,
) -> Dict[str, torch.Tensor]:
    """The loss of one training step (spec §7.3, App. A): seg_weight * L_seg + aff_weight * L_aff.

    Args:
        seg_logits (torch.Tensor): BxCxhxw decoder logits.
        aff (torch.Tensor): Bxnxn A_f with n = h*w (with gradient).
        pseudo_labels (torch.Tensor): BxHxW pseudo-labels (no gradient).
        seg_weight, aff_weight, aff_radius, ignore_index: the ``loss`` section (1, 0.1, 8, 255).

    Returns:
        dict: ``loss``, ``seg_loss``, ``aff_loss`` (scalars), ``aff_pos_count``,
        ``aff_neg_count`` (int64 scalars, +1 included).
    """
    grid = (seg_logits.shape[-2], seg_logits.shape[-1])
    loss_seg = seg_loss(seg_logits, pseudo_labels, ignore_index=ignore_index)
    with torch.no_grad():
        labels = affinity_labels(pseudo_labels, grid, aff_radius, ignore_index)
    loss_aff, pos_count, neg_count = affinity_loss(aff, labels)
    loss = seg_weight * loss_seg + aff_weight * loss_aff
    return {
        "loss": loss,
        "seg_loss": loss_seg,
        "aff_loss": loss_aff,
        "aff_pos_count": pos_count,
        "aff_neg_count": neg_count,
    }
