"""Record what the authors' WeCLIP+ code computes as parity fixtures (``docs/parity.md``, "WeCLIP+").

WeCLIP+ (the ``WeCLIP+/`` folder of https://github.com/zbf1991/WeCLIP, commit 0f47db4; the journal
extension of "Frozen CLIP: A Strong Backbone for Weakly Supervised Semantic Segmentation", CVPR 2024,
with a DINOv2 branch, docs/official_code_plus.md) runs through
:class:`weclip.parity.official_plus.OfficialWeCLIPPlus` on CPU in fp32, with random CLIP ViT-B/16
(:mod:`weclip.parity.random_clip`) and DINOv2 ViT-S/14 (:mod:`weclip.parity.random_dino`) weights.
:class:`PlusRecorder` records one training iteration per stage of :data:`PLUS_STEPS`, with a seeded
decoder whose classifier is centred and scaled on the batch so that every loss term is defined.
"""

import json
import logging
from collections import OrderedDict
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from weclip.parity.normalize import official_normalize
from weclip.parity.official import OFFICIAL_COMMIT
from weclip.parity.official_plus import OfficialWeCLIPPlus
from weclip.parity.random_decoder import random_decoder_state, state_sha256
from weclip.parity.random_dino import DINO_CONTENT_SHA256_PREFIX, DINO_FILE_NAME
from weclip.parity.record import (
    RecordSettings,
    check_normalisation,
    pair_arrays,
    tensor_stats,
    to_float32,
)
from weclip.parity.synthetic import scene_batch

__all__ = [
    "PLUS_STEPS",
    "PLUS_STAGES",
    "PLUS_FULL_TENSORS",
    "PLUS_CLASSIFIER_SCALES",
    "PLUS_MIN_CONFIDENT",
    "PLUS_BACKGROUND",
    "PlusRecorder",
]

logger = logging.getLogger("weclip")

#: WeCLIP+ stages (``--model weclip_plus``): stage -> (first scene index, their 0-based n_iter).
#: n_iter 50: the first poly step of their schedule, before self-training; 18001: the first step
#: of their loop's ``if n_iter > 18000`` self-training branch (RFM+ is always on).
PLUS_STEPS: Dict[str, Tuple[int, int]] = {
    "plus_step": (300, 50),
    "plus_self_training": (304, 18001),
}
PLUS_STAGES = tuple(PLUS_STEPS)
#: WeCLIP+ trained tensors whose gradients the fixtures store in full (one of every kind: both
#: heads' MLP layers and fuse convs, attention, LayerNorm, MLP, the shared classifier).
PLUS_FULL_TENSORS = (
    "decoder_fts_fuse.linears_modulelist.0.proj.weight",
    "decoder_fts_fuse.linear_fuse.bias",
    "dino_decoder_fts_fuse.linears_modulelist.0.proj_2.weight",
    "dino_decoder_fts_fuse.linear_fuse.weight",
    "decoder.transformer.resblocks.0.attn.in_proj_weight",
    "decoder.transformer.resblocks.1.ln_1.weight",
    "decoder.transformer.resblocks.2.mlp.c_proj.weight",
    "decoder.linear_pred.weight",
    "decoder.linear_pred.bias",
)
#: Classifier scales tried (in order) for the WeCLIP+ fixtures' decoder: the first one whose
#: mean prediction is confident (max softmax > 0.75, their self-training threshold) on at least
#: PLUS_MIN_CONFIDENT of the decoder grid, with background and foreground predicted by both
#: branches (see PlusRecorder.decoder).
PLUS_CLASSIFIER_SCALES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
PLUS_MIN_CONFIDENT = 0.2
PLUS_BACKGROUND = 0.3  # share of the grid the fixtures' decoder predicts as background


