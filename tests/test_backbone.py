"""FrozenCLIP: agreement with open_clip's own forward, attention maps, positional resize, weight loading."""

import os

import pytest
import torch
import torch.nn.functional as F

from weclip.models.clip_backbone import (
    FrozenCLIP,
    build_backbone,
    build_clip_model,
    build_tokenizer,
    resize_pos_embed,
)
from weclip.models.text_encoder import prompt_embeddings


def _block_outputs_via_hooks(clip, images):
    """open_clip's own forward, with forward hooks recording every residual block's output."""
    outs = []
    hooks = [
        b.register_forward_hook(lambda m, i, o: outs.append(o))
        for b in clip.visual.transformer.resblocks
    ]
    with torch.no_grad():
        emb = clip.encode_image(images, normalize=True)
    for h in hooks:
        h.remove()
    return outs, emb


def test_block_loop_matches_open_clip(tiny_clip):
    # At the native size (32 px, 4x4 grid) no positional resize happens, so our block loop must reproduce
    # open_clip's forward exactly, and (pool_type="avg") its pooled embedding.
    images = torch.randn(2, 3, 32, 32)
    ref_outs, ref_emb = _block_outputs_via_hooks(tiny_clip.clip, images)
    feats, attns = tiny_clip.forward_blocks(images)
    assert len(feats) == len(attns) == tiny_clip.num_blocks - 1 == 2
    for ours, ref in zip(feats, ref_outs[:-1]):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    act, attn, emb = tiny_clip.forward_last(feats[-1])
    torch.testing.assert_close(emb, ref_emb, atol=1e-5, rtol=1e-5)
    assert act.shape == (2, 17, 64) and attn.shape == (2, 17, 17)


def test_attention_is_softmax_of_scaled_qk(tiny_clip):
    images = torch.randn(1, 3, 32, 48)
    feats, attns = tiny_clip.forward_blocks(images)
    # rows are softmax distributions over the keys
    for a in attns:
        torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)))
    # recompute block 1's attention by hand: heads of width 32, softmax(q k^T / sqrt(32)), mean over heads
    block = tiny_clip.clip.visual.transformer.resblocks[1]
    y = block.ln_1(feats[0])
    q, k, _ = F.linear(y, block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, dim=-1)
    heads = block.attn.num_heads
    q = q.reshape(1, -1, heads, 32).transpose(1, 2)
    k = k.reshape(1, -1, heads, 32).transpose(1, 2)
    manual = torch.softmax(q @ k.transpose(-1, -2) / 32**0.5, dim=-1).mean(dim=1)
    torch.testing.assert_close(attns[1], manual, atol=1e-6, rtol=1e-5)


def test_attention_maps_only_from_attn_from(tiny_clip):
    # the block outputs do not depend on which maps are returned; the earlier maps are None
    images = torch.randn(2, 3, 32, 40)
    feats, attns = tiny_clip.forward_blocks(images)
    feats1, attns1 = tiny_clip.forward_blocks(images, attn_from=1)
    feats2, attns2 = tiny_clip.forward_blocks(images, attn_from=2)  # N-1 = 2: no map at all
    assert all(torch.equal(a, b) for a, b in zip(feats, feats1))
    assert all(torch.equal(a, b) for a, b in zip(feats, feats2))
    assert attns1[0] is None and torch.equal(attns1[1], attns[1])
    assert attns2 == [None, None]


def test_fused_attention_matches_the_explicit_path(tiny_clip):
    # fused SDPA (the default off the CPU for blocks whose map is not returned) computes the same
    # attention; fp32 sums in another order: ~1e-7 relative on O(1) activations, 1e-5 tolerance
    images = torch.randn(2, 3, 32, 40)
    ref, _ = tiny_clip.forward_blocks(images, attn_from=2)
    tiny_clip.fused_attention = True
    try:
        fused, _ = tiny_clip.forward_blocks(images, attn_from=2)
    finally:
        tiny_clip.fused_attention = None
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_pos_embed_resize_identity_and_bilinear():
    table = torch.randn(1 + 14 * 14, 8)
    assert torch.equal(resize_pos_embed(table, (14, 14)), table)
    # a table whose value is the row index y: bilinear (align_corners=False) to 20 rows samples
    # y_src = (y + 0.5) * 14 / 20 - 0.5, clamped to [0, 13]; columns (14 -> 30) do not change the value
    rows = torch.arange(14.0).repeat_interleave(14)[:, None].expand(-1, 3)
    table = torch.cat([torch.full((1, 3), -7.0), rows], dim=0)
    out = resize_pos_embed(table, (20, 30))
    assert out.shape == (1 + 20 * 30, 3)
    assert torch.equal(out[0], torch.full((3,), -7.0))  # CLS row kept
    y = torch.arange(20.0)
    expected = ((y + 0.5) * 14 / 20 - 0.5).clamp(0, 13)
    torch.testing.assert_close(out[1:, 0].reshape(20, 30), expected[:, None].expand(20, 30))


def test_vit_b16_shapes_and_gradcam_gradient():
    # the acceptance check on the real architecture (random init)
    backbone = build_backbone(dict(arch="ViT-B-16-quickgelu", weights="random"))
    images = torch.randn(1, 3, 320, 480)
    feats, attns = backbone.forward_blocks(images)
    assert len(feats) == 11 and all(f.shape == (1, 601, 768) for f in feats)
    assert not any(f.requires_grad for f in feats)
    act, attn_last, emb = backbone.forward_last(feats[-1])
    attns = attns + [attn_last]
    assert len(attns) == 12 and all(a.shape == (1, 601, 601) for a in attns)
    assert emb.shape == (1, 512)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(1))
    (grad,) = torch.autograd.grad(emb[0, 0], act)
    assert grad.abs().sum() > 0
    assert backbone.logit_scale == pytest.approx(
        1 / 0.07
    )  # open_clip init; OpenAI weights give 100


