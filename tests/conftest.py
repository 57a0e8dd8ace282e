"""Shared test fixtures: a tiny random CLIP of the real architecture family (no weights downloaded)."""

import pytest
import torch

from weclip.models.clip_backbone import FrozenCLIP, _tokenizer_for, build_clip_model

# A CLIP of the same family as ViT-B/16 (open_clip.CLIP, QuickGELU, ViT image tower), small enough for
# CPU tests. pool_type="avg" makes open_clip's own encode_image pool like WeCLIP (mean of patch tokens).
TINY_ARCH = dict(
    embed_dim=32,
    quick_gelu=True,
    vision_cfg=dict(
        image_size=32, patch_size=8, width=64, layers=3, head_width=32, pool_type="avg"
    ),
    text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1),
)


@pytest.fixture(scope="session")
def tiny_arch():
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY_ARCH.items()}


@pytest.fixture
def tiny_clip(tiny_arch):
    """A FrozenCLIP around a random tiny CLIP (seeded)."""
    torch.manual_seed(0)
    model = build_clip_model(tiny_arch, "random")
    return FrozenCLIP(model, _tokenizer_for(tiny_arch, model.context_length))
