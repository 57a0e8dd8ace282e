"""Comparison helpers for the parity tests: every check prints its measured figure (visible with
``pytest -s``) and repeats it in the assertion message."""

from pathlib import Path
from typing import Union

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]

ArrayLike = Union[torch.Tensor, np.ndarray, float]


def as_double(x: ArrayLike) -> torch.Tensor:
    """A float64 CPU copy of a tensor / array / scalar (detached)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double()
    return torch.as_tensor(np.asarray(x)).double()


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
    scale = float(as_double(ref).abs().max()) if as_double(ref).numel() else 0.0
    print(f"[parity] {name}: max |ours - {ref_name}| = {diff:.3e} ({ref_name} scale {scale:.3g})")
    assert diff <= atol, f"{name}: max |ours - {ref_name}| = {diff:.3e} > {atol:g}"
    return diff


def check_relative(name: str, ours: ArrayLike, ref: ArrayLike, rtol: float) -> float:
    """Assert max |ours - ref| / max |ref| <= rtol; print and return the relative difference."""
    diff = max_abs_diff(ours, ref)
    scale = float(as_double(ref).abs().max())
    assert scale > 0, f"{name}: the official values are all zero"
    rel = diff / scale
    print(
        f"[parity] {name}: max |ours - official| = {diff:.3e}, relative to max |official| "
        f"{scale:.3e}: {rel:.3e}"
    )
    assert rel <= rtol, f"{name}: relative difference {rel:.3e} > {rtol:g} (abs {diff:.3e})"
    return rel


def correlation(ours: ArrayLike, ref: ArrayLike) -> float:
    """Pearson correlation of the flattened values."""
    a, b = as_double(ours).flatten(), as_double(ref).flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))
