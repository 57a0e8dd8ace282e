"""WeCLIPDecoder (spec §6, §4.1) and the official name mapping (weclip/models/official_names.py)."""

import logging
import math

import pytest
import torch

from weclip.config import load_config
from weclip.errors import ConfigError
from weclip.models.decoder import QuickGELU, SelfAttention, WeCLIPDecoder
from weclip.models.official_names import (
    load_official_decoder_state,
    official_to_ours,
    ours_to_official,
    to_official_decoder_state,
)

# A small decoder: 3 CLIP blocks of width 32, width 16, 4 heads, 2 layers, 5 classes.
SMALL = dict(in_dim=32, num_inputs=3, embed_dim=16, num_heads=4, num_layers=2, mlp_ratio=4)


def small_decoder(num_classes: int = 5, dropout: float = 0.1, seed: int = 0) -> WeCLIPDecoder:
    torch.manual_seed(seed)
    return WeCLIPDecoder(num_classes=num_classes, dropout=dropout, **SMALL)


def block_outputs(batch: int, grid, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    n = grid[0] * grid[1]
    return [torch.randn(batch, n + 1, SMALL["in_dim"], generator=g) for _ in range(3)]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_parameter_counts_match_the_authors():
    # spec §6.2: MLPs 11*(768*256+256 + 256*256+256) = 2,889,216; fuse 2816*256+256 = 721,152;
    # transformer 3*(197,376 + 65,792 + 1,024 + 525,568) = 2,369,280; classifier 256*C + C.
    voc = WeCLIPDecoder(num_classes=21)
    assert count(voc) == 2_889_216 + 721_152 + 2_369_280 + 5_397 == 5_985_045
    coco = WeCLIPDecoder(num_classes=81)
    assert count(coco) == 6_000_465  # classifier 256*81 + 81 = 20,817


def test_decoder_from_the_voc_config():
    cfg = load_config("configs/voc.py")
    decoder = WeCLIPDecoder(
        in_dim=768, num_inputs=11, num_classes=cfg.data.num_classes, **cfg.model.decoder
    )
    assert count(decoder) == 5_985_045
    assert decoder.dropout.p == 0.1 and len(decoder.blocks) == 3
    assert decoder.blocks[0].attn.num_heads == 8 and decoder.blocks[0].norm1.eps == 1e-5
    with pytest.raises(ConfigError, match="unknown config key 'model.decoder.heads'"):
        load_config("configs/voc.py", {"model.decoder": {"heads": 8}})


def test_shapes_on_a_non_square_grid():
    decoder = small_decoder().eval()
    seg_logits, fused = decoder(block_outputs(2, (3, 4)), (3, 4))
    assert seg_logits.shape == (2, 5, 3, 4)
    assert fused.shape == (2, 16, 3, 4)
    aff = decoder.affinity(fused)
    assert aff.shape == (2, 12, 12)
    torch.testing.assert_close(aff, aff.transpose(1, 2))
    assert bool(((aff > 0) & (aff < 1)).all())


def test_cls_is_dropped_and_tokens_are_row_major():
    decoder = small_decoder().eval()
    grid = (3, 4)
    feats = block_outputs(1, grid)
    with torch.no_grad():
        ref = decoder.fuse_features(feats, grid)
        # changing CLS in every block changes nothing
        cls_changed = [f.clone() for f in feats]
        for f in cls_changed:
            f[:, 0] += 10.0
        assert torch.equal(decoder.fuse_features(cls_changed, grid), ref)
        # token 1 + k (k = 6 -> row 1, col 2 for w = 4) only moves fused[:, :, 1, 2]
        moved = [f.clone() for f in feats]
        moved[1][:, 1 + 6] += 5.0
        diff = (decoder.fuse_features(moved, grid) - ref).abs().sum(dim=1)[0]  # (h, w)
        assert diff[1, 2] > 0
        diff[1, 2] = 0
        assert float(diff.max()) == 0.0


def test_dropout2d_drops_whole_channels_in_training_only():
    decoder = small_decoder(dropout=0.5)
    grid = (3, 4)
    feats = block_outputs(2, grid)
    with torch.no_grad():
        pre = decoder.fuse_features(feats, grid)
        decoder.train()
        torch.manual_seed(3)
        _, fused = decoder(feats, grid)
        # each (image, channel) is either all zero or pre / (1 - p) = 2 * pre
        kept = (fused != 0).flatten(2).any(-1)  # (B, E)
        torch.testing.assert_close(fused, pre * kept[:, :, None, None] * 2.0)
        assert 0 < int(kept.sum()) < kept.numel()  # with p = 0.5 and 32 channels, both happen
        decoder.eval()
        _, fused_eval = decoder(feats, grid)
        torch.testing.assert_close(fused_eval, pre)


def test_affinity_is_sigmoid_of_raw_dot_products():
    # F on a 1x2 grid with 2 channels: f0 = (1, 0), f1 = (0, 2) -> F^T F = [[1, 0], [0, 4]]
    fused = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).reshape(1, 2, 1, 2)
    expected = torch.sigmoid(torch.tensor([[[1.0, 0.0], [0.0, 4.0]]]))  # diag 0.731, 0.982; off 0.5
    torch.testing.assert_close(WeCLIPDecoder.affinity(fused), expected)


