"""Record what the authors' WeCLIP code computes, stage by stage, as parity fixtures (``docs/parity.md``).

WeCLIP ("Frozen CLIP: A Strong Backbone for Weakly Supervised Semantic Segmentation", CVPR 2024,
https://github.com/zbf1991/WeCLIP, commit 0f47db4) runs through
:class:`weclip.parity.official.OfficialWeCLIP` on CPU in fp32, with random CLIP ViT-B/16 weights
(:mod:`weclip.parity.random_clip`, ``qk_scale=4``) and synthetic scenes
(:mod:`weclip.parity.synthetic`). :class:`Recorder` has one method per stage of :data:`STAGES`, each
returning the arrays of one fixture file (:data:`weclip.parity.fixtures.FIXTURE_FILES`) and its
description for the manifest; :func:`weclip.parity.manifest.record_fixtures` writes them.

The array helpers here turn the harness's traced values into the fixtures' layout (shared with the
WeCLIP+ recorder, :mod:`weclip.parity.record_plus`). :func:`reproduce_static` replays an existing
static fixture through their code.
"""

import json
import logging
import platform
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from weclip.parity.fixtures import load_npz
from weclip.parity.normalize import official_normalize
from weclip.parity.official import OFFICIAL_COMMIT, OfficialWeCLIP
from weclip.parity.random_decoder import random_decoder_state, state_sha256
from weclip.parity.synthetic import SyntheticScene, scene_batch, synthetic_scene

__all__ = [
    "STAGES",
    "EVAL_SIZES",
    "FULL_TENSORS",
    "LR_STEPS",
    "TWO_STEP_START",
    "RecordSettings",
    "Recorder",
    "environment_versions",
    "check_normalisation",
    "to_float32",
    "pad_boxes",
    "image_stage_arrays",
    "pair_arrays",
    "step_arrays",
    "tensor_stats",
    "score_arrays",
    "evaluation_pairs",
    "reproduce_static",
]

logger = logging.getLogger("weclip")

#: WeCLIP stages, in recording order (the keys of their fixture files in FIXTURE_FILES)
STAGES = ("static", "rfm", "two_steps", "inference", "val_pseudo", "evaluate")
#: Sizes (H, W) of the inference / validation images: sides not multiples of 16 (VOC's 500x375
#: landscape and 333x500 portrait) and one square that is.
EVAL_SIZES: Tuple[Tuple[int, int], ...] = ((375, 500), (500, 333), (480, 480))
#: Decoder tensors whose gradients and updated values the two-step fixture stores in full
#: (one of every kind: fusion MLP layers, fuse conv, attention, LayerNorm, MLP, classifier).
FULL_TENSORS = (
    "decoder_fts_fuse.linears_modulelist.0.proj.weight",
    "decoder_fts_fuse.linears_modulelist.10.proj_2.bias",
    "decoder_fts_fuse.linear_fuse.bias",
    "decoder.transformer.resblocks.0.attn.in_proj_weight",
    "decoder.transformer.resblocks.1.ln_1.weight",
    "decoder.transformer.resblocks.2.mlp.c_proj.weight",
    "decoder.linear_pred.weight",
    "decoder.linear_pred.bias",
)
#: Optimizer global steps whose learning rates the two-step fixture records (both schedule
#: branches and their boundaries, for max_iters = 30000 and warmup_iter = 50).
LR_STEPS = (0, 1, 2, 25, 48, 49, 50, 51, 100, 1000, 15000, 29998, 29999, 30000, 30001)
TWO_STEP_START = 49  # the optimizer's global step before the first of the two steps


@dataclass(frozen=True)
class RecordSettings:
    """What a recording is made from, besides the weights files.

    Attributes:
        official_repo (str): the user's clone of zbf1991/WeCLIP (or its ``WeCLIP/`` or
            ``WeCLIP+/`` folder).
        scene_seed (int): seed of the synthetic scenes.
        decoder_seed (int): seed of the random decoder weights (every WeCLIP fixture but the
            static one, every WeCLIP+ fixture).
        dinov2_repo (str, optional): WeCLIP+: a local clone of facebookresearch/dinov2.
    """

    official_repo: str
    scene_seed: int = 0
    decoder_seed: int = 0
    dinov2_repo: Optional[str] = None


