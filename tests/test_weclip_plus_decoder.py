"""WeCLIP+ decoder (weclip/models/plus/decoder.py) and the authors' parameter names (official_names.py)."""

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from weclip.models.plus.decoder import FusionHead, WeCLIPPlusDecoder
from weclip.models.plus.official_names import (
    convert_official_plus_state,
    load_official_plus_decoder_state,
    plus_official_to_ours,
    plus_ours_to_official,
    to_official_plus_state,
)

GRID = (4, 5)  # CLIP grid h x w
DINO_GRID = (5, 6)  # DINO grid (e.g. 70x84 px / 14)


def _small(**kw):
    torch.manual_seed(0)
    args = dict(clip_dim=32, dino_dim=24, embed_dim=16, num_heads=2, num_layers=2, num_classes=5)
    args.update(kw)
    return WeCLIPPlusDecoder(**args)


def _inputs(batch=2, clip_dim=32, dino_dim=24, k=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    n = GRID[0] * GRID[1]
    feats = [torch.randn(batch, 1 + n, clip_dim, generator=g) for _ in range(k)]
    dino = torch.randn(batch, dino_dim, *DINO_GRID, generator=g)
    return feats, dino


def test_shapes_and_the_shared_decoder():
    dec = _small().eval()
    feats, dino = _inputs()
    out = dec(feats, dino, GRID)
    assert out.seg_clip.shape == out.seg_dino.shape == out.seg.shape == (2, 5, 4, 5)
    assert out.clip_fused.shape == out.dino_fused.shape == (2, 16, 4, 5)
    assert out.fused.shape == (2, 32, 4, 5)
    # one decoder (transformer + classifier) for both branches; the prediction is the mean
    assert torch.equal(out.seg_clip, dec.decode(out.clip_fused))
    assert torch.equal(out.seg_dino, dec.decode(out.dino_fused))
    assert torch.equal(out.seg, 0.5 * out.seg_clip + 0.5 * out.seg_dino)
    assert torch.equal(out.fused, torch.cat([out.clip_fused, out.dino_fused], dim=1))


def test_dino_head_runs_on_the_dino_grid_then_resizes():
    dec = _small().eval()
    feats, dino = _inputs()
    out = dec(feats, dino, GRID)
    tokens = dino.flatten(2).transpose(1, 2)  # (B, 30, 24)
    at_dino_grid = dec.dino_fusion([tokens], DINO_GRID)  # (B, 16, 5, 6)
    ref = F.interpolate(at_dino_grid, size=GRID, mode="bilinear", align_corners=False)
    assert torch.equal(out.dino_fused, ref)
    # resizing the tokens first would be another function (the head is non-linear)
    early = F.interpolate(dino, size=GRID, mode="bilinear", align_corners=False)
    other = dec.dino_fusion([early.flatten(2).transpose(1, 2)], GRID)
    assert (other - out.dino_fused).abs().max() > 1e-4


def test_clip_branch_reads_patch_tokens_only():
    dec = _small().eval()
    feats, dino = _inputs()
    changed = feats[0].clone()
    changed[:, 0] += 100.0  # the CLS token
    a, b = dec(feats, dino, GRID), dec([changed], dino, GRID)
    assert torch.equal(a.seg, b.seg)
    # two CLIP inputs: one MLP per input (the authors' SegFormerHead index=k)
    dec2 = _small(clip_num_inputs=2).eval()
    feats2, dino2 = _inputs(k=2)
    assert len(dec2.clip_fusion.fusion_mlps) == 2
    assert dec2(feats2, dino2, GRID).seg.shape == (2, 5, 4, 5)
    with pytest.raises(ValueError, match="expects 2 CLIP block output"):
        dec2(feats2[:1], dino2, GRID)


def test_dropout_draws_clip_head_first_then_dino_head():
    dec = _small().train()
    feats, dino = _inputs()
    torch.manual_seed(7)
    out = dec(feats, dino, GRID)
    torch.manual_seed(7)
    clip_ref = dec.clip_fusion([feats[0][:, 1:]], GRID)
    dino_ref = dec.dino_fusion([dino.flatten(2).transpose(1, 2)], DINO_GRID)
    assert torch.equal(out.clip_fused, clip_ref)
    assert torch.equal(out.dino_fused, F.interpolate(dino_ref, size=GRID, mode="bilinear"))
    # Dropout2d(0.1) on 16 channels x 2 images drops whole channels: some are exactly zero
    assert (clip_ref.flatten(2).abs().sum(-1) == 0).any() or (
        dino_ref.flatten(2).abs().sum(-1) == 0
    ).any()


def test_affinity_of_the_concatenation_sums_both_branches():
    dec = _small().eval()
    out = dec(*_inputs(), GRID)
    aff = dec.affinity(out.fused)
    assert aff.shape == (2, 20, 20)
    fc, fd = out.clip_fused.flatten(2), out.dino_fused.flatten(2)
    # [Fc; Fd]ᵀ[Fc; Fd] = FcᵀFc + FdᵀFd; fp32 sums of 32 products of O(1) values: 1e-5
    ref = torch.sigmoid(fc.transpose(1, 2) @ fc + fd.transpose(1, 2) @ fd)
    torch.testing.assert_close(aff, ref, atol=1e-5, rtol=0)
    assert torch.equal(aff, aff.transpose(1, 2))


def test_parameter_count_of_the_voc_vit_s_decoder():
    dec = WeCLIPPlusDecoder(num_classes=21)  # CLIP B/16 (768), DINOv2-S (384), 3 layers
    # CLIP head 768·256+256 + 2·(256·256+256) = 328,448; DINO-S head 384·256+256 + 131,584 =
    # 230,144; transformer 3 layers 2,369,280 (spec §6.2); classifier 256·21+21 = 5,397
    assert sum(p.numel() for p in dec.parameters()) == 328_448 + 230_144 + 2_369_280 + 5_397


def test_fusion_head_checks_shapes():
    head = FusionHead(8, 1, 4)
    with pytest.raises(ValueError, match=r"expected \(B, 6, 8\)"):
        head([torch.randn(1, 5, 8)], (2, 3))


# ----------------------------------------------------------------------------- official names
def test_official_name_mapping_round_trip():
    dec = _small(num_layers=3)
    theirs = to_official_plus_state(dec.state_dict())
    assert "decoder_fts_fuse.linears_modulelist.0.proj.weight" in theirs
    assert "dino_decoder_fts_fuse.linears_modulelist.0.proj_2.bias" in theirs
    assert "dino_decoder_fts_fuse.linear_fuse.weight" in theirs
    assert "decoder.transformer.resblocks.2.attn.in_proj_weight" in theirs
    assert "decoder.linear_pred.bias" in theirs
    assert (
        plus_official_to_ours("dino_decoder_fts_fuse.linear_fuse.bias") == "dino_fusion.fuse.bias"
    )
    assert (
        plus_official_to_ours("decoder.transformer.resblocks.1.ln_2.weight")
        == "blocks.1.norm2.weight"
    )
    for name in dec.state_dict():
        assert plus_official_to_ours(plus_ours_to_official(name)) == name
    with pytest.raises(KeyError):
        plus_official_to_ours("encoder.visual.conv1.weight")
    with pytest.raises(KeyError):
        plus_ours_to_official("clip_fusion.dropout.p")


def test_load_an_official_whole_model_state_dict():
    src, dst = _small(), _small()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    theirs = OrderedDict(to_official_plus_state(src.state_dict()))
    theirs["encoder.visual.positional_embedding_new"] = torch.zeros(3, 2)
    theirs["dino_encoder.pos_embed"] = torch.zeros(1, 3, 2)
    theirs["par.kernel"] = torch.zeros(1)
    load_official_plus_decoder_state(dst, {"state_dict": theirs})
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)
    # another DINO size: the head's first weight differs, named with the authors' key
    bigger = to_official_plus_state(_small(dino_dim=48).state_dict())
    with pytest.raises(
        ValueError, match=r"dino_decoder_fts_fuse\.linears_modulelist\.0\.proj\.weight"
    ):
        load_official_plus_decoder_state(dst, bigger)
    # another number of decoder layers (5 for DINOv2-L)
    with pytest.raises(KeyError, match="resblocks.2"):
        load_official_plus_decoder_state(
            dst, to_official_plus_state(_small(num_layers=3).state_dict())
        )
    partial = dict(theirs)
    partial.pop("decoder.linear_pred.weight")
    with pytest.raises(KeyError, match=r"lacks.*decoder\.linear_pred\.weight"):
        load_official_plus_decoder_state(dst, partial)
    with pytest.raises(KeyError, match="Unexpected key 'head.weight'"):
        convert_official_plus_state({**theirs, "head.weight": torch.zeros(1)})
