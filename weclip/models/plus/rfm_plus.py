"""RFM+: WeCLIP's refinement module with extra guidance from the DINO branch (doc §4).

WeCLIP+ (Zhang et al., TPAMI 2025, https://ieeexplore.ieee.org/document/10891864), as the authors'
``WeCLIP+/clip/clip_tool.py: perform_single_voc_cam`` / ``perform_single_coco_cam`` compute it,
always (no static phase, ``require_seg_trans = True`` in ``WeCLIP_Plus.forward``):

1. Affinity: the filtered mean of the last m CLIP attention maps (the WeCLIP layer filter, signed
   sum, spec §4.3) times the detached decoder affinity, which is now sigmoid(FᵀF) of the
   *concatenated* CLIP + DINO fused features (:meth:`WeCLIPPlusDecoder.affinity`). m = 6 (VOC) /
   8 (COCO) for CLIP ViT-B/16, 12 for ViT-L/14 (both). Then Sinkhorn x3, symmetrise, square
   (spec §4.4).
2. Gate: each class's Grad-CAM M_k (h, w) is multiplied by the detached softmax probability of
   that class under the mean prediction 0.5·seg_clip + 0.5·seg_dino, at the decoder grid.
3. Box mask: all ones for VOC (the box mask computed from M_k is overwritten); COCO keeps the
   CLIP-ES boxes of the *ungated* M_k at threshold 0.7.
4. r_k = T (box columns) · vec(gated M_k), min-max, bilinear resize (spec §4.6): what
   :func:`weclip.refine.propagate.propagate_cams` computes.

The background score, PAR and the argmax to pseudo-labels are WeCLIP's (spec §5).
"""

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from weclip.refine.propagate import propagate_cams
from weclip.refine.transition import patch_attention, rfm_affinity, transition_matrix

__all__ = [
    "RFM_PLUS_LAYERS",
    "class_probabilities",
    "gate_cams",
    "rfm_plus_num_layers",
    "rfm_plus_refine",
    "rfm_plus_transition",
]

#: Attention maps used by RFM+, by dataset and CLIP patch size (doc §4.1): the authors' slices
#: ``[-6:]`` / ``[-8:]`` for ViT-B/16 (``clip_flag == 16``) and ``[-12:]`` for ViT-L/14.
RFM_PLUS_LAYERS: Dict[str, Dict[int, int]] = {"voc": {16: 6, 14: 12}, "coco": {16: 8, 14: 12}}


def rfm_plus_num_layers(dataset: str, clip_patch_size: int) -> int:
    """The number of last CLIP attention maps RFM+ uses (doc §4.1).

    Args:
        dataset (str): "voc" | "coco".
        clip_patch_size (int): 16 (ViT-B/16) or 14 (ViT-L/14), the authors' ``clip_flag``.

    Returns:
        int: 6 / 8 (VOC / COCO, B/16) or 12 (L/14).
    """
    if dataset not in RFM_PLUS_LAYERS or clip_patch_size not in RFM_PLUS_LAYERS[dataset]:
        raise ValueError(
            f"no RFM+ layer count for dataset {dataset!r} and CLIP patch size {clip_patch_size}; "
            f"known: {RFM_PLUS_LAYERS}"
        )
    return RFM_PLUS_LAYERS[dataset][clip_patch_size]


def class_probabilities(seg_logits: Tensor) -> Tensor:
    """Detached softmax over classes of the mean prediction, at the decoder grid (doc §4.2).

    Args:
        seg_logits (Tensor): (B, C, h, w), 0.5·seg_clip + 0.5·seg_dino.

    Returns:
        Tensor: (B, C, h, w) float32, no gradient.
    """
    return F.softmax(seg_logits.detach().float(), dim=1)


