"""Comparison helpers and the rounding-error budget of the parity tests.

Every check prints its measured figure (visible with ``pytest -s``) and repeats it in the assertion
message.

Tolerances (docs/parity.md, "What each test guarantees"). The recorded values come from another
machine (or another build of torch) than the one running the tests, so "bit-identical" cannot be
required: matrix products and reductions are summed in an order that depends on the CPU's vector
width, the thread count and the library version. What can be bounded is the fp32 rounding error
of such a computation. For one inner product or sum of length K computed in fp32 (unit roundoff
u = 2^-24), the error is at most lambda * sqrt(K) * u * sum_i |x_i y_i| with probability at least
1 - 2 exp(-lambda^2 / 2) (Higham & Mary, "A new approach to probabilistic rounding error
analysis", SIAM J. Sci. Comput. 41(5), 2019). Along a chain of such operations the first-order
errors add up as independent contributions, so a value computed through reductions of lengths
K_1, K_2, ... carries an error of about lambda * sqrt(K_1 + K_2 + ...) * u relative to the
magnitude of what is summed. Two machines each make such an error, hence the factor sqrt(2) in
:func:`fp32_rtol`. ``LAMBDA = 5`` (failure probability < 1e-5 per element for one reduction).

The magnitude the relative bound applies to is the largest absolute value of the compared tensor
(``scale``), unless the test says otherwise (softmax outputs inherit the error of their logits;
argmax and thresholds are discrete and are checked by agreement and near-ties instead).
"""

import math
from pathlib import Path
from typing import Iterable, Union

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]

ArrayLike = Union[torch.Tensor, np.ndarray, float]

U32 = 2.0**-24  # fp32 unit roundoff
LAMBDA = 5.0


def fp32_rtol(reductions: Iterable[int]) -> float:
    """Relative difference budget of two fp32 evaluations of a chain of reductions of the given
    lengths: ``sqrt(2) * LAMBDA * sqrt(sum K) * u`` (see the module docstring)."""
    total = sum(int(k) for k in reductions)
    return math.sqrt(2.0) * LAMBDA * math.sqrt(max(total, 1)) * U32


def vit_block_reductions(width: int, tokens: int, head_dim: int = 64, mlp_ratio: int = 4) -> list:
    """Reduction lengths of one pre-norm transformer block: two LayerNorms (mean, variance), the
    qkv projection, q.k, attention x v, the output projection, the MLP's two layers."""
    return [width, width, width, head_dim, tokens, width, width, width, mlp_ratio * width]


