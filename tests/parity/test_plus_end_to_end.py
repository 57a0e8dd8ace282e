"""One WeCLIP+ training iteration end to end against the authors' ``WeCLIP+/`` code: pixels -> losses,
gradients and the AdamW step (docs/official_code_plus.md "doc §n"; docs/parity.md, "WeCLIP+").

For each fixture (their loop at n_iter 50, before self-training, and at n_iter 18001, with
self-training), our whole WeCLIP+ (``configs/weclip_plus/voc_dinov2_s.py`` on the regenerated CLIP and
DINOv2 weights, the fixture's decoder loaded through the name mapping, the recorded Dropout2d masks
of both heads, iteration n_iter + 1) runs on the recorded pixels; nothing recorded is fed in
between. Values that are smooth functions of the pixels carry the fp32 budget of their chain;
values downstream of Grad-CAM are bounded by propagating the *measured* differences of their
inputs; discrete decisions (pseudo-labels, self-training, cross-branch targets) must agree except
where the measured differences make them near-ties. Then the gradients of every trained tensor and
our AdamW step against their ``PolyWarmupAdamW`` step. Run with ``pytest -s`` to see the figures.
"""

import math
from typing import Any, Dict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from weclip.engine.optim import build_optimizer, lr_factor
from weclip.losses import affinity_labels, affinity_loss, seg_loss
from weclip.models.plus.losses import dice_loss
from weclip.models.plus.official_names import plus_official_to_ours

from ._compare import (
    CLIP_CHAIN,
    U32,
    ce_loss_bound,
    check_close,
    fp32_rtol,
    max_abs,
    max_abs_diff,
    refinement_bound,
)
from .conftest import (
    official_normalize,
    plus_seeded_decoder_state,
    run_ours_plus,
    with_official_plus_decoder,
)
from .test_end_to_end import seg_loss_bound
from .test_gradcam import _check_cams
from .test_plus_stages import (
    CLIP_HEAD,
    DECODER,
    DINO_CHAIN,
    DINO_HEAD,
    GRID,
    SIZE,
    N,
    argmax_margin,
    classifier_terms,
    softmax_max_atol,
    tensor,
    upsample_atol,
)
from .test_pseudo_labels import MIN_AGREEMENT, explain_differences, par_input_differences
from .test_training_steps import _adamw_atol

pytestmark = pytest.mark.slow

EPS = 1e-8  # AdamW eps (doc §6)
# the inputs: our float32 normalisation vs their float64 one differs by <= 1 ulp (one rounding)
# F_clip: CLIP blocks 0..10 + the CLIP head; F_dino: DINOv2 + the DINO head + the 22 -> 20 resize
RTOL_F_CLIP = fp32_rtol([1] + CLIP_CHAIN + CLIP_HEAD)
RTOL_F_DINO = fp32_rtol([1] + DINO_CHAIN + DINO_HEAD + [4])
# seg_clip / seg_dino: + the shared decoder (relative to the classifier's absolute terms)
RTOL_SEG_CLIP = fp32_rtol([1] + CLIP_CHAIN + CLIP_HEAD + DECODER)
RTOL_SEG_DINO = fp32_rtol([1] + DINO_CHAIN + DINO_HEAD + [4] + DECODER)
# gradients: forward and backward through both branches, relative to each tensor's largest one
RTOL_GRADS = fp32_rtol(
    2 * ([1] + CLIP_CHAIN + CLIP_HEAD + DINO_CHAIN + DINO_HEAD + [4] + 2 * DECODER)
)


