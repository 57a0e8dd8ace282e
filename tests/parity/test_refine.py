"""Static refinement and PAR against the authors' code, stage by stage (spec §4.2-§4.6, §5.1;
docs/parity.md).

Each stage is fed the recorded inputs of that stage (img0): recorded CAMs -> box masks; recorded
attention of blocks 0..11 -> transition matrix; recorded CAMs + boxes + transition matrix ->
propagated and resized CAMs; recorded refined CAMs -> PAR input; recorded PAR input -> PAR output.
All constants come from ``configs/voc.py`` through ``PseudoLabelEngine.from_config`` (the
``engine`` fixture). Tolerances: fp32 rounding budgets of each stage (``_compare.py``). Run with
``pytest -s`` to see the measured differences.
"""

from typing import Dict

import cv2
import numpy as np
import torch

from weclip.refine.boxes import box_masks, threshold_cams
from weclip.refine.propagate import propagate_cams
from weclip.refine.pseudo_label import pack_scores
from weclip.refine.transition import patch_attention, static_affinity, transition_matrix

from ._compare import PAR_RTOL, U32, check_close, check_scaled, fp32_rtol, minmax_bound

N = 400
# Transition matrix from the same attention maps: mean of 8 maps, 3 x (column sums, row sums over
# 400), the symmetrisation, one 400-term product (spec §4.4); relative to the matrix's magnitude.
RTOL_TRANS = fp32_rtol([8] + [N] * 6 + [N])
# Propagation: one 400-term product per patch (relative to the propagated CAM's magnitude).
RTOL_PROPAGATED = fp32_rtol([N])
# The bilinear resize: a 4-term convex combination of values in [0, 1].
ATOL_RESIZE = fp32_rtol([4])


def recorded_box_masks(data: Dict[str, np.ndarray]) -> torch.Tensor:
    """The authors' boxes (x0, y0, x1, y1; rows of -1 are padding) filled half-open (spec §4.5)."""
    boxes = data["boxes_img0"]
    masks = np.zeros((boxes.shape[0],) + data["cams_img0"].shape[-2:], dtype=bool)
    for k, rows in enumerate(boxes):
        for x0, y0, x1, y1 in rows:
            if x0 >= 0:
                masks[k, y0:y1, x0:x1] = True
    return torch.from_numpy(masks)


def img0_index(data: Dict[str, np.ndarray]) -> torch.Tensor:
    """Batch index (all 0) of img0's K CAMs."""
    return torch.zeros(len(data["label_ids_img0"]), dtype=torch.long)


def test_box_masks_from_recorded_cams(engine, official_step_static):
    cams = torch.as_tensor(official_step_static["cams_img0"])
    assert (engine.box_threshold, engine.box_mode) == (0.4, "official")
    ours, binary = box_masks(cams, engine.box_threshold, engine.box_mode)
    ref = recorded_box_masks(official_step_static)
    for k in range(cams.shape[0]):
        # the authors take one box per cv2 contour (RETR_TREE: outer borders and holes); the fixture
        # pads to >= 10 rows, so the number of valid rows must equal the contour count
        contours, _ = cv2.findContours(
            binary[k].numpy().astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE
        )
        recorded = int((official_step_static["boxes_img0"][k, :, 0] >= 0).sum())
        assert recorded == len(contours), (
            f"class {k}: {recorded} recorded boxes vs {len(contours)} contours"
        )
        mismatch = int((ours[k] != ref[k]).sum())
        # distance of 255*M to the threshold t+1 (U > t  <=>  255*M >= t+1): how far from a flip
        u = (cams[k] * 255).to(torch.uint8)
        margin = float((cams[k] * 255 - (int(0.4 * int(u.max())) + 1)).abs().min()) / 255
        print(
            f"[parity] box mask class {k}: {recorded} boxes, {mismatch} of {ref[k].numel()} cells "
            f"differ; closest CAM value to the threshold is {margin:.2e} away"
        )
        # same CAM values and the same integer threshold: the masks must be identical
        assert mismatch == 0, f"box mask of class {k}: {mismatch} cells differ"
    assert torch.equal(binary, threshold_cams(cams, 0.4))


