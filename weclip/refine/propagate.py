"""Propagate CAMs with the transition matrix inside their boxes, normalise, resize (spec §4.6).

The authors form T_k = T ⊙ (1·vec(B_k)ᵀ) per class and multiply by vec(M_k). Zeroing the columns of
T outside the boxes is the same as zeroing the entries of vec(M_k) outside the boxes (every product
T_pq·B_q·M_q is identical, B_q ∈ {0, 1}), so all classes of the batch are propagated with one
batched matrix-vector product.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from weclip.cam.gradcam import minmax_normalize

__all__ = ["propagate_cams", "resize_cams"]


def resize_cams(cams: Tensor, size: Tuple[int, int]) -> Tensor:
    """Bilinear resize, align_corners=False, no antialias (cv2 INTER_LINEAR's grid), spec §4.6.

    Args:
        cams (Tensor): (P, h, w).
        size (Tuple[int, int]): (H, W).

    Returns:
        Tensor: (P, H, W).
    """
    if tuple(cams.shape[-2:]) == tuple(size):
        return cams
    return F.interpolate(cams[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def propagate_cams(
    trans: Tensor,
    cams: Tensor,
    masks: Tensor,
    batch_index: Tensor,
    out_size: Optional[Tuple[int, int]] = None,
    norm_eps: float = 1e-7,
) -> Tuple[Tensor, Tensor]:
    """r_k = (T ⊙ box columns) · vec(M_k), then min-max, then bilinear resize (spec §4.6).

    Args:
        trans (Tensor): (B, n, n) transition matrices, one per image.
        cams (Tensor): (P, h, w) initial CAMs M_k.
        masks (Tensor): (P, h, w) bool box masks B_k.
        batch_index (Tensor): (P,) image of each CAM.
        out_size (Tuple[int, int], optional): (H, W) of the output; None keeps (h, w).
        norm_eps (float): min-max epsilon (1e-7).

    Returns:
        Tuple[Tensor, Tensor]: ``refined`` (P, H, W) in [0, 1) and ``lowres`` (P, h, w), the
        propagated maps before the min-max. An all-zero CAM or an empty box mask gives all zeros (no
        NaN).
    """
    p, h, w = cams.shape
    if masks.shape != cams.shape:
        raise ValueError(f"masks {tuple(masks.shape)} must match cams {tuple(cams.shape)}")
    if trans.shape[-1] != h * w:
        raise ValueError(
            f"transition matrices are {tuple(trans.shape)} but the CAMs have h*w = {h * w}"
        )
    source = (cams.float() * masks).reshape(p, h * w, 1)  # vec(B_k ⊙ M_k)
    lowres = torch.bmm(trans.float()[batch_index], source).view(p, h, w)
    refined = minmax_normalize(lowres, norm_eps)
    if out_size is not None:
        refined = resize_cams(refined, out_size)
    return refined, lowres