@pytest.fixture(scope="module")
def our_plus_step(official_plus, our_plus_base_model, plus_cfg) -> Dict[str, Any]:
    """Our iteration on the fixture's batch: forward (recorded dropout), backward, AdamW step, on a
    fresh copy of the model (the step changes its weights)."""
    data = official_plus
    state = plus_seeded_decoder_state(our_plus_base_model, data)
    model = with_official_plus_decoder(our_plus_base_model, state)
    n_iter = int(data["n_iter"])
    out = run_ours_plus(
        model,
        tensor(data, "images_uint8"),
        tensor(data, "cls_labels"),
        iteration=n_iter + 1,
        dropout_keep={"clip": tensor(data, "clip_keep"), "dino": tensor(data, "dino_keep")},
    )
    return {"out": out, "model": model, "state": state, "n_iter": n_iter}


def _decisions_agree(out: Dict[str, Any], data: Dict[str, np.ndarray]) -> bool:
    """Our pseudo-labels Y, training labels Y' and cross-branch targets equal theirs everywhere
    (the mean prediction's argmax enters the loss only through Y')."""
    targets = _our_targets(out)
    return (
        torch.equal(out["pseudo_labels"], tensor(data, "pseudo_label").long())
        and torch.equal(out["train_labels"], tensor(data, "train_label").long())
        and all(
            torch.equal(targets[b], tensor(data, f"pred_label_{b}").long())
            for b in ("clip", "dino")
        )
    )


def _up(logits: torch.Tensor) -> torch.Tensor:
    return F.interpolate(logits, SIZE, mode="bilinear", align_corners=False)


