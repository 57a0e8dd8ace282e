"""WeCLIP: frozen CLIP + decoder + online pseudo-labels (Zhang et al., CVPR 2024; spec App. A).

The first implementation of the library's model interface (docs/architecture.md, "The model interface").
Stages are labelled for ``torch.profiler`` ("model/clip_blocks", "model/decoder", the pipeline's
"pseudo/*", "model/losses"). One forward (spec §8, "per-iteration order"): the image is normalised (``pixel_mean``/``pixel_std``, spec
§1.2), the network sees it cropped to a multiple of the patch size (what the authors' stride-16 patch
convolution keeps); the frozen CLIP runs blocks 0..N-2 without a graph; the decoder fuses their outputs into
F and predicts segmentation logits; A_f = σ(FᵀF); given the image-level labels, the pseudo-label pipeline
computes Grad-CAMs on the last CLIP block, refines them (static CLIP-ES refinement or the RFM, which filters
CLIP attention with the detached A_f) and turns them into pseudo-labels with PAR, guided by the whole image.

Reference: https://github.com/zbf1991/WeCLIP (the authors' code, described in docs/official_code.md).
"""

import logging
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from weclip.errors import ConfigError
from weclip.losses import total_loss
from weclip.models.base import SegmentationModel
from weclip.models.clip_backbone import FrozenCLIP, build_backbone
from weclip.models.decoder import WeCLIPDecoder
from weclip.models.official_names import load_official_decoder_state
from weclip.models.registry import register_model
from weclip.models.text_encoder import prompt_embeddings
from weclip.models.weclip_config import WeCLIPLossConfig, WeCLIPModelConfig
from weclip.refine.pipeline import PseudoLabelPipeline, rfm_active

__all__ = [
    "MODES",
    "PSEUDO_ROWS",
    "FITS",
    "WeCLIP",
    "build_weclip",
    "crop_to_patch_multiple",
    "fit_to_patches",
]

logger = logging.getLogger("weclip")

#: what ``forward`` computes: "predict" (decoder logits), "pseudo" (+ pseudo-labels), "loss" (+ losses)
MODES = ("predict", "pseudo", "loss")
#: the pseudo-label ablation rows (paper Table 4 style; ``tools/eval_pseudo.py``), row -> title
PSEUDO_ROWS = {
    "cam": "initial CAM",
    "cam_par": "initial CAM + PAR",
    "static": "static refinement",
    "static_par": "static refinement + PAR",
    "rfm": "RFM",
    "rfm_par": "RFM + PAR (WeCLIP)",
}
#: how the network input becomes a multiple of the patch size: "crop" drops the bottom/right remainder (the
#: authors' conv1), "resize" resizes bilinearly to the nearest multiples (at least one patch)
FITS = ("crop", "resize")


