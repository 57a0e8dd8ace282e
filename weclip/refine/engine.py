"""The pseudo-label engine: Grad-CAM → static or RFM refinement → PAR → labels (spec §3-§5, App. A).

One call handles the whole batch (used by ``WeCLIP.forward`` and the standalone pseudo-label tool):

1. batched softmax Grad-CAM on the last CLIP block for every present class (spec §3);
2. affinity: mean of the last ``static_layers`` attention maps (static, spec §4.2) or the RFM
   (spec §4.3);
3. transition matrix per image: Sinkhorn, symmetrise, power (spec §4.4);
4. box masks per CAM (spec §4.5), propagation, min-max and resize (spec §4.6);
5. [bg; CAMs] packed over the batch, PAR, argmax → class ids (spec §5).
"""

import contextlib
import logging
import time
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from weclip.cam.gradcam import gradcam
from weclip.refine.boxes import BOX_MODES, box_masks
from weclip.refine.par import PAR
from weclip.refine.propagate import propagate_cams
from weclip.refine.pseudo_label import make_pseudo_labels
from weclip.refine.transition import (
    LAYER_FILTERS,
    patch_attention,
    rfm_affinity,
    static_affinity,
    transition_matrix,
)

__all__ = ["rfm_active", "PseudoLabelEngine"]

logger = logging.getLogger("weclip")


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


@contextlib.contextmanager
def _stage(timings: Optional[Dict[str, float]], name: str, device: torch.device) -> Iterator[None]:
    """Add the wall time of the block to ``timings[name]`` (synchronising CUDA); no-op when None."""
    if timings is None:
        yield
        return
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


