"""Record what the authors' WeCLIP code computes, for the parity tests (``tests/parity``).

Runs the authors' code from your clone of https://github.com/zbf1991/WeCLIP (commit 0f47db4),
imported at run time through :mod:`weclip.parity.official`, on CPU in fp32, with random CLIP
ViT-B/16 weights in OpenAI's layout (:mod:`weclip.parity.random_clip`, ``--qk-scale 4``) and
synthetic scenes it draws itself (:mod:`weclip.parity.synthetic`)::

    git clone https://github.com/zbf1991/WeCLIP /tmp/WeCLIP-official
    git -C /tmp/WeCLIP-official checkout 0f47db4
    python tools/parity/record_official.py --official-repo /tmp/WeCLIP-official
    python -m pytest tests/parity

It writes into ``--out`` (default ``work_dirs/parity_fixtures``, where the tests look) the files
of :data:`weclip.parity.fixtures.FIXTURE_FILES` and ``manifest.json`` (``docs/parity.md`` lists
their keys). Recording is deterministic: the same command on the same machine writes the same
bytes (one torch thread, seeded everything, fixed zip metadata). About 5 minutes on one CPU core;
the CLIP weights (~300 MB) go to a temporary folder and are deleted afterwards.

WeCLIP+ (the ``WeCLIP+/`` folder of the same clone, docs/parity.md "WeCLIP+"): ``--model weclip_plus``
with a local clone of https://github.com/facebookresearch/dinov2 (its hub code builds their DINOv2,
on random ViT-S/14 weights of :mod:`weclip.parity.random_dino`) records the ``plus_*`` stages::

    git clone https://github.com/facebookresearch/dinov2 /tmp/dinov2
    python tools/parity/record_official.py --model weclip_plus --official-repo /tmp/WeCLIP-official \
        --dinov2-repo /tmp/dinov2

``--reproduce-static FILE`` instead replays the inputs of an existing static fixture (its images,
labels, decoder weights and Dropout2d mask) through the authors' code and prints, per array, the
largest difference to what the file holds.
"""

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(TOOLS))
sys.path.insert(0, REPO)  # the repository, for `weclip`

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from weclip.parity.fixtures import FIXTURE_FILES, MANIFEST, load_npz, save_npz, write_json  # noqa: E402
from weclip.parity.official import (  # noqa: E402
    OFFICIAL_COMMIT,
    OfficialWeCLIP,
    find_official_root,
    official_code_sha256,
)
from weclip.parity.official_plus import (  # noqa: E402
    OfficialWeCLIPPlus,
    find_dinov2_root,
    find_official_plus_root,
)
from weclip.parity.random_clip import (  # noqa: E402
    QK4_CONTENT_SHA256_PREFIX,
    content_sha256,
    write_random_clip,
)
from weclip.parity.random_decoder import random_decoder_state, state_sha256  # noqa: E402
from weclip.parity.random_dino import (  # noqa: E402
    DINO_CONTENT_SHA256_PREFIX,
    DINO_FILE_NAME,
    write_random_dino,
)
from weclip.parity.synthetic import scene_batch, synthetic_scene  # noqa: E402

DEFAULT_OUT = os.path.join(REPO, "work_dirs", "parity_fixtures")
STAGES = ("static", "rfm", "two_steps", "inference", "val_pseudo", "evaluate")
#: WeCLIP+ stages (``--model weclip_plus``): stage -> (first scene index, their 0-based n_iter).
#: n_iter 50: the first poly step of their schedule, before self-training; 18001: the first step
#: of their loop's ``if n_iter > 18000`` self-training branch (RFM+ is always on).
PLUS_STEPS: Dict[str, Tuple[int, int]] = {
    "plus_step": (300, 50),
    "plus_self_training": (304, 18001),
}
PLUS_STAGES = tuple(PLUS_STEPS)
MODELS = {"weclip": STAGES, "weclip_plus": PLUS_STAGES}
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

# their datasets/transforms.py normalize_img constants (ImageNet mean/std on 0-255 values)
_MEAN = (123.675, 116.28, 103.53)
_STD = (58.395, 57.12, 57.375)


def official_normalize(images: np.ndarray) -> np.ndarray:
    """Their ``normalize_img`` arithmetic on (B, 3, H, W) uint8: float64 ``(x - mean) / std``,
    stored as float32 (checked bit for bit against their function at record time)."""
    x = images.astype(np.float64)
    mean = np.asarray(_MEAN)[None, :, None, None]
    std = np.asarray(_STD)[None, :, None, None]
    return ((x - mean) / std).astype(np.float32)


def log(message: str) -> None:
    print(f"[record] {message}", flush=True)