def test_frozen(tiny_clip):
    tiny_clip.train()
    assert not tiny_clip.training and not tiny_clip.clip.training
    assert all(not p.requires_grad for p in tiny_clip.parameters())
    with pytest.raises(ValueError, match="multiple of the patch size"):
        tiny_clip.forward_blocks(torch.randn(1, 3, 30, 32))


def test_prompt_embeddings(tiny_clip):
    emb = prompt_embeddings(tiny_clip, ["circle", "square"], "a clean origami {}.")
    assert emb.shape == (2, 32)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    direct = tiny_clip.encode_text(["a clean origami circle.", "a clean origami square."])
    torch.testing.assert_close(emb, direct)
    # several templates: the normalised mean of the per-template embeddings
    two = prompt_embeddings(tiny_clip, ["circle"], ["a {}.", "a photo of a {}."])
    manual = F.normalize(
        tiny_clip.encode_text(["a circle.", "a photo of a circle."]).mean(0), dim=-1
    )
    torch.testing.assert_close(two[0], manual)


# ---------------------------------------------------------------- weight files
def _outputs(backbone, images):
    feats, _ = backbone.forward_blocks(images)
    return (
        feats[-1],
        backbone.forward_last(feats[-1])[2],
        backbone.encode_text(["a clean origami circle."]),
    )


def _openai_archive(clip, path):
    """A TorchScript archive with OpenAI's extra keys and fp16 storage, like ViT-B-16.pt."""
    half = build_clip_model(dict(clip.arch_for_test), "random")
    half.load_state_dict(clip.state_dict())
    half = half.half()
    for name in ("input_resolution", "context_length", "vocab_size"):  # OpenAI's extra entries
        if hasattr(half, name):
            delattr(half, name)  # plain int attributes on open_clip.CLIP
        half.register_buffer(name, torch.tensor(7))
    scripted = torch.jit.trace_module(
        half, {"encode_text": torch.zeros(1, 16, dtype=torch.long)}, check_trace=False
    )
    scripted.save(path)


@pytest.fixture
def tiny_reference(tiny_arch, tmp_path):
    torch.manual_seed(1)
    clip = build_clip_model(tiny_arch, "random")
    clip.arch_for_test = tiny_arch
    return clip


def test_weight_layouts_load_to_identical_outputs(tiny_reference, tiny_arch, tmp_path):
    from safetensors.torch import save_file

    images = torch.randn(1, 3, 32, 32)
    # fp16 round trip is what OpenAI's archive implies: compare against the fp16-rounded reference
    rounded = build_clip_model(tiny_arch, "random")
    rounded.load_state_dict({k: v.half().float() for k, v in tiny_reference.state_dict().items()})
    ref_fp16 = _outputs(FrozenCLIP(rounded, build_tokenizer(tiny_arch, 16)), images)
    ref = _outputs(FrozenCLIP(tiny_reference, build_tokenizer(tiny_arch, 16)), images)

    openai_path = str(tmp_path / "openai.pt")
    _openai_archive(tiny_reference, openai_path)
    ckpt_path = str(tmp_path / "open_clip.pt")
    torch.save(
        {
            "epoch": 3,
            "state_dict": {"module." + k: v for k, v in tiny_reference.state_dict().items()},
        },
        ckpt_path,
    )
    st_path = str(tmp_path / "weights.safetensors")
    save_file({k: v.contiguous() for k, v in tiny_reference.state_dict().items()}, st_path)

    for path, expected in ((openai_path, ref_fp16), (ckpt_path, ref), (st_path, ref)):
        loaded = build_backbone(dict(arch=tiny_arch, weights=path))
        for a, b in zip(_outputs(loaded, images), expected):
            assert torch.equal(a, b), path


def test_missing_file_error(tiny_arch, tmp_path):
    path = str(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_clip_model(tiny_arch, path)


@pytest.mark.parametrize("kind", ["garbage", "truncated", "not_a_state_dict"])
def test_corrupt_file_error(tiny_reference, tiny_arch, tmp_path, kind):
    path = str(tmp_path / f"{kind}.pt")
    if kind == "garbage":
        with open(path, "wb") as f:
            f.write(os.urandom(1000))
    elif kind == "truncated":
        torch.save(tiny_reference.state_dict(), path)
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
    else:
        torch.save([torch.zeros(3)], path)
    with pytest.raises(ValueError, match=f"{kind}.pt"):
        build_clip_model(tiny_arch, path)


def test_wrong_architecture_error(tiny_reference, tiny_arch, tmp_path):
    path = str(tmp_path / "tiny.pt")
    torch.save(tiny_reference.state_dict(), path)
    wider = dict(tiny_arch, vision_cfg=dict(tiny_arch["vision_cfg"], width=96))
    with pytest.raises(
        ValueError, match=r"tiny.pt do not fit the architecture.*visual.conv1.weight"
    ):
        build_clip_model(wider, path)
    with pytest.raises(ValueError, match="tiny.pt do not fit the architecture ViT-B-16-quickgelu"):
        build_clip_model("ViT-B-16-quickgelu", path)


def test_unknown_arch_and_uncached_hub_tag(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="Unknown open_clip architecture"):
        build_clip_model("ViT-X-99", "random")
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="allow_download"):
        build_clip_model("ViT-B-16-quickgelu", "hub:openai")
