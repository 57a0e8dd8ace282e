"""Seeding and RNG-state capture (python ``random``, numpy's global RNG, torch CPU and CUDA).

The authors seed torch, CUDA, numpy and ``random`` with 1 (``setup_seed``, spec §8). Here each rank seeds
with ``seed + rank`` so that Dropout2d masks differ between GPUs, and the full RNG state of every rank goes
into the checkpoints, so that a resumed run draws exactly the numbers the uninterrupted run would have.
(Data order and augmentation do not use these global generators: ``weclip.data.sampler`` derives them
from the seed and the sample position.)
"""

import random
from typing import Any, Dict

import numpy as np
import torch

__all__ = ["seed_everything", "get_rng_state", "set_rng_state"]


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and every CUDA device).

    Args:
        seed (int): 0 <= seed < 2**32 (numpy's limit).
    """
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def get_rng_state() -> Dict[str, Any]:
    """This process's generator states.

    Returns:
        dict: ``python`` (tuple), ``numpy`` (tuple), ``torch`` (uint8 CPU tensor) and, once CUDA is in use,
        ``cuda`` (uint8 tensor: the generator of the current device, the one this rank trains on; other
        devices are not touched, so no CUDA context is created on them).
    """
    state: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore states saved by :func:`get_rng_state`.

    Args:
        state (dict): as returned by :func:`get_rng_state`; ``cuda`` goes to the current CUDA device
            (``RuntimeError`` if the state has one but CUDA is unavailable).
    """
    missing = [k for k in ("python", "numpy", "torch") if k not in state]
    if missing:
        raise KeyError(f"RNG state lacks {missing}")
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state:
        if not torch.cuda.is_available():
            raise RuntimeError(
                "the RNG state holds a CUDA generator state but CUDA is not available"
            )
        torch.cuda.set_rng_state(state["cuda"].cpu())
