"""WeCLIP+ training losses (doc §5), each term a function.

WeCLIP+ (Zhang et al., TPAMI 2025, https://ieeexplore.ieee.org/document/10891864), as the authors'
``WeCLIP+/scripts/dist_clip_voc.py: train`` combines them (all logits bilinearly upsampled to the
pseudo-label size, 320x320):

    L = 1   · L_seg(seg, Y')                                   bg/fg-balanced CE (spec §7.1)
      + 0.1 · L_aff(A, affinity labels of Y)                   AFA's affinity loss (spec §7.2)
      + 0.1 · [L_seg(seg_clip, argmax seg_dino) + L_seg(seg_dino, argmax seg_clip)]
      + 1   · Dice(seg, Y')

with seg = 0.5·seg_clip + 0.5·seg_dino, A = sigmoid(FᵀF) of the concatenated features, Y the online
pseudo-labels and Y' = Y after the self-training replacement (:mod:`.self_training`; Y' = Y before
it starts). The bg/fg-balanced CE and the affinity loss are WeCLIP's (:mod:`weclip.losses`).
"""

from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from weclip.losses import affinity_labels, affinity_loss, seg_loss

__all__ = ["PLUS_LOSS_DEFAULTS", "cross_branch_loss", "dice_loss", "plus_total_loss"]

#: The authors' weights and settings (doc §5); ``dice_ignore_in_denominator`` is their Dice quirk.
PLUS_LOSS_DEFAULTS: Dict[str, Any] = {
    "seg_weight": 1.0,
    "aff_weight": 0.1,
    "cross_weight": 0.1,
    "dice_weight": 1.0,
    "aff_radius": 8,
    "ignore_index": 255,
    "dice_ignore_in_denominator": True,
}


def _upsample(logits: Tensor, size: Tuple[int, int]) -> Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def dice_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    ignore_index: int = 255,
    ignore_in_denominator: bool = True,
    eps: float = 1e-7,
) -> Tensor:
    """Soft Dice loss over classes, pooled over the batch (doc §5.4).

    With p = softmax(logits) (upsampled bilinearly to the label size) and y the one-hot labels
    (an ignored pixel's one-hot is all zeros), per class c, summing over every image and pixel:

        inter_c = Σ p_c·y_c,   union_c = Σ (p_c + y_c),   Dice = mean_c 2·inter_c / (union_c + eps)

    and the loss is 1 - Dice. The mean runs over all C classes, so a class absent from both the
    labels and (nearly) the prediction contributes Dice ≈ 0.

    ``ignore_in_denominator=True`` is the authors' ``WeCLIP+/WeCLIP_Plus/dice_loss.py:
    dice_loss``: it overwrites ignored labels with C before building its valid-pixel mask, so the
    mask keeps every pixel and the predictions at ignored pixels are counted in union_c. ``False``
    is the clean version: ignored pixels are left out of both sums. (Their pseudo-labels contain no
    ignore value, so the two agree on their training runs.) Unlike theirs, this does not modify
    ``labels`` in place.

    Args:
        logits (Tensor): (B, C, h, w).
        labels (Tensor): (B, H, W) class ids in [0, C) or ``ignore_index``.
        ignore_index (int): the ignore label (255).
        ignore_in_denominator (bool): the authors' quirk (True) or the clean Dice (False).
        eps (float): denominator epsilon (1e-7).

    Returns:
        Tensor: scalar loss in [0, 1].
    """
    if logits.dim() != 4 or labels.dim() != 3 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"dice_loss expects logits (B, C, h, w) and labels (B, H, W) with the same B; got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    num_classes = logits.shape[1]
    labels = labels.long()
    valid = labels != ignore_index  # (B, H, W)
    if bool(((labels < 0) | (labels >= num_classes))[valid].any()):
        raise ValueError(f"labels outside [0, {num_classes}) that are not {ignore_index}")
    probs = F.softmax(_upsample(logits, labels.shape[-2:]).float(), dim=1)  # (B, C, H, W)
    onehot = F.one_hot(torch.where(valid, labels, num_classes), num_classes + 1)[..., :num_classes]
    onehot = onehot.permute(0, 3, 1, 2).to(probs.dtype)  # (B, C, H, W), zeros at ignored pixels
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    pred_mass = probs if ignore_in_denominator else probs * valid[:, None]
    union = (pred_mass + onehot).sum(dim=(0, 2, 3))
    return 1.0 - (2.0 * inter / (union + eps)).mean()


