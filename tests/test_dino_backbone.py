"""FrozenDINOv2 (weclip/models/dino_backbone.py): shapes, weight files, errors, freezing, pos table.

Random DINOv2-S models of the real architecture (timm ``vit_small_patch14(_reg4)_dinov2``); weight
files are written by the tests in the official ``dinov2_vits14*_pretrain.pth`` key layout, in timm's
layout and as safetensors. Optional: set ``WECLIP_DINOV2_REPO`` to a local clone of
facebookresearch/dinov2 to compare against the official hub code itself.
"""

import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from weclip.models.dino_backbone import (
    DINOV2_VARIANTS,
    FrozenDINOv2,
    build_dino_backbone,
    build_dinov2_model,
    dinov2_pos_interp,
    resize_pos_embed,
    resize_to_grid,
    resize_to_patch_multiple,
)


@pytest.fixture(scope="module")
def vits():
    torch.manual_seed(0)
    return build_dinov2_model("dinov2_vits14", "random")


@pytest.fixture(scope="module")
def vits_reg():
    torch.manual_seed(1)
    model = build_dinov2_model("dinov2_vits14_reg", "random")
    with torch.no_grad():  # dyadic tokens: (cls - r) + r is exact in float32 (see _official_state)
        model.cls_token.copy_(torch.randint(-512, 512, model.cls_token.shape) / 1024)
        model.reg_token.normal_(0, 0.02)
    return model


def _official_state(vit, cls_pos_row=None):
    """timm layout -> the official DINOv2 key layout (what dinov2_vit*14*_pretrain.pth holds).

    Official: cls_token (1,1,D), pos_embed (1, 1+M², D) (the CLS row always present), mask_token
    (1, D), register_tokens (1, 4, D) for _reg, blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma,
    norm2, mlp.fc1, mlp.fc2, ls2.gamma}, patch_embed.proj, norm. For _reg, timm's cls_token is the
    official cls_token + pos_embed[:, 0]; ``cls_pos_row`` splits it.
    """
    state = {k: v.clone() for k, v in vit.state_dict().items()}
    out = {"mask_token": torch.randn(1, vit.embed_dim)}
    if "reg_token" in state:
        row = cls_pos_row if cls_pos_row is not None else torch.zeros(1, 1, vit.embed_dim)
        out["register_tokens"] = state.pop("reg_token")
        out["cls_token"] = state.pop("cls_token") - row
        out["pos_embed"] = torch.cat([row, state.pop("pos_embed")], dim=1)
    out.update(state)
    return out


def _images(size=320, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g)


def test_shapes_320_to_308_to_22_to_20(vits):
    dino = FrozenDINOv2(vits)
    assert (dino.patch_size, dino.width, dino.num_blocks, dino.num_register_tokens) == (
        14,
        384,
        12,
        0,
    )
    assert dino.input_size(320, 320) == (308, 308)
    images = _images()
    resized = resize_to_patch_multiple(images, 14)
    assert resized.shape == (2, 3, 308, 308)
    # the resize is bilinear, align_corners=False, no antialias (doc §2.2)
    ref = F.interpolate(images, size=(308, 308), mode="bilinear", align_corners=False)
    assert torch.equal(resized, ref)
    feats = dino(images)
    assert feats.shape == (2, 384, 22, 22) and feats.dtype == torch.float32
    # x_norm_patchtokens: the final LayerNorm output (no affine at init: weight 1, bias 0), so every
    # token has mean 0 and variance 1 over its 384 channels, up to eps=1e-6 and fp32 rounding
    assert torch.allclose(feats.mean(dim=1), torch.zeros(2, 22, 22), atol=1e-5)
    assert torch.allclose(feats.var(dim=1, unbiased=False), torch.ones(2, 22, 22), atol=1e-3)
    on_clip_grid = resize_to_grid(feats, (20, 20))
    assert on_clip_grid.shape == (2, 384, 20, 20)
    ref = F.interpolate(feats, size=(20, 20), mode="bilinear", align_corners=False)
    assert torch.equal(on_clip_grid, ref)
    # non-square and already-multiple inputs: 308x224 is kept as is -> 22x16
    assert resize_to_patch_multiple(_images(308)[:, :, :, :224], 14).shape[-2:] == (308, 224)
    assert dino(torch.randn(1, 3, 308, 224)).shape == (1, 384, 22, 16)


def test_forward_is_the_patch_tokens_of_the_resized_image(vits):
    dino = FrozenDINOv2(vits)
    images = _images(batch=1)
    tokens = dino.forward_patch_tokens(resize_to_patch_multiple(images))  # (1, 484, 384)
    assert tokens.shape == (1, 484, 384)
    # row-major: token r*22 + c is map position (r, c)
    assert torch.equal(dino(images)[0, :, 3, 5], tokens[0, 3 * 22 + 5])
    with pytest.raises(ValueError, match="not a multiple of the DINO patch size"):
        dino.forward_patch_tokens(images)