def crop_to_patch_multiple(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Drop the bottom rows and right columns beyond a multiple of ``patch_size`` (floor).

    This is what a stride-``p`` patch embedding (``conv1``) does implicitly to an image of any size (spec
    §1.3, "remainder pixels dropped"), made explicit so that every size reaches the network.

    Args:
        images (torch.Tensor): (..., H, W).
        patch_size (int): p.

    Returns:
        torch.Tensor: (..., H//p·p, W//p·p), a view.
    """
    H, W = images.shape[-2:]
    h, w = H // patch_size * patch_size, W // patch_size * patch_size
    if h == 0 or w == 0:
        raise ValueError(
            f"an input of {H}x{W} pixels is smaller than one {patch_size}x{patch_size} patch"
        )
    return images[..., :h, :w]


def fit_to_patches(images: torch.Tensor, patch_size: int, fit: str = "crop") -> torch.Tensor:
    """Make H and W multiples of the patch size (see :data:`FITS`).

    A side shorter than one patch is first stretched to one patch (bilinear) in both modes.

    Args:
        images (torch.Tensor): (B, C, H, W).
        patch_size (int): p.
        fit (str): "crop" or "resize".

    Returns:
        torch.Tensor: (B, C, H', W') with H', W' multiples of p.
    """
    if fit == "crop":
        H, W = images.shape[-2:]
        if H < patch_size or W < patch_size:
            # smaller than one patch: the authors' code crashes here; we stretch that side to one patch
            size = (max(H, patch_size), max(W, patch_size))
            images = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False)
        return crop_to_patch_multiple(images, patch_size)
    if fit != "resize":
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    H, W = images.shape[-2:]
    size = (
        max(patch_size, round(H / patch_size) * patch_size),
        max(patch_size, round(W / patch_size) * patch_size),
    )
    if size == (H, W):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


class WeCLIP(SegmentationModel):
    """The WeCLIP model.

    Arguments:
        backbone (FrozenCLIP): the frozen CLIP (never trained, never in an optimizer).
        decoder (WeCLIPDecoder): the trainable fusion + transformer decoder.
        pipeline (PseudoLabelPipeline): Grad-CAM, refinement and PAR.
        text_fg (torch.Tensor): (C-1, E) foreground prompt embeddings.
        text_bg (torch.Tensor): (NB, E) background prompt embeddings.
        pixel_mean (Sequence[float]): per-channel mean on 0-255 RGB (``model.normalize``, spec §1.2).
        pixel_std (Sequence[float]): per-channel std on 0-255 RGB.
        rfm_start_iter (int): first 1-indexed training iteration that uses the RFM (spec §4.2).
        loss_cfg (Mapping): the validated ``loss`` section (weights, affinity radius, ignore index; spec §7).
        class_names (Sequence[str], optional): C names, index = class id (for the API's outputs).
    """

    def __init__(
        self,
        *,
        backbone: FrozenCLIP,
        decoder: WeCLIPDecoder,
        pipeline: PseudoLabelPipeline,
        text_fg: torch.Tensor,
        text_bg: torch.Tensor,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        rfm_start_iter: int,
        loss_cfg: Mapping[str, Any],
        class_names: Optional[Sequence[str]] = None,
    ) -> None:
        super().__init__(pixel_mean=pixel_mean, pixel_std=pixel_std, class_names=class_names)
        if text_fg.shape[0] + 1 != decoder.num_classes:
            raise ValueError(
                f"{text_fg.shape[0]} foreground prompts but the decoder predicts {decoder.num_classes} classes "
                "(foreground + background)"
            )
        self.backbone = backbone
        self.decoder = decoder
        self.pipeline = pipeline
        self.rfm_start_iter = int(rfm_start_iter)
        self.loss_cfg = dict(loss_cfg)
        # Not persistent: rebuilt from the config (and the CLIP weights), never saved in checkpoints.
        self.register_buffer("text_fg", text_fg, persistent=False)
        self.register_buffer("text_bg", text_bg, persistent=False)

    #: ``forward`` takes ``cls_labels`` on the CPU whatever the model's device: they only decide which
    #: (image, class) pairs exist, which is read on the host, so a GPU step then never waits for the
    #: device (labels on the GPU cost one device->host copy). The trainer leaves them on the host.
    labels_on_host = True

    # ------------------------------------------------------------------ the model interface
    @property
    def num_classes(self) -> int:
        """C, classes including background."""
        return self.decoder.num_classes

    @property
    def patch_size(self) -> int:
        """The network input is cropped to a multiple of it."""
        return self.backbone.patch_size

    def trainable_module(self) -> nn.Module:
        """The decoder: the only trained part, the ``model`` entry of checkpoints."""
        return self.decoder

    def load_official_state(self, state: Mapping[str, Any]) -> None:
        """Load the decoder of a checkpoint saved by the authors' code (their whole-model state dict; CLIP
        and PAR entries are ignored, spec §12.11; names mapped by ``weclip.models.official_names``)."""
        load_official_decoder_state(self.decoder, state)

    def encode(
        self, images: torch.Tensor, fit: str = "crop", maps: Optional[int] = None
    ) -> Tuple[torch.Tensor, list, list, Tuple[int, int]]:
        """Normalise and run the frozen CLIP on the patch-multiple view of the images (spec §1.3-§1.5).

        Args:
            images (torch.Tensor): (B, 3, H, W) 0-255 RGB.
            fit (str): see :data:`FITS` ("crop" = what the authors' conv1 does).
            maps (int, optional): how many of the N attention maps (counted from the last, which
                Grad-CAM's forward makes) the caller reads; the blocks before get None. Default: all.

        Returns:
            tuple: ``x`` (B, 3, H, W) the normalised whole images (PAR's guide), ``feats`` and ``attns``
            (N-1 entries each, ``FrozenCLIP.forward_blocks``), ``grid`` (h, w).
        """
        x = self.preprocess(images)
        net_in = fit_to_patches(x, self.patch_size, fit)
        attn_from = 0 if maps is None else self.backbone.num_blocks - maps
        feats, attns = self.backbone.forward_blocks(net_in, attn_from=attn_from)
        return x, feats, attns, self.backbone.grid_size(net_in.shape[-2], net_in.shape[-1])

    def forward(
        self,
        images: torch.Tensor,
        cls_labels: Optional[torch.Tensor] = None,
        *,
        mode: str = "predict",
        iteration: Optional[int] = None,
        out_size: Optional[Tuple[int, int]] = None,
        valid: Optional[torch.Tensor] = None,
    ) -> Dict[str, Any]:
        """Segmentation logits and, with image-level labels, pseudo-labels and losses.

        Arguments:
            images (torch.Tensor): (B, 3, H, W) uint8 (or float 0-255) RGB, any size of at least one patch;
                the network sees the top-left (H//p·p, W//p·p) block.
            cls_labels (torch.Tensor, optional): (B, C-1) multi-hot image-level labels ("pseudo", "loss"),
                on the model's device or on the CPU (see :attr:`labels_on_host`).
            mode (str): "predict": the decoder only; "pseudo": also the pseudo-labels (validation mode:
                the RFM unless ``iteration`` selects static refinement); "loss": a training step's forward
                (``iteration`` required) with the losses.
            iteration (int, optional): 1-indexed training iteration; selects static refinement or the RFM
                (``model.refine.rfm_start_iter``). None = the RFM.
            out_size (tuple, optional): (H_out, W_out) of the refined CAMs and pseudo-labels; default (H, W),
                the input size (the crop in training, the mask size in validation).
            valid (torch.Tensor, optional): (B, H_out, W_out) bool, False on crop padding (used with
                ``model.pseudo_label.ignore_padding``).

        Returns:
            dict: ``seg_logits`` (B, C, h, w) (1/p of the network input, not upsampled); with "pseudo" and
            "loss" also ``aff`` (B, n, n) σ(FᵀF) with grad, ``pseudo_labels`` (B, H_out, W_out) long,
            ``cams`` (P, h, w), ``cams_refined`` (P, H_out, W_out), ``batch_index``/``class_index`` (P,)
            (foreground ids), ``box_masks`` (P, h, w), ``use_rfm`` (bool); with "loss" also ``loss`` (the
            scalar to back-propagate) and ``log`` ({"seg_loss", "aff_loss"}, detached scalars).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        # attention maps only of the blocks the refinement reads (none for segmentation)
        use_rfm, maps = False, 0
        if mode != "predict":
            use_rfm = rfm_active(iteration, self.rfm_start_iter)
            maps = self.pipeline.maps_needed("rfm" if use_rfm else "static")
        with record_function("model/clip_blocks"):
            x, feats, attns, grid = self.encode(images, maps=maps)

        # Decoder on the features of blocks 0..N-2 (spec §6)
        with record_function("model/decoder"):
            seg_logits, fused = self.decoder(feats, grid)
        out: Dict[str, Any] = {"seg_logits": seg_logits}
        if mode == "predict":
            return out
        if cls_labels is None:
            raise ValueError(f"mode={mode!r} needs the image-level labels cls_labels")
        if mode == "loss" and iteration is None:
            raise ValueError("mode='loss' needs the 1-indexed training iteration")
        aff = self.decoder.affinity(fused)  # A_f, trained by the affinity loss (spec §4.1, §7.2)

        # Online pseudo-labels (spec §3-§5); the RFM uses a detached A_f; PAR is guided by the whole image
        pseudo = self.pipeline(
            self.backbone,
            x,
            cls_labels,
            feats,
            attns,
            grid,
            self.text_fg,
            self.text_bg,
            aff=aff.detach() if use_rfm else None,
            use_rfm=use_rfm,
            out_size=out_size,
            valid=valid,
        )
        out.update(pseudo, aff=aff, use_rfm=use_rfm)
        if mode == "loss":
            with record_function("model/losses"):
                losses = total_loss(
                    seg_logits.float(), aff.float(), pseudo["pseudo_labels"], **self.loss_cfg
                )
            out["loss"] = losses["loss"]
            out["log"] = {k: losses[k].detach() for k in ("seg_loss", "aff_loss")}
        return out

    # ------------------------------------------------------------------ ablation rows
    @property
    def pseudo_rows(self) -> Dict[str, str]:
        """The pseudo-label ablation rows (row -> title) of :meth:`pseudo_label_scores`."""
        return dict(PSEUDO_ROWS)

    #: rows that need the trained decoder (its affinity A_f): skipped by tools/eval_pseudo.py without one
    trained_rows = ("rfm", "rfm_par")

    @torch.no_grad()
    def pseudo_label_scores(
        self,
        images: torch.Tensor,
        cls_labels: torch.Tensor,
        rows: Sequence[str],
        out_size: Tuple[int, int],
        fit: str = "crop",
    ) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """The packed scores [bg; r_1..r_K] of every requested row (:data:`PSEUDO_ROWS`), at ``out_size``.

        The same pipeline stages, in the same order, as :meth:`forward`: one Grad-CAM call, then per
        refinement the transition matrix, box masks, propagation (or a plain resize for ``cam``); ``*_par``
        rows pass the scores through PAR guided by the whole image. ``rfm_par`` is therefore exactly the
        ``pseudo_labels`` of ``forward(mode="pseudo")`` (tested).

        Args:
            images (torch.Tensor): (B, 3, H, W) 0-255 RGB.
            cls_labels (torch.Tensor): (B, C-1) multi-hot labels (from the label file).
            rows (Sequence[str]): rows of :data:`PSEUDO_ROWS`.
            out_size (Tuple[int, int]): (H_out, W_out), the mask size.
            fit (str): see :data:`FITS`.

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
        refinements = {r[: -len("_par")] if r.endswith("_par") else r for r in rows}
        maps = (
            max(pipe.maps_needed(k) for k in ("static", "rfm") if k in refinements)
            if (refinements & {"static", "rfm"})
            else 0
        )
        x, feats, attns, grid = self.encode(images, fit, maps=maps)
        cam = pipe.initial_cams(self.backbone, feats, grid, cls_labels, self.text_fg, self.text_bg)
        refined: Dict[str, torch.Tensor] = {}
        if "cam" in refinements:
            refined["cam"] = pipe.resize(cam, out_size)  # spec §3 CAMs, bilinear to the mask size
        if refinements & {"static", "rfm"}:
            masks = pipe.boxes(cam)  # spec §4.5, shared by both refinements
            aff = None
            if "rfm" in refinements:  # the decoder affinity A_f of these images (spec §4.1)
                _, fused = self.decoder(feats, grid)
                aff = self.decoder.affinity(fused)
            for kind in ("static", "rfm"):
                if kind in refinements:
                    trans = pipe.transition(attns, cam, kind, aff)
                    refined[kind] = pipe.propagate(trans, cam, masks, out_size)
        scores: Dict[str, torch.Tensor] = {}
        keys = None
        for kind, cams in refined.items():
            packed, keys = pipe.scores(cams, cam, images.shape[0])
            if kind in rows:
                scores[kind] = packed
            if kind + "_par" in rows:
                scores[kind + "_par"] = pipe.refine_scores(x, packed)  # spec §5.1
        assert keys is not None
        return scores, keys


@register_model("WeCLIP", model_schema=WeCLIPModelConfig, loss_schema=WeCLIPLossConfig)
def build_weclip(cfg: Mapping[str, Any]) -> WeCLIP:
    """Build WeCLIP from a validated config (``model``, ``loss``, ``data`` sections), on CPU.

    The prompt embeddings are computed once here: ``model.text.template`` formatted with
    ``data.prompt_class_names`` and ``data.prompt_bg_names`` (spec §2).
    """
    model_cfg, data_cfg = cfg["model"], cfg["data"]
    backbone = build_backbone(model_cfg["backbone"])
    template = model_cfg["text"]["template"]
    text_fg = prompt_embeddings(backbone, list(data_cfg["prompt_class_names"]), template)
    text_bg = prompt_embeddings(backbone, list(data_cfg["prompt_bg_names"]), template)
    for key in ("static_layers", "rfm_layers"):
        if model_cfg["refine"][key] > backbone.num_blocks:
            raise ConfigError(
                f"config key 'model.refine.{key}' = {model_cfg['refine'][key]}: the CLIP has only "
                f"{backbone.num_blocks} blocks (attention maps)"
            )
    decoder = WeCLIPDecoder(
        in_dim=backbone.width,
        num_inputs=backbone.num_blocks - 1,
        num_classes=int(data_cfg["num_classes"]),
        **model_cfg["decoder"],
    )
    logger.info(
        "Decoder: %d CLIP block outputs (D=%d) -> width %d, %d transformer layers, %d classes, "
        "%s trainable parameters",
        decoder.num_inputs,
        decoder.in_dim,
        decoder.embed_dim,
        len(decoder.blocks),
        decoder.num_classes,
        f"{sum(p.numel() for p in decoder.parameters() if p.requires_grad):,}",
    )
    norm = model_cfg["norm_constants"][model_cfg["normalize"]]
    return WeCLIP(
        backbone=backbone,
        decoder=decoder,
        pipeline=PseudoLabelPipeline.from_config(model_cfg),
        text_fg=text_fg,
        text_bg=text_bg,
        pixel_mean=norm["mean"],
        pixel_std=norm["std"],
        rfm_start_iter=model_cfg["refine"]["rfm_start_iter"],
        loss_cfg=cfg["loss"],
        class_names=data_cfg["class_names"],
    )