def environment_versions() -> Dict[str, str]:
    """The versions a recording depends on: python, torch, numpy, cv2."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cv2": __import__("cv2").__version__,
    }


def check_normalisation(harness: Any, images: np.ndarray) -> None:
    """Check that :func:`~weclip.parity.normalize.official_normalize` equals their
    ``normalize_img`` bit for bit on (B, 3, H, W) uint8 ``images`` (``harness.normalize``).

    Raises:
        RuntimeError: the two differ.
    """
    theirs = harness.normalize(torch.from_numpy(images)).numpy()
    if not np.array_equal(theirs, official_normalize(images)):
        raise RuntimeError("official_normalize differs from their normalize_img")


def to_float32(x: Any) -> np.ndarray:
    """``x`` (a tensor, detached and moved to the CPU, or anything ``np.asarray`` takes) as float32."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def pad_boxes(boxes: Sequence[np.ndarray]) -> np.ndarray:
    """Per-class boxes as one array.

    Args:
        boxes (Sequence[np.ndarray]): K arrays of (n_k, 4) boxes.

    Returns:
        np.ndarray: (K, max(10, max n_k), 4) int64, rows of -1 after each class's boxes.
    """
    rows = max([10] + [len(b) for b in boxes])
    out = np.full((len(boxes), rows, 4), -1, dtype=np.int64)
    for k, b in enumerate(boxes):
        out[k, : len(b)] = b
    return out


def image_stage_arrays(step: Mapping[str, Any], b: int, suffix: str) -> Dict[str, np.ndarray]:
    """The per-image keys of the static fixture for image ``b`` of a traced step, each name
    followed by ``suffix`` (see docs/parity.md)."""
    rec = step["images"][b]
    k = len(rec["label_ids"])
    return {
        f"clip_block_out{suffix}": to_float32(step["clip_block_out"][:, :, b]),
        f"clip_attn{suffix}": np.concatenate(
            [to_float32(step["clip_attn"][:, b]), to_float32(rec["attn_last"][0])[None]]
        ),
        f"gradcam_probs{suffix}": to_float32(np.stack(rec["gradcam_probs"])),
        f"gradcam_target{suffix}": np.arange(k, dtype=np.int64),
        f"cams{suffix}": to_float32(np.stack(rec["gradcam_cams"])),
        f"label_ids{suffix}": rec["label_ids"].astype(np.int64),
        f"boxes{suffix}": pad_boxes(rec["boxes"]),
        f"trans_mat{suffix}": to_float32(rec["trans_mat"]),
        f"cams_refined_lowres{suffix}": to_float32(rec["cams_refined_lowres"]),
        f"cams_refined{suffix}": to_float32(rec["cams_refined"]),
        f"par_in{suffix}": to_float32(rec["par_in"]),
        f"par_out{suffix}": to_float32(rec["par_out"]),
        f"par_keys{suffix}": rec["par_keys"].astype(np.int64),
        f"gradcam_acts{suffix}": to_float32(np.stack(rec["gradcam_acts"])),
        f"gradcam_grads{suffix}": to_float32(np.stack(rec["gradcam_grads"])),
    }


