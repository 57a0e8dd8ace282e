"""Pixel-to-prototype contrast (PPC / "P2P") on top of SEAM.

Du et al., "Weakly Supervised Semantic Segmentation by Pixel-to-Prototype Contrast", CVPR 2022,
https://arxiv.org/abs/2110.07110, official code https://github.com/usr922/wseg
(``contrast_train.py``, ``network/resnet38_contrast.py``; read, not copied). On top of SEAM's
two views (there: the crop and its bilinear resize to 128 × 128), each view has

- a projection head on the last features: ReLU(1×1 conv, 128 channels, no bias)
  (`ProjectionHead`);
- pseudo-labels from its PCM-revised CAM on the feature grid, detached: ReLU, per-channel min-max
  normalisation (``x < min + 1e-5 → 0``, then ``(x − min − 1e-5) / (max − min + 1e-5)``, which
  leaves those pixels slightly negative; reproduced), background channel set to 0.2, labels
  applied, argmax (`p2p_pseudo_labels`);
- class prototypes: for every class channel (background included), the top k = h·w // 8 pixels of
  the normalised CAM over the whole batch (not label-masked), their projected features averaged
  with the CAM values as weights, L2-normalised, detached (`class_prototypes`).

View 1's features and revised CAM are first resized to view 2's feature grid, so pixels of the two
views correspond. With normalised pixel features f and InfoNCE
ℓ(f, p⁺, N) = −log(exp(f·p⁺/τ) / Σ_{n∈N} exp(f·n/τ)), τ = 0.1 (`info_nce`):

- cross-prototype: f₁ with labels₁ against view 2's prototypes (all of them in the denominator),
  and f₂ with labels₂ against view 1's; mean of the two, weight 0.1;
- cross-pseudo-label: f₁ with labels₂ against view 1's prototypes, f₂ with labels₁ against view
  2's; mean of the two, weight 0.1 (`cross_view_contrast`);
- intra-view, with *semi-hard prototype mining* (denominator: the positive plus the prototypes
  ranked 4th to 13th by similarity to the pixel) and *hard pixel sampling* (per pseudo-class with
  L ≥ 2 pixels: a random half of them plus the L // 2 pixels ranked int(0.1·L)… int(0.6·L) from
  the least similar to their prototype; the loss is averaged per class, then over the classes
  present, a class with a single pixel counting in the divisor but adding 0); mean over the two
  views, weight 0.1 (`intra_view_contrast`).

Total (``contrast_train.py``): L_cls + L_ER + L_ECR (SEAM, `seam.seam_losses`) + the three
weighted contrast terms. The random draws of the hard pixel sampling come from a
``torch.Generator`` instead of Python's ``random``.
"""

from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "P2P_DEFAULTS",
    "ProjectionHead",
    "align_to",
    "class_prototypes",
    "cross_view_contrast",
    "hard_pixel_indices",
    "info_nce",
    "intra_view_contrast",
    "p2p_losses",
    "p2p_pseudo_labels",
]

P2P_DEFAULTS: Mapping[str, object] = {
    "proj_dim": 128,  # fc_proj: Conv2d(4096, 128, 1, bias=False)
    "view_size": (128, 128),  # img2 = F.interpolate(img1, size=(128, 128), align_corners=True)
    "temperature": 0.1,  # "/ 0.1" in every InfoNCE
    "bg_threshold": 0.2,  # --bg_threshold 0.20
    "top_k_divisor": 8,  # topk(k = h * w // 8)
    "cross_weight": 0.1,  # loss_cross_nce = 0.1 * (...) / 2
    "cross_label_weight": 0.1,  # loss_cross_nce2 = 0.1 * (...) / 2
    "intra_weight": 0.1,  # loss_intra_nce = 0.1 * (...) / 2
    "mining_skip": 3,  # topk(neg_scores, k=13)[:, 3:]
    "mining_count": 10,
    "hard_lower_ratio": 0.6,  # topk(similarity, k=int(0.6 L), largest=False)
}


class ProjectionHead(nn.Module):
    """ReLU(1×1 conv) to ``dim`` channels, no bias, xavier-uniform init (P2P's ``fc_proj``).

    Args:
        in_channels (int): channels of the last feature map.
        dim (int): 128 in P2P.
    """

    def __init__(self, in_channels: int, dim: int = P2P_DEFAULTS["proj_dim"]) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=1, bias=False)
        nn.init.xavier_uniform_(self.proj.weight)

    def forward(self, features: Tensor) -> Tensor:
        """(B, D, h, w) → (B, dim, h, w), not normalised (the losses normalise)."""
        return F.relu(self.proj(features))