def test_frozen_nothing_trains(vits):
    dino = FrozenDINOv2(vits)
    assert all(not p.requires_grad for p in dino.parameters())
    dino.train()
    assert not dino.training and not dino.vit.training
    out = dino(_images(112, batch=1).requires_grad_(True))
    assert not out.requires_grad  # no autograd graph through the frozen backbone
    head = torch.nn.Conv2d(384, 2, 1)
    opt = torch.optim.SGD(list(head.parameters()) + list(dino.parameters()), lr=1.0)
    before = {k: v.clone() for k, v in dino.state_dict().items()}
    head(out).sum().backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in dino.state_dict().items())


@pytest.mark.parametrize("layout", ["official_pth", "timm_safetensors", "timm_pth"])
def test_weight_files_reproduce_the_model_exactly(vits, tmp_path, layout):
    ref = FrozenDINOv2(vits)(_images(196, batch=1))
    if layout == "official_pth":
        path = tmp_path / "dinov2_vits14_pretrain.pth"
        torch.save(_official_state(vits), path)
    elif layout == "timm_safetensors":
        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in vits.state_dict().items()}, str(path))
    else:
        path = tmp_path / "pytorch_model.bin"
        torch.save({"state_dict": vits.state_dict()}, path)
    torch.manual_seed(123)  # another random init underneath: every tensor must come from the file
    loaded = build_dino_backbone({"arch": "dinov2_vits14", "weights": str(path)})
    assert torch.equal(loaded(_images(196, batch=1)), ref)


def test_official_reg_file_reproduces_the_model_exactly(vits_reg, tmp_path):
    # official _reg files keep a positional row for CLS; timm folds it into cls_token
    row = torch.randint(-256, 256, (1, 1, 384)) / 1024  # dyadic: the fold is exact
    state = _official_state(vits_reg, cls_pos_row=row)
    assert set(state) >= {"register_tokens", "mask_token", "cls_token", "pos_embed"}
    assert state["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    path = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(state, path)
    dino = build_dino_backbone({"arch": "dinov2_vits14_reg", "weights": str(path)})
    assert dino.num_register_tokens == 4
    images = _images(196, batch=1)
    out = dino(images)
    assert out.shape == (1, 384, 14, 14)
    assert torch.equal(out, FrozenDINOv2(vits_reg)(images))


def test_missing_truncated_and_foreign_files(vits, tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_dinov2_model("dinov2_vits14", str(missing))
    good = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 384), "pos_embed": torch.zeros(1, 1370, 384)}, good)
    blob = good.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"truncated\.pth.*truncated or corrupt"):
        build_dinov2_model("dinov2_vits14", str(truncated))
    st = tmp_path / "model.safetensors"
    save_file({"cls_token": torch.zeros(1, 1, 384)}, str(st))
    st_blob = st.read_bytes()
    st.write_bytes(st_blob[: len(st_blob) - 100])
    with pytest.raises(ValueError, match=r"model\.safetensors.*truncated or corrupt"):
        build_dinov2_model("dinov2_vits14", str(st))
    hf = tmp_path / "hf.safetensors"
    save_file(
        {"embeddings.patch_embeddings.projection.weight": torch.zeros(384, 3, 14, 14)}, str(hf)
    )
    with pytest.raises(ValueError, match="transformers Dinov2Model"):
        build_dinov2_model("dinov2_vits14", str(hf))


def test_wrong_variant_is_named(vits, vits_reg, tmp_path):
    # an official _reg file given to the plain model
    reg_file = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(_official_state(vits_reg), reg_file)
    with pytest.raises(ValueError) as err:
        build_dinov2_model("dinov2_vits14", str(reg_file))
    msg = str(err.value)
    assert "dinov2_vits14_reg4_pretrain.pth" in msg and "looks like dinov2_vits14_reg" in msg
    assert "do not fit dinov2_vits14 " in msg and "the model is dinov2_vits14 (width 384" in msg
    # a ViT-B/14 file (official layout; only the shapes that name the variant matter here)
    fake_b = {"cls_token": torch.zeros(1, 1, 768), "pos_embed": torch.zeros(1, 1370, 768)}
    fake_b["mask_token"] = torch.zeros(1, 768)
    fake_b["patch_embed.proj.weight"] = torch.zeros(768, 3, 14, 14)
    fake_b.update({f"blocks.{i}.norm1.weight": torch.ones(768) for i in range(12)})
    b_file = tmp_path / "dinov2_vitb14_pretrain.pth"
    torch.save(fake_b, b_file)
    with pytest.raises(
        ValueError,
        match=r"vitb14_pretrain\.pth.*looks like dinov2_vitb14 \(width 768, 12 blocks, no registers\)",
    ):
        build_dinov2_model("dinov2_vits14", str(b_file))
    # a table stored for another image size (224 px: 16x16) is refused, not silently resampled
    small = _official_state(vits)
    small["pos_embed"] = small["pos_embed"][:, : 1 + 16 * 16]
    s_file = tmp_path / "dinov2_224.pth"
    torch.save(small, s_file)
    with pytest.raises(ValueError, match=r"dinov2_224\.pth.*256 patch rows"):
        build_dinov2_model("dinov2_vits14", str(s_file))