def cross_branch_loss(
    seg_clip: Tensor, seg_dino: Tensor, size: Tuple[int, int], ignore_index: int = 255
) -> Tuple[Tensor, Tensor]:
    """Each branch learns the other's hard prediction (doc §5.3).

    Both logit maps are upsampled bilinearly to ``size``; the targets are the argmax of the other
    branch's softmax there (no gradient flows through a target). Returns
    (L_seg(seg_clip, argmax seg_dino), L_seg(seg_dino, argmax seg_clip)), each WeCLIP's bg/fg-
    balanced CE (:func:`weclip.losses.seg_loss`).

    Args:
        seg_clip (Tensor): (B, C, h, w). seg_dino (Tensor): (B, C, h, w).
        size (Tuple[int, int]): (H, W), the pseudo-label size.
        ignore_index (int): passed to the CE (no target is ever ignored).

    Returns:
        Tuple[Tensor, Tensor]: two scalars.
    """
    up_clip, up_dino = _upsample(seg_clip, size), _upsample(seg_dino, size)
    with torch.no_grad():
        target_from_dino = F.softmax(up_dino, dim=1).argmax(dim=1)  # (B, H, W)
        target_from_clip = F.softmax(up_clip, dim=1).argmax(dim=1)
    return (
        seg_loss(up_clip, target_from_dino, ignore_index=ignore_index),
        seg_loss(up_dino, target_from_clip, ignore_index=ignore_index),
    )


def plus_total_loss(
    seg_clip: Tensor,
    seg_dino: Tensor,
    aff: Tensor,
    pseudo_labels: Tensor,
    train_labels: Optional[Tensor] = None,
    loss_cfg: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Tensor]:
    """The WeCLIP+ loss of one training step (doc §5).

    Args:
        seg_clip (Tensor): (B, C, h, w). seg_dino (Tensor): (B, C, h, w).
        aff (Tensor): (B, n, n) sigmoid(FᵀF) of the concatenated features (with gradient).
        pseudo_labels (Tensor): (B, H, W) online pseudo-labels Y; the affinity labels come from
            these (the authors clone them before the self-training replacement).
        train_labels (Tensor, optional): (B, H, W) Y' for L_seg and Dice (after
            :func:`weclip.models.plus.self_training.self_training_labels`); None = Y.
        loss_cfg (Mapping, optional): overrides of :data:`PLUS_LOSS_DEFAULTS`; unknown keys raise.

    Returns:
        dict: ``loss`` and the unweighted terms ``seg_loss``, ``aff_loss``, ``cross_clip_loss``,
        ``cross_dino_loss``, ``dice_loss`` (scalars); ``aff_pos_count``, ``aff_neg_count``.
    """
    cfg = dict(PLUS_LOSS_DEFAULTS)
    unknown = sorted(set(loss_cfg or {}) - set(cfg))
    if unknown:
        raise KeyError(f"Unknown WeCLIP+ loss key(s) {unknown}; known: {sorted(cfg)}")
    cfg.update(loss_cfg or {})
    ignore_index = int(cfg["ignore_index"])
    if train_labels is None:
        train_labels = pseudo_labels
    if train_labels.shape != pseudo_labels.shape:
        raise ValueError(
            f"train_labels {tuple(train_labels.shape)} and pseudo_labels "
            f"{tuple(pseudo_labels.shape)} differ in shape"
        )
    size = tuple(pseudo_labels.shape[-2:])
    grid = tuple(seg_clip.shape[-2:])
    seg = _upsample(0.5 * seg_clip + 0.5 * seg_dino, size)  # mean first, then upsample (theirs)
    loss_seg = seg_loss(seg, train_labels, ignore_index=ignore_index)
    loss_dice = dice_loss(
        seg,
        train_labels,
        ignore_index=ignore_index,
        ignore_in_denominator=bool(cfg["dice_ignore_in_denominator"]),
    )
    loss_clip, loss_dino = cross_branch_loss(seg_clip, seg_dino, size, ignore_index)
    with torch.no_grad():
        aff_targets = affinity_labels(pseudo_labels, grid, int(cfg["aff_radius"]), ignore_index)
    loss_aff, pos_count, neg_count = affinity_loss(aff, aff_targets)
    loss = (
        float(cfg["seg_weight"]) * loss_seg
        + float(cfg["aff_weight"]) * loss_aff
        + float(cfg["cross_weight"]) * (loss_clip + loss_dino)
        + float(cfg["dice_weight"]) * loss_dice
    )
    return {
        "loss": loss,
        "seg_loss": loss_seg,
        "aff_loss": loss_aff,
        "cross_clip_loss": loss_clip,
        "cross_dino_loss": loss_dino,
        "dice_loss": loss_dice,
        "aff_pos_count": pos_count,
        "aff_neg_count": neg_count,
    }