def align_to(x: Tensor, size: Tuple[int, int]) -> Tensor:
    """Bilinear resize (align_corners=True) of (B, C, h, w) maps to ``size``, as P2P aligns view 1
    to view 2's feature grid; a no-op when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def p2p_pseudo_labels(
    rv: Tensor, cls_labels: Tensor, *, bg_threshold: float = P2P_DEFAULTS["bg_threshold"]
) -> Tuple[Tensor, Tensor]:
    """Normalised revised CAM and its pseudo-labels (``contrast_train.py``), no autograd graph.

    Args:
        rv (Tensor): (B, K + 1, h, w) raw PCM output on the feature grid (channel 0 background).
        cls_labels (Tensor): (B, K) multi-hot.
        bg_threshold (float): the constant background score (0.2).

    Returns:
        Tuple[Tensor, Tensor]: normalised maps (B, K + 1, h, w) (background = bg_threshold, not
        label-masked) and pseudo-labels (B, h, w) long in [0, K] (0 = background).
    """
    if (
        rv.dim() != 4
        or rv.shape[1] != cls_labels.shape[1] + 1
        or rv.shape[0] != cls_labels.shape[0]
    ):
        raise ValueError(
            f"p2p_pseudo_labels expects rv (B, K + 1, h, w) and cls_labels (B, K); got "
            f"{tuple(rv.shape)} and {tuple(cls_labels.shape)}"
        )
    with torch.no_grad():
        x = F.relu(rv.detach())
        flat = x.flatten(2)
        hi = flat.max(dim=-1).values[..., None, None]
        lo = flat.min(dim=-1).values[..., None, None]
        x = torch.where(x < lo + 1e-5, torch.zeros_like(x), x)
        norm = (x - lo - 1e-5) / (hi - lo + 1e-5)
        norm[:, 0] = bg_threshold
        lab = torch.cat([cls_labels.new_ones(cls_labels.shape[0], 1), cls_labels], dim=1)
        # softmax is monotonic: argmax(softmax(norm · labels)) = argmax(norm · labels)
        pseudo = (norm * lab.to(norm.dtype)[:, :, None, None]).argmax(dim=1)
    return norm, pseudo


def class_prototypes(features: Tensor, norm_cams: Tensor, top_k: Optional[int] = None) -> Tensor:
    """One prototype per class channel from the batch's top-k pixels of that channel.

    p_c = normalise(Σ_i v_i · x_i / Σ_i v_i) over the k largest values v_i of channel c over all
    B·h·w pixels, x_i the (unnormalised) projected feature of pixel i; detached. Should Σ v_i be
    0 (possible only for hand-made maps), the plain mean of the k features is used instead of a
    division by zero.

    Args:
        features (Tensor): (B, D, h, w) projected features.
        norm_cams (Tensor): (B, C, h, w) from `p2p_pseudo_labels`.
        top_k (Optional[int]): k; default h·w // 8 (of one image's grid, P2P).

    Returns:
        Tensor: (C, D) unit rows.
    """
    if features.dim() != 4 or norm_cams.dim() != 4 or features.shape[0] != norm_cams.shape[0]:
        raise ValueError(
            f"class_prototypes expects features (B, D, h, w) and norm_cams (B, C, h, w); got "
            f"{tuple(features.shape)} and {tuple(norm_cams.shape)}"
        )
    if features.shape[-2:] != norm_cams.shape[-2:]:
        raise ValueError("class_prototypes: features and norm_cams are on different grids")
    b, d, h, w = features.shape
    c = norm_cams.shape[1]
    k = max(1, (h * w) // int(P2P_DEFAULTS["top_k_divisor"])) if top_k is None else int(top_k)
    if not 1 <= k <= b * h * w:
        raise ValueError(f"class_prototypes: top_k={k} outside [1, {b * h * w}]")
    with torch.no_grad():
        fea = features.detach().permute(0, 2, 3, 1).reshape(-1, d)
        scores = norm_cams.detach().transpose(0, 1).reshape(c, -1)
        vals, idx = torch.topk(scores, k=k, dim=-1)  # (C, k)
        picked = fea[idx]  # (C, k, D)
        total = vals.sum(dim=-1, keepdim=True)
        weighted = (vals[..., None] * picked).sum(dim=1) / torch.where(
            total.abs() > 0, total, torch.ones_like(total)
        )
        plain = picked.mean(dim=1)
        protos = torch.where(total.abs() > 0, weighted, plain)
        return F.normalize(protos, dim=-1)


def info_nce(features: Tensor, positives: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """Per-row InfoNCE −log(exp(f·p⁺/τ) / Σ_n exp(f·n/τ)), via logsumexp (same value).

    The denominator runs over ``negatives`` only; P2P's negatives contain the positive.

    Args:
        features (Tensor): (N, D) unit rows.
        positives (Tensor): (N, D).
        negatives (Tensor): (M, D) shared by all rows, or (N, M, D) per row.
        temperature (float): τ > 0.

    Returns:
        Tensor: (N,) losses.
    """
    if temperature <= 0:
        raise ValueError(f"info_nce: temperature must be > 0, got {temperature}")
    pos = (features * positives).sum(dim=-1) / temperature
    if negatives.dim() == 2:
        neg = features @ negatives.t() / temperature
    elif negatives.dim() == 3:
        neg = torch.einsum("nd,nmd->nm", features, negatives) / temperature
    else:
        raise ValueError(
            f"info_nce: negatives must be (M, D) or (N, M, D), got {tuple(negatives.shape)}"
        )
    return torch.logsumexp(neg, dim=-1) - pos


def _flat_unit(f: Tensor) -> Tensor:
    """(B, D, h, w) → (B·h·w, D) unit rows (with grad)."""
    return F.normalize(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]), dim=-1)


def cross_view_contrast(
    f1: Tensor,
    f2: Tensor,
    labels1: Tensor,
    labels2: Tensor,
    protos1: Tensor,
    protos2: Tensor,
    *,
    temperature: float = P2P_DEFAULTS["temperature"],
) -> Dict[str, Tensor]:
    """P2P's two cross-view terms, unweighted (each the mean of its two directions).

    Args:
        f1, f2 (Tensor): (B, D, h, w) projected features of the two views on the same grid.
        labels1, labels2 (Tensor): (B, h, w) pseudo-labels in [0, C).
        protos1, protos2 (Tensor): (C, D) prototypes of each view.
        temperature (float): τ.

    Returns:
        Dict[str, Tensor]: {"cross": cross-prototype, "cross_label": cross-pseudo-label}.
    """
    if f1.shape != f2.shape or labels1.shape != labels2.shape:
        raise ValueError("cross_view_contrast: the two views must be on the same grid")
    x1, x2 = _flat_unit(f1), _flat_unit(f2)
    l1, l2 = labels1.reshape(-1), labels2.reshape(-1)
    cross = 0.5 * (
        info_nce(x1, protos2[l1], protos2, temperature).mean()
        + info_nce(x2, protos1[l2], protos1, temperature).mean()
    )
    cross_label = 0.5 * (
        info_nce(x1, protos1[l2], protos1, temperature).mean()
        + info_nce(x2, protos2[l1], protos2, temperature).mean()
    )
    return {"cross": cross, "cross_label": cross_label}


def hard_pixel_indices(
    similarity: Tensor, generator: torch.Generator, lower_ratio: float = 0.6
) -> Tuple[Tensor, Tensor]:
    """P2P's hard pixel sampling within one pseudo-class of L ≥ 2 pixels.

    Returns a random half (L // 2 distinct indices, ``randperm`` from ``generator``) and the L // 2
    pixels ranked int(lower_ratio·L) − L // 2 … int(lower_ratio·L) − 1 in ascending similarity to
    their prototype (the least similar tenth skipped for lower_ratio = 0.6); the two sets may
    overlap, as in P2P.

    Args:
        similarity (Tensor): (L,) similarity of each pixel to its positive prototype.
        generator (torch.Generator): draws the random half.
        lower_ratio (float): 0.6 in P2P.

    Returns:
        Tuple[Tensor, Tensor]: (random indices, hard indices), each (L // 2,) long.
    """
    n = int(similarity.numel())
    if n < 2:
        raise ValueError(f"hard_pixel_indices needs at least 2 pixels, got {n}")
    half = n // 2
    k = int(n * lower_ratio)
    if k < half:
        raise ValueError(f"hard_pixel_indices: lower_ratio {lower_ratio} keeps fewer than L // 2")
    rand = torch.randperm(n, generator=generator, device=generator.device)[:half]
    lower = torch.topk(similarity, k=k, largest=False).indices[k - half :]
    return rand.to(similarity.device), lower


def intra_view_contrast(
    f: Tensor,
    labels: Tensor,
    protos: Tensor,
    *,
    generator: torch.Generator,
    temperature: float = P2P_DEFAULTS["temperature"],
    semi_hard: bool = True,
    mining_skip: int = P2P_DEFAULTS["mining_skip"],
    mining_count: int = P2P_DEFAULTS["mining_count"],
    hard_pixels: bool = True,
    lower_ratio: float = P2P_DEFAULTS["hard_lower_ratio"],
) -> Tensor:
    """P2P's intra-view contrast of one view, unweighted.

    Semi-hard prototype mining: a pixel's denominator holds its positive prototype and the
    prototypes ranked mining_skip + 1 … mining_skip + mining_count by similarity to it (ranks
    beyond C dropped; the positive appears twice when it ranks there, as in P2P). With
    ``semi_hard=False`` all C prototypes are used. Hard pixel sampling as in the module docstring;
    with ``hard_pixels=False`` every pixel counts once.

    Args:
        f (Tensor): (B, D, h, w) projected features.
        labels (Tensor): (B, h, w) pseudo-labels in [0, C).
        protos (Tensor): (C, D) this view's prototypes.
        generator (torch.Generator): draws the random half of each class's pixels.
        temperature (float): τ.

    Returns:
        Tensor: scalar.
    """
    x = _flat_unit(f)
    lab = labels.reshape(-1)
    if x.shape[0] != lab.shape[0]:
        raise ValueError("intra_view_contrast: features and labels are on different grids")
    pos = protos[lab]
    if semi_hard:
        sims = (x @ protos.t()).detach()
        top = min(protos.shape[0], mining_skip + mining_count)
        ranked = torch.topk(sims, k=top, dim=-1).indices[:, mining_skip:]
        negatives = torch.cat([pos[:, None], protos[ranked]], dim=1)  # (N, 1 + m, D)
    else:
        negatives = protos
    losses = info_nce(x, pos, negatives, temperature)  # (N,)
    if not hard_pixels:
        return losses.mean()
    similarity = ((x * pos).sum(dim=-1).detach() + 1.0) / 2.0
    total = losses.new_zeros(())
    present = 0
    for c in torch.unique(lab).tolist():
        sel = torch.nonzero(lab == c).flatten()
        present += 1
        n = int(sel.numel())
        if n < 2:
            continue
        rand, lower = hard_pixel_indices(similarity[sel], generator, lower_ratio)
        total = total + losses[sel[torch.cat([rand, lower])]].mean()
    return total / max(present, 1)


def p2p_losses(
    f1: Tensor,
    f2: Tensor,
    rv1: Tensor,
    rv2: Tensor,
    cls_labels: Tensor,
    *,
    generator: torch.Generator,
    temperature: float = P2P_DEFAULTS["temperature"],
    bg_threshold: float = P2P_DEFAULTS["bg_threshold"],
    top_k: Optional[int] = None,
    cross_weight: float = P2P_DEFAULTS["cross_weight"],
    cross_label_weight: float = P2P_DEFAULTS["cross_label_weight"],
    intra_weight: float = P2P_DEFAULTS["intra_weight"],
    semi_hard: bool = True,
    hard_pixels: bool = True,
) -> Dict[str, Tensor]:
    """All of P2P's contrast terms for one step.

    Args:
        f1 (Tensor): (B, D, h, w) view-1 projected features, already on view 2's grid
            (`align_to`).
        f2 (Tensor): (B, D, h, w) view-2 projected features.
        rv1 (Tensor): (B, K + 1, h, w) view-1 raw PCM output on view 2's feature grid.
        rv2 (Tensor): (B, K + 1, h, w) view-2 raw PCM output on its feature grid.
        cls_labels (Tensor): (B, K).
        generator (torch.Generator): for the hard pixel sampling.
        the rest: see the module docstring and `P2P_DEFAULTS`.

    Returns:
        Dict[str, Tensor]: {"nce": weighted sum, "cross", "cross_label", "intra" (unweighted),
        "pseudo1", "pseudo2" (B, h, w)}.
    """
    if f1.shape != f2.shape or rv1.shape != rv2.shape or f1.shape[-2:] != rv1.shape[-2:]:
        raise ValueError(
            f"p2p_losses: features {tuple(f1.shape)}/{tuple(f2.shape)} and revised CAMs "
            f"{tuple(rv1.shape)}/{tuple(rv2.shape)} must share one grid"
        )
    norm1, pseudo1 = p2p_pseudo_labels(rv1, cls_labels, bg_threshold=bg_threshold)
    norm2, pseudo2 = p2p_pseudo_labels(rv2, cls_labels, bg_threshold=bg_threshold)
    protos1 = class_prototypes(f1, norm1, top_k)
    protos2 = class_prototypes(f2, norm2, top_k)
    cross = cross_view_contrast(f1, f2, pseudo1, pseudo2, protos1, protos2, temperature=temperature)
    kw = dict(
        generator=generator, temperature=temperature, semi_hard=semi_hard, hard_pixels=hard_pixels
    )
    intra = 0.5 * (
        intra_view_contrast(f1, pseudo1, protos1, **kw)
        + intra_view_contrast(f2, pseudo2, protos2, **kw)
    )
    nce = (
        cross_weight * cross["cross"]
        + cross_label_weight * cross["cross_label"]
        + intra_weight * intra
    )
    return {
        "nce": nce,
        "cross": cross["cross"],
        "cross_label": cross["cross_label"],
        "intra": intra,
        "pseudo1": pseudo1,
        "pseudo2": pseudo2,
    }