def test_no_download_without_permission(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(FileNotFoundError, match="allow_download=True"):
        build_dinov2_model("dinov2_vits14", "hub:lvd142m")


def test_hub_tag_uses_the_torch_hub_cache(vits, monkeypatch, tmp_path):
    # the official file where torch.hub.load('facebookresearch/dinov2', ...) caches it
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    torch.save(_official_state(vits), tmp_path / "checkpoints" / "dinov2_vits14_pretrain.pth")
    loaded = build_dinov2_model("dinov2_vits14", "hub:lvd142m")
    assert torch.equal(loaded.pos_embed, vits.pos_embed)


def test_names_and_unknown_variant():
    assert DINOV2_VARIANTS["dinov2_vitl14_reg"] == "vit_large_patch14_reg4_dinov2"
    assert set(DINOV2_VARIANTS) == {f"dinov2_vit{s}14{r}" for s in "sbl" for r in ("", "_reg")}
    with pytest.raises(ValueError, match="Unknown DINOv2 variant 'dinov2_vitx14'"):
        build_dinov2_model("dinov2_vitx14", "random")
    with pytest.raises(KeyError, match="Unknown key"):
        build_dino_backbone({"weights": "random", "size": "s"})


def test_tiny_custom_arch_for_toy_configs():
    torch.manual_seed(0)
    tiny = {"img_size": 70, "embed_dim": 32, "depth": 2, "num_heads": 2, "reg_tokens": 4}
    dino = build_dino_backbone({"arch": tiny, "weights": "random"})
    assert (dino.width, dino.num_blocks, dino.num_register_tokens) == (32, 2, 4)
    assert (dino.pos_offset, dino.pos_antialias) == (0.0, True)
    assert dino(torch.randn(1, 3, 112, 112)).shape == (1, 32, 8, 8)


# ----------------------------------------------------------------------------- positional table
def test_pos_interp_settings():
    assert dinov2_pos_interp(0) == (0.1, False)  # official plain models
    assert dinov2_pos_interp(4) == (0.0, True)  # official _reg models
    assert dinov2_pos_interp(0, "timm") == (0.0, True)
    with pytest.raises(ValueError, match="pos_interp"):
        dinov2_pos_interp(0, "nearest")


def test_pos_table_official_offset_versus_timm():
    torch.manual_seed(0)
    table = torch.randn(37 * 37, 8)
    same = resize_pos_embed(table, (37, 37), 0.1, False)
    assert same is table  # the official code skips the resize at the stored grid, offset or not
    official = resize_pos_embed(table, (22, 22), 0.1, False)
    x = table.reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    # the +0.1 enters only through the scale factor: 22.1 / 37 per axis, output 22x22
    ref = F.interpolate(x, scale_factor=(22.1 / 37, 22.1 / 37), mode="bicubic", antialias=False)
    assert torch.equal(official, ref.permute(0, 2, 3, 1).reshape(484, 8))
    timm_like = resize_pos_embed(table, (22, 22), 0.0, True)
    ref = F.interpolate(x, size=(22, 22), mode="bicubic", antialias=True)
    assert torch.equal(timm_like, ref.permute(0, 2, 3, 1).reshape(484, 8))
    # the two differ materially (measured max 0.56 here on unit-variance noise; 0.02-0.06 on
    # timm-initialised tables, docs/official_code_plus.md §2.3)
    assert (official - timm_like).abs().max() > 0.1


def test_pos_interp_key_changes_plain_models_only(vits, vits_reg):
    images = _images(196, batch=1)
    a, b = FrozenDINOv2(vits)(images), FrozenDINOv2(vits, pos_interp="timm")(images)
    assert (a - b).abs().max() > 1e-3
    a, b = FrozenDINOv2(vits_reg)(images), FrozenDINOv2(vits_reg, pos_interp="timm")(images)
    assert torch.equal(a, b)


@pytest.mark.skipif(
    not os.environ.get("WECLIP_DINOV2_REPO"),
    reason="set WECLIP_DINOV2_REPO to a local clone of facebookresearch/dinov2",
)
@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov2_vits14_reg"])
def test_matches_the_official_hub_code(name, tmp_path):
    repo = os.environ["WECLIP_DINOV2_REPO"]
    sys.path.insert(0, repo)
    try:
        official = torch.hub.load(repo, name, source="local", pretrained=False)
    finally:
        sys.path.remove(repo)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in official.parameters():  # zero-initialised tokens too
            p.copy_(torch.randn_like(p) * 0.05)
    official.eval()
    torch.save(official.state_dict(), tmp_path / "w.pth")
    ours = build_dino_backbone({"arch": name, "weights": str(tmp_path / "w.pth")})
    images = _images(320, batch=1)
    with torch.no_grad():
        resized = F.interpolate(images, size=(308, 308), mode="bilinear", align_corners=False)
        ref = official.forward_features(resized)["x_norm_patchtokens"]
    ref = ref.reshape(1, 22, 22, -1).permute(0, 3, 1, 2)
    # measured bitwise equal on CPU; 1e-5 allows other attention kernels (xformers, SDPA on GPU)
    torch.testing.assert_close(ours(images), ref, atol=1e-5, rtol=1e-5)
    assert math.isfinite(float(ref.abs().max()))
