"""The pseudo-label pipeline: Grad-CAM -> static or RFM refinement -> PAR -> labels (spec §3-§5, App. A).

Each stage is a public method with documented shapes; :meth:`PseudoLabelPipeline.forward` composes them for
a batch (``WeCLIP`` in training and validation), and the pseudo-label ablation rows of
``weclip.evaluation.pseudo`` compose the same calls, so there is one implementation:

1. :meth:`~PseudoLabelPipeline.initial_cams`: batched softmax Grad-CAM on the last CLIP block for every
   present class (spec §3);
2. :meth:`~PseudoLabelPipeline.transition`: affinity (mean of the last ``static_layers`` attention maps,
   spec §4.2, or the RFM, spec §4.3) -> Sinkhorn, symmetrise, power (spec §4.4), once per image;
3. :meth:`~PseudoLabelPipeline.boxes` and :meth:`~PseudoLabelPipeline.propagate`: box masks per CAM
   (spec §4.5), propagation, min-max and resize (spec §4.6); :meth:`~PseudoLabelPipeline.resize` is the
   "no refinement" alternative (the initial CAMs resized);
4. :meth:`~PseudoLabelPipeline.scores`: [bg; CAMs] packed over the batch (spec §5 steps 1-2), then
   ``pipeline.par(guide, scores)`` (spec §5.1) and :meth:`~PseudoLabelPipeline.labels` (argmax -> class ids).

PAR's guide is the whole image at the size of the pseudo-labels: in validation the network sees the image
cropped to a multiple of the patch size (what the authors' stride-p patch convolution keeps), but PAR gets
the uncropped image, as in the authors' ``validate()`` (spec §4.6, §5.1; issue 14). Stages are labelled with
``torch.profiler.record_function`` ("pseudo/gradcam", "pseudo/transition", "pseudo/propagate",
"pseudo/par") for benchmarks.
"""

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor
from torch.profiler import record_function

from weclip.cam.gradcam import GradCAMResult, gradcam
from weclip.refine.boxes import box_masks
from weclip.refine.par import PAR
from weclip.refine.propagate import propagate_cams, resize_cams
from weclip.refine.pseudo_label import IGNORE_INDEX, pack_scores, scores_to_labels
from weclip.refine.transition import (
    patch_attention,
    rfm_affinity,
    static_affinity,
    transition_matrix,
)

__all__ = ["REFINEMENTS", "rfm_active", "PseudoLabelPipeline"]

#: "none": the initial CAMs resized; "static": CLIP-ES attention affinity (spec §4.2); "rfm": WeCLIP's
#: refinement module (spec §4.3)
REFINEMENTS = ("none", "static", "rfm")


def rfm_active(iteration: Optional[int], rfm_start_iter: int) -> bool:
    """Whether a forward uses the RFM (True) or the static CLIP-ES refinement (False), spec §4.2.

    Args:
        iteration (int, optional): 1-indexed training iteration; None for validation/inference,
            which always use the RFM (the authors' ``mode == 'val'``).
        rfm_start_iter (int): first training iteration with the RFM
            (``cfg.model.refine.rfm_start_iter``): 9145 reproduces the authors' shared counter (spec
            §4.2, §12.1), 15001 their stated threshold, 1 the paper's "always on".

    Returns:
        bool: ``iteration is None or iteration >= rfm_start_iter``.
    """
    if iteration is None:
        return True
    if iteration < 1:
        raise ValueError(f"iteration is 1-indexed, got {iteration}")
    return iteration >= rfm_start_iter


