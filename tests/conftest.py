"""Shared test fixtures: a tiny random CLIP of the real architecture family (no weights downloaded)."""

import pytest
import torch
from helpers import TINY_ARCH

from weclip.models.clip_backbone import FrozenCLIP, build_clip_model, build_tokenizer


@pytest.fixture(scope="session")
def tiny_arch():
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY_ARCH.items()}


@pytest.fixture
def tiny_clip(tiny_arch):
    """A FrozenCLIP around a random tiny CLIP (seeded)."""
    torch.manual_seed(0)
    model = build_clip_model(tiny_arch, "random")
    return FrozenCLIP(model, build_tokenizer(tiny_arch, model.context_length))