def test_quick_gelu_value():
    # 1 * sigmoid(1.702) = 1 / (1 + exp(-1.702)) = 1 / 1.1823185 = 0.8457958
    assert float(QuickGELU()(torch.tensor(1.0))) == pytest.approx(0.8457958, abs=1e-6)


def test_self_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = SelfAttention(16, 4)
    ref = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.in_proj_weight)
        ref.in_proj_bias.copy_(torch.randn(48))
        ours.in_proj_bias.copy_(ref.in_proj_bias)
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(torch.randn(16))
        ours.out_proj.bias.copy_(ref.out_proj.bias)
        x = torch.randn(2, 7, 16)
        torch.testing.assert_close(ours(x), ref(x, x, x, need_weights=False)[0])


@torch.no_grad()
def test_initialisation_follows_the_authors():
    torch.manual_seed(0)
    decoder = WeCLIPDecoder(num_classes=21)
    block = decoder.blocks[0]
    assert float(block.attn.in_proj_bias.abs().max()) == 0.0
    assert float(block.attn.out_proj.bias.abs().max()) == 0.0
    assert torch.equal(block.norm1.weight, torch.ones(256))
    assert float(block.norm2.bias.abs().max()) == 0.0
    # xavier-uniform on the (768, 256) in-projection: bound sqrt(6 / (768 + 256)) = 0.07655
    bound = math.sqrt(6 / 1024)
    assert 0.95 * bound < float(block.attn.in_proj_weight.abs().max()) <= bound
    # PyTorch default Linear init: kaiming-uniform(a=sqrt(5)) -> bound 1 / sqrt(fan_in = 768)
    fc1 = decoder.fusion_mlps[0].fc1.weight
    assert 0.95 / math.sqrt(768) < float(fc1.abs().max()) <= 1 / math.sqrt(768)


def test_bad_inputs_raise_clear_errors():
    decoder = small_decoder().eval()
    with pytest.raises(ValueError, match="expects 3 CLIP block outputs, got 2"):
        decoder(block_outputs(1, (3, 4))[:2], (3, 4))
    with pytest.raises(ValueError, match=r"expected \(B, 13, 32\)"):
        decoder(block_outputs(1, (3, 3)), (3, 4))
    with pytest.raises(ValueError, match="not divisible"):
        WeCLIPDecoder(num_classes=3, embed_dim=30, num_heads=4)


def test_gradients_reach_the_right_parameters():
    decoder = small_decoder()
    seg_logits, fused = decoder(block_outputs(2, (3, 4)), (3, 4))
    # the affinity loss only reaches the fusion part (spec §7.3)
    decoder.affinity(fused).sum().backward(retain_graph=True)
    assert (
        decoder.fuse.weight.grad is not None and decoder.fusion_mlps[2].fc1.weight.grad is not None
    )
    assert (
        decoder.classifier.weight.grad is None
        and decoder.blocks[0].attn.in_proj_weight.grad is None
    )
    seg_logits.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in decoder.parameters())


# ---------------------------------------------------------------------------------------------
# official_names


