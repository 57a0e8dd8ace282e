"""Decoder, A_f and losses against the authors' code, stage by stage (fixture README; spec §4.1,
§6, §7).

Every stage is fed the recorded input of that stage; tolerances are absolute, 1e-4. Run with
``pytest -s tests/parity`` to see the measured maximum differences.
"""

from typing import Dict

import numpy as np
import pytest
import torch

from weclip.losses import affinity_labels, affinity_loss, seg_loss
from weclip.models.decoder import WeCLIPDecoder
from weclip.models.official_names import load_official_decoder_state

ATOL = 1e-4
PREFIX = "decoder_init."


def tensor(data: Dict[str, np.ndarray], key: str) -> torch.Tensor:
    return torch.as_tensor(data[key])


def check_close(name: str, ours: torch.Tensor, ref: torch.Tensor, atol: float = ATOL) -> None:
    assert ours.shape == ref.shape, f"{name}: shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
    diff = float((ours.double() - ref.double()).abs().max())
    print(
        f"[parity] {name}: max |ours - official| = {diff:.3e} (scale {float(ref.abs().max()):.3g})"
    )
    assert diff <= atol, f"{name}: max abs difference {diff:.3e} > {atol:g}"


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
    check_close(
        "fuse_pre_dropout[img0]", pre[0], tensor(official_step_static, "fuse_pre_dropout")[0]
    )


def test_dropout2d_semantics(official_step_static):
    # F = pre * keep / (1 - 0.1), whole channels (spec §6.1)
    pre = tensor(official_step_static, "fuse_pre_dropout")
    keep = tensor(official_step_static, "dropout_keep_step1").float()
    fused = pre * keep[:, :, None, None] / 0.9
    check_close("fused_F", fused, tensor(official_step_static, "fused_F"))


@torch.no_grad()
def test_affinity_and_logits_from_fused(official_step_static, official_decoder):
    fused = tensor(official_step_static, "fused_F")  # (4, 256, 20, 20)
    check_close(
        "attn_pred (A_f)",
        official_decoder.affinity(fused),
        tensor(official_step_static, "attn_pred"),
    )
    check_close(
        "seg_logits", official_decoder.decode(fused), tensor(official_step_static, "seg_logits")
    )


def test_affinity_labels_and_counts(official_step_static):
    labels = affinity_labels(tensor(official_step_static, "pseudo_label"), (20, 20), radius=8)
    ref = tensor(official_step_static, "aff_label")
    mismatches = int((labels != ref).sum())
    print(f"[parity] aff_label: {mismatches} of {ref.numel()} entries differ")
    assert mismatches == 0
    _, pos_count, neg_count = affinity_loss(tensor(official_step_static, "attn_pred"), labels)
    assert int(pos_count) == int(official_step_static["aff_pos_count"])
    assert int(neg_count) == int(official_step_static["aff_neg_count"])
    # App. C.8: (N+ - 1) + (N- - 1) = 4 images x 268^2 window pairs (no 255 in the pseudo labels)
    assert int(pos_count) + int(neg_count) - 2 == 4 * 268**2


def test_losses(official_step_static):
    labels = tensor(official_step_static, "pseudo_label")
    aff_label = affinity_labels(labels, (20, 20), radius=8)
    aff, _, _ = affinity_loss(tensor(official_step_static, "attn_pred"), aff_label)
    seg = seg_loss(tensor(official_step_static, "seg_logits"), labels)
    check_close("aff_loss", aff, tensor(official_step_static, "aff_loss"))
    check_close("seg_loss", seg, tensor(official_step_static, "seg_loss"))
    check_close("loss = seg + 0.1 aff", seg + 0.1 * aff, tensor(official_step_static, "loss"))


@torch.no_grad()
def test_end_to_end_from_recorded_fusion_and_mask(official_step_static, official_decoder):
    # pre-dropout fusion + recorded keep mask -> decoder -> losses, with no recorded intermediate
    pre = tensor(official_step_static, "fuse_pre_dropout")
    keep = tensor(official_step_static, "dropout_keep_step1").float()
    fused = pre * keep[:, :, None, None] / 0.9
    logits = official_decoder.decode(fused)
    labels = tensor(official_step_static, "pseudo_label")
    aff, _, _ = affinity_loss(official_decoder.affinity(fused), affinity_labels(labels, (20, 20)))
    loss = seg_loss(logits, labels) + 0.1 * aff
    check_close("loss (from fuse_pre_dropout)", loss, tensor(official_step_static, "loss"))
