"""The refinement module (RFM) against the authors' code: one training step past their counter
threshold (``official_step_rfm.npz``; spec §4.3, §4.4, §4.6, §5).

Stage by stage on img0, each stage fed with its recorded inputs: the last 6 attention maps and the
recorded decoder affinity A_f -> layer choice and RFM affinity -> transition matrix -> propagated
CAMs -> PAR. The layer rule on every image's recorded per-layer sums. Then our whole training
forward on the recorded batch (iteration 15001, the recorded Dropout2d mask, the fixture's seeded
decoder): A_f, logits, refined CAMs, pseudo-labels, affinity labels and losses. Run with
``pytest -s`` to see the measured differences.
"""

import math
from typing import Dict

import numpy as np
import pytest
import torch

from weclip.refine.propagate import propagate_cams
from weclip.refine.pseudo_label import pack_scores
from weclip.refine.transition import patch_attention, rfm_affinity, transition_matrix

from ._compare import (
    CLIP_CHAIN,
    DECODER_CHAIN,
    FUSION_CHAIN,
    PAR_RTOL,
    U32,
    check_close,
    check_scaled,
    fp32_rtol,
    refinement_bound,
)
from .conftest import run_ours
from .test_end_to_end import check_losses
from .test_pseudo_labels import check_batch_pseudo_labels
from .test_refine import recorded_box_masks

N = 400  # 20x20 patches
RFM_LAYERS = 6  # refine.rfm_layers for VOC (spec §4.2)

# Their per-layer score d_l = sum over the n^2 = 160,000 entries of (A_f - A^l), one fp32
# torch.sum: torch reduces in a cascade (pairwise) order, whose rounding error is at most
# ceil(log2 n^2) u sum |A_f - A^l| (Higham, "Accuracy and Stability of Numerical Algorithms",
# §4.2), plus u per entry for the subtraction. Ours sums in fp64 (exact by comparison). A layer
# choice can only differ where |d_l - mean_l d_l| is below twice that.
# Transition matrix from the same affinity: Sinkhorn (3 x column + row sums over 400), the
# symmetrisation and one 400-term product (spec §4.4), relative to the matrix's magnitude.
RTOL_TRANS = fp32_rtol([N] * 6 + [N])
# RFM affinity R * A_f from the same maps: a mean of <= 6 maps and one product.
RTOL_AFFINITY = fp32_rtol([RFM_LAYERS, 1])
# Propagation T . vec(M) over 400 terms, then min-max (range ~1) and bilinear resize (4 terms).
RTOL_PROPAGATED = fp32_rtol([N, 4])
# Decoder values end to end: the CLIP, fusion and decoder chains (test_end_to_end).
RTOL_DECODER = fp32_rtol(CLIP_CHAIN + FUSION_CHAIN + DECODER_CHAIN)


def _img0_maps(data: Dict[str, np.ndarray]) -> torch.Tensor:
    attn = torch.as_tensor(data["clip_attn_last6_img0"])[:, None]  # (6, 1, L, L): blocks 6..11
    return patch_attention(list(attn[:-1]), attn[-1], RFM_LAYERS)  # (1, 6, n, n)


def _d_tolerance(maps: torch.Tensor, aff: torch.Tensor) -> float:
    """Rounding bound of the authors' fp32 sums d_l (see the module constants)."""
    terms = (aff.double()[:, None] - maps.double()).abs().sum(dim=(-2, -1))  # (1, m)
    return float((math.ceil(math.log2(N * N)) + 1) * U32 * terms.max())


def test_rfm_is_active(official_step_rfm):
    assert bool(official_step_rfm["require_seg_trans"])
    meta = str(official_step_rfm["meta_json"])
    assert '"iteration": 15001' in meta  # their counter 15001 > 15000 (spec §4.2)


def test_layer_scores_and_choice_img0(official_step_rfm):
    data = official_step_rfm
    maps = _img0_maps(data)
    aff = torch.as_tensor(data["attn_pred"][:1])
    ours, keep = rfm_affinity(maps, aff, "signed", 1e-5)
    # d_l in float64 from the recorded maps and A_f vs their fp32 sums
    d = (aff.double()[:, None] - maps.double()).sum(dim=(-2, -1))[0]
    tol = _d_tolerance(maps, aff)
    check_close("RFM layer scores d_l (img0)", d, data["rfm_diff"][0], tol)
    margin = float((d - d.mean()).abs().min())
    print(
        f"[parity] RFM layer choice img0: ours {keep[0].tolist()}, official "
        f"{data['rfm_keep'][0].tolist()}; closest score to the mean is {margin:.3g} away "
        f"(rounding bound {tol:.2g})"
    )
    assert margin > 2 * tol, "a layer score is within rounding of the mean: choice undecidable"
    assert keep[0].tolist() == data["rfm_keep"][0].tolist()
    check_scaled("RFM affinity R * A_f (img0)", ours[0], data["rfm_affinity_img0"], RTOL_AFFINITY)


def test_layer_rule_on_recorded_scores(official_step_rfm):
    # keep layer l iff d_l <= mean_l d_l, ties kept (spec §4.3): the rule on their own numbers
    d = torch.as_tensor(official_step_rfm["rfm_diff"]).double()
    mean = torch.as_tensor(official_step_rfm["rfm_diff_mean"]).double()
    assert torch.allclose(d.mean(dim=1), mean, rtol=1e-6)  # their mean of 6 fp32 values
    keep = d <= d.mean(dim=1, keepdim=True)
    assert keep.tolist() == official_step_rfm["rfm_keep"].tolist()
    # every image keeps at least one and drops at least one layer here (a non-trivial choice)
    assert bool(keep.any(1).all()) and bool((~keep).any(1).all())


