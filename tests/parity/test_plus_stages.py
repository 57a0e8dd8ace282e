"""WeCLIP+ against the authors' ``WeCLIP+/`` code, stage by stage (docs/official_code_plus.md, "doc §n";
docs/parity.md, "WeCLIP+").

Each stage of our WeCLIP+ (``configs/weclip_plus/voc_dinov2_s.py``) is fed the *recorded* input of that
stage, from both fixtures (``official_plus_step.npz``: their loop at n_iter 50, before self-training;
``official_plus_step_self_training.npz``: n_iter 18001, self-training on): DINOv2 tokens from the
pixels, both fusion heads, Dropout2d, the DINO resize, the shared decoder, the concatenated-feature
affinity, the gate, Grad-CAM on CLIP block N-3, RFM+ (layer choice, affinity, transition matrix,
gated propagation inside all-ones boxes), PAR, self-training, cross-branch targets and every loss
term. Tolerances are fp32 rounding budgets of the stage (``_compare.py``), each stated where it is
used; discrete decisions (argmaxes, the 0.75 threshold) must agree except at near-ties, each
explained. Run with ``pytest -s`` to see the measured differences.
"""

import math
from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from weclip.cam.gradcam import gradcam
from weclip.engine.optim import lr_factor
from weclip.losses import affinity_labels, affinity_loss, seg_loss
from weclip.models.dino_backbone import resize_to_grid
from weclip.models.plus.decoder import WeCLIPPlusDecoder
from weclip.models.plus.losses import dice_loss
from weclip.models.plus.official_names import plus_official_to_ours
from weclip.models.plus.rfm_plus import class_probabilities, rfm_plus_refine, rfm_plus_transition
from weclip.models.plus.self_training import self_training_labels
from weclip.refine.boxes import box_masks
from weclip.refine.pseudo_label import pack_scores, scores_to_labels
from weclip.refine.transition import rfm_affinity, transition_matrix

from ._compare import (
    PAR_RTOL,
    U32,
    ce_loss_bound,
    check_close,
    check_scaled,
    fp32_rtol,
    max_abs,
    minmax_bound,
    ulp32,
    vit_block_reductions,
)
from .conftest import official_normalize
from .test_clip_text import ATOL_TEXT, RTOL_BLOCKS
from .test_gradcam import RTOL_COSINE, _check_cams
from .test_rfm import _d_tolerance, _img0_maps

GRID = (20, 20)  # CLIP ViT-B/16 on 320x320
DINO_GRID = (22, 22)  # DINOv2 ViT-S/14 on the 308x308 resize
N = GRID[0] * GRID[1]
SIZE = (320, 320)
RFM_LAYERS = 6  # RFM+ on the last 6 maps (VOC, B/16; doc §4.1)

# DINOv2 tokens from the pixels: the bilinear resize 320 -> 308 (4 terms), the 14x14x3 patch
# embedding, 12 blocks of width 384 over 1 + 22*22 tokens (6 heads of 64), the final LayerNorm.
DINO_CHAIN = [4, 3 * 14 * 14] + vit_block_reductions(384, 1 + 22 * 22) * 12 + [384, 384]
# Fusion heads: Linear(Din -> 256), Linear(256 -> 256), the 256-channel 1x1 fuse conv (doc §3.1).
CLIP_HEAD = [768, 256, 256]
DINO_HEAD = [384, 256, 256]
# The shared decoder: 3 blocks of width 256 (8 heads of 32) over 400 tokens, the 1x1 classifier.
DECODER = vit_block_reductions(256, N, head_dim=32) * 3 + [256]


def tensor(data: Dict[str, np.ndarray], key: str) -> torch.Tensor:
    return torch.as_tensor(data[key])


def images_of(data: Dict[str, np.ndarray]) -> torch.Tensor:
    """The fixture's inputs normalised as their ``normalize_img`` does (bit for bit)."""
    return official_normalize(data["images_uint8"])


