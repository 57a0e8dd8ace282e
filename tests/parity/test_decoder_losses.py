"""Decoder, A_f and losses against the authors' code, stage by stage (spec §4.1, §6, §7;
docs/parity.md).

Every stage is fed the recorded input of that stage; each tolerance is the fp32 rounding budget of
that stage (``_compare.py``), scaled by the magnitude of the values. Run with ``pytest -s
tests/parity`` to see the measured maximum differences.
"""

from typing import Dict

import numpy as np
import pytest
import torch

from weclip.losses import affinity_labels, affinity_loss, seg_loss
from weclip.models.decoder import WeCLIPDecoder
from weclip.models.official_names import load_official_decoder_state

from ._compare import DECODER_CHAIN, FUSION_CHAIN, U32, ce_loss_bound, check_close, fp32_rtol

PREFIX = "decoder_init."
# fusion from recorded CLIP features: MLP 768 -> 256 -> 256 per block, the 2816-channel 1x1 conv
RTOL_FUSION = fp32_rtol(FUSION_CHAIN)
# transformer decoder + classifier from the recorded F
RTOL_DECODE = fp32_rtol(DECODER_CHAIN)


def tensor(data: Dict[str, np.ndarray], key: str) -> torch.Tensor:
    return torch.as_tensor(data[key])


def scaled(ref: torch.Tensor, rtol: float) -> float:
    return rtol * float(ref.abs().max())


def affinity_atol(fused: torch.Tensor) -> float:
    """A_f = sigmoid(F_p . F_q): 256-term products, error relative to |F_p| |F_q|, slope <= 1/4."""
    return 0.25 * fp32_rtol([256]) * float(fused.flatten(2).norm(dim=1).max()) ** 2


@pytest.fixture(scope="module")
def official_decoder(official_step_static) -> WeCLIPDecoder:
    state = {
        key[len(PREFIX) :]: value
        for key, value in official_step_static.items()
        if key.startswith(PREFIX)
    }
    decoder = WeCLIPDecoder(num_classes=21).eval()
    load_official_decoder_state(decoder, state)
    return decoder


def test_initial_weights_load_through_the_mapping(official_step_static, official_decoder):
    # the fixture holds 5,985,045 decoder values (spec §6.2), all of them land in our decoder
    total = sum(v.size for k, v in official_step_static.items() if k.startswith(PREFIX))
    assert total == sum(p.numel() for p in official_decoder.parameters()) == 5_985_045
    ref = tensor(
        official_step_static, PREFIX + "decoder.transformer.resblocks.1.attn.in_proj_weight"
    )
    assert torch.equal(official_decoder.blocks[1].attn.in_proj_weight.detach(), ref)


@torch.no_grad()
def test_fusion_of_img0(official_step_static, official_decoder):
    # only img0's CLIP block outputs are recorded: (11, 401, 768) -> 11 tensors (1, 401, 768)
    feats = [block[None] for block in tensor(official_step_static, "clip_block_out_img0")]
    pre = official_decoder.fuse_features(feats, (20, 20))
    ref = tensor(official_step_static, "fuse_pre_dropout")[0]
    check_close("fuse_pre_dropout[img0]", pre[0], ref, scaled(ref, RTOL_FUSION))


def test_dropout2d_semantics(official_step_static):
    # F = pre * keep / (1 - 0.1), whole channels (spec §6.1)
    pre = tensor(official_step_static, "fuse_pre_dropout")
    keep = tensor(official_step_static, "dropout_keep_step1").float()
    fused = pre * keep[:, :, None, None] / 0.9
    ref = tensor(official_step_static, "fused_F")
    # x * (1 / 0.9) (torch's Dropout2d) vs x / 0.9: one rounding each side
    check_close("fused_F", fused, ref, 2 * U32 * float(ref.abs().max()))


@torch.no_grad()
def test_affinity_and_logits_from_fused(official_step_static, official_decoder):
    fused = tensor(official_step_static, "fused_F")  # (4, 256, 20, 20)
    check_close(
        "attn_pred (A_f)",
        official_decoder.affinity(fused),
        tensor(official_step_static, "attn_pred"),
        affinity_atol(fused),
    )
    ref = tensor(official_step_static, "seg_logits")
    check_close("seg_logits", official_decoder.decode(fused), ref, scaled(ref, RTOL_DECODE))


def test_affinity_labels_and_counts(official_step_static):
    labels = affinity_labels(tensor(official_step_static, "pseudo_label"), (20, 20), radius=8)
    ref = tensor(official_step_static, "aff_label")
    mismatches = int((labels != ref).sum())
    print(f"[parity] aff_label: {mismatches} of {ref.numel()} entries differ")
    assert mismatches == 0
    _, pos_count, neg_count = affinity_loss(tensor(official_step_static, "attn_pred"), labels)
    assert int(pos_count) == int(official_step_static["aff_pos_count"])
    assert int(neg_count) == int(official_step_static["aff_neg_count"])
    # App. C.8: (N+ - 1) + (N- - 1) = B images x 268^2 window pairs (no 255 in the pseudo labels)
    batch = official_step_static["pseudo_label"].shape[0]
    assert int(pos_count) + int(neg_count) - 2 == batch * 268**2


def test_losses(official_step_static):
    labels = tensor(official_step_static, "pseudo_label")
    aff_label = affinity_labels(labels, (20, 20), radius=8)
    aff, _, _ = affinity_loss(tensor(official_step_static, "attn_pred"), aff_label)
    seg = seg_loss(tensor(official_step_static, "seg_logits"), labels)
    ref_aff, ref_seg = (
        tensor(official_step_static, "aff_loss"),
        tensor(official_step_static, "seg_loss"),
    )
    # same inputs: only the sums over B n^2 (affinity) and B H W (CE) values are rounded
    check_close(
        "aff_loss",
        aff,
        ref_aff,
        fp32_rtol([official_step_static["aff_label"].size]) * float(ref_aff),
    )
    seg_atol = ce_loss_bound(0.0, float(ref_seg), labels.numel())
    check_close("seg_loss", seg, ref_seg, seg_atol)
    check_close(
        "loss = seg + 0.1 aff",
        seg + 0.1 * aff,
        tensor(official_step_static, "loss"),
        seg_atol
        + 0.1 * fp32_rtol([official_step_static["aff_label"].size])
        + 2 * U32 * float(ref_seg),
    )


@torch.no_grad()
def test_end_to_end_from_recorded_fusion_and_mask(official_step_static, official_decoder):
    # pre-dropout fusion + recorded keep mask -> decoder -> losses, with no recorded intermediate
    pre = tensor(official_step_static, "fuse_pre_dropout")
    keep = tensor(official_step_static, "dropout_keep_step1").float()
    fused = pre * keep[:, :, None, None] / 0.9
    logits = official_decoder.decode(fused)
    labels = tensor(official_step_static, "pseudo_label")
    aff_pred = official_decoder.affinity(fused)
    aff, _, _ = affinity_loss(aff_pred, affinity_labels(labels, (20, 20)))
    loss = seg_loss(logits, labels) + 0.1 * aff
    # the losses move by what the logits / A_f budgets allow (ce_loss_bound, mean of A_f)
    d_logits = scaled(tensor(official_step_static, "seg_logits"), RTOL_DECODE)
    ref = tensor(official_step_static, "loss")
    atol = ce_loss_bound(d_logits, float(ref), labels.numel()) + 0.1 * (
        affinity_atol(fused) + fp32_rtol([official_step_static["aff_label"].size])
    )
    check_close("loss (from fuse_pre_dropout)", loss, ref, atol)