class PlusRecorder:
    """Records the WeCLIP+ stages (:data:`PLUS_STEPS`); every stage is a method of the same name
    returning (arrays of the fixture file, its description for the manifest). One fresh harness
    per stage: each fixture starts from the seeded decoder and a fresh optimizer.

    Args:
        settings (RecordSettings): their clone, the DINOv2 clone (``dinov2_repo``) and the seeds.
        clip_file (str): the CLIP weights (:mod:`weclip.parity.random_clip`, ``qk_scale=4``).
        clip_hash (str): their content sha256 (recorded in every fixture's ``meta_json``).
        dino_file (str): the DINOv2 weights (:mod:`weclip.parity.random_dino`).
    """

    def __init__(
        self, settings: RecordSettings, clip_file: str, clip_hash: str, dino_file: str
    ) -> None:
        self.settings = settings
        self.clip_file = clip_file
        self.clip_hash = clip_hash
        self.dino_file = dino_file
        self.patches: List[str] = []

    def harness(self) -> OfficialWeCLIPPlus:
        """A fresh harness around their WeCLIP+ (their ``setup_seed(1)``)."""
        harness = OfficialWeCLIPPlus(
            self.settings.official_repo,
            self.clip_file,
            self.settings.dinov2_repo,
            self.dino_file,
            seed=1,
        )
        self.patches = harness.patches
        return harness

    def decoder(
        self, harness: OfficialWeCLIPPlus, images: np.ndarray
    ) -> Tuple["OrderedDict[str, torch.Tensor]", float]:
        """The fixture's decoder: seeded weights (:mod:`weclip.parity.random_decoder`) with the
        shared classifier centred and scaled on this batch, loaded into ``harness``.

        A freshly initialised decoder predicts one class everywhere, which in their loop makes the
        cross-branch losses 0/0 (no background or no foreground target pixel, doc §5.3) and the
        self-training branch a no-op (no prediction above 0.75). So the classifier bias is set to
        ``-W @ mean`` (the mean of the classifier's inputs over both branches and the batch, from
        their forward in eval mode: logits centred per class), the background bias is raised until
        background wins on :data:`PLUS_BACKGROUND` of the grid, and weight and bias are multiplied by
        the first scale of :data:`PLUS_CLASSIFIER_SCALES` that makes the mean prediction confident
        on at least :data:`PLUS_MIN_CONFIDENT` of the grid with both branches predicting
        background and foreground somewhere. The classifier is stored in the fixture.
        """
        state = random_decoder_state(harness.decoder_shapes(), self.settings.decoder_seed)
        harness.load_decoder_state(state)
        f_clip, f_dino = harness.classifier_inputs(torch.from_numpy(images))
        weight = state["decoder.linear_pred.weight"][:, :, 0, 0].double()
        feats = torch.cat([f_clip, f_dino]).double()
        mean = feats.transpose(0, 1).flatten(1).mean(dim=1)
        bias = -(weight @ mean)

        def logits(f: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
            z = torch.einsum("ck,bkhw->bchw", weight, f.double()) + bias[None, :, None, None]
            return scale * z

        # background on about PLUS_BACKGROUND of the grid: its bias raised by the matching
        # quantile of its margin to the best foreground class under the mean prediction
        z = logits(0.5 * f_clip + 0.5 * f_dino)
        margin = z[:, 0] - z[:, 1:].amax(dim=1)
        bias[0] -= float(torch.quantile(margin.flatten(), 1.0 - PLUS_BACKGROUND))
        for scale in PLUS_CLASSIFIER_SCALES:
            z_clip, z_dino = logits(f_clip, scale), logits(f_dino, scale)
            confident = float(
                (F.softmax(0.5 * z_clip + 0.5 * z_dino, dim=1).amax(1) > 0.75).double().mean()
            )
            both = all(
                bool((z.argmax(1) == 0).any()) and bool((z.argmax(1) != 0).any())
                for z in (z_clip, z_dino)
            )
            logger.info(f"classifier scale {scale:g}: confident {confident:.1%}, bg and fg: {both}")
            if confident >= PLUS_MIN_CONFIDENT and both:
                break
        else:
            raise RuntimeError("no classifier scale gives a confident, mixed prediction")
        state["decoder.linear_pred.weight"] = (weight * scale).float()[:, :, None, None]
        state["decoder.linear_pred.bias"] = (bias * scale).float()
        harness.load_decoder_state(state)
        return state, float(scale)

    def meta(self, **extra: Any) -> str:
        """The fixture's ``meta_json``: commit, folder, precision, patches, weights, ``extra``."""
        payload = {
            "commit": OFFICIAL_COMMIT,
            "folder": "WeCLIP+",
            "precision": "fp32",
            "crop": 320,
            "radius": 8,
            "patches": self.patches,
            "clip_weights": f"weclip.parity.random_clip --qk-scale 4 (content sha256 prefix "
            f"{self.clip_hash[:16]})",
            "dino_weights": f"weclip.parity.random_dino ({DINO_FILE_NAME}, content sha256 prefix "
            f"{DINO_CONTENT_SHA256_PREFIX})",
            **extra,
        }
        return json.dumps(payload, sort_keys=True)

    def stage(self, name: str) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        """One iteration of their training loop at the scenes and n_iter of ``PLUS_STEPS[name]``."""
        first, n_iter = PLUS_STEPS[name]
        harness = self.harness()
        images, labels, _ = scene_batch(self.settings.scene_seed, first, 4, (320, 320))
        inputs = official_normalize(images)
        check_normalisation(harness, images)
        state, scale = self.decoder(harness, images)
        names = list(harness.decoder_shapes())
        missing = [n for n in PLUS_FULL_TENSORS if n not in names]
        if missing:
            raise KeyError(f"PLUS_FULL_TENSORS not in their model: {missing}")
        step = harness.train_step(
            torch.from_numpy(inputs),
            torch.from_numpy(labels),
            n_iter=n_iter,
            return_grads=True,
            trace=True,
        )
        losses = ("seg_loss", "dice_loss", "cross_clip_loss", "cross_dino_loss", "aff_loss", "loss")
        bad = [k for k in losses if not bool(torch.isfinite(step[k]))]
        if bad:
            raise RuntimeError(f"their losses {bad} are not finite (classifier scale {scale})")
        replaced = float((step["train_labels"] != step["pseudo_labels"]).double().mean())
        if step["self_training"] != (n_iter > 18000) or (step["self_training"] and replaced == 0):
            raise RuntimeError(f"self-training {step['self_training']}, replaced {replaced:.1%}")
        logger.info(f"{name}: n_iter {n_iter}, self-training replaced {replaced:.2%} of the pixels")
        weights = harness.decoder_state()
        recs = step["images"]
        rec0 = recs[0]
        blocks, attns = step["clip_block_out"], step["clip_attn"]  # (11, L, B, D), (11, B, L, L)
        arrays: Dict[str, np.ndarray] = {
            "img_names": np.array([f"scene_{first + i:03d}" for i in range(4)]),
            "images_uint8": images,
            "cls_labels": labels.astype(np.float32),
            "text_fg": to_float32(harness.model.fg_text_features),
            "text_bg": to_float32(harness.model.bg_text_features),
            "decoder_seed": np.asarray(self.settings.decoder_seed, dtype=np.int64),
            "classifier_scale": np.asarray(scale, dtype=np.float64),
            "classifier_weight": to_float32(state["decoder.linear_pred.weight"]),
            "classifier_bias": to_float32(state["decoder.linear_pred.bias"]),
            "decoder_sha256": np.array(state_sha256(state)),
            "param_names": np.array(names),
            "full_tensors": np.array(PLUS_FULL_TENSORS),
            "n_iter": np.asarray(n_iter, dtype=np.int64),
            "self_training": np.asarray(bool(step["self_training"])),
            "lr": np.asarray(step["lr"], dtype=np.float64),
            "dino_input_size": np.asarray(step["dino_input_size"], dtype=np.int64),
            "dino_tokens": to_float32(step["dino_tokens"]),
            "clip_block10": to_float32(blocks[-1].transpose(1, 0, 2)),
            "clip_block9_img0": to_float32(blocks[-2][:, 0]),
            "clip_attn_last6_img0": np.concatenate(
                [to_float32(attns[-5:, 0]), to_float32(rec0["attn_last"][0])[None]]
            ),
            "clip_pre_dropout": to_float32(step["clip_pre_dropout"]),
            "clip_fused": to_float32(step["clip_fused"]),
            "clip_keep": step["clip_keep"].numpy().astype(bool),
            "dino_pre_dropout": to_float32(step["dino_pre_dropout"]),
            "dino_fused": to_float32(step["dino_fused"]),
            "dino_keep": step["dino_keep"].numpy().astype(bool),
            "dino_fused_grid": to_float32(step["decoder_input_dino"]),
            "seg_clip": to_float32(step["seg_clip"]),
            "seg_dino": to_float32(step["seg_dino"]),
            "attn_pred": to_float32(step["attn_pred"]),
            "gate_probs": np.stack([to_float32(r["gate_probs"]) for r in recs]),
            "rfm_diff": np.stack([to_float32(r["rfm_diff"]) for r in recs]),
            "rfm_diff_mean": np.stack([to_float32(r["rfm_diff_mean"]) for r in recs]),
            "rfm_keep": np.stack([r["rfm_keep"] for r in recs]).astype(bool),
            "rfm_affinity_img0": to_float32(rec0["affinity"]),
            "trans_mat": np.stack([to_float32(r["trans_mat"]) for r in recs]),
            **pair_arrays(step),
            "cams_refined_lowres_all": np.concatenate(
                [to_float32(r["cams_refined_lowres"]) for r in recs]
            ),
            "label_ids_img0": rec0["label_ids"].astype(np.int64),
            "gradcam_probs_img0": to_float32(np.stack(rec0["gradcam_probs"])),
            "gradcam_target_img0": np.arange(len(rec0["label_ids"]), dtype=np.int64),
            "cams_img0": to_float32(np.stack(rec0["gradcam_cams"])),
            "gradcam_acts_img0": to_float32(np.stack(rec0["gradcam_acts"])),
            "gradcam_grads_img0": to_float32(np.stack(rec0["gradcam_grads"])),
            "cams_refined_lowres_img0": to_float32(rec0["cams_refined_lowres"]),
            "cams_refined_img0": to_float32(rec0["cams_refined"]),
            "par_in_img0": to_float32(rec0["par_in"]),
            "par_out_img0": to_float32(rec0["par_out"]),
            "par_keys_img0": rec0["par_keys"].astype(np.int64),
            "pseudo_label": step["pseudo_labels"].numpy().astype(np.uint8),
            "train_label": step["train_labels"].numpy().astype(np.uint8),
            "pred_max": to_float32(step["pred_max"]),
            "pred_label_seg": step["pred_label_seg"].numpy().astype(np.uint8),
            "pred_label_clip": step["pred_label_clip"].numpy().astype(np.uint8),
            "pred_label_dino": step["pred_label_dino"].numpy().astype(np.uint8),
            "aff_label": step["aff_label"].numpy().astype(np.uint8),
            **{k: to_float32(step[k]) for k in losses},
            "aff_pos_count": np.asarray(int(step["aff_pos_count"]), dtype=np.int64),
            "aff_neg_count": np.asarray(int(step["aff_neg_count"]), dtype=np.int64),
            "grad_stats": tensor_stats(step["grads"], names),
            "weight_stats": tensor_stats(weights, names),
        }
        for tensor in PLUS_FULL_TENSORS:
            arrays["grad." + tensor] = to_float32(step["grads"][tensor])
        for tensor in names:  # every weight after their AdamW step
            arrays["weight." + tensor] = to_float32(weights[tensor])
        arrays["meta_json"] = np.array(
            self.meta(
                n_iter=n_iter,
                self_training=bool(step["self_training"]),
                batch=4,
                scene_seed=self.settings.scene_seed,
                decoder_seed=self.settings.decoder_seed,
                classifier_scale=scale,
            )
        )
        harness.close()
        what = (
            f"one iteration of their WeCLIP+ training loop at n_iter = {n_iter} ("
            + ("self-training active: n_iter > 18000" if n_iter > 18000 else "before self-training")
            + ", RFM+ always on), batch of 4 synthetic 320x320 scenes: DINOv2 tokens, both "
            "heads before/after Dropout2d, seg_clip/seg_dino, the concatenated-feature affinity, "
            "the gate probabilities, RFM+ layer choice, affinity and transition matrices, CAMs and "
            "refined CAMs of every pair, PAR (img0), pseudo-labels before/after self-training, "
            "cross-branch targets, every loss term, gradients (sums of all, 9 in full), learning "
            "rate and every weight after their PolyWarmupAdamW step"
        )
        return arrays, {
            "what": what,
            "scenes": f"synthetic_scene(seed={self.settings.scene_seed}, index={first}..{first + 3}, "
            "320, 320)",
            "decoder": f"random_decoder_state(seed={self.settings.decoder_seed}), classifier centred "
            f"on the batch and scaled by {scale:g} (stored: classifier_weight, classifier_bias)",
            "patches": self.patches,
        }

    def plus_step(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        """The ``plus_step`` fixture (n_iter 50, before self-training)."""
        return self.stage("plus_step")

    def plus_self_training(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        """The ``plus_self_training`` fixture (n_iter 18001, self-training active)."""
        return self.stage("plus_self_training")