def test_transition_matrix_from_recorded_attention(engine, official_step_static):
    attn = torch.as_tensor(official_step_static["clip_attn_img0"])[:, None]  # (12, 1, L, L)
    # static mode: mean of the last 8 maps (blocks 4..11), Sinkhorn x3, symmetrise, square (§4.2-4.4)
    assert (engine.static_layers, engine.sinkhorn_iters, engine.power) == (8, 3, 2)
    maps = patch_attention(list(attn[:11]), attn[11], engine.static_layers)
    trans = transition_matrix(static_affinity(maps), engine.sinkhorn_iters, engine.power)
    check_scaled(
        "transition matrix (img0)", trans[0], official_step_static["trans_mat_img0"], RTOL_TRANS
    )


def test_propagated_cams_from_recorded_inputs(engine, official_step_static):
    data = official_step_static
    cams = torch.as_tensor(data["cams_img0"])
    trans = torch.as_tensor(data["trans_mat_img0"])[None]
    masks = recorded_box_masks(data)
    refined, lowres = propagate_cams(
        trans, cams, masks, img0_index(data), (320, 320), engine.refine_norm_eps
    )
    ref_low = data["cams_refined_lowres_img0"]
    d_low = check_scaled("propagated CAMs 20x20 (img0)", lowres, ref_low, RTOL_PROPAGATED)
    # min-max (spec §4.6) of maps that differ by d_low, then torch bilinear (align_corners=False)
    # vs the authors' cv2.resize: the same grid, a convex combination
    low_range = float((ref_low.max(axis=(1, 2)) - ref_low.min(axis=(1, 2))).min())
    atol = minmax_bound(RTOL_PROPAGATED * float(np.abs(ref_low).max()), low_range) + ATOL_RESIZE
    print(f"[parity]   (measured propagated difference {d_low:.2e})")
    check_close("refined CAMs 320x320 (img0)", refined, data["cams_refined_img0"], atol)


def test_par_input_from_recorded_refined_cams(engine, official_step_static):
    data = official_step_static
    cams = torch.as_tensor(data["cams_refined_img0"])
    classes = torch.as_tensor(data["label_ids_img0"])
    scores, keys = pack_scores(cams, img0_index(data), classes, 1, engine.bg_power)
    # [1 - max_k r_k; r_1; ...] and keys [0, id_1 + 1, ...] (spec §5 steps 1-2)
    assert keys[0].tolist() == data["par_keys_img0"].tolist() == [0] + (classes + 1).tolist()
    # the same values, one subtraction 1 - max (|.| <= 1): half an ulp of 1
    check_close("PAR input (img0)", scores[0], data["par_in_img0"], U32)


def test_par_output_from_recorded_input(engine, official_step_static):
    images = torch.as_tensor(official_step_static["input_images"][:1])
    par_in = torch.as_tensor(official_step_static["par_in_img0"])[None]
    out = engine.par(images, par_in)[0]
    ref = torch.as_tensor(official_step_static["par_out_img0"])
    atol = PAR_RTOL * float(par_in.abs().max())
    check_close("PAR output (img0)", out, ref, atol)
    # the argmax may only differ where the official top-2 margin is within 2 atol of a tie
    flips = out.argmax(0) != ref.argmax(0)
    top2 = ref.topk(2, dim=0).values
    margins = (top2[0] - top2[1])[flips]
    print(
        f"[parity] PAR output (img0): argmax differs on {int(flips.sum())} of {ref[0].numel()} "
        f"pixels (largest official margin there {float(margins.max()) if margins.numel() else 0:.1e})"
    )
    assert bool((margins <= 2 * atol).all()), "an argmax flip that is not a near-tie"