def _our_targets(out: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """argmax softmax of our upsampled logits (what the cross-branch loss targets and the
    self-training replacement use, doc §5.3, §5.5)."""
    return {
        "clip": F.softmax(_up(out["seg_clip"]), dim=1).argmax(dim=1),
        "dino": F.softmax(_up(out["seg_dino"]), dim=1).argmax(dim=1),
        "seg": F.softmax(_up(out["seg_logits"]), dim=1).argmax(dim=1),
    }


def _logit_differences(out: Dict[str, Any], data: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Measured max |ours - theirs| of each branch's logits and of the mean (at the grid); a
    bilinear upsampling cannot increase them (convex combination), its rounding is added."""
    mean_ref = 0.5 * tensor(data, "seg_clip") + 0.5 * tensor(data, "seg_dino")
    return {
        "clip": max_abs_diff(out["seg_clip"], data["seg_clip"]) + upsample_atol(out["seg_clip"]),
        "dino": max_abs_diff(out["seg_dino"], data["seg_dino"]) + upsample_atol(out["seg_dino"]),
        "seg": max_abs_diff(out["seg_logits"], mean_ref) + upsample_atol(mean_ref),
    }


# ------------------------------------------------------------------------------------------------
def test_forward_outputs(our_plus_step, official_plus):
    data = official_plus
    out, model = our_plus_step["out"], our_plus_step["model"]
    assert bool(out["self_training"]) == bool(data["self_training"])
    for branch, fused, rtol in (
        ("clip", "clip_fused", RTOL_SEG_CLIP),
        ("dino", "dino_fused_grid", RTOL_SEG_DINO),
    ):
        atol = rtol * classifier_terms(model.decoder, tensor(data, fused))
        check_close(f"seg_{branch} (end to end)", out[f"seg_{branch}"], data[f"seg_{branch}"], atol)
    # A = sigmoid(F_p . F_q): F moves by <= rtol max|F| per entry (each half its own chain), so
    # F_p . F_q moves by <= 2 max||F|| ||dF|| + the 512-term rounding; the sigmoid's slope <= 1/4
    f_clip, f_dino = tensor(data, "clip_fused"), tensor(data, "dino_fused_grid")
    fused = torch.cat([f_clip, f_dino], dim=1)
    norm = float(fused.flatten(2).norm(dim=1).max())
    d_norm = 16.0 * math.hypot(RTOL_F_CLIP * max_abs(f_clip), RTOL_F_DINO * max_abs(f_dino))
    atol = 0.25 * (2 * norm * d_norm + fp32_rtol([512]) * norm**2)
    check_close("affinity A (end to end)", out["aff"], data["attn_pred"], atol)


def test_cams_img0_end_to_end(our_plus_step, official_plus):
    # pixels -> our CLIP blocks -> Grad-CAM fed with block 9 (VOC, doc §1.2), within what the
    # measured activation/gradient differences explain (test_gradcam)
    data = official_plus
    out, model = our_plus_step["out"], our_plus_step["model"]
    k = len(data["label_ids_img0"])
    assert out["batch_index"].tolist() == data["pair_batch_index"].tolist()
    assert out["class_index"].tolist() == data["pair_class_index"].tolist()
    with torch.no_grad():
        feats, _ = model.backbone.forward_blocks(model.preprocess(tensor(data, "images_uint8")[:1]))
    labels = tensor(data, "cls_labels")[:1]
    _check_cams(
        "WeCLIP+ end-to-end CAMs",
        model,
        feats[-2],
        labels,
        model.text_fg,
        model.text_bg,
        out["cams"][:k],
        data,
    )


def test_refined_cams_end_to_end(our_plus_step, official_plus):
    # r = T . vec(M * P) in all-ones boxes: propagate the measured differences of our transition
    # matrices and gated CAMs (both captured from our forward) through the refinement
    data = official_plus
    out = our_plus_step["out"]
    trans_ref = data["trans_mat"]
    gate = tensor(data, "gate_probs")
    index, classes = tensor(data, "pair_batch_index"), tensor(data, "pair_class_index")
    gated_ref = tensor(data, "cams_all") * gate[index, classes + 1]
    d_gated = (out["gated_cams"].double() - gated_ref.double()).flatten(1).abs().amax(1)
    for b in range(trans_ref.shape[0]):
        pairs = torch.nonzero(index == b).flatten()
        d_trans = max_abs_diff(out["trans"][b], trans_ref[b])
        bound = refinement_bound(
            trans_ref[b],
            gated_ref[pairs].numpy(),
            np.ones((len(pairs), *GRID), dtype=bool),
            d_trans,
            d_gated[pairs].numpy(),
        )
        print(
            f"[parity] WeCLIP+ image {b}: measured differences T {d_trans:.2e}, gated CAMs "
            f"{np.array2string(d_gated[pairs].numpy(), precision=2)}"
        )
        for j, p in enumerate(pairs.tolist()):
            check_close(
                f"WeCLIP+ refined CAM pair {p} (end to end)",
                out["cams_refined"][p],
                data["cams_refined_all"][p],
                float(bound[j]) + fp32_rtol([N, 4]),
            )


def test_pseudo_labels_end_to_end(our_plus_step, official_plus):
    # >= 99.9 % agreement, every differing pixel a near-tie of our PAR output given the measured
    # PAR-input differences (no box can flip: the RFM+ boxes are all ones on VOC)
    data = official_plus
    out, engine = our_plus_step["out"], our_plus_step["model"].pipeline
    ref = tensor(data, "pseudo_label").long()
    agree = float((out["pseudo_labels"] == ref).double().mean())
    print(f"[parity] WeCLIP+ pseudo-labels (end to end): agreement {agree:.6%}")
    assert agree >= MIN_AGREEMENT
    d_inputs = par_input_differences(out, data, ref.shape[0])
    images = official_normalize(data["images_uint8"])
    for line in explain_differences(out, images, ref, engine.par, engine.bg_power, d_inputs):
        print(f"[parity]   {line}")


def test_self_training_and_targets_end_to_end(our_plus_step, official_plus):
    data = official_plus
    out = our_plus_step["out"]
    d = _logit_differences(out, data)
    targets = _our_targets(out)
    # cross-branch targets and the mean prediction's argmax: only at near-ties (a probability
    # moves by <= softmax_max_atol of the measured logit difference, a margin by twice that)
    for branch in ("clip", "dino", "seg"):
        logits = out["seg_logits"] if branch == "seg" else out[f"seg_{branch}"]
        probs = F.softmax(_up(logits), dim=1)
        differ = targets[branch] != tensor(data, f"pred_label_{branch}").long()
        tol = 2 * softmax_max_atol(d[branch])
        print(f"[parity] WeCLIP+ argmax of seg_{branch} (end to end): {int(differ.sum())} differ")
        assert not bool((differ & (argmax_margin(probs) > tol)).any())
    conf = F.softmax(_up(out["seg_logits"]), dim=1).amax(dim=1)
    tol_conf = softmax_max_atol(d["seg"])
    check_close("confidence (end to end)", conf, data["pred_max"], tol_conf)
    ours, ref = out["train_labels"], tensor(data, "train_label").long()
    if not bool(data["self_training"]):
        assert torch.equal(ours, out["pseudo_labels"])  # Y' = Y before the switch
    differ = ours != ref
    # a differing Y' pixel: within rounding of 0.75, an argmax near-tie, or a pixel replaced on
    # neither side whose Y differs (explained by test_pseudo_labels_end_to_end)
    near = (conf - 0.75).abs() <= tol_conf
    tie = argmax_margin(F.softmax(_up(out["seg_logits"]), dim=1)) <= 2 * tol_conf
    inherited = (out["pseudo_labels"] != tensor(data, "pseudo_label").long()) & (conf <= 0.75)
    agree = 1.0 - float(differ.double().mean())
    print(
        f"[parity] WeCLIP+ training labels Y' (end to end): agreement {agree:.6%}, "
        f"{int(differ.sum())} differ"
    )
    assert agree >= MIN_AGREEMENT
    assert not bool((differ & ~near & ~tie & ~inherited).any())


def _dice_label_bound(out: Dict[str, Any], data: Dict[str, np.ndarray], changed: int) -> float:
    """How far the Dice can move when ``changed`` label pixels change: a pixel's new label moves
    inter and union of 2 classes by <= 1 each, so each ratio 2 I_c / U_c by <= 3 / (U_c - changed)
    per pixel; the mean over 21 classes: <= 6 changed / (21 (min_c U_c - changed))."""
    if changed == 0:
        return 0.0
    probs = F.softmax(_up(out["seg_logits"]), dim=1)
    onehot = F.one_hot(tensor(data, "train_label").long(), 21).permute(0, 3, 1, 2).float()
    union = float((probs + onehot).sum(dim=(0, 2, 3)).double().min())
    return 6.0 * changed / (21.0 * max(union - changed, 1.0))


def test_losses_end_to_end(our_plus_step, official_plus):
    data = official_plus
    out = our_plus_step["out"]
    d = _logit_differences(out, data)
    pixels = tensor(data, "pseudo_label").numel()
    targets = _our_targets(out)
    bounds: Dict[str, float] = {}
    # L_seg(seg, Y'): CE moves by <= 2 d (ce_loss_bound); changed labels by seg_loss_bound
    y2 = tensor(data, "train_label").long()
    changed = int((out["train_labels"] != y2).sum())
    bounds["seg_loss"] = ce_loss_bound(d["seg"], float(data["seg_loss"]), pixels) + seg_loss_bound(
        out["seg_logits"], y2, changed
    )
    for branch, other in (("clip", "dino"), ("dino", "clip")):
        ref_target = tensor(data, f"pred_label_{other}").long()
        moved = int((targets[other] != ref_target).sum())
        bounds[f"cross_{branch}_loss"] = ce_loss_bound(
            d[branch], float(data[f"cross_{branch}_loss"]), pixels
        ) + seg_loss_bound(out[f"seg_{branch}"], ref_target, moved)
    # Dice: probabilities move by <= 2 d + 4u relative (the stage test's budget), labels as above
    rel = 2 * d["seg"] + 4 * U32 + (math.ceil(math.log2(pixels)) + 1) * U32
    bounds["dice_loss"] = 2 * rel + 5 * U32 + _dice_label_bound(out, data, changed)
    # L_aff: our affinity labels from our Y; the nearest 320 -> 20 resize samples every 16th
    # pixel, so a differing pseudo-label pixel off that grid cannot change them
    y = tensor(data, "pseudo_label").long()
    on_grid = int((out["pseudo_labels"] != y)[:, ::16, ::16].sum())
    assert on_grid == 0, f"{on_grid} differing pseudo-label pixels lie on the affinity grid"
    labels = affinity_labels(out["pseudo_labels"], GRID, 8)
    assert torch.equal(labels, tensor(data, "aff_label").long())
    _, pos, neg = affinity_loss(out["aff"], labels)
    assert (int(pos), int(neg)) == (int(data["aff_pos_count"]), int(data["aff_neg_count"]))
    d_aff = max_abs_diff(out["aff"], data["attn_pred"])
    bounds["aff_loss"] = d_aff + fp32_rtol([out["aff"].numel()]) * float(data["aff_loss"])
    for key, bound in bounds.items():
        check_close(f"{key} (end to end)", out[key], data[key], bound)
    total = (
        bounds["seg_loss"]
        + 0.1 * bounds["aff_loss"]
        + 0.1 * (bounds["cross_clip_loss"] + bounds["cross_dino_loss"])
        + bounds["dice_loss"]
        + 5 * U32 * float(abs(data["loss"]))
    )
    check_close("loss (end to end)", out["loss"], data["loss"], total)


# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def our_gradients(our_plus_step, official_plus) -> Dict[str, torch.Tensor]:
    """Our gradients of every trained tensor (their names): of our own loss when every discrete
    decision agrees with theirs; otherwise of the same loss rebuilt on our logits with *their*
    pseudo-labels, Y' and targets (the gradient is not continuous across a changed label)."""
    data = official_plus
    out, model = our_plus_step["out"], our_plus_step["model"]
    model.decoder.zero_grad()
    if _decisions_agree(out, data):
        out["loss"].backward()
        print("[parity] WeCLIP+ gradients of our own loss (every decision agrees)")
    else:
        g = out["graph"]
        seg = _up(0.5 * g["seg_clip"] + 0.5 * g["seg_dino"])
        y, y2 = tensor(data, "pseudo_label").long(), tensor(data, "train_label").long()
        loss = (
            seg_loss(seg, y2)
            + 0.1 * affinity_loss(g["aff"], affinity_labels(y, GRID, 8))[0]
            + 0.1 * seg_loss(_up(g["seg_clip"]), tensor(data, "pred_label_dino").long())
            + 0.1 * seg_loss(_up(g["seg_dino"]), tensor(data, "pred_label_clip").long())
            + dice_loss(seg, y2)
        )
        loss.backward()
        print("[parity] WeCLIP+ gradients of the loss rebuilt with their discrete decisions")
    return {
        n: p.grad.detach().clone()
        for n, p in (
            (n, dict(model.decoder.named_parameters())[plus_official_to_ours(n)])
            for n in data["param_names"].tolist()
        )
    }


def test_gradients_end_to_end(our_gradients, official_plus):
    data = official_plus
    names = data["param_names"].tolist()
    worst = 0.0
    for i, name in enumerate(names):
        g = our_gradients[name].double()
        sum_, sumsq, sumabs = data["grad_stats"][i]
        gmax = float(g.abs().max())
        # n gradients each within RTOL_GRADS max|g|: the sums move by <= n RTOL_GRADS max|g|
        tol = g.numel() * RTOL_GRADS * gmax + 1e-30
        assert abs(float(g.sum()) - sum_) <= tol, f"{name}: sum {float(g.sum())} vs {sum_}"
        assert abs(float(g.abs().sum()) - sumabs) <= tol, f"{name}: sum|g|"
        rms = math.sqrt(sumsq / g.numel())
        assert abs(float(g.pow(2).mean().sqrt()) - rms) <= RTOL_GRADS * gmax + 1e-30, name
        worst = max(worst, abs(float(g.abs().sum()) - sumabs) / max(sumabs, 1e-30))
    print(
        f"[parity] WeCLIP+ gradients, all {len(names)} tensors: largest relative difference of "
        f"sum|g| {worst:.2e}"
    )
    for name in data["full_tensors"].tolist():
        ref = tensor(data, f"grad.{name}")
        check_close(f"WeCLIP+ gradient {name}", our_gradients[name], ref, RTOL_GRADS * max_abs(ref))


def _our_adamw(params, plus_cfg, n_iter: int) -> torch.optim.AdamW:
    """Our optimiser (``build_optimizer``) at the lr our scheduler gives step ``n_iter``."""
    optimizer = build_optimizer(torch.nn.ParameterList(params), plus_cfg.optim)
    sched = plus_cfg.sched
    factor = lr_factor(
        n_iter, int(plus_cfg.train.max_iters), sched.warmup_iters, sched.warmup_ratio, sched.power
    )
    for group in optimizer.param_groups:
        group["lr"] = float(plus_cfg.optim.lr) * float(plus_cfg.optim.head_lr_mult) * factor
    return optimizer


def test_adamw_from_recorded_gradients(official_plus, our_plus_base_model, plus_cfg):
    # their PolyWarmupAdamW's first step on their gradients vs ours: ~6 roundings (_adamw_atol)
    data = official_plus
    state = plus_seeded_decoder_state(our_plus_base_model, data)
    lr = float(data["lr"][3])
    for name in data["full_tensors"].tolist():
        w = torch.nn.Parameter(torch.as_tensor(state[name]).clone())
        optimizer = _our_adamw([w], plus_cfg, int(data["n_iter"]))
        assert math.isclose(optimizer.param_groups[0]["lr"], lr, rel_tol=4 * 2.0**-52)
        w.grad = tensor(data, f"grad.{name}").clone()
        optimizer.step()
        ref = tensor(data, f"weight.{name}")
        diff = (w.detach().double() - ref.double()).abs()
        print(f"[parity] WeCLIP+ AdamW from recorded gradients, {name}: {float(diff.max()):.2e}")
        assert bool((diff <= _adamw_atol(ref, lr)).all()), name


def test_adamw_step_of_every_weight(our_plus_step, our_gradients, official_plus, plus_cfg):
    # Adam's first step moves a weight by lr g / (|g| + eps): with our gradient within
    # d = RTOL_GRADS max|g| of theirs, the update moves by <= lr eps d / (max(|g| - d, 0) + eps)^2
    # (never more than 2 lr), beyond the ulp budget of the update itself
    data = official_plus
    model, n_iter = our_plus_step["model"], our_plus_step["n_iter"]
    params = dict(model.decoder.named_parameters())
    names = data["param_names"].tolist()
    for name in names:
        params[plus_official_to_ours(name)].grad = our_gradients[name].clone()
    optimizer = _our_adamw(list(model.decoder.parameters()), plus_cfg, n_iter)
    lr = float(optimizer.param_groups[0]["lr"])
    optimizer.step()
    beyond, total, worst = 0, 0, 0.0
    for name in names:
        ours = params[plus_official_to_ours(name)].detach().double()
        ref = tensor(data, f"weight.{name}").double()
        g = our_gradients[name].double()
        d = RTOL_GRADS * float(g.abs().max())
        sensitivity = lr * EPS * d / ((g.abs() - d).clamp(min=0) + EPS) ** 2
        atol = _adamw_atol(ref, lr) + sensitivity.clamp(max=2 * lr)
        diff = (ours - ref).abs()
        assert bool((diff <= atol).all()), (
            f"{name}: AdamW update differs by {float(diff.max()):.2e}"
        )
        beyond += int((diff > _adamw_atol(ref, lr)).sum())
        total += diff.numel()
        worst = max(worst, float(diff.max()))
    print(
        f"[parity] WeCLIP+ AdamW step, every weight: {beyond} of {total} beyond the ulp budget, "
        f"largest difference {worst:.2e}"
    )