def classifier_terms(decoder: WeCLIPPlusDecoder, fused: torch.Tensor) -> float:
    """max over pixels and classes of Σ_k |W_ck| |x_k| + |b_c|, x the classifier's input.

    The logits' rounding is relative to this sum of absolute terms, not to |logit|: the fixtures'
    classifier bias is centred on the features (their logits are differences of large terms).
    """
    with torch.no_grad():
        b, e, h, w = fused.shape
        x = fused.flatten(2).transpose(1, 2)
        for block in decoder.blocks:
            x = block(x)
        weight = decoder.classifier.weight[:, :, 0, 0].abs()
        return float((x.abs() @ weight.t() + decoder.classifier.bias.abs()).max())


def affinity_stage_atol(fused: torch.Tensor) -> float:
    """A = sigmoid(F_p . F_q) from identical F (B, 512, h, w): the 512-term product's error is
    relative to |F_p| |F_q| (Cauchy-Schwarz), the sigmoid's slope is <= 1/4."""
    norms = fused.flatten(2).norm(dim=1)
    return 0.25 * fp32_rtol([512]) * float(norms.max()) ** 2


def upsample_atol(logits: torch.Tensor) -> float:
    """Upsampling (B, C, h, w) logits to 320x320 in fp32: a 4-term convex combination, relative
    to the logits' magnitude (the same kernel on both sides; this allows another summation)."""
    return fp32_rtol([4, 1]) * max_abs(logits)


def softmax_max_atol(d_logits: float) -> float:
    """max_c softmax(z) moves by <= 2 p (1 - p) d <= d / 2 when every logit moves by <= d, plus
    the softmax's own rounding (21 exponentials and their sum, relative to p <= 1)."""
    return 0.5 * d_logits + 2 * fp32_rtol([21, 21])


def argmax_margin(probs: torch.Tensor) -> torch.Tensor:
    """(B, H, W) gap between the two largest class probabilities."""
    top = probs.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


# ------------------------------------------------------------------------------------------------
# settings and names
# ------------------------------------------------------------------------------------------------
def test_fixture_settings_and_parameter_names(official_plus, plus_model, plus_cfg):
    data = official_plus
    model = plus_model(data)
    n_iter = int(data["n_iter"])
    # their loop: `if n_iter > 18000` (0-based); ours: 1-indexed iteration >= 18002 (doc §5.5)
    assert bool(data["self_training"]) == (n_iter > 18000)
    assert model.self_training_active(n_iter + 1) == bool(data["self_training"])
    # DINOv2 saw the 320 crop resized to 308 = 22 x 14 (doc §2.2)
    assert tuple(data["dino_input_size"].tolist()) == (308, 308)
    # every trained tensor of theirs maps onto ours, and nothing else: 2,933,269 values (doc §3.2)
    names = data["param_names"].tolist()
    ours = dict(model.decoder.named_parameters())
    assert sorted(plus_official_to_ours(n) for n in names) == sorted(ours)
    assert sum(data[f"weight.{n}"].size for n in names) == 2_933_269
    # their group lr 2e-5 x 10 at global step n_iter (warm-up 50, poly 1.0; doc §6)
    optim, sched = plus_cfg.optim, plus_cfg.sched
    factor = lr_factor(
        n_iter, int(plus_cfg.train.max_iters), sched.warmup_iters, sched.warmup_ratio, sched.power
    )
    expected = float(optim.lr) * float(optim.head_lr_mult) * factor
    lr = float(data["lr"][3])
    print(f"[parity] WeCLIP+ lr at n_iter {n_iter}: official {lr:.10g}, ours {expected:.10g}")
    assert math.isclose(lr, expected, rel_tol=4 * 2.0**-52)  # the same float64 arithmetic


def test_prompt_embeddings(official_plus, plus_model):
    # WeCLIP+'s prompts are WeCLIP's (doc §1.2): the text tower's fp32 budget (test_clip_text)
    model = plus_model(official_plus)
    check_close("WeCLIP+ text_fg", model.text_fg, official_plus["text_fg"], ATOL_TEXT)
    check_close("WeCLIP+ text_bg", model.text_bg, official_plus["text_bg"], ATOL_TEXT)