def test_transition_matrix_from_recorded_affinity(official_step_rfm):
    aff = torch.as_tensor(official_step_rfm["rfm_affinity_img0"])[None]
    trans = transition_matrix(aff, 3, 2)[0]
    check_scaled(
        "RFM transition matrix (img0)", trans, official_step_rfm["trans_mat"][0], RTOL_TRANS
    )
    assert torch.allclose(trans, trans.T, rtol=0, atol=1e-9 + RTOL_TRANS * float(trans.max()))


def test_propagated_cams_and_par_from_recorded_inputs(engine, official_step_rfm):
    data = official_step_rfm
    cams = torch.as_tensor(data["cams_img0"])
    k = cams.shape[0]
    trans = torch.as_tensor(data["trans_mat"][:1])
    masks = recorded_box_masks(data)
    index = torch.zeros(k, dtype=torch.long)
    refined, lowres = propagate_cams(trans, cams, masks, index, (320, 320), engine.refine_norm_eps)
    check_scaled(
        "RFM propagated CAMs 20x20 (img0)",
        lowres,
        data["cams_refined_lowres_img0"],
        RTOL_PROPAGATED,
    )
    check_scaled(
        "RFM refined CAMs 320x320 (img0)", refined, data["cams_refined_img0"], RTOL_PROPAGATED
    )
    scores, keys = pack_scores(
        torch.as_tensor(data["cams_refined_img0"]),
        index,
        torch.as_tensor(data["label_ids_img0"]),
        1,
        engine.bg_power,
    )
    assert keys[0].tolist() == data["par_keys_img0"].tolist()
    check_close("RFM PAR input (img0)", scores[0], data["par_in_img0"], 4 * U32)
    out = engine.par(torch.as_tensor(data["input_images"][:1]), scores)[0]
    check_scaled("RFM PAR output (img0)", out, data["par_out_img0"], PAR_RTOL)


@pytest.fixture(scope="module")
def rfm_step(model_with_decoder, official_step_rfm) -> Dict[str, torch.Tensor]:
    """Our training forward of the recorded RFM batch (iteration 15001, recorded Dropout2d)."""
    data = official_step_rfm
    model = model_with_decoder(data)
    out = run_ours(
        model,
        torch.as_tensor(data["input_images"]),
        torch.as_tensor(data["cls_labels"]),
        mode="loss",
        iteration=15001,
        dropout_keep=torch.as_tensor(data["dropout_keep_step1"]),
    )
    out["loss"] = out["loss"].detach()
    out["model"] = model
    return out


@pytest.mark.slow
def test_end_to_end_rfm_forward(rfm_step, official_step_rfm):
    from .test_end_to_end import affinity_atol

    data = official_step_rfm
    assert bool(rfm_step["use_rfm"]), "iteration 15001 must use the RFM (rfm_start_iter 9145)"
    check_close(
        "A_f (RFM step, end to end)",
        rfm_step["aff"],
        data["attn_pred"],
        affinity_atol(data["fused_F"]),
    )
    check_scaled(
        "seg_logits (RFM step, end to end)",
        rfm_step["seg_logits"],
        data["seg_logits"],
        RTOL_DECODER,
    )
    assert rfm_step["class_index"].tolist() == data["pair_class_index"].tolist()
    # refined CAMs of img0: propagate the measured differences of its inputs through the
    # refinement: the CAMs (ours vs recorded) and our RFM transition matrix, rebuilt here from
    # our attention maps and our A_f (vs the recorded one).
    model = rfm_step["model"]
    feats, attns = model.backbone.forward_blocks(torch.as_tensor(data["input_images"][:1]))
    _, attn_last, _ = model.backbone.forward_last(feats[-1])
    maps = patch_attention(attns, attn_last, RFM_LAYERS)
    affinity, _ = rfm_affinity(maps, rfm_step["aff"][:1], "signed", 1e-5)
    d_trans = float(
        (transition_matrix(affinity, 3, 2)[0].double() - torch.as_tensor(data["trans_mat"][0]))
        .abs()
        .max()
    )
    d_cams = (rfm_step["cams"].double() - torch.as_tensor(data["cams_all"])).flatten(1)
    d_cams = d_cams.abs().amax(1).numpy()
    k = len(data["label_ids_img0"])
    print(
        f"[parity] RFM refined CAMs img0: measured input differences T {d_trans:.2e}, CAMs "
        f"{np.array2string(d_cams[:k], precision=2)}"
    )
    bound = refinement_bound(
        data["trans_mat"][0],
        data["cams_img0"],
        recorded_box_masks(data).numpy(),
        d_trans,
        d_cams[:k],
    )
    for c in range(k):
        check_close(
            f"RFM refined CAMs img0 class {c} (end to end)",
            rfm_step["cams_refined"][c],
            data["cams_refined_img0"][c],
            float(bound[c]) + fp32_rtol([N, 4]),
        )


@pytest.mark.slow
def test_end_to_end_rfm_pseudo_labels_and_losses(rfm_step, official_step_rfm, parity_cfg, engine):
    check_batch_pseudo_labels(rfm_step, official_step_rfm, engine, "RFM pseudo-labels")
    check_losses(rfm_step, official_step_rfm, parity_cfg.loss)