class PseudoLabelPipeline(nn.Module):
    """From frozen-CLIP outputs to pseudo-labels for a batch (spec §3-§5).

    Args:
        cam_norm_eps (float): Grad-CAM min-max epsilon (``model.cam.norm_eps``).
        cam_norm_passes (int): Grad-CAM min-max passes (``model.cam.cam_norm_passes``, 2 = the authors').
        static_layers (int): attention maps averaged in static mode (``model.refine.static_layers``).
        rfm_layers (int): attention maps considered by the RFM (``model.refine.rfm_layers``).
        layer_filter (str): RFM layer filter, "signed" (code) | "abs" (paper).
        filter_eps (float): denominator epsilon of the mean of kept maps.
        sinkhorn_iters (int): column-then-row passes.
        power (int): transition matrix power.
        box_threshold (float): CAM threshold of the box masks (0.4 VOC / 0.7 COCO).
        box_mode (str): "official" | "inclusive".
        refine_norm_eps (float): min-max epsilon of the propagated CAMs (``model.refine.norm_eps``).
        bg_power (float): background exponent (``model.pseudo_label.bg_power``).
        ignore_padding (bool): label crop padding 255 (``model.pseudo_label.ignore_padding``).
        par (PAR): the PAR module.
    """

    def __init__(
        self,
        *,
        cam_norm_eps: float = 1e-7,
        cam_norm_passes: int = 2,
        static_layers: int = 8,
        rfm_layers: int = 6,
        layer_filter: str = "signed",
        filter_eps: float = 1e-5,
        sinkhorn_iters: int = 3,
        power: int = 2,
        box_threshold: float = 0.4,
        box_mode: str = "official",
        refine_norm_eps: float = 1e-7,
        bg_power: float = 1.0,
        ignore_padding: bool = False,
        par: Optional[PAR] = None,
    ) -> None:
        super().__init__()
        self.cam_norm_eps = cam_norm_eps
        self.cam_norm_passes = cam_norm_passes
        self.static_layers = static_layers
        self.rfm_layers = rfm_layers
        self.layer_filter = layer_filter
        self.filter_eps = filter_eps
        self.sinkhorn_iters = sinkhorn_iters
        self.power = power
        self.box_threshold = box_threshold
        self.box_mode = box_mode
        self.refine_norm_eps = refine_norm_eps
        self.bg_power = bg_power
        self.ignore_padding = ignore_padding
        self.par = par if par is not None else PAR()

    @classmethod
    def from_config(cls, model_cfg: Mapping[str, Any]) -> "PseudoLabelPipeline":
        """Build from the validated ``cam``, ``refine``, ``pseudo_label`` and ``par`` sections of
        ``cfg.model`` (``weclip.models.weclip_config``)."""
        cam, refine = model_cfg["cam"], model_cfg["refine"]
        pseudo, par = model_cfg["pseudo_label"], model_cfg["par"]
        return cls(
            cam_norm_eps=cam["norm_eps"],
            cam_norm_passes=cam["cam_norm_passes"],
            static_layers=refine["static_layers"],
            rfm_layers=refine["rfm_layers"],
            layer_filter=refine["layer_filter"],
            filter_eps=refine["filter_eps"],
            sinkhorn_iters=refine["sinkhorn_iters"],
            power=refine["power"],
            box_threshold=refine["box_threshold"],
            box_mode=refine["box_mode"],
            refine_norm_eps=refine["norm_eps"],
            bg_power=pseudo["bg_power"],
            ignore_padding=pseudo["ignore_padding"],
            par=PAR(**par),
        )

    def maps_needed(self, refinement: str) -> int:
        """How many of the last attention maps a refinement reads ("static": ``static_layers``, "rfm":
        ``rfm_layers``, "none": 0); the earlier blocks' maps need not be computed."""
        if refinement not in REFINEMENTS:
            raise ValueError(f"refinement must be one of {REFINEMENTS}, got {refinement!r}")
        return {"none": 0, "static": self.static_layers, "rfm": self.rfm_layers}[refinement]

    # ------------------------------------------------------------------ stages
    def initial_cams(
        self,
        backbone: nn.Module,
        feats: Sequence[Tensor],
        grid: Tuple[int, int],
        cls_labels: Tensor,
        text_fg: Tensor,
        text_bg: Tensor,
    ) -> GradCAMResult:
        """Stage 1: Grad-CAM of every present class (spec §3).

        Args:
            backbone (nn.Module): ``FrozenCLIP`` (``forward_last``, ``logit_scale``).
            feats (Sequence[Tensor]): N-1 block outputs (B, L, D) of ``forward_blocks``; the last one is the
                input of the last block.
            grid (Tuple[int, int]): (h, w) patch grid of the network input, h·w = L - 1.
            cls_labels (Tensor): (B, C-1) multi-hot foreground labels, the only source of class presence.
            text_fg (Tensor): (C-1, E) foreground prompt embeddings.
            text_bg (Tensor): (NB, E) background prompt embeddings.

        Returns:
            GradCAMResult: ``cams`` (P, h, w) in [0, 1], ``batch_index``/``class_index`` (P,),
            ``attn_last`` (B, L, L), ``probs``.
        """
        with record_function("pseudo/gradcam"):
            return gradcam(
                backbone,
                feats[-1],
                cls_labels,
                text_fg,
                text_bg,
                tuple(grid),
                norm_eps=self.cam_norm_eps,
                norm_passes=self.cam_norm_passes,
            )

    @torch.no_grad()
    def transition(
        self,
        attns: Sequence[Tensor],
        cam: GradCAMResult,
        refinement: str,
        aff: Optional[Tensor] = None,
    ) -> Tensor:
        """Stage 2: the transition matrix of every image (spec §4.2-§4.4).

        Args:
            attns (Sequence[Tensor]): N-1 attention maps (B, L, L) of ``forward_blocks`` (the
                earlier ones may be None, see :meth:`maps_needed`).
            cam (GradCAMResult): stage 1 (its ``attn_last`` is the last block's attention).
            refinement (str): "static" or "rfm".
            aff (Tensor, optional): (B, n, n) decoder affinity σ(FᵀF), required by "rfm" (detached here).

        Returns:
            Tensor: (B, n, n) transition matrices.
        """
        with record_function("pseudo/transition"):
            if refinement == "rfm":
                if aff is None:
                    raise ValueError("the RFM needs the decoder affinity `aff` (B, n, n)")
                maps = patch_attention(attns, cam.attn_last, self.rfm_layers)
                affinity, _ = rfm_affinity(maps, aff.detach(), self.layer_filter, self.filter_eps)
            elif refinement == "static":
                affinity = static_affinity(
                    patch_attention(attns, cam.attn_last, self.static_layers)
                )
            else:
                raise ValueError(f"refinement must be 'static' or 'rfm', got {refinement!r}")
            return transition_matrix(affinity, self.sinkhorn_iters, self.power)

    @torch.no_grad()
    def boxes(self, cam: GradCAMResult) -> Tensor:
        """Stage 3a: box masks (P, h, w) bool of the thresholded CAMs (spec §4.5)."""
        masks, _ = box_masks(cam.cams, self.box_threshold, self.box_mode)
        return masks

    @torch.no_grad()
    def propagate(
        self, trans: Tensor, cam: GradCAMResult, masks: Tensor, out_size: Tuple[int, int]
    ) -> Tensor:
        """Stage 3b: CAMs propagated inside their boxes, min-max, resized to ``out_size`` (spec §4.6).

        Returns:
            Tensor: (P, H_out, W_out) refined CAMs in [0, 1).
        """
        with record_function("pseudo/propagate"):
            refined, _ = propagate_cams(
                trans, cam.cams, masks, cam.batch_index, tuple(out_size), self.refine_norm_eps
            )
        return refined

    @staticmethod
    def resize(cam: GradCAMResult, out_size: Tuple[int, int]) -> Tensor:
        """No refinement: the initial CAMs resized bilinearly to ``out_size``, (P, H_out, W_out)."""
        return resize_cams(cam.cams, tuple(out_size))

    def scores(self, refined: Tensor, cam: GradCAMResult, batch_size: int) -> Tuple[Tensor, Tensor]:
        """Stage 4a: [bg; r_1..r_K] per image, zero-padded to the batch's largest K (spec §5 steps 1-2).

        Returns:
            Tuple[Tensor, Tensor]: ``scores`` (B, 1+Kmax, H, W) and ``keys`` (B, 1+Kmax), the class id of each
            channel (255 for padding channels).
        """
        return pack_scores(
            refined, cam.batch_index, cam.class_index, batch_size, self.bg_power, counts=cam.counts
        )

    @torch.no_grad()
    def refine_scores(self, guide: Tensor, scores: Tensor) -> Tensor:
        """Stage 4b: PAR on the packed scores, guided by ``guide`` (B, 3, H', W') (spec §5.1)."""
        with record_function("pseudo/par"):
            return self.par(guide, scores)

    def labels(self, scores: Tensor, keys: Tensor, valid: Optional[Tensor] = None) -> Tensor:
        """Stage 4c: argmax -> class ids (B, H, W) long (spec §5 step 4); with ``ignore_padding`` the
        pixels where ``valid`` (B, H, W) is False become 255 (off in the authors' code, spec §5 step 5)."""
        labels = scores_to_labels(scores, keys)
        if self.ignore_padding:
            if valid is None:
                raise ValueError("ignore_padding=True needs the `valid` mask of the crops")
            if valid.shape != labels.shape:
                raise ValueError(
                    f"valid mask {tuple(valid.shape)} must match the labels {tuple(labels.shape)}"
                )
            labels = labels.masked_fill(~valid.to(labels.device, torch.bool), IGNORE_INDEX)
        return labels

    # ------------------------------------------------------------------ all stages
    def forward(
        self,
        backbone: nn.Module,
        guide: Tensor,
        cls_labels: Tensor,
        feats: Sequence[Tensor],
        attns: Sequence[Tensor],
        grid: Tuple[int, int],
        text_fg: Tensor,
        text_bg: Tensor,
        aff: Optional[Tensor] = None,
        use_rfm: bool = False,
        out_size: Optional[Tuple[int, int]] = None,
        valid: Optional[Tensor] = None,
    ) -> Dict[str, Tensor]:
        """Pseudo-labels for a batch: stages 1-4.

        Args:
            backbone (nn.Module): ``FrozenCLIP``.
            guide (Tensor): (B, 3, H', W') normalised images, PAR's guide: the whole image (uncropped);
                resized to ``out_size`` by PAR if the sizes differ.
            cls_labels (Tensor): (B, C-1) multi-hot foreground labels.
            feats (Sequence[Tensor]): N-1 block outputs (B, L, D) from ``forward_blocks``.
            attns (Sequence[Tensor]): N-1 attention maps (B, L, L) from ``forward_blocks``.
            grid (Tuple[int, int]): (h, w) patch grid of the network input.
            text_fg (Tensor): (C-1, E) foreground prompt embeddings.
            text_bg (Tensor): (NB, E) background prompt embeddings.
            aff (Tensor, optional): (B, n, n) decoder affinity, required when ``use_rfm``.
            use_rfm (bool): RFM (True) or static refinement (False); see :func:`rfm_active`.
            out_size (Tuple[int, int], optional): (H_out, W_out) of the refined CAMs and pseudo-labels;
                default the guide's size.
            valid (Tensor, optional): (B, H_out, W_out) bool, False on crop padding.

        Returns:
            Dict[str, Tensor]: ``cams`` (P, h, w) initial CAMs; ``cams_refined`` (P, H_out, W_out);
            ``batch_index`` (P,); ``class_index`` (P,) fg ids; ``box_masks`` (P, h, w) bool;
            ``pseudo_labels`` (B, H_out, W_out) long.
        """
        if guide.dim() != 4:
            raise ValueError(f"guide images must be (B, 3, H, W), got {tuple(guide.shape)}")
        out_size = tuple(guide.shape[-2:]) if out_size is None else tuple(out_size)
        cam = self.initial_cams(backbone, feats, grid, cls_labels, text_fg, text_bg)
        trans = self.transition(attns, cam, "rfm" if use_rfm else "static", aff)
        masks = self.boxes(cam)
        refined = self.propagate(trans, cam, masks, out_size)
        scores, keys = self.scores(refined, cam, guide.shape[0])
        labels = self.labels(self.refine_scores(guide, scores), keys, valid)
        return {
            "cams": cam.cams,
            "cams_refined": refined,
            "batch_index": cam.batch_index,
            "class_index": cam.class_index,
            "box_masks": masks,
            "pseudo_labels": labels,
        }
