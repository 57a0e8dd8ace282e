"""Affinity from CLIP attention (static, spec §4.2) or the RFM (§4.3); transition matrix (§4.4).

Static mode (CLIP-ES's class-aware attention affinity, spec §13.1): the mean of the last 8
patch-to-patch attention maps. RFM mode (WeCLIP): a filtered mean of the last 6 (VOC) / 10 (COCO)
maps, multiplied element-wise by the decoder affinity A_f = σ(FᵀF). Both are then normalised
Sinkhorn-style, symmetrised and squared, once per image.
"""

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    "LAYER_FILTERS",
    "patch_attention",
    "static_affinity",
    "rfm_affinity",
    "sinkhorn_normalize",
    "transition_matrix",
]

#: "signed": the authors' d_l = Σ(A_f − A^l) (spec §4.3); "abs": the paper's Σ|A_f − A^l|
#: (spec §11 row 4).
LAYER_FILTERS = ("signed", "abs")


def patch_attention(
    attns: Sequence[Optional[Tensor]], attn_last: Tensor, num_layers: int
) -> Tensor:
    """The last ``num_layers`` head-averaged attention maps restricted to patches (spec §1.5, §4.2).

    Args:
        attns (Sequence[Tensor]): N-1 maps (B, L, L) of blocks 0..N-2
            (``FrozenCLIP.forward_blocks``; blocks before ``attn_from`` may be None).
        attn_last (Tensor): (B, L, L) attention of the last block (from the Grad-CAM forward).
        num_layers (int): m, how many of the N maps [A_0, ..., A_{N-1}] to keep, counted from the
            last.

    Returns:
        Tensor: (B, m, n, n) float32, the [1:, 1:] sub-blocks (no renormalisation after dropping
        CLS).
    """
    maps = list(attns) + [attn_last]
    if not 1 <= num_layers <= len(maps):
        raise ValueError(
            f"num_layers must be in [1, {len(maps)}] (attention maps available), got {num_layers}"
        )
    chosen = maps[-num_layers:]
    if any(a is None for a in chosen):
        first = len(maps) - num_layers + next(i for i, a in enumerate(chosen) if a is None)
        raise ValueError(
            f"the attention map of block {first} was not computed (FrozenCLIP.forward_blocks "
            f"attn_from): the last {num_layers} maps are needed"
        )
    return torch.stack([a[:, 1:, 1:].float() for a in chosen], dim=1)


def static_affinity(maps: Tensor) -> Tensor:
    """Static (CLIP-ES) affinity: the plain mean of the selected maps (spec §4.2 "static").

    Args:
        maps (Tensor): (B, m, n, n) patch attention maps.

    Returns:
        Tensor: (B, n, n).
    """
    return maps.mean(dim=1)


def rfm_affinity(
    maps: Tensor, aff: Tensor, layer_filter: str = "signed", eps: float = 1e-5
) -> Tuple[Tensor, Tensor]:
    """Refinement module (RFM): filtered mean of CLIP maps times the decoder affinity (spec §4.3).

    d_l = Σ_{p,q} (A_f − A^l) ("signed", the authors' code) or Σ_{p,q} |A_f − A^l| ("abs", the
    paper); keep layer l iff d_l ≤ mean_l d_l (ties kept); R = Σ_l keep_l A^l / (Σ_l keep_l + eps);
    return R ⊙ A_f. With "signed", d_l = ΣA_f − ΣA^l, so the kept layers are exactly those with ΣA^l
    ≥ mean_l ΣA^l (spec App. C.4). The sums are taken in float64 so that this decision is not
    decided by float32 rounding of 160k-term sums.

    Args:
        maps (Tensor): (B, m, n, n) patch attention maps (the last ``rfm_layers``).
        aff (Tensor): (B, n, n) decoder affinity σ(FᵀF); detached here.
        layer_filter (str): "signed" | "abs".
        eps (float): denominator epsilon of the mean of kept maps (1e-5).

    Returns:
        Tuple[Tensor, Tensor]: R ⊙ A_f (B, n, n) float32 and the keep mask (B, m) bool.
    """
    if layer_filter not in LAYER_FILTERS:
        raise ValueError(f"layer_filter must be one of {LAYER_FILTERS}, got {layer_filter!r}")
    b, m, n, _ = maps.shape
    if aff.shape != (b, n, n):
        raise ValueError(f"aff must be (B={b}, n={n}, n={n}), got {tuple(aff.shape)}")
    aff = aff.detach().float()
    diff = torch.empty(b, m, dtype=torch.float64, device=maps.device)
    for layer in range(m):  # one (B, n, n) temporary at a time
        d = aff.double() - maps[:, layer].double()
        diff[:, layer] = (d.abs() if layer_filter == "abs" else d).sum(dim=(-2, -1))
    keep = diff <= diff.mean(dim=1, keepdim=True)  # (B, m)
    weights = keep.to(maps.dtype)
    mean_kept = torch.einsum("bm,bmpq->bpq", weights, maps) / (
        weights.sum(dim=1)[:, None, None] + eps
    )
    return mean_kept * aff, keep


def sinkhorn_normalize(affinity: Tensor, iters: int = 3) -> Tensor:
    """Sinkhorn-style normalisation: ``iters`` passes of column-then-row division (spec §4.4).

    Args:
        affinity (Tensor): (..., n, n) positive matrix.
        iters (int): number of (column, row) passes; 3 in the authors' code.

    Returns:
        Tensor: (..., n, n); rows sum to 1 after the last pass, columns approximately.
    """
    t = affinity
    for _ in range(iters):
        t = t / t.sum(dim=-2, keepdim=True)  # columns: sum over rows
        t = t / t.sum(dim=-1, keepdim=True)  # rows
    return t


def transition_matrix(affinity: Tensor, sinkhorn_iters: int = 3, power: int = 2) -> Tensor:
    """Transition matrix: Sinkhorn normalisation, (T + Tᵀ)/2, then T^power (spec §4.4).

    Args:
        affinity (Tensor): (B, n, n) static or RFM affinity.
        sinkhorn_iters (int): ``cfg.model.refine.sinkhorn_iters``.
        power (int): ``cfg.model.refine.power`` (2: one product T·T).

    Returns:
        Tensor: (B, n, n) float32, symmetric before the power (and T² of a symmetric matrix is
        symmetric).
    """
    if power < 1:
        raise ValueError(f"power must be >= 1, got {power}")
    t = sinkhorn_normalize(affinity.float(), sinkhorn_iters)
    t = (t + t.transpose(-2, -1)) / 2
    return torch.linalg.matrix_power(t, power)