# ------------------------------------------------------------------------------------------------
# backbones
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def test_dino_tokens_from_recorded_images(official_plus, plus_model):
    # whole normalised image -> bilinear 308 -> DINOv2 -> x_norm_patchtokens (doc §2.2-2.4)
    model = plus_model(official_plus)
    ours = model.dino(images_of(official_plus))  # (B, 384, 22, 22)
    ref = tensor(official_plus, "dino_tokens").reshape(-1, *DINO_GRID, 384).permute(0, 3, 1, 2)
    check_scaled("DINOv2 patch tokens", ours, ref, fp32_rtol(DINO_CHAIN))


@torch.no_grad()
def test_clip_block_outputs_from_recorded_images(official_plus, plus_model):
    # the decoder reads block N-2 (10), Grad-CAM block N-3 (9) on VOC (doc §1.2)
    model = plus_model(official_plus)
    feats, _ = model.backbone.forward_blocks(images_of(official_plus))
    check_scaled("CLIP block 10 output", feats[-1], official_plus["clip_block10"], RTOL_BLOCKS)
    check_scaled(
        "CLIP block 9 output (img0)", feats[-2][0], official_plus["clip_block9_img0"], RTOL_BLOCKS
    )


# ------------------------------------------------------------------------------------------------
# decoder
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def test_fusion_heads_from_recorded_inputs(official_plus, plus_model):
    data = official_plus
    decoder = plus_model(data).decoder.eval()  # eval: Dropout2d is the identity -> pre-dropout
    clip_tokens = tensor(data, "clip_block10")[:, 1:]  # CLS dropped (doc §3.1)
    ours = decoder.clip_fusion([clip_tokens], GRID)
    check_scaled("CLIP head before Dropout2d", ours, data["clip_pre_dropout"], fp32_rtol(CLIP_HEAD))
    # the DINO head runs at the DINO grid (doc §3.1), on the recorded tokens
    ours = decoder.dino_fusion([tensor(data, "dino_tokens")], DINO_GRID)
    check_scaled("DINO head before Dropout2d", ours, data["dino_pre_dropout"], fp32_rtol(DINO_HEAD))


def test_dropout_and_dino_resize(official_plus):
    data = official_plus
    for head in ("clip", "dino"):
        # Dropout2d: x * keep / (1 - 0.1) per (image, channel). Ours rounds once (<= 0.5 ulp);
        # theirs multiplies by fl(1 / 0.9) (relative error <= u, i.e. < 1 ulp) and rounds the
        # product (<= 0.5 ulp): <= 2 ulp of the largest value
        pre = tensor(data, f"{head}_pre_dropout")
        keep = tensor(data, f"{head}_keep").float()
        ref = tensor(data, f"{head}_fused")
        fused = pre * keep[:, :, None, None] / 0.9
        check_close(f"{head} Dropout2d", fused, ref, 2 * float(ulp32(max_abs(ref))))
        assert 0 < float(keep.mean()) < 1  # channels were dropped, and kept
    # F_dino: the DINO head's output resized 22 -> 20 after the head (bilinear, doc §3.1)
    ours = resize_to_grid(tensor(data, "dino_fused"), GRID)
    ref = data["dino_fused_grid"]
    check_scaled("F_dino resized to the CLIP grid", ours, ref, fp32_rtol([4, 1]))


@torch.no_grad()
def test_shared_decoder_and_affinity_from_recorded_features(official_plus, plus_model):
    data = official_plus
    decoder = plus_model(data).decoder
    for branch, key in (("clip", "clip_fused"), ("dino", "dino_fused_grid")):
        fused = tensor(data, key)
        # the decoder's chain, relative to the classifier's absolute terms (classifier_terms)
        atol = fp32_rtol(DECODER) * classifier_terms(decoder, fused)
        check_close(
            f"seg_{branch} from recorded F_{branch}",
            decoder.decode(fused),
            data[f"seg_{branch}"],
            atol,
        )
    # A = sigmoid(F^T F), F = concat(F_clip, F_dino) (doc §3.3)
    fused = torch.cat([tensor(data, "clip_fused"), tensor(data, "dino_fused_grid")], dim=1)
    aff = WeCLIPPlusDecoder.affinity(fused)
    check_close(
        "affinity of concat(F_clip, F_dino)", aff, data["attn_pred"], affinity_stage_atol(fused)
    )