def pair_arrays(step: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """Initial and refined CAMs of every (image, present class) pair of the batch, image-major,
    class ids ascending (the order of our ``batch_index`` / ``class_index``)."""
    cams, initial, batch, classes = [], [], [], []
    for b, rec in enumerate(step["images"]):
        cams.append(to_float32(rec["cams_refined"]))
        initial.append(to_float32(np.stack(rec["gradcam_cams"])))
        batch += [b] * len(rec["label_ids"])
        classes += rec["label_ids"].tolist()
    return {
        "cams_all": np.concatenate(initial),
        "cams_refined_all": np.concatenate(cams),
        "pair_batch_index": np.asarray(batch, dtype=np.int64),
        "pair_class_index": np.asarray(classes, dtype=np.int64),
    }


def step_arrays(
    harness: OfficialWeCLIP, step: Mapping[str, Any], inputs: np.ndarray, labels: np.ndarray
) -> Dict[str, np.ndarray]:
    """The batch-level keys of a training-step fixture (the static fixture's layout), from a
    traced step of ``harness`` on ``inputs`` (B, 3, H, W) float32 and ``labels`` (B, 20)."""
    return {
        "input_images": inputs,
        "cls_labels": labels.astype(np.float32),
        "text_fg": to_float32(harness.model.fg_text_features),
        "text_bg": to_float32(harness.model.bg_text_features),
        "pseudo_label": step["pseudo_labels"].numpy().astype(np.uint8),
        "fuse_pre_dropout": to_float32(step["fuse_pre_dropout"]),
        "fused_F": to_float32(step["fused"]),
        "dropout_keep_step1": step["dropout_keep"].numpy().astype(bool),
        "attn_pred": to_float32(step["attn_pred"]),
        "seg_logits": to_float32(step["seg_logits"]),
        "aff_label": step["aff_label"].numpy().astype(np.uint8),
        "seg_loss": to_float32(step["seg_loss"]),
        "aff_loss": to_float32(step["aff_loss"]),
        "loss": to_float32(step["loss"]),
        "aff_pos_count": np.asarray(int(step["aff_pos_count"]), dtype=np.int64),
        "aff_neg_count": np.asarray(int(step["aff_neg_count"]), dtype=np.int64),
        "require_seg_trans": np.asarray(bool(step["rfm"])),
    }


class Recorder:
    """Records the WeCLIP stages (:data:`STAGES`): each stage is a method of the same name that
    runs the authors' code and returns (arrays of the fixture file, its description for the
    manifest).

    Args:
        settings (RecordSettings): their clone and the seeds.
        clip_file (str): the CLIP weights (:mod:`weclip.parity.random_clip`, ``qk_scale=4``).
        clip_hash (str): their content sha256 (recorded in every fixture's ``meta_json``).
    """

    def __init__(self, settings: RecordSettings, clip_file: str, clip_hash: str) -> None:
        self.settings = settings
        self.clip_file = clip_file
        self.clip_hash = clip_hash
        self.versions = environment_versions()
        self.patches: List[str] = []
        self._eval_harness: Optional[OfficialWeCLIP] = None

    def eval_harness(self) -> OfficialWeCLIP:
        """One harness shared by the stages that do not train: the seeded decoder with its
        classifier bias centred on the evaluation images.

        A freshly initialised decoder predicts one class everywhere (the per-class offsets of
        the mean feature dominate its spatial variation), which would make the label
        comparisons trivial. So the classifier bias is set to ``-W @ mean_feature`` (the mean of
        the classifier's input over the evaluation images in validation mode): logits centred
        per class, labels that follow the image. The bias is stored in the fixtures.
        """
        if self._eval_harness is None:
            harness = self.harness(decoder=True)
            feats: List[torch.Tensor] = []
            head = harness.model.decoder.linear_pred
            hook = head.register_forward_pre_hook(lambda m, inp: feats.append(inp[0].detach()))
            try:
                for scene in self.eval_scenes():
                    image = torch.from_numpy(np.ascontiguousarray(scene.image.transpose(2, 0, 1)))
                    harness.validation_forward(image, scene.mask)
            finally:
                hook.remove()
            self._image_means = [f[0].flatten(1).double().mean(dim=1) for f in feats]
            self._shared_mean = torch.cat([f[0].flatten(1) for f in feats], dim=1).double().mean(1)
            self.centre_classifier(harness, self._shared_mean)
            self._eval_harness = harness
        return self._eval_harness

    @staticmethod
    def centre_classifier(harness: OfficialWeCLIP, mean: torch.Tensor) -> None:
        """Set the classifier bias to ``-W @ mean`` (logits centred per class on ``mean``)."""
        state = harness.decoder_state()
        weight = state["decoder.linear_pred.weight"][:, :, 0, 0].double()
        state["decoder.linear_pred.bias"] = (-(weight @ mean)).float()
        harness.load_decoder_state(state)

    def eval_decoder_arrays(self, harness: OfficialWeCLIP) -> Dict[str, np.ndarray]:
        """The decoder seed, classifier bias and decoder-state sha256 of an evaluation fixture."""
        state = harness.decoder_state()
        return {
            "decoder_seed": np.asarray(self.settings.decoder_seed, dtype=np.int64),
            "classifier_bias": to_float32(state["decoder.linear_pred.bias"]),
            "decoder_sha256": np.array(state_sha256(state)),
        }

    def harness(self, *, decoder: bool, **kwargs: Any) -> OfficialWeCLIP:
        """A fresh harness (their ``setup_seed(1)``); with ``decoder`` the seeded random decoder
        (:mod:`weclip.parity.random_decoder`) replaces their initialisation. ``kwargs`` go to
        :class:`~weclip.parity.official.OfficialWeCLIP`."""
        model = OfficialWeCLIP(self.settings.official_repo, self.clip_file, seed=1, **kwargs)
        if decoder:
            model.load_decoder_state(
                random_decoder_state(model.decoder_shapes(), self.settings.decoder_seed)
            )
        self.patches = model.patches
        return model

    def meta(self, **extra: Any) -> str:
        """The fixture's ``meta_json``: commit, precision, versions, patches, weights, ``extra``."""
        payload = {
            "commit": OFFICIAL_COMMIT,
            "precision": "fp32",
            "crop": 320,
            "radius": 8,
            **self.versions,
            "patches": self.patches,
            "clip_weights": f"weclip.parity.random_clip --qk-scale 4 (content sha256 prefix "
            f"{self.clip_hash[:16]})",
            **extra,
        }
        return json.dumps(payload, sort_keys=True)

    def batch(self, start: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Synthetic scenes ``start..start+3`` at 320x320: (4, 3, 320, 320) uint8 images, (4, 20)
        labels and the normalised (4, 3, 320, 320) float32 inputs."""
        images, labels, _ = scene_batch(self.settings.scene_seed, start, 4, (320, 320))
        return images, labels, official_normalize(images)

    # ----------------------------------------------------------------------------------------
    def static(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        """One training step with static refinement and their own decoder initialisation."""
        harness = self.harness(decoder=False)  # their own initialisation after setup_seed(1)
        images, labels, inputs = self.batch(0)
        check_normalisation(harness, images)
        init = harness.decoder_state()
        step = harness.train_step(
            torch.from_numpy(inputs),
            torch.from_numpy(labels),
            iteration=1,
            trace=True,
            optimize=False,
        )
        arrays: Dict[str, np.ndarray] = {
            "img_names": np.array([f"scene_{i:03d}" for i in range(4)]),
            **step_arrays(harness, step, inputs, labels),
            **image_stage_arrays(step, 0, "_img0"),
            **pair_arrays(step),
        }
        arrays.update({f"decoder_init.{k}": v.numpy() for k, v in init.items()})
        arrays["meta_json"] = np.array(
            self.meta(
                rfm="static",
                require_seg_trans=False,
                seed=1,
                batch=4,
                scene_seed=self.settings.scene_seed,
            )
        )
        return arrays, {
            "what": "one training step of their code, static refinement (their counter = 1): "
            "forward, pseudo-labels and losses of a batch of 4 synthetic 320x320 scenes; "
            "stage values of img0; their own decoder initialisation after setup_seed(1)",
            "scenes": f"synthetic_scene(seed={self.settings.scene_seed}, index=0..3, 320, 320)",
        }

    def rfm(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        """One training step with the RFM (their counter 15001)."""
        harness = self.harness(decoder=True)
        images, labels, inputs = self.batch(4)
        step = harness.train_step(
            torch.from_numpy(inputs),
            torch.from_numpy(labels),
            iteration=15001,
            trace=True,
            optimize=False,
        )
        assert step["rfm"], "their counter 15001 must select the RFM"
        recs = step["images"]
        arrays: Dict[str, np.ndarray] = {
            "img_names": np.array([f"scene_{i:03d}" for i in range(4, 8)]),
            "images_uint8": images,
            **step_arrays(harness, step, inputs, labels),
            **image_stage_arrays(step, 0, "_img0"),
            **pair_arrays(step),
            "rfm_diff": np.stack([to_float32(r["rfm_diff"]) for r in recs]),
            "rfm_diff_mean": np.stack([to_float32(r["rfm_diff_mean"]) for r in recs]),
            "rfm_keep": np.stack([r["rfm_keep"] for r in recs]).astype(bool),
            "rfm_affinity_img0": to_float32(recs[0]["affinity"]),
            "trans_mat": np.stack([to_float32(r["trans_mat"]) for r in recs]),
            "decoder_seed": np.asarray(self.settings.decoder_seed, dtype=np.int64),
            "decoder_sha256": np.array(state_sha256(harness.decoder_state())),
        }
        # CLIP features and Grad-CAM are checked on the static fixture; the RFM needs the last
        # rfm_layers = 6 attention maps (blocks 6..11)
        for key in ("clip_block_out_img0", "gradcam_acts_img0", "gradcam_grads_img0"):
            del arrays[key]
        arrays["clip_attn_last6_img0"] = arrays.pop("clip_attn_img0")[-6:]
        arrays["meta_json"] = np.array(
            self.meta(
                rfm="rfm",
                require_seg_trans=True,
                iteration=15001,
                batch=4,
                scene_seed=self.settings.scene_seed,
                decoder_seed=self.settings.decoder_seed,
            )
        )
        return arrays, {
            "what": "one training step with the RFM (their counter = 15001 > 15000): forward, "
            "RFM layer choice and affinity, transition matrices, refined CAMs, pseudo-labels and "
            "losses of 4 synthetic 320x320 scenes; stage values of img0",
            "scenes": f"synthetic_scene(seed={self.settings.scene_seed}, index=4..7, 320, 320)",
            "decoder": f"random_decoder_state(seed={self.settings.decoder_seed})",
        }

    def two_steps(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        """Two training steps with their optimizer in between (from :data:`TWO_STEP_START`)."""
        harness = self.harness(decoder=True, optimizer_start_step=TWO_STEP_START)
        names = list(harness.decoder_shapes())
        arrays: Dict[str, np.ndarray] = {
            "decoder_seed": np.asarray(self.settings.decoder_seed, dtype=np.int64),
            "decoder_sha256": np.array(state_sha256(harness.decoder_state())),
            "param_names": np.array(names),
            "full_tensors": np.array(FULL_TENSORS),
            "optimizer_start_step": np.asarray(TWO_STEP_START, dtype=np.int64),
            "lr_steps": np.asarray(LR_STEPS, dtype=np.int64),
            "lr_schedule": harness.lr_schedule(LR_STEPS),
        }
        for s, start in ((1, 8), (2, 12)):
            images, labels, inputs = self.batch(start)
            step = harness.train_step(
                torch.from_numpy(inputs),
                torch.from_numpy(labels),
                iteration=s,
                return_grads=True,
                trace=True,
            )
            weights = harness.decoder_state()
            p = f"step{s}_"
            arrays.update(
                {
                    p + "images_uint8": images,
                    p + "cls_labels": labels,
                    p + "dropout_keep": step["dropout_keep"].numpy().astype(bool),
                    p + "pseudo_label": step["pseudo_labels"].numpy().astype(np.uint8),
                    p + "seg_logits": to_float32(step["seg_logits"]),
                    p + "attn_pred": to_float32(step["attn_pred"]),
                    p + "aff_label": step["aff_label"].numpy().astype(np.uint8),
                    p + "aff_pos_count": np.asarray(int(step["aff_pos_count"]), dtype=np.int64),
                    p + "aff_neg_count": np.asarray(int(step["aff_neg_count"]), dtype=np.int64),
                    p + "seg_loss": to_float32(step["seg_loss"]),
                    p + "aff_loss": to_float32(step["aff_loss"]),
                    p + "loss": to_float32(step["loss"]),
                    p + "lr": np.asarray(step["lr"], dtype=np.float64),
                    p + "grad_stats": tensor_stats(step["grads"], names),
                    p + "weight_stats": tensor_stats(weights, names),
                    **{p + k: v for k, v in pair_arrays(step).items()},
                }
            )
            for name in FULL_TENSORS:
                arrays[p + "grad." + name] = to_float32(step["grads"][name])
                arrays[p + "weight." + name] = to_float32(weights[name])
            if s == 1:
                for name in names:  # every updated weight after step 1 feeds our step 2
                    arrays["step1_weight_all." + name] = to_float32(weights[name])
        arrays["meta_json"] = np.array(
            self.meta(
                rfm="static",
                iterations=[1, 2],
                optimizer_start_step=TWO_STEP_START,
                scene_seed=self.settings.scene_seed,
                decoder_seed=self.settings.decoder_seed,
            )
        )
        return arrays, {
            "what": "two consecutive training steps (static refinement, their counter 1 and 2) "
            f"with their PolyWarmupAdamW in between, started at global step {TWO_STEP_START} "
            "(the last warm-up step, then the first poly step): losses, pseudo-labels, learning "
            "rates, gradients and updated weights (full for `full_tensors`, per-tensor sums for "
            "all), every weight after step 1; their lr schedule at `lr_steps`",
            "scenes": f"synthetic_scene(seed={self.settings.scene_seed}, index=8..15, 320, 320)",
            "decoder": f"random_decoder_state(seed={self.settings.decoder_seed})",
        }

    def eval_scenes(self) -> List[SyntheticScene]:
        """The evaluation images: scenes 100.. at :data:`EVAL_SIZES`, 2 objects, ignore band 2."""
        return [
            synthetic_scene(self.settings.scene_seed, 100 + i, h, w, num_objects=2, ignore_band=2)
            for i, (h, w) in enumerate(EVAL_SIZES)
        ]

    def inference(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        """Their multi-scale + flip inference on the evaluation images."""
        harness = self.eval_harness()
        arrays: Dict[str, np.ndarray] = {
            "scales": np.asarray([1.0, 0.75]),
            "resize_long": np.asarray(512, dtype=np.int64),
        }
        for i, scene in enumerate(self.eval_scenes()):
            image = torch.from_numpy(np.ascontiguousarray(scene.image.transpose(2, 0, 1)))
            # per image, logits centred on that image's features (labels that vary over it)
            self.centre_classifier(harness, self._image_means[i])
            out = harness.msc_flip_inference(image, scene.mask, scales=(1.0, 0.75), resize_long=512)
            p = f"img{i}_"
            arrays.update({p + k: v for k, v in self.eval_decoder_arrays(harness).items()})
            arrays.update(
                {
                    p + "uint8": image.numpy(),
                    p + "mask": scene.mask,
                    p + "msc_logits": to_float32(out["msc_logits"]),
                    p + "single_logits": to_float32(out["single_logits"]),
                    p + "labels": out["labels"].numpy().astype(np.uint8),
                    p + "single_labels": out["single_labels"].numpy().astype(np.uint8),
                    p + "cams": out["cams"].numpy().astype(np.uint8),
                }
            )
        self.centre_classifier(harness, self._shared_mean)
        arrays["meta_json"] = np.array(
            self.meta(
                procedure="test_msc_flip_voc.py validate()",
                scales=[1.0, 0.75],
                resize_long=512,
                sizes=[list(s) for s in EVAL_SIZES],
                scene_seed=self.settings.scene_seed,
                decoder_seed=self.settings.decoder_seed,
            )
        )
        return arrays, {
            "what": "their multi-scale + flip inference (test_msc_flip_voc.py validate(): long "
            "side 512, scales 1.0 and 0.75, flip) on 3 synthetic images of sizes "
            f"{[f'{h}x{w}' for h, w in EVAL_SIZES]} (HxW): merged and single-scale logits, "
            "labels at the original size, and their script's pseudo-labels ('cams')",
            "scenes": f"synthetic_scene(seed={self.settings.scene_seed}, index=100..102, ignore_band=2)",
            "decoder": f"random_decoder_state(seed={self.settings.decoder_seed}), classifier bias "
            "centred on each image's features (stored: img<i>_classifier_bias)",
        }

    def val_pseudo(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        """Their ``validate()`` (validation-mode pseudo-labels) on the evaluation images."""
        harness = self.eval_harness()
        scenes = self.eval_scenes()
        images = [
            torch.from_numpy(np.ascontiguousarray(s.image.transpose(2, 0, 1))) for s in scenes
        ]
        out = harness.validate(images, [s.mask for s in scenes], trace=True)
        arrays: Dict[str, np.ndarray] = self.eval_decoder_arrays(harness)
        for name, score in (("seg", out["seg_score"]), ("cam", out["cam_score"])):
            arrays.update(score_arrays(name + "_score_", score))
        for i, (scene, image) in enumerate(zip(scenes, images)):
            rec = out["images"][i]
            p = f"img{i}_"
            arrays.update(
                {
                    p + "uint8": image.numpy(),
                    p + "mask": scene.mask,
                    p + "pseudo_label": out["pseudo_labels"][i].numpy().astype(np.uint8),
                    p + "seg_logits": to_float32(out["seg_logits"][i]),
                    p + "label_ids": rec["label_ids"].astype(np.int64),
                    p + "cams": to_float32(np.stack(rec["gradcam_cams"])),
                    p + "rfm_keep": rec["rfm_keep"].astype(bool),
                    p + "cams_refined_lowres": to_float32(rec["cams_refined_lowres"]),
                    p + "cams_refined": to_float32(rec["cams_refined"]),
                    p + "par_out": to_float32(rec["par_out"]),
                }
            )
        arrays["meta_json"] = np.array(
            self.meta(
                procedure="scripts/dist_clip_voc.py validate(), eval mode",
                sizes=[list(s) for s in EVAL_SIZES],
                scene_seed=self.settings.scene_seed,
                decoder_seed=self.settings.decoder_seed,
            )
        )
        return arrays, {
            "what": "their validate() (scripts/dist_clip_voc.py) on the 3 inference images at "
            "their original size, in eval mode: validation-mode pseudo-labels at the original "
            "size (RFM; the whole, uncropped image guides PAR), CAMs, refined CAMs, PAR output, "
            "decoder logits, and their seg/cam scores",
            "scenes": f"synthetic_scene(seed={self.settings.scene_seed}, index=100..102, ignore_band=2)",
            "decoder": f"random_decoder_state(seed={self.settings.decoder_seed}), classifier bias "
            "centred on the evaluation images (stored: classifier_bias)",
        }

    def evaluate(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        """Their ``utils/evaluate.py`` scores on :func:`evaluation_pairs`."""
        harness = self.eval_harness()  # their utils/evaluate.py only
        gts, preds = evaluation_pairs(self.settings.scene_seed)
        hist, score = harness.scores(gts, preds, 21)
        arrays: Dict[str, np.ndarray] = {"num_pairs": np.asarray(len(gts), dtype=np.int64)}
        for i, (g, p) in enumerate(zip(gts, preds)):
            arrays[f"gt{i}"] = g
            arrays[f"pred{i}"] = p
        arrays["hist"] = np.asarray(hist, dtype=np.float64)
        arrays.update(score_arrays("", score))
        arrays["meta_json"] = np.array(
            self.meta(
                procedure="utils/evaluate.py scores(), num_classes=21",
                scene_seed=self.settings.scene_seed,
            )
        )
        return arrays, {
            "what": "their utils/evaluate.py scores() on prediction/GT pairs of synthetic masks "
            "(GT with 255 boundary bands; predictions shifted, with swapped and spurious "
            "classes, one all-background): confusion matrix, pAcc, mAcc, mIoU, per-class IoU",
        }


def tensor_stats(tensors: Mapping[str, torch.Tensor], names: Sequence[str]) -> np.ndarray:
    """Per-tensor sums of ``tensors[name]`` for every name, in float64.

    Returns:
        np.ndarray: (N, 3) float64 per name: sum, sum of squares, sum of absolute values.
    """
    rows = []
    for name in names:
        v = tensors[name].double()
        rows.append([float(v.sum()), float((v * v).sum()), float(v.abs().sum())])
    return np.asarray(rows, dtype=np.float64)


def score_arrays(prefix: str, score: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """Their ``scores()`` result as float64 arrays ``prefix + pAcc / mAcc / miou / iou`` (per-class
    IoU in ascending class order)."""
    iou = score["iou"]
    return {
        prefix + "pAcc": np.asarray(score["pAcc"], dtype=np.float64),
        prefix + "mAcc": np.asarray(score["mAcc"], dtype=np.float64),
        prefix + "miou": np.asarray(score["miou"], dtype=np.float64),
        prefix + "iou": np.asarray([iou[c] for c in sorted(iou)], dtype=np.float64),
    }


def evaluation_pairs(seed: int) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Prediction/GT pairs (uint8 masks) that exercise every branch of a confusion-matrix mIoU:
    ignored GT pixels, shifted boundaries, a class swapped for another, a spurious class absent
    from the GT, and an all-background prediction."""
    rng = np.random.default_rng([int(seed), 7])
    gts, preds = [], []
    for i, (h, w) in enumerate(((97, 130), (160, 120), (64, 64), (121, 77))):
        scene = synthetic_scene(seed, 200 + i, h, w, ignore_band=1)
        gt = scene.mask
        pred = np.where(gt == 255, 0, gt).astype(np.uint8)
        pred = np.roll(
            pred, shift=(int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1)
        )
        if i == 1 and scene.labels:  # one object predicted as another class
            pred[pred == scene.labels[0] + 1] = (scene.labels[0] + 5) % 20 + 1
        if i in (0, 2):  # a blob of a class that is not in the GT
            absent = [c for c in range(1, 21) if c not in scene.labels]
            y, x = int(rng.integers(0, h - 12)), int(rng.integers(0, w - 12))
            pred[y : y + 12, x : x + 12] = absent[int(rng.integers(len(absent)))]
        if i == 3:
            pred[:] = 0
        gts.append(gt)
        preds.append(pred)
    return gts, preds


def reproduce_static(official_repo: str, fixture: str, clip_file: str) -> Dict[str, float]:
    """Replay the inputs of an existing static fixture (images, labels, decoder weights, Dropout2d
    mask) through the authors' code and log, per array, the largest difference to the file.

    Args:
        official_repo (str): their clone (or its ``WeCLIP/`` folder).
        fixture (str): an ``official_step_static.npz``.
        clip_file (str): the fixture's CLIP weights (``random_clip --qk-scale 4``).

    Returns:
        Dict[str, float]: array name -> max |replay - file| (arrays of another shape are left out).
    """
    ref = load_npz(fixture)
    init = {
        k[len("decoder_init.") :]: torch.from_numpy(v)
        for k, v in ref.items()
        if k.startswith("decoder_init.")
    }
    harness = OfficialWeCLIP(official_repo, clip_file, seed=1)
    own = harness.decoder_state()
    same_init = all(torch.equal(own[k], init[k]) for k in init) and len(init) == len(own)
    logger.info(f"their setup_seed(1) initialisation equals the file's decoder_init.*: {same_init}")
    harness.load_decoder_state(init)
    step = harness.train_step(
        torch.from_numpy(ref["input_images"]),
        torch.from_numpy(ref["cls_labels"]),
        iteration=1,
        dropout_keep=torch.from_numpy(ref["dropout_keep_step1"]),
        trace=True,
        optimize=False,
    )
    ours = {
        **step_arrays(harness, step, ref["input_images"], ref["cls_labels"]),
        **image_stage_arrays(step, 0, "_img0"),
    }
    diffs: Dict[str, float] = {}
    for key in sorted(ours):
        if key not in ref:
            continue
        a, b = np.asarray(ours[key], np.float64), np.asarray(ref[key], np.float64)
        if a.shape != b.shape:
            logger.info(f"{key}: shape {a.shape} vs file {b.shape}")
            continue
        diff = diffs[key] = float(np.abs(a - b).max()) if a.size else 0.0
        scale = float(np.abs(b).max()) if b.size else 0.0
        logger.info(f"{key:28s} max |replay - file| = {diff:.3e}   (file scale {scale:.3g})")
    return diffs
