"""Seeded decoder weights under the authors' parameter names (for parity fixtures).

The parity fixtures after the first one do not store the decoder weights they start from: both
sides regenerate them from a seed. Each tensor is drawn from its own ``torch.Generator`` seeded
from ``sha256("<seed>:<name>")``, with PyTorch's default initialisation ranges, so the values are
realistic (the same magnitudes as a fresh model) and independent of module construction order:

- LayerNorm weights 1, biases 0 (``*.ln_1`` / ``*.ln_2``);
- attention input projections Xavier-uniform, their biases and the output projection bias 0 (what
  ``nn.MultiheadAttention`` does);
- every other weight U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (``nn.Linear`` / ``nn.Conv2d`` defaults),
  every other bias the same range with its weight's fan-in.

The names and shapes come from the caller (the authors' model when recording, our decoder mapped
through :mod:`weclip.models.official_names` in the tests), so both sides draw identical tensors.
"""

import hashlib
import math
from collections import OrderedDict
from typing import Mapping, Sequence

import torch

__all__ = ["random_decoder_state", "state_sha256"]


def _generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{int(seed)}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _fan_in(shape: Sequence[int]) -> int:
    return int(math.prod(shape[1:]))


def _uniform(shape: Sequence[int], bound: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(tuple(shape), generator=generator) * 2.0 - 1.0) * bound


def random_decoder_state(
    shapes: Mapping[str, Sequence[int]], seed: int
) -> "OrderedDict[str, torch.Tensor]":
    """Float32 tensors for every name in ``shapes`` (the authors' decoder names), seeded.

    Args:
        shapes (Mapping[str, Sequence[int]]): parameter name -> shape, e.g.
            ``decoder.linear_pred.weight -> (21, 256, 1, 1)``; a bias needs its weight in the
            mapping (for the fan-in).
        seed (int): the fixture's decoder seed.

    Returns:
        OrderedDict[str, torch.Tensor]: name -> tensor, sorted by name.

    Raises:
        KeyError: a bias whose weight is not in ``shapes``.
    """
    state: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for name in sorted(shapes):
        shape = tuple(int(s) for s in shapes[name])
        gen = _generator(seed, name)
        if ".ln_" in name:
            value = torch.ones(shape) if name.endswith(".weight") else torch.zeros(shape)
        elif name.endswith("attn.in_proj_weight"):
            value = _uniform(shape, math.sqrt(6.0 / (shape[0] + shape[1])), gen)
        elif name.endswith(("attn.in_proj_bias", "attn.out_proj.bias")):
            value = torch.zeros(shape)
        elif name.endswith(".bias"):
            weight = name[: -len("bias")] + "weight"
            if weight not in shapes:
                raise KeyError(f"bias '{name}' needs its weight '{weight}' for the fan-in")
            value = _uniform(shape, 1.0 / math.sqrt(_fan_in(shapes[weight])), gen)
        else:
            value = _uniform(shape, 1.0 / math.sqrt(_fan_in(shape)), gen)
        state[name] = value
    return state


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the sorted names and float32 values of a state dict (hex digest)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(torch.as_tensor(state[name]).detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()