def test_gate_probabilities(official_plus):
    # P = softmax(0.5 seg_dino + 0.5 seg_clip), detached, at the decoder grid (doc §4.2 step 3):
    # the mean is exact but for one rounding of the sum (u |z|); softmax_max_atol's argument
    # bounds every probability's move (|dp| <= 2 p (1 - p) d <= d / 2 for each class too)
    data = official_plus
    mean = 0.5 * tensor(data, "seg_clip") + 0.5 * tensor(data, "seg_dino")
    ours = class_probabilities(mean)
    atol = softmax_max_atol(2 * U32 * max_abs(mean))
    check_close("RFM+ gate probabilities", ours, data["gate_probs"], atol)


# ------------------------------------------------------------------------------------------------
# Grad-CAM on block N-3 (VOC)
# ------------------------------------------------------------------------------------------------
def _gradcam_inputs(data: Dict[str, np.ndarray]) -> Tuple[torch.Tensor, ...]:
    z9 = tensor(data, "clip_block9_img0")[None]  # (1, 401, 768): VOC's Grad-CAM input (doc §1.2)
    return z9, tensor(data, "cls_labels")[:1], tensor(data, "text_fg"), tensor(data, "text_bg")


def test_gradcam_probabilities_from_recorded_block9(official_plus, plus_model):
    data = official_plus
    model = plus_model(data)
    z9, labels, text_fg, text_bg = _gradcam_inputs(data)
    # the classes come from the XML annotation in order of appearance: ascending here (doc §1.3)
    present = torch.nonzero(labels[0]).flatten()
    assert present.tolist() == data["label_ids_img0"].tolist()
    result = gradcam(
        model.backbone, z9, labels, text_fg, text_bg, GRID, logit_scale=model.logit_scale
    )
    columns = torch.cat([present, 20 + torch.arange(text_bg.shape[0])])
    ref = data["gradcam_probs_img0"]
    # logits = 100 cos: |d logit| <= 100 RTOL_COSINE; a softmax moves by <= 2 p_max |d logit|
    atol = 2 * float(ref.max()) * 100 * RTOL_COSINE
    check_close(
        "Grad-CAM probabilities (block 9 input)",
        result.probs[0, columns].expand(ref.shape[0], -1),
        ref,
        atol,
    )


def test_gradcam_cams_from_recorded_block9(official_plus, plus_model):
    # the CAMs within what the measured activation/gradient differences can cause (test_gradcam)
    data = official_plus
    model = plus_model(data)
    z9, labels, text_fg, text_bg = _gradcam_inputs(data)
    cams = gradcam(
        model.backbone, z9, labels, text_fg, text_bg, GRID, logit_scale=model.logit_scale
    )
    _check_cams(
        "WeCLIP+ CAMs from recorded block 9", model, z9, labels, text_fg, text_bg, cams.cams, data
    )


# ------------------------------------------------------------------------------------------------
# RFM+
# ------------------------------------------------------------------------------------------------
def test_rfm_plus_layer_choice_and_affinity_img0(official_plus):
    data = official_plus
    maps = _img0_maps(data)  # the last 6 maps: blocks 6..10 and the Grad-CAM forward's block 11
    aff = tensor(data, "attn_pred")[:1]
    ours, keep = rfm_affinity(maps, aff, "signed", 1e-5)
    d = (aff.double()[:, None] - maps.double()).sum(dim=(-2, -1))[0]
    tol = _d_tolerance(maps, aff)  # the fp32 cascade sum of their 160,000-term scores
    check_close("RFM+ layer scores d_l (img0)", d, data["rfm_diff"][0], tol)
    margin = float((d - d.mean()).abs().min())
    print(
        f"[parity] RFM+ layers img0: ours {keep[0].tolist()}, official "
        f"{data['rfm_keep'][0].tolist()}; margin {margin:.3g} (rounding bound {tol:.2g})"
    )
    assert margin > 2 * tol, "a layer score is within rounding of the mean: choice undecidable"
    assert keep[0].tolist() == data["rfm_keep"][0].tolist()
    # R * A: a mean of <= 6 maps and one product (doc §4.1)
    check_scaled(
        "RFM+ affinity R * A (img0)", ours[0], data["rfm_affinity_img0"], fp32_rtol([RFM_LAYERS, 1])
    )


