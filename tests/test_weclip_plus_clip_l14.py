"""FrozenCLIP on the WeCLIP+ ``clip_flag=14`` path (CLIP ViT-L/14): grid, blocks, last block.

The authors' ViT-L/14 path (doc §1.1) needs patch 14, 24 blocks of width 1024 and the positional
table resized to (H//14, W//14). ``weclip.models.clip_backbone`` handles it unchanged; these tests
pin that down on a tiny patch-14 CLIP and on open_clip's real ``ViT-L-14-quickgelu`` architecture.
"""

import open_clip
import pytest
import torch

from weclip.models.clip_backbone import FrozenCLIP, build_clip_model, build_tokenizer
from weclip.models.plus.decoder import WeCLIPPlusDecoder

TINY_L14 = dict(
    embed_dim=32,
    quick_gelu=True,
    vision_cfg=dict(image_size=56, patch_size=14, width=64, layers=4, head_width=32),
    text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1),
)


def _frozen(arch):
    torch.manual_seed(0)
    model = build_clip_model(arch, "random")
    return FrozenCLIP(model, build_tokenizer(arch, model.context_length))


def test_patch14_clip_gives_a_22x22_grid_for_a_308_crop():
    clip = _frozen(TINY_L14)
    assert clip.patch_size == 14 and clip.num_blocks == 4
    # the authors' 320 crop: conv1 (stride 14) sees 22 patches per side, 12 pixels dropped
    assert clip.grid_size(320, 320) == (22, 22)
    images = torch.randn(1, 3, 308, 308)  # the crop to a multiple of 14
    feats, attns = clip.forward_blocks(images)
    assert len(feats) == len(attns) == 3  # blocks 0..N-2
    assert feats[-1].shape == (1, 1 + 22 * 22, 64) and attns[-1].shape == (1, 485, 485)
    act, attn, emb = clip.forward_last(feats[-1])
    assert act.shape == (1, 485, 64) and act.requires_grad and emb.shape == (1, 32)
    # the WeCLIP+ CLIP head reads block N-2 at that grid
    dec = WeCLIPPlusDecoder(clip_dim=64, dino_dim=24, embed_dim=16, num_heads=2, num_classes=3)
    out = dec([feats[-1]], torch.randn(1, 24, 22, 22), (22, 22))
    assert out.seg.shape == (1, 3, 22, 22)
    with pytest.raises(ValueError, match="not a multiple of the patch size 14"):
        clip.forward_blocks(torch.randn(1, 3, 320, 320))


@pytest.mark.slow
def test_open_clip_vit_l14_architecture():
    cfg = open_clip.get_model_config("ViT-L-14-quickgelu")["vision_cfg"]
    assert (cfg["patch_size"], cfg["layers"], cfg["width"]) == (14, 24, 1024)
    clip = _frozen("ViT-L-14-quickgelu")  # ~4 s on one CPU thread, random weights
    assert (clip.patch_size, clip.num_blocks, clip.width, clip.embed_dim) == (14, 24, 1024, 768)
    feats, attns = clip.forward_blocks(torch.randn(1, 3, 112, 112))  # 8x8 grid
    assert len(feats) == 23 and feats[-1].shape == (1, 65, 1024)
    _, attn, emb = clip.forward_last(feats[-1])
    assert attn.shape == (1, 65, 65) and emb.shape == (1, 768)
