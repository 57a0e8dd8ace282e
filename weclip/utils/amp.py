"""bf16 autocast on CUDA, a no-op elsewhere (the one autocast helper of the library)."""

import contextlib

import torch

__all__ = ["autocast"]


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """``torch.autocast(cuda, bfloat16)`` when ``enabled`` and ``device`` is a GPU, else a null context.

    Args:
        device (torch.device): where the computation runs.
        enabled (bool): ``train.amp`` / ``model.backbone.precision == "bf16"``.
    """
    if enabled and torch.device(device).type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
