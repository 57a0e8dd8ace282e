"""WeCLIP+: frozen CLIP + frozen DINOv2 + shared decoder + RFM+ pseudo-labels (Zhang et al., TPAMI 2025).

"Frozen CLIP-DINO: A Strong Backbone for Weakly Supervised Semantic Segmentation",
https://ieeexplore.ieee.org/document/10891864; the authors' code is the ``WeCLIP+/`` folder of
https://github.com/zbf1991/WeCLIP, described in ``docs/official_code_plus.md`` ("doc §n"; WeCLIP's shared
pieces in ``docs/official_code.md``, "spec §n"). The second implementation of the library's model interface
(docs/architecture.md, "The model interface"), built from the same pieces as :mod:`weclip.models.weclip`.

One forward, in the authors' order (``WeCLIP_Plus.forward``):

1. :meth:`WeCLIPPlus.encode`: the image is normalised (``pixel_mean``/``pixel_std``, doc §2.2); CLIP sees it
   cropped to a multiple of its patch (what its stride-p ``conv1`` keeps: a 320 crop is seen whole by
   ViT-B/16, as its top-left 308 block by ViT-L/14) and runs blocks 0..N-2 without a graph; DINOv2 gets the
   *whole* normalised image, resized to a multiple of 14 (320 -> 308, doc §2.2);
2. the decoder (:class:`~weclip.models.plus.decoder.WeCLIPPlusDecoder`, doc §3): CLIP head on block N-2,
   DINO head at the DINO grid then resized to the CLIP grid, the shared transformer on each ->
   seg_clip, seg_dino; the prediction is their mean; A = σ(FᵀF) of the concatenated features;
3. with image-level labels, RFM+ (doc §4): Grad-CAM on the last CLIP block (fed with block N-3's output on
   VOC, N-2's on COCO: ``model.cam.input_index``), the RFM transition matrix with the detached A, each CAM
   gated by the detached class probability of the mean prediction, propagated inside all-ones (VOC) or
   CLIP-ES box masks (COCO), min-max, resized; background score, PAR guided by the whole image, argmax
   (the library's :class:`~weclip.refine.pipeline.PseudoLabelPipeline` stages);
4. in "loss" mode: self-training (confident predictions replace the pseudo-labels from
   ``loss.self_training_start_iter``), then the four loss terms of doc §5
   (:func:`~weclip.models.plus.losses.plus_total_loss`).

Stages are labelled for ``torch.profiler`` ("model/clip_blocks", "model/dino", "model/decoder", the
pipeline's "pseudo/*", "model/losses").
"""

import dataclasses
import logging
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from weclip.cam.gradcam import GradCAMResult, gradcam
from weclip.errors import CheckpointError, ConfigError, MissingFileError, UserInputError
from weclip.models.base import SegmentationModel
from weclip.models.clip_backbone import FrozenCLIP, build_backbone
from weclip.models.dino_backbone import FrozenDINOv2, build_dino_backbone
from weclip.models.plus.decoder import PlusDecoderOutput, WeCLIPPlusDecoder
from weclip.models.plus.losses import PLUS_LOSS_DEFAULTS, plus_total_loss
from weclip.models.plus.official_names import load_official_plus_decoder_state
from weclip.models.plus.rfm_plus import class_probabilities, gate_cams
from weclip.models.plus.self_training import self_training_labels
from weclip.models.registry import register_model
from weclip.models.text_encoder import prompt_embeddings
from weclip.models.weclip import FITS, MODES, fit_to_patches
from weclip.models.weclip_plus_config import WeCLIPPlusLossConfig, WeCLIPPlusModelConfig
from weclip.refine.par import PAR
from weclip.refine.pipeline import PseudoLabelPipeline

__all__ = [
    "BOX_MASKS",
    "PSEUDO_ROWS",
    "PlusFeatures",
    "WeCLIPPlus",
    "build_weclip_plus",
    "clip_logit_scale",
]

logger = logging.getLogger("weclip")