def gate_cams(cams: Tensor, probs: Tensor, batch_index: Tensor, class_index: Tensor) -> Tensor:
    """M_k ⊙ P[class k + 1]: each CAM times its class's probability map (doc §4.2).

    Args:
        cams (Tensor): (P, h, w) Grad-CAMs, one per (image, present class) pair.
        probs (Tensor): (B, C, h, w) from :func:`class_probabilities`; channel 0 = background.
        batch_index (Tensor): (P,) image of each CAM.
        class_index (Tensor): (P,) foreground id (class id - 1) of each CAM.

    Returns:
        Tensor: (P, h, w) float32.
    """
    if cams.dim() != 3 or probs.dim() != 4 or tuple(cams.shape[-2:]) != tuple(probs.shape[-2:]):
        raise ValueError(
            f"cams (P, h, w) and probs (B, C, h, w) must share the grid; got {tuple(cams.shape)} "
            f"and {tuple(probs.shape)}"
        )
    if batch_index.shape != (cams.shape[0],) or class_index.shape != (cams.shape[0],):
        raise ValueError("batch_index and class_index must have one entry per CAM")
    return cams.float() * probs[batch_index, class_index + 1].float()


def rfm_plus_transition(
    attns: Sequence[Tensor],
    attn_last: Tensor,
    aff: Tensor,
    num_layers: int,
    *,
    layer_filter: str = "signed",
    sinkhorn_iters: int = 3,
    power: int = 2,
) -> Tuple[Tensor, Tensor]:
    """The RFM+ transition matrix, once per image (doc §4.1-4.2).

    Args:
        attns (Sequence[Tensor]): N-1 maps (B, L, L) of CLIP blocks 0..N-2.
        attn_last (Tensor): (B, L, L) attention of the last block (from the Grad-CAM forward).
        aff (Tensor): (B, n, n) sigmoid(FᵀF) of the concatenated features; detached here.
        num_layers (int): m, from :func:`rfm_plus_num_layers`.
        layer_filter (str): "signed" (the authors') | "abs" (spec §4.3).
        sinkhorn_iters (int): 3. power (int): 2.

    Returns:
        Tuple[Tensor, Tensor]: T (B, n, n) float32 and the kept-layer mask (B, m) bool.
    """
    maps = patch_attention(attns, attn_last, num_layers)  # (B, m, n, n)
    affinity, keep = rfm_affinity(maps, aff, layer_filter=layer_filter)
    return transition_matrix(affinity, sinkhorn_iters, power), keep


def rfm_plus_refine(
    trans: Tensor,
    cams: Tensor,
    probs: Tensor,
    batch_index: Tensor,
    class_index: Tensor,
    masks: Optional[Tensor] = None,
    out_size: Optional[Tuple[int, int]] = None,
    norm_eps: float = 1e-7,
) -> Tuple[Tensor, Tensor]:
    """Refined CAMs: propagate the gated CAMs with T inside the box masks (spec §4.3-4.4, doc §4.2).

    Args:
        trans (Tensor): (B, n, n) from :func:`rfm_plus_transition`.
        cams (Tensor): (P, h, w) Grad-CAMs M_k (ungated).
        probs (Tensor): (B, C, h, w) from :func:`class_probabilities`.
        batch_index (Tensor): (P,). class_index (Tensor): (P,) foreground ids.
        masks (Tensor, optional): (P, h, w) bool box masks; None = all ones (the authors' VOC
            model). COCO: the boxes of the ungated ``cams`` (``weclip.refine.boxes.box_masks``,
            threshold 0.7).
        out_size (Tuple[int, int], optional): (H, W) of the output; None keeps (h, w).
        norm_eps (float): min-max epsilon (1e-7).

    Returns:
        Tuple[Tensor, Tensor]: refined (P, H, W) in [0, 1) and the propagated maps before the
        min-max (P, h, w).
    """
    gated = gate_cams(cams, probs, batch_index, class_index)
    if masks is None:
        masks = torch.ones_like(gated, dtype=torch.bool)
    return propagate_cams(trans, gated, masks, batch_index, out_size=out_size, norm_eps=norm_eps)