def _f32(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _pad_boxes(boxes: Sequence[np.ndarray]) -> np.ndarray:
    """(K, max(10, n_max), 4) int64, rows of -1 after each class's boxes."""
    rows = max([10] + [len(b) for b in boxes])
    out = np.full((len(boxes), rows, 4), -1, dtype=np.int64)
    for k, b in enumerate(boxes):
        out[k, : len(b)] = b
    return out


def _image_stage_arrays(step: Mapping[str, Any], b: int, suffix: str) -> Dict[str, np.ndarray]:
    """The per-image keys of the static fixture for image ``b`` (see docs/parity.md)."""
    rec = step["images"][b]
    k = len(rec["label_ids"])
    return {
        f"clip_block_out{suffix}": _f32(step["clip_block_out"][:, :, b]),
        f"clip_attn{suffix}": np.concatenate(
            [_f32(step["clip_attn"][:, b]), _f32(rec["attn_last"][0])[None]]
        ),
        f"gradcam_probs{suffix}": _f32(np.stack(rec["gradcam_probs"])),
        f"gradcam_target{suffix}": np.arange(k, dtype=np.int64),
        f"cams{suffix}": _f32(np.stack(rec["gradcam_cams"])),
        f"label_ids{suffix}": rec["label_ids"].astype(np.int64),
        f"boxes{suffix}": _pad_boxes(rec["boxes"]),
        f"trans_mat{suffix}": _f32(rec["trans_mat"]),
        f"cams_refined_lowres{suffix}": _f32(rec["cams_refined_lowres"]),
        f"cams_refined{suffix}": _f32(rec["cams_refined"]),
        f"par_in{suffix}": _f32(rec["par_in"]),
        f"par_out{suffix}": _f32(rec["par_out"]),
        f"par_keys{suffix}": rec["par_keys"].astype(np.int64),
        f"gradcam_acts{suffix}": _f32(np.stack(rec["gradcam_acts"])),
        f"gradcam_grads{suffix}": _f32(np.stack(rec["gradcam_grads"])),
    }


def _pair_arrays(step: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """Initial and refined CAMs of every (image, present class) pair of the batch, image-major,
    class ids ascending (the order of our ``batch_index`` / ``class_index``)."""
    cams, initial, batch, classes = [], [], [], []
    for b, rec in enumerate(step["images"]):
        cams.append(_f32(rec["cams_refined"]))
        initial.append(_f32(np.stack(rec["gradcam_cams"])))
        batch += [b] * len(rec["label_ids"])
        classes += rec["label_ids"].tolist()
    return {
        "cams_all": np.concatenate(initial),
        "cams_refined_all": np.concatenate(cams),
        "pair_batch_index": np.asarray(batch, dtype=np.int64),
        "pair_class_index": np.asarray(classes, dtype=np.int64),
    }


def _step_arrays(
    harness: OfficialWeCLIP, step: Mapping[str, Any], inputs: np.ndarray, labels: np.ndarray
) -> Dict[str, np.ndarray]:
    """The batch-level keys of a training-step fixture (the static fixture's layout)."""
    return {
        "input_images": inputs,
        "cls_labels": labels.astype(np.float32),
        "text_fg": _f32(harness.model.fg_text_features),
        "text_bg": _f32(harness.model.bg_text_features),
        "pseudo_label": step["pseudo_labels"].numpy().astype(np.uint8),
        "fuse_pre_dropout": _f32(step["fuse_pre_dropout"]),
        "fused_F": _f32(step["fused"]),
        "dropout_keep_step1": step["dropout_keep"].numpy().astype(bool),
        "attn_pred": _f32(step["attn_pred"]),
        "seg_logits": _f32(step["seg_logits"]),
        "aff_label": step["aff_label"].numpy().astype(np.uint8),
        "seg_loss": _f32(step["seg_loss"]),
        "aff_loss": _f32(step["aff_loss"]),
        "loss": _f32(step["loss"]),
        "aff_pos_count": np.asarray(int(step["aff_pos_count"]), dtype=np.int64),
        "aff_neg_count": np.asarray(int(step["aff_neg_count"]), dtype=np.int64),
        "require_seg_trans": np.asarray(bool(step["rfm"])),
    }


class Recorder:
    """Runs the stages; every stage returns (arrays, description for the manifest)."""

    def __init__(self, args: argparse.Namespace, clip_file: str, clip_hash: str) -> None:
        self.args = args
        self.clip_file = clip_file
        self.clip_hash = clip_hash
        self.versions = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "cv2": __import__("cv2").__version__,
        }
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
        state = harness.decoder_state()
        return {
            "decoder_seed": np.asarray(self.args.decoder_seed, dtype=np.int64),
            "classifier_bias": _f32(state["decoder.linear_pred.bias"]),
            "decoder_sha256": np.array(state_sha256(state)),
        }

    def harness(self, *, decoder: bool, **kwargs: Any) -> OfficialWeCLIP:
        model = OfficialWeCLIP(self.args.official_repo, self.clip_file, seed=1, **kwargs)
        if decoder:
            model.load_decoder_state(
                random_decoder_state(model.decoder_shapes(), self.args.decoder_seed)
            )
        self.patches = model.patches
        return model

    def meta(self, **extra: Any) -> str:
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
        images, labels, _ = scene_batch(self.args.scene_seed, start, 4, (320, 320))
        return images, labels, official_normalize(images)

    def check_normalisation(self, harness: OfficialWeCLIP, images: np.ndarray) -> None:
        theirs = harness.normalize(torch.from_numpy(images)).numpy()
        if not np.array_equal(theirs, official_normalize(images)):
            raise RuntimeError("official_normalize differs from their normalize_img")

    # ----------------------------------------------------------------------------------------
    def static(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        harness = self.harness(decoder=False)  # their own initialisation after setup_seed(1)
        images, labels, inputs = self.batch(0)
        self.check_normalisation(harness, images)
        init = harness.decoder_state()
        step = harness.train_step(
            inputs_t(inputs), labels_t(labels), iteration=1, trace=True, optimize=False
        )
        arrays: Dict[str, np.ndarray] = {
            "img_names": np.array([f"scene_{i:03d}" for i in range(4)]),
            **_step_arrays(harness, step, inputs, labels),
            **_image_stage_arrays(step, 0, "_img0"),
            **_pair_arrays(step),
        }
        arrays.update({f"decoder_init.{k}": v.numpy() for k, v in init.items()})
        arrays["meta_json"] = np.array(
            self.meta(
                rfm="static",
                require_seg_trans=False,
                seed=1,
                batch=4,
                scene_seed=self.args.scene_seed,
            )
        )
        return arrays, {
            "what": "one training step of their code, static refinement (their counter = 1): "
            "forward, pseudo-labels and losses of a batch of 4 synthetic 320x320 scenes; "
            "stage values of img0; their own decoder initialisation after setup_seed(1)",
            "scenes": f"synthetic_scene(seed={self.args.scene_seed}, index=0..3, 320, 320)",
        }

    def rfm(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        harness = self.harness(decoder=True)
        images, labels, inputs = self.batch(4)
        step = harness.train_step(
            inputs_t(inputs), labels_t(labels), iteration=15001, trace=True, optimize=False
        )
        assert step["rfm"], "their counter 15001 must select the RFM"
        recs = step["images"]
        arrays: Dict[str, np.ndarray] = {
            "img_names": np.array([f"scene_{i:03d}" for i in range(4, 8)]),
            "images_uint8": images,
            **_step_arrays(harness, step, inputs, labels),
            **_image_stage_arrays(step, 0, "_img0"),
            **_pair_arrays(step),
            "rfm_diff": np.stack([_f32(r["rfm_diff"]) for r in recs]),
            "rfm_diff_mean": np.stack([_f32(r["rfm_diff_mean"]) for r in recs]),
            "rfm_keep": np.stack([r["rfm_keep"] for r in recs]).astype(bool),
            "rfm_affinity_img0": _f32(recs[0]["affinity"]),
            "trans_mat": np.stack([_f32(r["trans_mat"]) for r in recs]),
            "decoder_seed": np.asarray(self.args.decoder_seed, dtype=np.int64),
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
                scene_seed=self.args.scene_seed,
                decoder_seed=self.args.decoder_seed,
            )
        )
        return arrays, {
            "what": "one training step with the RFM (their counter = 15001 > 15000): forward, "
            "RFM layer choice and affinity, transition matrices, refined CAMs, pseudo-labels and "
            "losses of 4 synthetic 320x320 scenes; stage values of img0",
            "scenes": f"synthetic_scene(seed={self.args.scene_seed}, index=4..7, 320, 320)",
            "decoder": f"random_decoder_state(seed={self.args.decoder_seed})",
        }

    def two_steps(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        harness = self.harness(decoder=True, optimizer_start_step=TWO_STEP_START)
        names = list(harness.decoder_shapes())
        arrays: Dict[str, np.ndarray] = {
            "decoder_seed": np.asarray(self.args.decoder_seed, dtype=np.int64),
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
                inputs_t(inputs), labels_t(labels), iteration=s, return_grads=True, trace=True
            )
            weights = harness.decoder_state()
            p = f"step{s}_"
            arrays.update(
                {
                    p + "images_uint8": images,
                    p + "cls_labels": labels,
                    p + "dropout_keep": step["dropout_keep"].numpy().astype(bool),
                    p + "pseudo_label": step["pseudo_labels"].numpy().astype(np.uint8),
                    p + "seg_logits": _f32(step["seg_logits"]),
                    p + "attn_pred": _f32(step["attn_pred"]),
                    p + "aff_label": step["aff_label"].numpy().astype(np.uint8),
                    p + "aff_pos_count": np.asarray(int(step["aff_pos_count"]), dtype=np.int64),
                    p + "aff_neg_count": np.asarray(int(step["aff_neg_count"]), dtype=np.int64),
                    p + "seg_loss": _f32(step["seg_loss"]),
                    p + "aff_loss": _f32(step["aff_loss"]),
                    p + "loss": _f32(step["loss"]),
                    p + "lr": np.asarray(step["lr"], dtype=np.float64),
                    p + "grad_stats": _stats(step["grads"], names),
                    p + "weight_stats": _stats(weights, names),
                    **{p + k: v for k, v in _pair_arrays(step).items()},
                }
            )
            for name in FULL_TENSORS:
                arrays[p + "grad." + name] = _f32(step["grads"][name])
                arrays[p + "weight." + name] = _f32(weights[name])
            if s == 1:
                for name in names:  # every updated weight after step 1 feeds our step 2
                    arrays["step1_weight_all." + name] = _f32(weights[name])
        arrays["meta_json"] = np.array(
            self.meta(
                rfm="static",
                iterations=[1, 2],
                optimizer_start_step=TWO_STEP_START,
                scene_seed=self.args.scene_seed,
                decoder_seed=self.args.decoder_seed,
            )
        )
        return arrays, {
            "what": "two consecutive training steps (static refinement, their counter 1 and 2) "
            f"with their PolyWarmupAdamW in between, started at global step {TWO_STEP_START} "
            "(the last warm-up step, then the first poly step): losses, pseudo-labels, learning "
            "rates, gradients and updated weights (full for `full_tensors`, per-tensor sums for "
            "all), every weight after step 1; their lr schedule at `lr_steps`",
            "scenes": f"synthetic_scene(seed={self.args.scene_seed}, index=8..15, 320, 320)",
            "decoder": f"random_decoder_state(seed={self.args.decoder_seed})",
        }

    def eval_scenes(self) -> List[Any]:
        return [
            synthetic_scene(self.args.scene_seed, 100 + i, h, w, num_objects=2, ignore_band=2)
            for i, (h, w) in enumerate(EVAL_SIZES)
        ]

    def inference(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
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
                    p + "msc_logits": _f32(out["msc_logits"]),
                    p + "single_logits": _f32(out["single_logits"]),
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
                scene_seed=self.args.scene_seed,
                decoder_seed=self.args.decoder_seed,
            )
        )
        return arrays, {
            "what": "their multi-scale + flip inference (test_msc_flip_voc.py validate(): long "
            "side 512, scales 1.0 and 0.75, flip) on 3 synthetic images of sizes "
            f"{[f'{h}x{w}' for h, w in EVAL_SIZES]} (HxW): merged and single-scale logits, "
            "labels at the original size, and their script's pseudo-labels ('cams')",
            "scenes": f"synthetic_scene(seed={self.args.scene_seed}, index=100..102, ignore_band=2)",
            "decoder": f"random_decoder_state(seed={self.args.decoder_seed}), classifier bias "
            "centred on each image's features (stored: img<i>_classifier_bias)",
        }

    def val_pseudo(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        harness = self.eval_harness()
        scenes = self.eval_scenes()
        images = [
            torch.from_numpy(np.ascontiguousarray(s.image.transpose(2, 0, 1))) for s in scenes
        ]
        out = harness.validate(images, [s.mask for s in scenes], trace=True)
        arrays: Dict[str, np.ndarray] = self.eval_decoder_arrays(harness)
        for name, score in (("seg", out["seg_score"]), ("cam", out["cam_score"])):
            arrays.update(_score_arrays(name + "_score_", score))
        for i, (scene, image) in enumerate(zip(scenes, images)):
            rec = out["images"][i]
            p = f"img{i}_"
            arrays.update(
                {
                    p + "uint8": image.numpy(),
                    p + "mask": scene.mask,
                    p + "pseudo_label": out["pseudo_labels"][i].numpy().astype(np.uint8),
                    p + "seg_logits": _f32(out["seg_logits"][i]),
                    p + "label_ids": rec["label_ids"].astype(np.int64),
                    p + "cams": _f32(np.stack(rec["gradcam_cams"])),
                    p + "rfm_keep": rec["rfm_keep"].astype(bool),
                    p + "cams_refined_lowres": _f32(rec["cams_refined_lowres"]),
                    p + "cams_refined": _f32(rec["cams_refined"]),
                    p + "par_out": _f32(rec["par_out"]),
                }
            )
        arrays["meta_json"] = np.array(
            self.meta(
                procedure="scripts/dist_clip_voc.py validate(), eval mode",
                sizes=[list(s) for s in EVAL_SIZES],
                scene_seed=self.args.scene_seed,
                decoder_seed=self.args.decoder_seed,
            )
        )
        return arrays, {
            "what": "their validate() (scripts/dist_clip_voc.py) on the 3 inference images at "
            "their original size, in eval mode: validation-mode pseudo-labels at the original "
            "size (RFM; the whole, uncropped image guides PAR), CAMs, refined CAMs, PAR output, "
            "decoder logits, and their seg/cam scores",
            "scenes": f"synthetic_scene(seed={self.args.scene_seed}, index=100..102, ignore_band=2)",
            "decoder": f"random_decoder_state(seed={self.args.decoder_seed}), classifier bias "
            "centred on the evaluation images (stored: classifier_bias)",
        }

    def evaluate(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        harness = self.eval_harness()  # their utils/evaluate.py only
        gts, preds = evaluation_pairs(self.args.scene_seed)
        hist, score = harness.scores(gts, preds, 21)
        arrays: Dict[str, np.ndarray] = {"num_pairs": np.asarray(len(gts), dtype=np.int64)}
        for i, (g, p) in enumerate(zip(gts, preds)):
            arrays[f"gt{i}"] = g
            arrays[f"pred{i}"] = p
        arrays["hist"] = np.asarray(hist, dtype=np.float64)
        arrays.update(_score_arrays("", score))
        arrays["meta_json"] = np.array(
            self.meta(
                procedure="utils/evaluate.py scores(), num_classes=21",
                scene_seed=self.args.scene_seed,
            )
        )
        return arrays, {
            "what": "their utils/evaluate.py scores() on prediction/GT pairs of synthetic masks "
            "(GT with 255 boundary bands; predictions shifted, with swapped and spurious "
            "classes, one all-background): confusion matrix, pAcc, mAcc, mIoU, per-class IoU",
        }


def inputs_t(inputs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(inputs)


def labels_t(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(labels)


def _stats(tensors: Mapping[str, torch.Tensor], names: Sequence[str]) -> np.ndarray:
    """(N, 3) float64 per tensor: sum, sum of squares, sum of absolute values."""
    rows = []
    for name in names:
        v = tensors[name].double()
        rows.append([float(v.sum()), float((v * v).sum()), float(v.abs().sum())])
    return np.asarray(rows, dtype=np.float64)


def _score_arrays(prefix: str, score: Mapping[str, Any]) -> Dict[str, np.ndarray]:
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


def reproduce_static(args: argparse.Namespace, clip_file: str) -> None:
    """Replay the inputs of an existing static fixture and print the differences per array."""
    ref = load_npz(args.reproduce_static)
    init = {
        k[len("decoder_init.") :]: torch.from_numpy(v)
        for k, v in ref.items()
        if k.startswith("decoder_init.")
    }
    harness = OfficialWeCLIP(args.official_repo, clip_file, seed=1)
    own = harness.decoder_state()
    same_init = all(torch.equal(own[k], init[k]) for k in init) and len(init) == len(own)
    log(f"their setup_seed(1) initialisation equals the file's decoder_init.*: {same_init}")
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
        **_step_arrays(harness, step, ref["input_images"], ref["cls_labels"]),
        **_image_stage_arrays(step, 0, "_img0"),
    }
    for key in sorted(ours):
        if key not in ref:
            continue
        a, b = np.asarray(ours[key], np.float64), np.asarray(ref[key], np.float64)
        if a.shape != b.shape:
            log(f"{key}: shape {a.shape} vs file {b.shape}")
            continue
        diff = float(np.abs(a - b).max()) if a.size else 0.0
        scale = float(np.abs(b).max()) if b.size else 0.0
        log(f"{key:28s} max |replay - file| = {diff:.3e}   (file scale {scale:.3g})")


def _git_commit(root: str) -> Optional[str]:
    try:
        out = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _describe(arrays: Mapping[str, np.ndarray]) -> Dict[str, str]:
    return {
        k: f"{v.dtype}{list(v.shape)}"
        for k, v in arrays.items()
        if not k.startswith(("decoder_init.", "step1_weight_all."))
    }


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--official-repo",
        required=True,
        help="your clone of zbf1991/WeCLIP (or its WeCLIP/ folder; WeCLIP+/ with --model "
        "weclip_plus)",
    )
    p.add_argument(
        "--model",
        choices=sorted(MODELS),
        default="weclip",
        help="whose fixtures to record: weclip (WeCLIP/, default) or weclip_plus (WeCLIP+/)",
    )
    p.add_argument(
        "--dinov2-repo",
        default=None,
        help="weclip_plus: a local clone of facebookresearch/dinov2 (their torch.hub.load of "
        "DINOv2 is redirected to it)",
    )
    p.add_argument(
        "--dino-weights",
        default=None,
        help=f"weclip_plus: reuse a file written by `python -m weclip.parity.random_dino "
        f"DIR/{DINO_FILE_NAME}` (default: write one to a temporary folder)",
    )
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument(
        "--clip-weights",
        default=None,
        help="reuse a file written by `python -m weclip.parity.random_clip OUT "
        "--qk-scale 4` (default: write one to a temporary folder)",
    )
    p.add_argument(
        "--only",
        default=None,
        help=f"comma-separated stages to record (default all of the model's: weclip "
        f"{','.join(STAGES)}; weclip_plus {','.join(PLUS_STAGES)})",
    )
    p.add_argument("--scene-seed", type=int, default=0, help="seed of the synthetic scenes")
    p.add_argument(
        "--decoder-seed",
        type=int,
        default=0,
        help="seed of the decoder weights of every fixture but the static one",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: the recording is bit-reproducible)",
    )
    p.add_argument(
        "--reproduce-static",
        default=None,
        metavar="FILE",
        help="replay an existing static fixture's inputs and print the differences "
        "(writes nothing)",
    )
    args = p.parse_args(argv)
    known = MODELS[args.model]
    if args.only is None:
        args.only = ",".join(known)
    unknown = sorted(set(args.only.split(",")) - set(known))
    if unknown:
        p.error(f"--only: unknown {args.model} stage(s) {unknown}; known: {', '.join(known)}")
    if args.model == "weclip_plus":
        if not args.dinov2_repo:
            p.error("--model weclip_plus needs --dinov2-repo (a clone of facebookresearch/dinov2)")
        if args.reproduce_static:
            p.error("--reproduce-static replays a WeCLIP fixture (--model weclip)")
    return args


class PlusRecorder:
    """Records the WeCLIP+ stages (:data:`PLUS_STEPS`); every stage returns (arrays, manifest
    description). One fresh harness per stage: each fixture starts from the seeded decoder and a
    fresh optimizer."""

    def __init__(
        self, args: argparse.Namespace, clip_file: str, clip_hash: str, dino_file: str
    ) -> None:
        self.args = args
        self.clip_file = clip_file
        self.clip_hash = clip_hash
        self.dino_file = dino_file
        self.patches: List[str] = []

    def harness(self) -> OfficialWeCLIPPlus:
        harness = OfficialWeCLIPPlus(
            self.args.official_repo, self.clip_file, self.args.dinov2_repo, self.dino_file, seed=1
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
        state = random_decoder_state(harness.decoder_shapes(), self.args.decoder_seed)
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
            log(f"classifier scale {scale:g}: confident {confident:.1%}, bg and fg: {both}")
            if confident >= PLUS_MIN_CONFIDENT and both:
                break
        else:
            raise RuntimeError("no classifier scale gives a confident, mixed prediction")
        state["decoder.linear_pred.weight"] = (weight * scale).float()[:, :, None, None]
        state["decoder.linear_pred.bias"] = (bias * scale).float()
        harness.load_decoder_state(state)
        return state, float(scale)

    def meta(self, **extra: Any) -> str:
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
        first, n_iter = PLUS_STEPS[name]
        harness = self.harness()
        images, labels, _ = scene_batch(self.args.scene_seed, first, 4, (320, 320))
        inputs = official_normalize(images)
        if not np.array_equal(harness.normalize(torch.from_numpy(images)).numpy(), inputs):
            raise RuntimeError("official_normalize differs from their normalize_img")
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
        log(f"{name}: n_iter {n_iter}, self-training replaced {replaced:.2%} of the pixels")
        weights = harness.decoder_state()
        recs = step["images"]
        rec0 = recs[0]
        blocks, attns = step["clip_block_out"], step["clip_attn"]  # (11, L, B, D), (11, B, L, L)
        arrays: Dict[str, np.ndarray] = {
            "img_names": np.array([f"scene_{first + i:03d}" for i in range(4)]),
            "images_uint8": images,
            "cls_labels": labels.astype(np.float32),
            "text_fg": _f32(harness.model.fg_text_features),
            "text_bg": _f32(harness.model.bg_text_features),
            "decoder_seed": np.asarray(self.args.decoder_seed, dtype=np.int64),
            "classifier_scale": np.asarray(scale, dtype=np.float64),
            "classifier_weight": _f32(state["decoder.linear_pred.weight"]),
            "classifier_bias": _f32(state["decoder.linear_pred.bias"]),
            "decoder_sha256": np.array(state_sha256(state)),
            "param_names": np.array(names),
            "full_tensors": np.array(PLUS_FULL_TENSORS),
            "n_iter": np.asarray(n_iter, dtype=np.int64),
            "self_training": np.asarray(bool(step["self_training"])),
            "lr": np.asarray(step["lr"], dtype=np.float64),
            "dino_input_size": np.asarray(step["dino_input_size"], dtype=np.int64),
            "dino_tokens": _f32(step["dino_tokens"]),
            "clip_block10": _f32(blocks[-1].transpose(1, 0, 2)),
            "clip_block9_img0": _f32(blocks[-2][:, 0]),
            "clip_attn_last6_img0": np.concatenate(
                [_f32(attns[-5:, 0]), _f32(rec0["attn_last"][0])[None]]
            ),
            "clip_pre_dropout": _f32(step["clip_pre_dropout"]),
            "clip_fused": _f32(step["clip_fused"]),
            "clip_keep": step["clip_keep"].numpy().astype(bool),
            "dino_pre_dropout": _f32(step["dino_pre_dropout"]),
            "dino_fused": _f32(step["dino_fused"]),
            "dino_keep": step["dino_keep"].numpy().astype(bool),
            "dino_fused_grid": _f32(step["decoder_input_dino"]),
            "seg_clip": _f32(step["seg_clip"]),
            "seg_dino": _f32(step["seg_dino"]),
            "attn_pred": _f32(step["attn_pred"]),
            "gate_probs": np.stack([_f32(r["gate_probs"]) for r in recs]),
            "rfm_diff": np.stack([_f32(r["rfm_diff"]) for r in recs]),
            "rfm_diff_mean": np.stack([_f32(r["rfm_diff_mean"]) for r in recs]),
            "rfm_keep": np.stack([r["rfm_keep"] for r in recs]).astype(bool),
            "rfm_affinity_img0": _f32(rec0["affinity"]),
            "trans_mat": np.stack([_f32(r["trans_mat"]) for r in recs]),
            **_pair_arrays(step),
            "cams_refined_lowres_all": np.concatenate(
                [_f32(r["cams_refined_lowres"]) for r in recs]
            ),
            "label_ids_img0": rec0["label_ids"].astype(np.int64),
            "gradcam_probs_img0": _f32(np.stack(rec0["gradcam_probs"])),
            "gradcam_target_img0": np.arange(len(rec0["label_ids"]), dtype=np.int64),
            "cams_img0": _f32(np.stack(rec0["gradcam_cams"])),
            "gradcam_acts_img0": _f32(np.stack(rec0["gradcam_acts"])),
            "gradcam_grads_img0": _f32(np.stack(rec0["gradcam_grads"])),
            "cams_refined_lowres_img0": _f32(rec0["cams_refined_lowres"]),
            "cams_refined_img0": _f32(rec0["cams_refined"]),
            "par_in_img0": _f32(rec0["par_in"]),
            "par_out_img0": _f32(rec0["par_out"]),
            "par_keys_img0": rec0["par_keys"].astype(np.int64),
            "pseudo_label": step["pseudo_labels"].numpy().astype(np.uint8),
            "train_label": step["train_labels"].numpy().astype(np.uint8),
            "pred_max": _f32(step["pred_max"]),
            "pred_label_seg": step["pred_label_seg"].numpy().astype(np.uint8),
            "pred_label_clip": step["pred_label_clip"].numpy().astype(np.uint8),
            "pred_label_dino": step["pred_label_dino"].numpy().astype(np.uint8),
            "aff_label": step["aff_label"].numpy().astype(np.uint8),
            **{k: _f32(step[k]) for k in losses},
            "aff_pos_count": np.asarray(int(step["aff_pos_count"]), dtype=np.int64),
            "aff_neg_count": np.asarray(int(step["aff_neg_count"]), dtype=np.int64),
            "grad_stats": _stats(step["grads"], names),
            "weight_stats": _stats(weights, names),
        }
        for tensor in PLUS_FULL_TENSORS:
            arrays["grad." + tensor] = _f32(step["grads"][tensor])
        for tensor in names:  # every weight after their AdamW step
            arrays["weight." + tensor] = _f32(weights[tensor])
        arrays["meta_json"] = np.array(
            self.meta(
                n_iter=n_iter,
                self_training=bool(step["self_training"]),
                batch=4,
                scene_seed=self.args.scene_seed,
                decoder_seed=self.args.decoder_seed,
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
            "scenes": f"synthetic_scene(seed={self.args.scene_seed}, index={first}..{first + 3}, "
            "320, 320)",
            "decoder": f"random_decoder_state(seed={self.args.decoder_seed}), classifier centred "
            f"on the batch and scaled by {scale:g} (stored: classifier_weight, classifier_bias)",
            "patches": self.patches,
        }

    def plus_step(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        return self.stage("plus_step")

    def plus_self_training(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        return self.stage("plus_self_training")


def _weights(
    args: argparse.Namespace, tmp: str, start: float
) -> Tuple[str, str, Optional[str], Optional[str]]:
    """The CLIP (and for WeCLIP+ the DINOv2) weights files and their content hashes."""
    if args.clip_weights:
        clip_file = args.clip_weights
        clip_hash = content_sha256(torch.load(clip_file, map_location="cpu", weights_only=True))
    else:
        clip_file = os.path.join(tmp, "clip_qk4.pt")
        clip_hash = write_random_clip(clip_file, qk_scale=4.0)
    if not clip_hash.startswith(QK4_CONTENT_SHA256_PREFIX):
        raise ValueError(
            f"{clip_file}: content sha256 {clip_hash[:16]} is not the fixtures' "
            f"{QK4_CONTENT_SHA256_PREFIX} (not written by random_clip --qk-scale 4?)"
        )
    log(
        f"CLIP weights {clip_file} (content sha256 {clip_hash[:16]}): "
        f"{time.perf_counter() - start:.1f} s"
    )
    if args.model != "weclip_plus":
        return clip_file, clip_hash, None, None
    if args.dino_weights:
        dino_file = args.dino_weights
        dino_hash = content_sha256(torch.load(dino_file, map_location="cpu", weights_only=True))
    else:
        dino_file = os.path.join(tmp, DINO_FILE_NAME)
        dino_hash = write_random_dino(dino_file)
    if not dino_hash.startswith(DINO_CONTENT_SHA256_PREFIX):
        raise ValueError(
            f"{dino_file}: content sha256 {dino_hash[:16]} is not the fixtures' "
            f"{DINO_CONTENT_SHA256_PREFIX} (not written by weclip.parity.random_dino?)"
        )
    log(f"DINOv2 weights {dino_file} (content sha256 {dino_hash[:16]})")
    return clip_file, clip_hash, dino_file, dino_hash


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    plus = args.model == "weclip_plus"
    root = (
        find_official_plus_root(args.official_repo)
        if plus
        else find_official_root(args.official_repo)
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="weclip_clip_") as tmp:
        clip_file, clip_hash, dino_file, dino_hash = _weights(args, tmp, start)
        if args.reproduce_static:
            reproduce_static(args, clip_file)
            return
        if plus:
            recorder: Any = PlusRecorder(args, clip_file, clip_hash, dino_file)
        else:
            recorder = Recorder(args, clip_file, clip_hash)
        os.makedirs(args.out, exist_ok=True)
        manifest_path = os.path.join(args.out, MANIFEST)
        previous: Dict[str, Any] = {}
        if os.path.isfile(manifest_path):  # keep the entries of stages not re-recorded
            with open(manifest_path) as f:
                previous = json.load(f)
        files: Dict[str, Any] = previous.get("files", {})
        for stage in [s for s in MODELS[args.model] if s in args.only.split(",")]:
            t0 = time.perf_counter()
            arrays, info = getattr(recorder, stage)()
            path = os.path.join(args.out, FIXTURE_FILES[stage])
            save_npz(path, arrays)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            size = os.path.getsize(path)
            files[FIXTURE_FILES[stage]] = {
                **info,
                "sha256": digest,
                "bytes": size,
                "arrays": _describe(arrays),
            }
            log(f"{stage}: {path} ({size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
        versions = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "cv2": __import__("cv2").__version__,
        }
        official_code = {
            "repository": "https://github.com/zbf1991/WeCLIP",
            "expected_commit": OFFICIAL_COMMIT,
            "git_head": _git_commit(root),
            "python_sources_sha256": official_code_sha256(root),
        }
        manifest = OrderedDict(previous)
        if plus:
            hub_root = find_dinov2_root(args.dinov2_repo)
            manifest["weclip_plus"] = {
                "official_code": {**official_code, "folder": "WeCLIP+"},
                "dinov2_hub_code": {
                    "repository": "https://github.com/facebookresearch/dinov2",
                    "git_head": _git_commit(hub_root),
                    "python_sources_sha256": official_code_sha256(hub_root),
                },
                "patches": recorder.patches,
                "clip_weights": {
                    "generator": "weclip.parity.random_clip (qk_scale=4)",
                    "content_sha256": clip_hash,
                },
                "dino_weights": {
                    "generator": f"weclip.parity.random_dino ({DINO_FILE_NAME})",
                    "content_sha256": dino_hash,
                },
                "seeds": {
                    "scene_seed": args.scene_seed,
                    "decoder_seed": args.decoder_seed,
                    "their_setup_seed": 1,
                },
            }
        else:
            manifest.update(
                official_code=official_code,
                patches=recorder.patches,
                clip_weights={
                    "generator": "weclip.parity.random_clip (qk_scale=4)",
                    "content_sha256": clip_hash,
                },
                seeds={
                    "scene_seed": args.scene_seed,
                    "decoder_seed": args.decoder_seed,
                    "their_setup_seed": 1,
                },
            )
        manifest.update(versions=versions, threads=args.threads, files=files)
        write_json(manifest_path, manifest)
    log(f"done in {time.perf_counter() - start:.1f} s: {args.out}")


if __name__ == "__main__":
    main()