def test_rfm_plus_layer_rule_on_recorded_scores(official_plus):
    # keep layer l iff d_l <= mean_l d_l (their signed filter), on their own numbers, every image
    d = tensor(official_plus, "rfm_diff").double()
    assert torch.allclose(d.mean(dim=1), tensor(official_plus, "rfm_diff_mean").double(), rtol=1e-6)
    keep = d <= d.mean(dim=1, keepdim=True)
    assert keep.tolist() == official_plus["rfm_keep"].tolist()
    assert bool(keep.any(1).all()) and bool((~keep).any(1).all())  # a non-trivial choice


def test_rfm_plus_transition_matrix(official_plus):
    data = official_plus
    # Sinkhorn x3 (column + row sums over 400), symmetrise, one 400-term product (spec §4.4)
    rtol = fp32_rtol([N] * 6 + [N])
    trans = transition_matrix(tensor(data, "rfm_affinity_img0")[None], 3, 2)[0]
    check_scaled(
        "RFM+ transition matrix from recorded R * A (img0)", trans, data["trans_mat"][0], rtol
    )
    # the library's RFM+ transition on the recorded maps and affinity (layer choice included)
    maps = tensor(data, "clip_attn_last6_img0")[:, None]
    ours, keep = rfm_plus_transition(
        list(maps[:-1]), maps[-1], tensor(data, "attn_pred")[:1], RFM_LAYERS
    )
    assert keep[0].tolist() == data["rfm_keep"][0].tolist()
    check_scaled(
        "rfm_plus_transition (img0)",
        ours[0],
        data["trans_mat"][0],
        rtol + fp32_rtol([RFM_LAYERS, 1]),
    )


def test_rfm_plus_refined_cams_from_recorded_inputs(official_plus):
    # every (image, class) pair: M_k * P[k + 1] (the gate), all-ones box mask (VOC, doc §4.2 step
    # 4), T . vec(M'_k) over 400 terms, min-max, bilinear 20 -> 320
    data = official_plus
    index, classes = tensor(data, "pair_batch_index"), tensor(data, "pair_class_index")
    refined, lowres = rfm_plus_refine(
        tensor(data, "trans_mat"),
        tensor(data, "cams_all"),
        tensor(data, "gate_probs"),
        index,
        classes,
        masks=None,
        out_size=SIZE,
        norm_eps=1e-7,
    )
    ref_low = tensor(data, "cams_refined_lowres_all")
    worst = 0.0
    for p in range(ref_low.shape[0]):
        # the gating product and the 400-term propagation, relative to the map's magnitude
        d_low = fp32_rtol([1, N]) * max_abs(ref_low[p])
        worst = max(
            worst, check_close(f"RFM+ propagated CAM, pair {p}", lowres[p], ref_low[p], d_low)
        )
        # the min-max moves by <= minmax_bound of that; the resize is a convex combination
        value_range = float(ref_low[p].max() - ref_low[p].min())
        atol = minmax_bound(d_low, value_range) + fp32_rtol([4, 1])
        check_close(f"RFM+ refined CAM, pair {p}", refined[p], data["cams_refined_all"][p], atol)
    print(f"[parity] RFM+ propagated CAMs: largest difference {worst:.2e}")
    # the all-ones mask is observable: inside the CLIP-ES boxes of the ungated CAMs (threshold
    # 0.4, the COCO model's choice with VOC's threshold) some refined CAM moves far beyond rounding
    boxes, _ = box_masks(tensor(data, "cams_all"), 0.4)
    assert not bool(boxes.all()), "every box covers the whole grid: the fixture cannot tell"
    boxed, _ = rfm_plus_refine(
        tensor(data, "trans_mat"),
        tensor(data, "cams_all"),
        tensor(data, "gate_probs"),
        index,
        classes,
        masks=boxes,
        out_size=SIZE,
        norm_eps=1e-7,
    )
    far = float((boxed.double() - tensor(data, "cams_refined_all").double()).abs().max())
    print(f"[parity] RFM+ with CLIP-ES boxes instead of ones: differs by up to {far:.3f}")
    assert far > 1e-2