#: the pseudo-label ablation rows (``tools/eval_pseudo.py``), row -> title. "rfm" is WeCLIP's RFM on the
#: WeCLIP+ affinity without the DINO gate (CLIP-ES boxes), "rfm_plus" the authors' RFM+ (doc §4).
PSEUDO_ROWS = {
    "cam": "initial CAM",
    "cam_par": "initial CAM + PAR",
    "static": "static refinement",
    "static_par": "static refinement + PAR",
    "rfm": "RFM without the DINO gate",
    "rfm_par": "RFM without the DINO gate + PAR",
    "rfm_plus": "RFM+",
    "rfm_plus_par": "RFM+ + PAR (WeCLIP+)",
}
#: the RFM+ box mask (doc §4.2 step 4): "ones" (the authors' VOC model) or "boxes" (COCO: the CLIP-ES boxes of
#: the ungated CAM at ``model.refine.box_threshold``)
BOX_MASKS = ("ones", "boxes")


def clip_logit_scale(backbone: FrozenCLIP, divisor: Optional[float] = None) -> float:
    """The Grad-CAM classifier's logit scale (doc §1.1).

    The authors' ``CLIP.forward_last_layer`` divides exp(logit_scale) by 4 when the image tower has 24
    blocks (ViT-L/14: 100 -> 25 with OpenAI's weights) and keeps it otherwise.

    Args:
        backbone (FrozenCLIP): the CLIP (``logit_scale`` already exponentiated, ``num_blocks``).
        divisor (float, optional): ``model.cam.logit_scale_divisor``; None = the authors' rule.

    Returns:
        float: the scale.
    """
    if divisor is None:
        divisor = 4.0 if backbone.num_blocks == 24 else 1.0
    return float(backbone.logit_scale) / float(divisor)


class PlusFeatures(NamedTuple):
    """What :meth:`WeCLIPPlus.encode` returns.

    Attributes:
        x (Tensor): (B, 3, H, W) the normalised whole images (PAR's guide).
        feats (List[Tensor]): N-1 CLIP block outputs (B, 1 + h·w, Dc), blocks 0..N-2, CLS first.
        attns (List[Tensor]): N-1 head-averaged CLIP attention maps (B, 1 + h·w, 1 + h·w).
        dino (Tensor): (B, Dd, hd, wd) DINOv2 patch tokens at the DINO grid.
        grid (Tuple[int, int]): (h, w), the CLIP patch grid.
    """

    x: Tensor
    feats: List[Tensor]
    attns: List[Tensor]
    dino: Tensor
    grid: Tuple[int, int]