def as_double(x: ArrayLike) -> torch.Tensor:
    """A float64 CPU copy of a tensor / array / scalar (detached)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double()
    return torch.as_tensor(np.asarray(x)).double()


def max_abs(x: ArrayLike) -> float:
    """max |x| (0 for an empty tensor)."""
    t = as_double(x)
    return float(t.abs().max()) if t.numel() else 0.0


def max_abs_diff(ours: ArrayLike, ref: ArrayLike) -> float:
    """max |ours - ref| after checking that the shapes agree."""
    a, b = as_double(ours), as_double(ref)
    assert a.shape == b.shape, f"shape {tuple(a.shape)} (ours) vs {tuple(b.shape)} (official)"
    return float((a - b).abs().max()) if a.numel() else 0.0


def check_close(
    name: str, ours: ArrayLike, ref: ArrayLike, atol: float, ref_name: str = "official"
) -> float:
    """Assert max |ours - ref| <= atol; print and return the measured difference."""
    diff = max_abs_diff(ours, ref)
    scale = max_abs(ref)
    print(
        f"[parity] {name}: max |ours - {ref_name}| = {diff:.3e} ({ref_name} scale {scale:.3g}, "
        f"bound {atol:.2e})"
    )
    assert diff <= atol, f"{name}: max |ours - {ref_name}| = {diff:.3e} > {atol:.3e}"
    return diff


def check_scaled(
    name: str, ours: ArrayLike, ref: ArrayLike, rtol: float, ref_name: str = "official"
) -> float:
    """Assert max |ours - ref| <= rtol * max |ref| (the magnitude-scaled fp32 bound)."""
    return check_close(name, ours, ref, rtol * max(max_abs(ref), 1e-30), ref_name)


def check_relative(name: str, ours: ArrayLike, ref: ArrayLike, rtol: float) -> float:
    """Assert max |ours - ref| / max |ref| <= rtol; print and return the relative difference."""
    diff = max_abs_diff(ours, ref)
    scale = max_abs(ref)
    assert scale > 0, f"{name}: the official values are all zero"
    rel = diff / scale
    print(
        f"[parity] {name}: max |ours - official| = {diff:.3e}, relative to max |official| "
        f"{scale:.3e}: {rel:.3e} (bound {rtol:.2e})"
    )
    assert rel <= rtol, f"{name}: relative difference {rel:.3e} > {rtol:g} (abs {diff:.3e})"
    return rel


def correlation(ours: ArrayLike, ref: ArrayLike) -> float:
    """Pearson correlation of the flattened values."""
    a, b = as_double(ours).flatten(), as_double(ref).flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def ulp32(x: ArrayLike) -> torch.Tensor:
    """Spacing of float32 numbers at |x| (elementwise, float64)."""
    t = as_double(x).abs().float()
    return (torch.nextafter(t, torch.full_like(t, math.inf)) - t).double()


# ---------------------------------------------------------------------------------------------------
# First-order propagation of measured input differences (for the ill-conditioned stages)
# ---------------------------------------------------------------------------------------------------
def minmax_bound(delta: float, value_range: float) -> float:
    """How far ``(x - min x) / (max(x - min x) + eps)`` can move when x moves by <= ``delta``
    everywhere: the min and the range move by <= delta and 2 delta, so the result moves by
    <= 2 delta / R' + m 2 delta / R' <= 4 delta / (R - 2 delta) (m <= 1)."""
    if value_range <= 2 * delta:
        return math.inf
    return 4.0 * delta / (value_range - 2.0 * delta)


def gradcam_bound(
    acts_ref: np.ndarray, grads_ref: np.ndarray, acts: np.ndarray, grads: np.ndarray
) -> np.ndarray:
    """Per class, the largest change of the (twice min-max normalised) Grad-CAM that the measured
    differences of its activations and gradients can cause.

    raw(x) = sum_c alpha_c A_c(x), alpha_c = mean_x G_c(x): with dA, dalpha measured,
    |d raw(x)| <= sum_c |dalpha_c| |A_c(x)| + |alpha_c| |dA_c(x)| + |dalpha_c| |dA_c(x)| (exact);
    ReLU is 1-Lipschitz; the first min-max gives :func:`minmax_bound`; the second pass sees
    maps whose minimum is exactly 0 on both sides and whose maximum is 1 - O(eps), so it at most
    doubles the difference.

    Args: (K, D, h, w) arrays (reference = the authors', then ours).
    """
    k, d = acts_ref.shape[:2]
    a = acts_ref.reshape(k, d, -1).astype(np.float64)
    g = grads_ref.reshape(k, d, -1).astype(np.float64)
    da = np.abs(acts.reshape(k, d, -1).astype(np.float64) - a)
    alpha = g.mean(axis=2)
    dalpha = np.abs(grads.reshape(k, d, -1).astype(np.float64).mean(axis=2) - alpha)
    raw = np.maximum((alpha[:, :, None] * a).sum(axis=1), 0)
    spread = (
        dalpha[:, :, None] * np.abs(a) + np.abs(alpha)[:, :, None] * da + dalpha[:, :, None] * da
    ).sum(axis=1)
    out = np.empty(k)
    for i in range(k):
        out[i] = 2.0 * minmax_bound(float(spread[i].max()), float(raw[i].max() - raw[i].min()))
    return out


def refinement_bound(
    trans: np.ndarray, cams: np.ndarray, masks: np.ndarray, d_trans: float, d_cams: np.ndarray
) -> np.ndarray:
    """Per class, the largest change of the refined CAM (propagated, min-max normalised, resized)
    that differences of at most ``d_trans`` in the transition matrix and ``d_cams[k]`` in CAM k
    can cause (the box masks being equal).

    r = T_B vec(B M): |dr| <= max row sum of |T| over the box * d_cams + d_trans * sum of |B M|;
    then :func:`minmax_bound`; a bilinear resize is a convex combination (no growth).

    Args:
        trans: (n, n) the authors' transition matrix; cams: (K, h, w) their CAMs; masks: (K, h, w)
        bool box masks; d_trans: max |dT|; d_cams: (K,) max |dM| per class.
    """
    out = np.empty(cams.shape[0])
    t = np.abs(trans.astype(np.float64))
    for k in range(cams.shape[0]):
        box = masks[k].reshape(-1)
        m = cams[k].reshape(-1).astype(np.float64) * box
        r = trans.astype(np.float64) @ m
        dr = t[:, box].sum(axis=1).max() * float(d_cams[k]) + d_trans * float(np.abs(m).sum())
        out[k] = minmax_bound(dr, float(r.max() - r.min()))
    return out


#: PAR (spec §5.1) is 20 iterations of a weighted mean over 48 neighbours with non-negative
#: weights summing to 1 + 0.01 (the position kernel's extra weight), so it moves every output by
#: at most 1.01^20 times the largest input difference, and a margin between two channels by twice
#: that.
PAR_LIPSCHITZ = 1.01**20

#: PAR's rounding per output, relative to the largest input value: per iteration the affinity
#: (|differences| over 3 channels, standard deviations and softmax over 48 neighbours) and the
#: 48-term weighted sum, over 20 iterations, amplified by at most PAR_LIPSCHITZ.
PAR_RTOL = PAR_LIPSCHITZ * fp32_rtol(([48] * 4 + [3]) * 20)

# CLIP image features from the pixels (patch embedding + 11 blocks at 401 tokens), and the
# decoder on top (11 fusion MLPs 768 -> 256 -> 256, the 2816-channel fuse conv, 3 blocks of width
# 256 with 8 heads of 32 over 400 tokens, the 256-channel classifier).
CLIP_CHAIN = [768, 768, 768] + vit_block_reductions(768, 401) * 11
FUSION_CHAIN = [768, 256, 11 * 256]
DECODER_CHAIN = vit_block_reductions(256, 400, head_dim=32) * 3 + [256]


def ce_loss_bound(d_logits: float, mean_loss: float, pixels: int) -> float:
    """How far a mean of per-pixel cross-entropies moves when every logit moves by <= d_logits:
    CE = logsumexp(z) - z_y moves by <= 2 d_logits (logsumexp is 1-Lipschitz in the max norm; a
    bilinear upsampling is a convex combination), plus the rounding of the two means over
    ``pixels`` values (relative to the loss)."""
    return 2.0 * d_logits + fp32_rtol([pixels, 21, 21]) * abs(mean_loss)
