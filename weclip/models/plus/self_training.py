"""WeCLIP+ self-training: confident predictions replace the pseudo-labels late in training (doc §5.5).

The authors' ``WeCLIP+/scripts/dist_clip_voc.py: train`` does, once the 0-based step index
``n_iter`` exceeds 18,000 (VOC; 40,000 in ``dist_clip_coco.py``):

    conf, pred = max over classes of softmax(upsampled 0.5·seg_clip + 0.5·seg_dino)
    Y[conf > 0.75] = pred[conf > 0.75]

before the segmentation CE and the Dice loss; the affinity labels are built from Y before this
(a clone). Reference: WeCLIP+ (Zhang et al., TPAMI 2025, https://ieeexplore.ieee.org/document/10891864).
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SELF_TRAINING_START", "self_training_active", "self_training_labels"]

#: The authors' thresholds on the 0-based step index (``n_iter > start``), by dataset.
SELF_TRAINING_START = {"voc": 18000, "coco": 40000}


def self_training_active(iteration: Optional[int], start_iter: int) -> bool:
    """Whether the replacement applies at a 1-indexed training ``iteration``.

    The authors test ``n_iter > start_iter`` on the 0-based index n_iter = iteration - 1, so with
    ``start_iter = 18000`` the first replaced step is iteration 18,002. ``None`` (validation,
    inference) is never active.
    """
    return iteration is not None and iteration - 1 > start_iter


@torch.no_grad()
def self_training_labels(
    pseudo_labels: Tensor,
    seg_logits: Tensor,
    *,
    threshold: float = 0.75,
    keep_ignore: bool = False,
    ignore_index: int = 255,
) -> Tuple[Tensor, Tensor]:
    """Replace pseudo-labels by the prediction where its confidence exceeds ``threshold``.

    Args:
        pseudo_labels (Tensor): (B, H, W) integer labels (not modified).
        seg_logits (Tensor): (B, C, h, w) mean logits 0.5·seg_clip + 0.5·seg_dino; upsampled
            bilinearly (align_corners=False) to (H, W) before the softmax.
        threshold (float): strict lower bound on the max softmax probability (0.75).
        keep_ignore (bool): False (the authors' rule, applied to every pixel; their pseudo-labels
            never hold the ignore value) or True to leave ``ignore_index`` pixels ignored.
        ignore_index (int): the ignore label (255).

    Returns:
        Tuple[Tensor, Tensor]: the new labels (B, H, W), same dtype, and the replaced-pixel mask
        (B, H, W) bool.
    """
    if pseudo_labels.dim() != 3 or seg_logits.dim() != 4:
        raise ValueError(
            f"expected pseudo_labels (B, H, W) and seg_logits (B, C, h, w); got "
            f"{tuple(pseudo_labels.shape)} and {tuple(seg_logits.shape)}"
        )
    size = tuple(pseudo_labels.shape[-2:])
    if tuple(seg_logits.shape[-2:]) != size:
        seg_logits = F.interpolate(seg_logits, size=size, mode="bilinear", align_corners=False)
    conf, pred = F.softmax(seg_logits.float(), dim=1).max(dim=1)  # (B, H, W) each
    replace = conf > threshold
    if keep_ignore:
        replace &= pseudo_labels != ignore_index
    labels = torch.where(replace, pred.to(pseudo_labels.dtype), pseudo_labels)
    return labels, replace