class WeCLIPPlus(SegmentationModel):
    """The WeCLIP+ model.

    Arguments:
        backbone (FrozenCLIP): the frozen CLIP (never trained).
        dino (FrozenDINOv2): the frozen DINOv2 (never trained).
        decoder (WeCLIPPlusDecoder): the trainable heads + shared transformer decoder.
        pipeline (PseudoLabelPipeline): transition, boxes, propagation, packing, PAR, labels (its
            ``rfm_layers`` = RFM+'s layer count, ``box_threshold`` = COCO's 0.7 / VOC's 0.4).
        text_fg (Tensor): (C-1, E) foreground prompt embeddings.
        text_bg (Tensor): (NB, E) background prompt embeddings.
        pixel_mean (Sequence[float]): per-channel mean on 0-255 RGB (doc §2.2: the same tensor feeds CLIP
            and DINOv2).
        pixel_std (Sequence[float]): per-channel std on 0-255 RGB.
        cam_input_index (int): which output of ``forward_blocks`` feeds the Grad-CAM's last block (-2 =
            block N-3, the authors' VOC model; -1 = block N-2, their COCO model; doc §1.2).
        logit_scale (float): the Grad-CAM classifier's scale (:func:`clip_logit_scale`).
        box_mask (str): see :data:`BOX_MASKS`.
        loss_cfg (Mapping): the validated ``loss`` section (weights, Dice quirk, self-training; doc §5).
        class_names (Sequence[str], optional): C names, index = class id.
    """

    def __init__(
        self,
        *,
        backbone: FrozenCLIP,
        dino: FrozenDINOv2,
        decoder: WeCLIPPlusDecoder,
        pipeline: PseudoLabelPipeline,
        text_fg: Tensor,
        text_bg: Tensor,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        cam_input_index: int,
        logit_scale: float,
        box_mask: str,
        loss_cfg: Mapping[str, Any],
        class_names: Optional[Sequence[str]] = None,
    ) -> None:
        super().__init__(pixel_mean=pixel_mean, pixel_std=pixel_std, class_names=class_names)
        if text_fg.shape[0] + 1 != decoder.num_classes:
            raise ValueError(
                f"{text_fg.shape[0]} foreground prompts but the decoder predicts "
                f"{decoder.num_classes} classes (foreground + background)"
            )
        if not -(backbone.num_blocks - 1) <= cam_input_index <= -1:
            raise ValueError(
                f"cam_input_index {cam_input_index}: forward_blocks returns "
                f"{backbone.num_blocks - 1} outputs (use -1 .. {-(backbone.num_blocks - 1)})"
            )
        if box_mask not in BOX_MASKS:
            raise ValueError(f"box_mask must be one of {BOX_MASKS}, got {box_mask!r}")
        if decoder.clip_dim != backbone.width or decoder.dino_dim != dino.width:
            raise ValueError(
                f"decoder widths (CLIP {decoder.clip_dim}, DINO {decoder.dino_dim}) do not match the "
                f"backbones (CLIP {backbone.width}, DINO {dino.width})"
            )
        self.backbone = backbone
        self.dino = dino
        self.decoder = decoder
        self.pipeline = pipeline
        self.cam_input_index = int(cam_input_index)
        self.logit_scale = float(logit_scale)
        self.box_mask = box_mask
        cfg = dict(loss_cfg)
        self.self_training_start_iter: Optional[int] = cfg.pop("self_training_start_iter", None)
        self.self_training_threshold = float(cfg.pop("self_training_threshold", 0.75))
        self.self_training_keep_ignore = bool(cfg.pop("self_training_keep_ignore", False))
        unknown = sorted(set(cfg) - set(PLUS_LOSS_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown WeCLIP+ loss key(s) {unknown}")
        self.loss_cfg = cfg
        # Not persistent: rebuilt from the config (and the CLIP weights), never saved in checkpoints.
        self.register_buffer("text_fg", text_fg, persistent=False)
        self.register_buffer("text_bg", text_bg, persistent=False)

    # ------------------------------------------------------------------ the model interface
    @property
    def num_classes(self) -> int:
        """C, classes including background."""
        return self.decoder.num_classes

    @property
    def patch_size(self) -> int:
        """The CLIP patch size: the network input is cropped to a multiple of it (16, or 14 for L/14)."""
        return self.backbone.patch_size

    def trainable_module(self) -> nn.Module:
        """The WeCLIP+ decoder (both heads and the shared transformer): the only trained part."""
        return self.decoder

    def load_official_state(self, state: Mapping[str, Any]) -> None:
        """Load the decoder of a checkpoint saved by the authors' WeCLIP+ code (their whole-model state dict;
        CLIP, DINOv2 and PAR entries are ignored; names mapped by ``weclip.models.plus.official_names``)."""
        load_official_plus_decoder_state(self.decoder, state)

    def self_training_active(self, iteration: Optional[int]) -> bool:
        """Whether the 1-indexed training ``iteration`` replaces confident pixels (doc §5.5).

        The authors test ``n_iter > 18000`` on the 0-based step index, i.e. from 1-indexed iteration 18,002
        (VOC; 40,002 COCO): ``loss.self_training_start_iter``. None (validation) is never active.
        """
        start = self.self_training_start_iter
        return start is not None and iteration is not None and iteration >= start

    def encode(self, images: Tensor, fit: str = "crop") -> PlusFeatures:
        """Normalise, run the frozen CLIP on the patch-multiple view and DINOv2 on the whole image.

        With ``fit="crop"`` CLIP sees the top-left (H//p·p, W//p·p) block (what the authors' ``conv1`` keeps)
        and DINOv2 the whole image resized to (H//14·14, W//14·14) (their ``F.interpolate`` of the model
        input, doc §2.2). With ``fit="resize"`` the image is first resized to the nearest patch multiples
        and both backbones get that (the authors' in-training validation, doc §6).

        Args:
            images (Tensor): (B, 3, H, W) 0-255 RGB.
            fit (str): see :data:`weclip.models.weclip.FITS`.

        Returns:
            PlusFeatures
        """
        if fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
        x = self.preprocess(images)
        net_in = fit_to_patches(x, self.patch_size, fit)
        with record_function("model/clip_blocks"):
            feats, attns = self.backbone.forward_blocks(net_in)
        with record_function("model/dino"):
            dino = self.dino(x if fit == "crop" else net_in)
        grid = self.backbone.grid_size(net_in.shape[-2], net_in.shape[-1])
        return PlusFeatures(x, feats, attns, dino, grid)

    def decode(self, enc: PlusFeatures) -> PlusDecoderOutput:
        """Both fusion heads and the shared decoder (doc §3) on the outputs of :meth:`encode`."""
        with record_function("model/decoder"):
            clip_feats = enc.feats[-self.decoder.clip_num_inputs :]
            return self.decoder(clip_feats, enc.dino, enc.grid)

    # ------------------------------------------------------------------ pseudo-label stages
    def initial_cams(self, enc: PlusFeatures, cls_labels: Tensor) -> GradCAMResult:
        """Grad-CAM of every present class on the last CLIP block (spec §3), fed with
        ``feats[cam_input_index]`` and the configured logit scale (doc §1.1, §1.2)."""
        pipe = self.pipeline
        with record_function("pseudo/gradcam"):
            return gradcam(
                self.backbone,
                enc.feats[self.cam_input_index],
                cls_labels,
                self.text_fg,
                self.text_bg,
                tuple(enc.grid),
                norm_eps=pipe.cam_norm_eps,
                norm_passes=pipe.cam_norm_passes,
                logit_scale=self.logit_scale,
            )

    def rfm_plus_masks(self, cam: GradCAMResult) -> Tensor:
        """RFM+ box masks (P, h, w) bool: all ones (VOC) or the boxes of the ungated CAMs (COCO), doc §4.2."""
        if self.box_mask == "ones":
            return torch.ones_like(cam.cams, dtype=torch.bool)
        return self.pipeline.boxes(cam)

    @torch.no_grad()
    def rfm_plus(
        self,
        enc: PlusFeatures,
        cam: GradCAMResult,
        seg_logits: Tensor,
        aff: Tensor,
        out_size: Tuple[int, int],
    ) -> Tuple[Tensor, Tensor]:
        """RFM+ (doc §4): transition matrix with the detached affinity, gated CAMs, propagation.

        Args:
            enc (PlusFeatures): from :meth:`encode`.
            cam (GradCAMResult): from :meth:`initial_cams`.
            seg_logits (Tensor): (B, C, h, w) the mean prediction (detached here) whose softmax gates M_k.
            aff (Tensor): (B, n, n) σ(FᵀF) of the concatenated features (detached here).
            out_size (Tuple[int, int]): (H_out, W_out).

        Returns:
            Tuple[Tensor, Tensor]: refined CAMs (P, H_out, W_out) in [0, 1) and the box masks (P, h, w).
        """
        pipe = self.pipeline
        trans = pipe.transition(enc.attns, cam, "rfm", aff.detach())
        masks = self.rfm_plus_masks(cam)
        probs = class_probabilities(seg_logits)  # (B, C, h, w), detached softmax
        gated = gate_cams(cam.cams, probs, cam.batch_index, cam.class_index)
        refined = pipe.propagate(trans, dataclasses.replace(cam, cams=gated), masks, out_size)
        return refined, masks

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        images: Tensor,
        cls_labels: Optional[Tensor] = None,
        *,
        mode: str = "predict",
        iteration: Optional[int] = None,
        out_size: Optional[Tuple[int, int]] = None,
        valid: Optional[Tensor] = None,
    ) -> Dict[str, Any]:
        """Segmentation logits and, with image-level labels, RFM+ pseudo-labels and the WeCLIP+ losses.

        Arguments:
            images (Tensor): (B, 3, H, W) uint8 (or float 0-255) RGB, any size of at least one CLIP patch
                (and one DINO patch of 14 px).
            cls_labels (Tensor, optional): (B, C-1) multi-hot image-level labels ("pseudo", "loss").
            mode (str): "predict": the decoder only; "pseudo": also the RFM+ pseudo-labels (the authors'
                validation mode; RFM+ is always on, doc §4); "loss": a training step (``iteration``
                required) with self-training and the losses.
            iteration (int, optional): 1-indexed training iteration (self-training switch).
            out_size (tuple, optional): (H_out, W_out) of the refined CAMs and pseudo-labels; default (H, W).
            valid (Tensor, optional): (B, H_out, W_out) bool, False on crop padding
                (``model.pseudo_label.ignore_padding``).

        Returns:
            dict: ``seg_logits`` (B, C, h, w) = 0.5·seg_clip + 0.5·seg_dino, ``seg_clip``, ``seg_dino``
            (1/p of the network input); with "pseudo" and "loss" also ``aff`` (B, n, n) with grad,
            ``pseudo_labels`` (B, H_out, W_out) long (the online labels Y), ``cams`` (P, h, w),
            ``cams_refined`` (P, H_out, W_out), ``batch_index``/``class_index`` (P,), ``box_masks``
            (P, h, w); with "loss" also ``train_labels`` (Y' after self-training), ``self_training``
            (bool), ``loss`` and ``log`` ({"seg_loss", "aff_loss", "cross_clip_loss", "cross_dino_loss",
            "dice_loss", "self_training_ratio"}, detached scalars).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        enc = self.encode(images)
        dec = self.decode(enc)
        out: Dict[str, Any] = {
            "seg_logits": dec.seg,
            "seg_clip": dec.seg_clip,
            "seg_dino": dec.seg_dino,
        }
        if mode == "predict":
            return out
        if cls_labels is None:
            raise ValueError(f"mode={mode!r} needs the image-level labels cls_labels")
        if mode == "loss" and iteration is None:
            raise ValueError("mode='loss' needs the 1-indexed training iteration")
        aff = self.decoder.affinity(dec.fused)  # with grad: the affinity loss trains the heads
        out_size = tuple(images.shape[-2:]) if out_size is None else tuple(out_size)

        # RFM+ pseudo-labels (doc §4); PAR is guided by the whole image
        cam = self.initial_cams(enc, cls_labels)
        refined, masks = self.rfm_plus(enc, cam, dec.seg, aff, out_size)
        pipe = self.pipeline
        scores, keys = pipe.scores(refined, cam, images.shape[0])
        labels = pipe.labels(pipe.refine_scores(enc.x, scores), keys, valid)
        out.update(
            aff=aff,
            pseudo_labels=labels,
            cams=cam.cams,
            cams_refined=refined,
            batch_index=cam.batch_index,
            class_index=cam.class_index,
            box_masks=masks,
        )
        if mode == "loss":
            with record_function("model/losses"):
                use_st = self.self_training_active(iteration)
                train_labels, replaced = labels, torch.zeros_like(labels, dtype=torch.bool)
                if use_st:  # doc §5.5: after the affinity labels' source (Y) is fixed
                    train_labels, replaced = self_training_labels(
                        labels,
                        dec.seg,
                        threshold=self.self_training_threshold,
                        keep_ignore=self.self_training_keep_ignore,
                        ignore_index=int(self.loss_cfg["ignore_index"]),
                    )
                losses = plus_total_loss(
                    dec.seg_clip.float(),
                    dec.seg_dino.float(),
                    aff.float(),
                    labels,
                    train_labels,
                    loss_cfg=self.loss_cfg,
                )
            out.update(train_labels=train_labels, self_training=use_st, loss=losses["loss"])
            log = {
                k: losses[k].detach()
                for k in ("seg_loss", "aff_loss", "cross_clip_loss", "cross_dino_loss", "dice_loss")
            }
            log["self_training_ratio"] = replaced.float().mean().detach()
            out["log"] = log
        return out

    # ------------------------------------------------------------------ ablation rows
    @property
    def pseudo_rows(self) -> Dict[str, str]:
        """The pseudo-label ablation rows (row -> title) of :meth:`pseudo_label_scores`."""
        return dict(PSEUDO_ROWS)

    #: rows that need the trained decoder (its affinity and prediction): skipped without a checkpoint
    trained_rows = ("rfm", "rfm_par", "rfm_plus", "rfm_plus_par")

    @torch.no_grad()
    def pseudo_label_scores(
        self,
        images: Tensor,
        cls_labels: Tensor,
        rows: Sequence[str],
        out_size: Tuple[int, int],
        fit: str = "crop",
    ) -> Tuple[Dict[str, Tensor], Tensor]:
        """The packed scores [bg; r_1..r_K] of every requested row (:data:`PSEUDO_ROWS`) at ``out_size``.

        The same stages as :meth:`forward`: one Grad-CAM call; ``static`` (mean of the last
        ``model.refine.static_layers`` maps) and ``rfm`` (the RFM+ transition matrix, ungated CAMs, CLIP-ES
        boxes) share the box masks; ``rfm_plus`` is :meth:`rfm_plus`; ``*_par`` rows pass the scores
        through PAR guided by the whole image. ``rfm_plus_par`` is therefore exactly the
        ``pseudo_labels`` of ``forward(mode="pseudo")`` (tested).

        Args:
            images (Tensor): (B, 3, H, W) 0-255 RGB.
            cls_labels (Tensor): (B, C-1) multi-hot labels (from the label file).
            rows (Sequence[str]): rows of :data:`PSEUDO_ROWS`.
            out_size (Tuple[int, int]): (H_out, W_out), the mask size.
            fit (str): see :data:`weclip.models.weclip.FITS`.

        Returns:
            Tuple[Dict[str, Tensor], Tensor]: row -> scores (B, 1+Kmax, H_out, W_out), and ``keys``
            (B, 1+Kmax), the class id of each channel (255 for padding channels).
        """
        unknown = [r for r in rows if r not in PSEUDO_ROWS]
        if unknown:
            raise ValueError(
                f"unknown pseudo-label row(s) {unknown}; known: {', '.join(PSEUDO_ROWS)}"
            )
        pipe = self.pipeline
        out_size = tuple(out_size)
        enc = self.encode(images, fit)
        cam = self.initial_cams(enc, cls_labels)
        refinements = {r[: -len("_par")] if r.endswith("_par") else r for r in rows}
        refined: Dict[str, Tensor] = {}
        if "cam" in refinements:
            refined["cam"] = pipe.resize(cam, out_size)
        boxes = pipe.boxes(cam) if refinements & {"static", "rfm"} else None  # spec §4.5
        if "static" in refinements:
            trans = pipe.transition(enc.attns, cam, "static")
            refined["static"] = pipe.propagate(trans, cam, boxes, out_size)
        if refinements & {"rfm", "rfm_plus"}:
            dec = self.decode(enc)
            aff = self.decoder.affinity(dec.fused)
            if "rfm" in refinements:
                trans = pipe.transition(enc.attns, cam, "rfm", aff)
                refined["rfm"] = pipe.propagate(trans, cam, boxes, out_size)
            if "rfm_plus" in refinements:
                refined["rfm_plus"], _ = self.rfm_plus(enc, cam, dec.seg, aff, out_size)
        scores: Dict[str, Tensor] = {}
        keys = None
        for kind, cams in refined.items():
            packed, keys = pipe.scores(cams, cam, images.shape[0])
            if kind in rows:
                scores[kind] = packed
            if kind + "_par" in rows:
                scores[kind + "_par"] = pipe.refine_scores(enc.x, packed)
        if keys is None:
            raise ValueError("no pseudo-label row requested")
        return scores, keys


def _build_weights(build: Any, key: str, weights: str) -> Any:
    """Run a backbone builder; a missing or unusable weights file becomes one error naming the key."""
    try:
        return build()
    except UserInputError:
        raise
    except FileNotFoundError as err:
        raise MissingFileError(f"config key '{key}' = {weights!r}: {err}") from None
    except (ValueError, KeyError) as err:
        text = err.args[0] if err.args else str(err)
        raise CheckpointError(f"config key '{key}' = {weights!r}: {text}") from None


def build_dino(dino_cfg: Mapping[str, Any]) -> FrozenDINOv2:
    """The frozen DINOv2 of ``model.dino``; a ``"random"`` one is drawn from ``model.dino.seed`` with the
    global RNG left untouched, so training and inference build the same network."""
    options = {k: dino_cfg[k] for k in ("arch", "weights", "allow_download", "pos_interp")}

    def build() -> FrozenDINOv2:
        if dino_cfg["weights"] != "random":
            return build_dino_backbone(options)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(dino_cfg["seed"]))
            return build_dino_backbone(options)

    return _build_weights(build, "model.dino.weights", dino_cfg["weights"])


@register_model("WeCLIPPlus", model_schema=WeCLIPPlusModelConfig, loss_schema=WeCLIPPlusLossConfig)
def build_weclip_plus(cfg: Mapping[str, Any]) -> WeCLIPPlus:
    """Build WeCLIP+ from a validated config (``model``, ``loss``, ``data`` sections), on CPU.

    The prompt embeddings are computed once here: ``model.text.template`` formatted with
    ``data.prompt_class_names`` and ``data.prompt_bg_names`` (spec §2; WeCLIP+'s are WeCLIP's, doc §1.2).
    """
    model_cfg, data_cfg = cfg["model"], cfg["data"]
    backbone = _build_weights(
        lambda: build_backbone(model_cfg["backbone"]),
        "model.backbone.weights",
        model_cfg["backbone"]["weights"],
    )
    dino = build_dino(model_cfg["dino"])
    refine, cam_cfg, dec_cfg = model_cfg["refine"], model_cfg["cam"], model_cfg["decoder"]
    for name, value, limit in (
        ("refine.rfm_layers", refine["rfm_layers"], backbone.num_blocks),
        ("refine.static_layers", refine["static_layers"], backbone.num_blocks),
        ("decoder.clip_num_inputs", dec_cfg["clip_num_inputs"], backbone.num_blocks - 1),
        ("cam.input_index", -cam_cfg["input_index"], backbone.num_blocks - 1),
    ):
        if value > limit:
            raise ConfigError(
                f"config key 'model.{name}' = {model_cfg[name.split('.')[0]][name.split('.')[1]]}: "
                f"the CLIP has only {backbone.num_blocks} blocks ({backbone.num_blocks - 1} outputs "
                f"of blocks 0..N-2 and {backbone.num_blocks} attention maps)"
            )
    template = model_cfg["text"]["template"]
    text_fg = prompt_embeddings(backbone, list(data_cfg["prompt_class_names"]), template)
    text_bg = prompt_embeddings(backbone, list(data_cfg["prompt_bg_names"]), template)
    decoder = WeCLIPPlusDecoder(
        clip_dim=backbone.width,
        dino_dim=dino.width,
        num_classes=int(data_cfg["num_classes"]),
        **dec_cfg,
    )
    pipeline = PseudoLabelPipeline(
        cam_norm_eps=cam_cfg["norm_eps"],
        cam_norm_passes=cam_cfg["cam_norm_passes"],
        static_layers=refine["static_layers"],
        rfm_layers=refine["rfm_layers"],
        layer_filter=refine["layer_filter"],
        filter_eps=refine["filter_eps"],
        sinkhorn_iters=refine["sinkhorn_iters"],
        power=refine["power"],
        box_threshold=refine["box_threshold"],
        box_mode=refine["box_mode"],
        refine_norm_eps=refine["norm_eps"],
        bg_power=model_cfg["pseudo_label"]["bg_power"],
        ignore_padding=model_cfg["pseudo_label"]["ignore_padding"],
        par=PAR(**model_cfg["par"]),
    )
    logit_scale = clip_logit_scale(backbone, cam_cfg["logit_scale_divisor"])
    logger.info(
        "WeCLIP+: CLIP %d blocks (D=%d, patch %d), DINOv2 %d blocks (D=%d); decoder width %d, %d "
        "transformer layers, %d classes, %s trainable parameters; Grad-CAM on feats[%d], logit scale "
        "%.2f; RFM+ on the last %d maps, box mask %s",
        backbone.num_blocks,
        backbone.width,
        backbone.patch_size,
        dino.num_blocks,
        dino.width,
        decoder.embed_dim,
        len(decoder.blocks),
        decoder.num_classes,
        f"{sum(p.numel() for p in decoder.parameters() if p.requires_grad):,}",
        cam_cfg["input_index"],
        logit_scale,
        refine["rfm_layers"],
        refine["box_mask"],
    )
    norm = model_cfg["norm_constants"][model_cfg["normalize"]]
    return WeCLIPPlus(
        backbone=backbone,
        dino=dino,
        decoder=decoder,
        pipeline=pipeline,
        text_fg=text_fg,
        text_bg=text_bg,
        pixel_mean=norm["mean"],
        pixel_std=norm["std"],
        cam_input_index=cam_cfg["input_index"],
        logit_scale=logit_scale,
        box_mask=refine["box_mask"],
        loss_cfg=cfg["loss"],
        class_names=data_cfg["class_names"],
    )