def test_name_mapping_examples_and_round_trip():
    assert official_to_ours("decoder_fts_fuse.linears_modulelist.10.proj_2.bias") == (
        "fusion_mlps.10.fc2.bias"
    )
    assert official_to_ours("decoder.transformer.resblocks.2.attn.in_proj_weight") == (
        "blocks.2.attn.in_proj_weight"
    )
    assert official_to_ours("decoder.transformer.resblocks.0.mlp.c_proj.weight") == (
        "blocks.0.mlp.fc2.weight"
    )
    assert official_to_ours("decoder.linear_pred.weight") == "classifier.weight"
    assert ours_to_official("fuse.bias") == "decoder_fts_fuse.linear_fuse.bias"
    assert (
        ours_to_official("blocks.1.norm2.weight") == "decoder.transformer.resblocks.1.ln_2.weight"
    )
    names = list(WeCLIPDecoder(num_classes=21).state_dict())
    official = [ours_to_official(n) for n in names]
    # 11 MLPs x 4 + fuse 2 + 3 layers x 12 + classifier 2 = 84 tensors, all distinct
    assert len(set(official)) == len(names) == 84
    assert [official_to_ours(n) for n in official] == names
    with pytest.raises(KeyError, match="decoder.transformer.foo"):
        official_to_ours("decoder.transformer.foo")


def test_load_official_whole_model_state(caplog):
    source = small_decoder(seed=1)
    target = small_decoder(seed=2)
    checkpoint = dict(to_official_decoder_state(source.state_dict()))
    checkpoint["encoder.visual.conv1.weight"] = torch.zeros(3)
    checkpoint["encoder.visual.positional_embedding_new"] = torch.zeros(401, 768)
    checkpoint["par.kernel"] = torch.zeros(8, 1, 3, 3)
    with caplog.at_level(logging.INFO, logger="weclip"):
        load_official_decoder_state(target, checkpoint)
    assert "ignored 2 'encoder.*' entries, 1 'par.*' entries" in caplog.text
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    # a {"state_dict": ...} wrapper with a DataParallel prefix is accepted too
    wrapped = {"state_dict": {f"module.{k}": v for k, v in checkpoint.items()}}
    load_official_decoder_state(small_decoder(seed=3), wrapped)


def test_load_official_errors_name_the_key():
    state = dict(to_official_decoder_state(small_decoder().state_dict()))
    missing = {k: v for k, v in state.items() if k != "decoder.linear_pred.bias"}
    with pytest.raises(KeyError, match="lacks .*'decoder.linear_pred.bias'"):
        load_official_decoder_state(small_decoder(), missing)
    extra_layer = dict(state, **{"decoder.transformer.resblocks.2.ln_1.weight": torch.ones(16)})
    with pytest.raises(KeyError, match="decoder.transformer.resblocks.2.ln_1.weight"):
        load_official_decoder_state(small_decoder(), extra_layer)
    stray = dict(state, **{"head.weight": torch.ones(1)})
    with pytest.raises(KeyError, match="Unexpected key 'head.weight'"):
        load_official_decoder_state(small_decoder(), stray)
    coco = dict(to_official_decoder_state(small_decoder(num_classes=81).state_dict()))
    with pytest.raises(ValueError, match=r"'decoder.linear_pred.weight'.*\(81, 16, 1, 1\)"):
        load_official_decoder_state(small_decoder(num_classes=21), coco)


def test_decoder_input_dtype_is_cast():
    decoder = small_decoder().eval()
    feats = [f.half() for f in block_outputs(1, (2, 2))]
    seg_logits, _ = decoder(feats, (2, 2))
    assert seg_logits.dtype == torch.float32
    ref, _ = decoder([f.float() for f in feats], (2, 2))
    torch.testing.assert_close(seg_logits, ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_decoder_and_losses_follow_the_input_device():
    from weclip.losses import total_loss

    loss_cfg = load_config("configs/voc.py").loss
    decoder = small_decoder().eval()
    feats = block_outputs(2, (4, 4))
    labels = torch.randint(0, 5, (2, 64, 64), generator=torch.Generator().manual_seed(0))
    outputs = {}
    for device in ("cpu", "cuda"):
        decoder.to(device)
        seg_logits, fused = decoder([f.to(device) for f in feats], (4, 4))
        losses = total_loss(seg_logits, decoder.affinity(fused), labels.to(device), loss_cfg)
        assert seg_logits.device.type == losses["loss"].device.type == device
        outputs[device] = (seg_logits.detach().cpu(), losses["loss"].detach().cpu())
    # loose tolerance: cuDNN may run the 1x1 convs in TF32
    for ours, ref in zip(outputs["cuda"], outputs["cpu"]):
        torch.testing.assert_close(ours, ref, atol=1e-2, rtol=1e-2)