def test_par_and_labels_img0(official_plus, plus_model):
    data = official_plus
    engine = plus_model(data).pipeline
    k = len(data["label_ids_img0"])
    index = torch.zeros(k, dtype=torch.long)
    scores, keys = pack_scores(
        tensor(data, "cams_refined_img0"), index, tensor(data, "label_ids_img0"), 1, engine.bg_power
    )
    assert keys[0].tolist() == data["par_keys_img0"].tolist()
    # [ (1 - max)^1 ; r_k ]: one subtraction (spec §5 step 1)
    check_close("WeCLIP+ PAR input (img0)", scores[0], data["par_in_img0"], 4 * U32)
    out = engine.par(images_of(data)[:1], scores)[0]
    check_scaled("WeCLIP+ PAR output (img0)", out, data["par_out_img0"], PAR_RTOL)
    labels = scores_to_labels(tensor(data, "par_out_img0")[None], keys)[0]
    assert torch.equal(labels, tensor(data, "pseudo_label")[0].long())
    assert not bool((tensor(data, "pseudo_label") == 255).any())  # no ignored pixel (doc §4.2)


# ------------------------------------------------------------------------------------------------
# self-training, cross-branch targets, losses
# ------------------------------------------------------------------------------------------------
def _upsampled(data: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
    clip, dino = tensor(data, "seg_clip"), tensor(data, "seg_dino")
    up = {
        "seg": F.interpolate(0.5 * clip + 0.5 * dino, SIZE, mode="bilinear", align_corners=False),
        "clip": F.interpolate(clip, SIZE, mode="bilinear", align_corners=False),
        "dino": F.interpolate(dino, SIZE, mode="bilinear", align_corners=False),
    }
    return up


def test_their_self_training_rule_on_their_numbers(official_plus):
    # Y'[conf > 0.75] = argmax there, Y' = Y elsewhere (doc §5.5), and Y' is also what their Dice
    # left behind (it writes 255 -> 21 into the same tensor; Y holds no 255, so nothing changed)
    data = official_plus
    y, y2 = tensor(data, "pseudo_label").long(), tensor(data, "train_label").long()
    conf, pred = tensor(data, "pred_max"), tensor(data, "pred_label_seg").long()
    if bool(data["self_training"]):
        expected = torch.where(conf > 0.75, pred, y)
        replaced = float((y2 != y).double().mean())
        print(f"[parity] their self-training replaced {replaced:.2%} of the pixels")
        assert 0 < replaced < 1
    else:
        expected = y
    assert torch.equal(y2, expected)


def test_self_training_labels_from_recorded_logits(official_plus):
    data = official_plus
    up = _upsampled(data)
    d_up = upsample_atol(0.5 * tensor(data, "seg_clip") + 0.5 * tensor(data, "seg_dino"))
    probs = F.softmax(up["seg"], dim=1)
    conf = probs.amax(dim=1)
    atol = softmax_max_atol(d_up)
    check_close("confidence max softmax(seg)", conf, data["pred_max"], atol)
    y = tensor(data, "pseudo_label").long()
    ours, _ = self_training_labels(
        y, 0.5 * tensor(data, "seg_clip") + 0.5 * tensor(data, "seg_dino")
    )
    if not bool(data["self_training"]):
        return  # before the switch their Y' is Y (test above); ours is not called (iteration)
    ref = tensor(data, "train_label").long()
    differ = ours != ref
    # a differing pixel must be within rounding of the threshold or an argmax near-tie
    near_threshold = (conf - 0.75).abs() <= atol
    near_tie = argmax_margin(probs) <= 2 * atol
    print(
        f"[parity] self-training labels from recorded logits: {int(differ.sum())} pixels "
        f"differ ({int((differ & near_threshold).sum())} at the threshold, "
        f"{int((differ & near_tie).sum())} argmax near-ties)"
    )
    assert not bool((differ & ~near_threshold & ~near_tie).any())


def test_cross_branch_targets_from_recorded_logits(official_plus):
    # target of L_clip = argmax softmax(seg_dino up), of L_dino = argmax softmax(seg_clip up)
    data = official_plus
    up = _upsampled(data)
    logits = {
        "clip": tensor(data, "seg_clip"),
        "dino": tensor(data, "seg_dino"),
        "seg": 0.5 * tensor(data, "seg_clip") + 0.5 * tensor(data, "seg_dino"),
    }
    for branch in ("clip", "dino", "seg"):
        probs = F.softmax(up[branch], dim=1)
        ours = probs.argmax(dim=1)
        ref = tensor(data, f"pred_label_{branch}").long()
        # a probability moves by <= softmax_max_atol (see there): a margin by twice that
        atol = softmax_max_atol(upsample_atol(logits[branch]))
        differ = ours != ref
        print(f"[parity] argmax softmax(seg_{branch}): {int(differ.sum())} pixels differ")
        assert not bool((differ & (argmax_margin(probs) > 2 * atol)).any())


def test_losses_from_recorded_inputs(official_plus, plus_model):
    data = official_plus
    model = plus_model(data)
    up = _upsampled(data)
    clip, dino = tensor(data, "seg_clip"), tensor(data, "seg_dino")
    mean = 0.5 * clip + 0.5 * dino
    y, y2 = tensor(data, "pseudo_label").long(), tensor(data, "train_label").long()
    pixels = y.numel()
    cfg = model.loss_cfg

    # L_seg(seg up, Y'): the balanced CE (spec §7.1) on identical logits: the upsampling's rounding
    check_close(
        "L_seg",
        seg_loss(up["seg"], y2),
        data["seg_loss"],
        ce_loss_bound(upsample_atol(mean), float(data["seg_loss"]), pixels),
    )
    # cross-branch terms with the recorded targets: the same bound
    for branch, other in (("clip", "dino"), ("dino", "clip")):
        target = tensor(data, f"pred_label_{other}").long()
        check_close(
            f"L_cross_{branch} (recorded targets)",
            seg_loss(up[branch], target),
            data[f"cross_{branch}_loss"],
            ce_loss_bound(
                upsample_atol(tensor(data, f"seg_{branch}")),
                float(data[f"cross_{branch}_loss"]),
                pixels,
            ),
        )

    # Dice (doc §5.4): p = softmax (relative error rel_p <= 2 d + 4u for logit errors d), per class
    # inter and union are fp32 sums over B H W = 409,600 terms (cascade: <= ceil(log2 n) u
    # relative), each ratio 2 I / U in [0, 1] moves by <= its relative error, then a 21-term mean
    n = pixels
    rel_p = 2 * upsample_atol(mean) + 4 * U32
    rel_sum = rel_p + (math.ceil(math.log2(n)) + 1) * U32
    dice_atol = 2 * rel_sum + math.ceil(math.log2(21)) * U32
    ours = dice_loss(up["seg"], y2, ignore_in_denominator=bool(cfg["dice_ignore_in_denominator"]))
    check_close("Dice", ours, data["dice_loss"], dice_atol)

    # L_aff on the recorded affinity with our affinity labels from Y (doc §5.2): labels exact,
    # the loss a mean of <= B n^2 entries
    labels = affinity_labels(y, GRID, int(cfg["aff_radius"]))
    assert torch.equal(labels, tensor(data, "aff_label").long())
    aff = tensor(data, "attn_pred")
    loss_aff, pos, neg = affinity_loss(aff, labels)
    assert (int(pos), int(neg)) == (int(data["aff_pos_count"]), int(data["aff_neg_count"]))
    aff_atol = fp32_rtol([aff.numel()]) * float(data["aff_loss"])
    check_close("L_aff", loss_aff, data["aff_loss"], aff_atol)

    # the total from our terms: 1 L_seg + 0.1 L_aff + 0.1 (L_clip + L_dino) + 1 Dice (doc §5)
    total = (
        float(cfg["seg_weight"]) * float(data["seg_loss"])
        + float(cfg["aff_weight"]) * float(data["aff_loss"])
        + float(cfg["cross_weight"])
        * (float(data["cross_clip_loss"]) + float(data["cross_dino_loss"]))
        + float(cfg["dice_weight"]) * float(data["dice_loss"])
    )
    # five fp32 terms summed: <= 5 u |loss|
    check_close(
        "total loss from their terms and our weights",
        total,
        data["loss"],
        5 * U32 * float(abs(data["loss"])),
    )