class PseudoLabelEngine(nn.Module):
    """From frozen-CLIP outputs to pseudo-labels for a batch (spec §3-§5).

    Args:
        cam_norm_eps (float): Grad-CAM min-max epsilon (``cam.norm_eps``).
        cam_norm_passes (int): Grad-CAM min-max passes (``cam.cam_norm_passes``, 2 = the authors').
        static_layers (int): attention maps averaged in static mode (``refine.static_layers``, 8).
        rfm_layers (int): attention maps considered by the RFM (``refine.rfm_layers``, 6 VOC / 10
            COCO).
        layer_filter (str): RFM layer filter, "signed" (code) | "abs" (paper)
            (``refine.layer_filter``).
        filter_eps (float): denominator epsilon of the mean of kept maps (``refine.filter_eps``).
        sinkhorn_iters (int): column-then-row passes (``refine.sinkhorn_iters``).
        power (int): transition matrix power (``refine.power``).
        box_threshold (float): CAM threshold for the box masks (``refine.box_threshold``, 0.4 VOC /
            0.7 COCO).
        box_mode (str): "official" | "inclusive" (``refine.box_mode``).
        refine_norm_eps (float): min-max epsilon of the propagated CAMs (``refine.norm_eps``).
        bg_power (float): background exponent (``pseudo_label.bg_power``).
        ignore_padding (bool): label crop padding 255 (``pseudo_label.ignore_padding``).
        par (PAR, optional): the PAR module; default ``PAR()`` with the spec's constants.
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
        if layer_filter not in LAYER_FILTERS:
            raise ValueError(f"layer_filter must be one of {LAYER_FILTERS}, got {layer_filter!r}")
        if box_mode not in BOX_MODES:
            raise ValueError(f"box_mode must be one of {BOX_MODES}, got {box_mode!r}")
        if static_layers < 1 or rfm_layers < 1:
            raise ValueError(
                f"static_layers/rfm_layers must be >= 1, got {static_layers}/{rfm_layers}"
            )
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
    def from_config(cls, model_cfg: Mapping[str, Any]) -> "PseudoLabelEngine":
        """Build from the ``cam``, ``refine``, ``pseudo_label``, ``par`` sections of ``cfg.model``.

        Unknown keys in these sections raise ``KeyError`` (a typo must not fall back to a default
        silently). ``refine.rfm_start_iter`` is not used here: the caller decides with
        :func:`rfm_active`.
        """
        names = {
            "cam": {"norm_eps": "cam_norm_eps", "cam_norm_passes": "cam_norm_passes"},
            "refine": {
                "static_layers": "static_layers",
                "rfm_layers": "rfm_layers",
                "layer_filter": "layer_filter",
                "filter_eps": "filter_eps",
                "sinkhorn_iters": "sinkhorn_iters",
                "power": "power",
                "box_threshold": "box_threshold",
                "box_mode": "box_mode",
                "norm_eps": "refine_norm_eps",
                "rfm_start_iter": None,
            },
            "pseudo_label": {"bg_power": "bg_power", "ignore_padding": "ignore_padding"},
            "par": {
                "num_iter": "num_iter",
                "dilations": "dilations",
                "temperature": "temperature",
                "pos_weight": "pos_weight",
                "eps": "eps",
            },
        }
        kwargs: Dict[str, Any] = {}
        par_kwargs: Dict[str, Any] = {}
        for section, mapping in names.items():
            values = model_cfg.get(section) or {}
            for key, value in values.items():
                if key not in mapping:
                    raise KeyError(
                        f"Unknown key 'model.{section}.{key}' for the pseudo-label engine "
                        f"(known: {', '.join(sorted(mapping))})"
                    )
                if mapping[key] is None:
                    continue
                (par_kwargs if section == "par" else kwargs)[mapping[key]] = value
        return cls(**kwargs, par=PAR(**par_kwargs))

    def forward(
        self,
        backbone: nn.Module,
        images: Tensor,
        cls_labels: Tensor,
        feats: Sequence[Tensor],
        attns: Sequence[Tensor],
        text_fg: Tensor,
        text_bg: Tensor,
        aff: Optional[Tensor] = None,
        use_rfm: bool = False,
        out_size: Optional[Tuple[int, int]] = None,
        valid: Optional[Tensor] = None,
        timings: Optional[Dict[str, float]] = None,
    ) -> Dict[str, Tensor]:
        """Pseudo-labels for a batch.

        Args:
            backbone (nn.Module): ``FrozenCLIP`` (``forward_last``, ``logit_scale``, ``grid_size``).
            images (Tensor): (B, 3, H, W) normalised images (the CLIP input, also the PAR guidance).
            cls_labels (Tensor): (B, C-1) multi-hot foreground labels; the only source of class
                presence.
            feats (Sequence[Tensor]): N-1 block outputs (B, L, D) from ``forward_blocks``; the last
                one feeds Grad-CAM.
            attns (Sequence[Tensor]): N-1 attention maps (B, L, L) from ``forward_blocks``.
            text_fg (Tensor): (C-1, E) foreground prompt embeddings.
            text_bg (Tensor): (NB, E) background prompt embeddings.
            aff (Tensor, optional): (B, n, n) decoder affinity σ(FᵀF); required when ``use_rfm``;
                detached here.
            use_rfm (bool): RFM (True) or static refinement (False); see :func:`rfm_active`.
            out_size (Tuple[int, int], optional): (H_out, W_out) of the refined CAMs and
                pseudo-labels; default (H, W) (training); the original image size in validation
                (spec §4.6).
            valid (Tensor, optional): (B, H_out, W_out) bool, False on crop padding (for
                ``ignore_padding``).
            timings (Dict[str, float], optional): if given, the seconds spent in "gradcam",
                "transition", "propagate" and "par" are added to it (CUDA synchronised per stage).

        Returns:
            Dict[str, Tensor]: ``cams`` (P, h, w) initial CAMs; ``cams_refined`` (P, H_out, W_out);
            ``batch_index`` (P,); ``class_index`` (P,) fg ids; ``box_masks`` (P, h, w) bool;
            ``pseudo_labels`` (B, H_out, W_out) long.
        """
        if images.dim() != 4:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        if use_rfm and aff is None:
            raise ValueError("use_rfm=True needs the decoder affinity `aff` (B, n, n)")
        grid = tuple(backbone.grid_size(images.shape[-2], images.shape[-1]))
        out_size = tuple(images.shape[-2:]) if out_size is None else tuple(out_size)
        device = images.device

        # 1. initial CAMs for every present class, batched (spec §3; see gradcam strategies)
        with _stage(timings, "gradcam", device):
            cam = gradcam(
                backbone,
                feats[-1],
                cls_labels,
                text_fg,
                text_bg,
                grid,
                norm_eps=self.cam_norm_eps,
                norm_passes=self.cam_norm_passes,
            )
        with torch.no_grad():
            # 2-3. affinity and transition matrix, once per image (spec §4.2-4.4)
            with _stage(timings, "transition", device):
                if use_rfm:
                    maps = patch_attention(attns, cam.attn_last, self.rfm_layers)
                    affinity, _ = rfm_affinity(maps, aff, self.layer_filter, self.filter_eps)
                else:
                    maps = patch_attention(attns, cam.attn_last, self.static_layers)
                    affinity = static_affinity(maps)
                trans = transition_matrix(affinity, self.sinkhorn_iters, self.power)
            # 4. box masks, propagation, min-max, resize (spec §4.5-4.6)
            with _stage(timings, "propagate", device):
                masks, _ = box_masks(cam.cams, self.box_threshold, self.box_mode)
                refined, _ = propagate_cams(
                    trans, cam.cams, masks, cam.batch_index, out_size, self.refine_norm_eps
                )
            # 5. background, PAR, argmax (spec §5)
            with _stage(timings, "par", device):
                labels = make_pseudo_labels(
                    images,
                    refined,
                    cam.batch_index,
                    cam.class_index,
                    self.par,
                    bg_power=self.bg_power,
                    valid=valid,
                    ignore_padding=self.ignore_padding,
                )
        return {
            "cams": cam.cams,
            "cams_refined": refined,
            "batch_index": cam.batch_index,
            "class_index": cam.class_index,
            "box_masks": masks,
            "pseudo_labels": labels,
        }
