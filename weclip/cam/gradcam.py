"""Softmax Grad-CAM on the frozen CLIP image-text classifier (spec §1.6, §3; CLIP-ES, spec §13.1).

The authors run the last CLIP block once per (image, present class) and call ``backward`` once per
class. Here the whole batch is handled at once. On GPUs (strategy "rows"), ONE autograd call: the
block-(N-2) output of each image is repeated once per present class (P rows in total), the last
block runs on the P rows, each row's target probability is picked, and the P targets are summed.
Rows are independent (LayerNorm, attention and pooling never mix rows), so the gradient of the sum
with respect to row p's activation is exactly the gradient of row p's own target. On CPU (strategy
"slots") the forward is shared by the classes of an image and one call per class slot suffices.

Which pairs exist is read on the host from the image-level labels (they come from label files):
given labels on the CPU, nothing here waits for the GPU. The backward stops at the last block's
q/k/v projection when the backbone offers it (``FrozenCLIP.forward_last_qkv``): Grad-CAM only needs
the spatial mean of the activation gradient, and the projection is linear, so that mean is the
projected mean of the q/k/v gradient (one (L x 3D x D) product less per pair).
"""

from dataclasses import dataclass
from typing import Optional, Protocol, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "GRADCAM_STRATEGIES",
    "GRADCAM_LEAVES",
    "GradCAMResult",
    "gradcam",
    "present_pairs",
    "minmax_normalize",
    "gradcam_from_activations",
    "cam_from_channel_weights",
]


#: how the per-pair gradients are obtained, see :func:`gradcam`
GRADCAM_STRATEGIES = ("rows", "slots")
#: where the backward stops: "act" (the LN₁ output) or "qkv" (its q/k/v projection, same channel weights)
GRADCAM_LEAVES = ("act", "qkv")


class _LastBlock(Protocol):
    """What Grad-CAM needs from the backbone (``FrozenCLIP``, docs/architecture.md)."""

    logit_scale: float

    def forward_last(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]: ...


@dataclass
class GradCAMResult:
    """Output of :func:`gradcam`.

    Attributes:
        cams (Tensor): (P, h, w) CAMs in [0, 1], one per (image, present class) pair, detached.
        batch_index (Tensor): (P,) long, the image of each pair; images in batch order.
        class_index (Tensor): (P,) long, 0-based foreground id of each pair, ascending within an
            image.
        attn_last (Tensor): (B, L, L) head-averaged attention of the last block, detached.
        probs (Tensor): (B, C-1+NB) softmax over [foreground prompts; background prompts] per image
            with the absent foreground classes masked out (their probability is exactly 0),
            detached. Restricted to the non-zero columns it equals the authors' softmax over
            [present fg; all bg] (spec §1.6).
        counts (Tensor, optional): (B,) long on the CPU, pairs per image (host-side shapes for the
            later stages, e.g. the packed score channels).
    """

    cams: Tensor
    batch_index: Tensor
    class_index: Tensor
    attn_last: Tensor
    probs: Tensor
    counts: Optional[Tensor] = None


def present_pairs(cls_labels: Tensor) -> Tuple[Tensor, Tensor]:
    """The (image, class) pairs of a multi-hot label tensor, images in order, classes ascending.

    Args:
        cls_labels (Tensor): (B, C-1) multi-hot foreground labels (bool, int or float; non-zero =
            present).

    Returns:
        Tuple[Tensor, Tensor]: ``batch_index`` (P,) and ``class_index`` (P,), both long.
    """
    if cls_labels.dim() != 2:
        raise ValueError(
            f"cls_labels must be (B, C-1) multi-hot, got shape {tuple(cls_labels.shape)}"
        )
    # nonzero() enumerates in row-major order: image-major, class ids ascending within an image
    pairs = torch.nonzero(cls_labels != 0, as_tuple=False)
    return pairs[:, 0], pairs[:, 1]


def minmax_normalize(x: Tensor, eps: float, passes: int = 1) -> Tensor:
    """Per-map ``(x - min) / (max(x - min) + eps)`` over the last two dims, ``passes`` times.

    Args:
        x (Tensor): (..., h, w) maps.
        eps (float): added to the denominator (1e-7 in the authors' code, spec §3 and §4.6).
        passes (int): how many times to apply it (the authors' Grad-CAM applies it twice, fixture
            README).

    Returns:
        Tensor: (..., h, w) maps in [0, 1); an all-constant map becomes all zeros.
    """
    for _ in range(passes):
        flat = x.flatten(-2)
        shifted = flat - flat.amin(dim=-1, keepdim=True)
        x = (shifted / (shifted.amax(dim=-1, keepdim=True) + eps)).view_as(x)
    return x


def gradcam_from_activations(
    acts: Tensor, grads: Tensor, grid: Tuple[int, int], norm_eps: float = 1e-7, norm_passes: int = 2
) -> Tensor:
    """Grad-CAM from patch activations and their gradients (spec §3 step 3).

    Args:
        acts (Tensor): (P, n, D) last-block LN₁ output at the n patch tokens (CLS dropped).
        grads (Tensor): (P, n, D) gradient of each row's target probability with respect to
            ``acts``.
        grid (Tuple[int, int]): (h, w) with h·w = n, tokens in row-major order.
        norm_eps (float): min-max epsilon.
        norm_passes (int): number of min-max passes.

    Returns:
        Tensor: (P, h, w) CAMs in [0, 1].
    """
    h, w = grid
    if acts.shape != grads.shape or acts.dim() != 3 or acts.shape[1] != h * w:
        raise ValueError(
            f"acts/grads must both be (P, h*w={h * w}, D), got {tuple(acts.shape)} and "
            f"{tuple(grads.shape)}"
        )
    alpha = grads.mean(dim=1)  # (P, D): Grad-CAM channel weights = spatial mean of the gradient
    return cam_from_channel_weights(acts, alpha, grid, norm_eps, norm_passes)


def cam_from_channel_weights(
    acts: Tensor, alpha: Tensor, grid: Tuple[int, int], norm_eps: float = 1e-7, norm_passes: int = 2
) -> Tensor:
    """Grad-CAM from patch activations and the channel weights alpha (spec §3 step 3).

    Args:
        acts (Tensor): (P, n, D) activations at the n patch tokens.
        alpha (Tensor): (P, D) spatial mean of each pair's gradient with respect to ``acts``.
        grid (Tuple[int, int]): (h, w), h·w = n, row-major.
        norm_eps (float): min-max epsilon.
        norm_passes (int): number of min-max passes.

    Returns:
        Tensor: (P, h, w) CAMs in [0, 1].
    """
    h, w = grid
    if acts.dim() != 3 or acts.shape[1] != h * w or alpha.shape != (acts.shape[0], acts.shape[2]):
        raise ValueError(
            f"acts must be (P, h*w={h * w}, D) and alpha (P, D), got {tuple(acts.shape)} and "
            f"{tuple(alpha.shape)}"
        )
    # ReLU(sum_c alpha_c A_c), (P, n); product then channel sum, the authors' order of operations
    cam = (acts * alpha[:, None, :]).sum(dim=-1).clamp_min(0)
    return minmax_normalize(cam.view(-1, h, w), norm_eps, norm_passes)


def _softmax_head(emb: Tensor, text: Tensor, absent: Tensor, scale: float) -> Tensor:
    """Probabilities over [present fg; bg] prompts (spec §1.6): (R, E) embeddings -> (R, C-1+NB)."""
    logits = scale * F.normalize(emb.float(), dim=-1) @ text.t()
    # softmax over [present fg; all bg] = softmax over all prompts, absent fg logits set to -inf
    return logits.masked_fill(absent, float("-inf")).softmax(dim=-1)


def _checked_forward_last(backbone: _LastBlock, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    act, attn, emb = backbone.forward_last(x)
    if not act.requires_grad:
        raise RuntimeError(
            "backbone.forward_last returned an activation outside the autograd graph"
        )
    return act, attn, emb


def _host_layout(cls_labels: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The pair layout on the host: batch_index, class_index, rank within the image (P,), counts
    (B,) and the labels themselves, all on the CPU (one device->host copy if the labels are not)."""
    labels = cls_labels.detach()
    if labels.device.type != "cpu":
        labels = (
            labels.cpu()
        )  # the one host read of the step when the caller kept labels on the GPU
    batch_index, class_index = present_pairs(labels)
    counts = torch.bincount(batch_index, minlength=labels.shape[0])
    # rank of each pair among its image's pairs (0 = lowest class id)
    rank = torch.arange(batch_index.numel()) - (torch.cumsum(counts, 0) - counts)[batch_index]
    return batch_index, class_index, rank, counts, labels


def gradcam(
    backbone: _LastBlock,
    last_input: Tensor,
    cls_labels: Tensor,
    text_fg: Tensor,
    text_bg: Tensor,
    grid: Tuple[int, int],
    *,
    norm_eps: float = 1e-7,
    norm_passes: int = 2,
    logit_scale: Optional[float] = None,
    strategy: str = "auto",
    leaf: str = "auto",
) -> GradCAMResult:
    """Batched softmax Grad-CAM for every present class of every image (spec §3, §1.6).

    Per image the classifier is ``softmax(logit_scale * emb @ [text_fg[present]; text_bg]ᵀ)``; the
    Grad-CAM target of a present class is its softmax *probability*; the activation is the last
    block's LN₁ output (``act`` from ``backbone.forward_last``). Only ``cls_labels`` decides which
    classes are present.

    Two exact ways to get one gradient per (image, class) pair (see :data:`GRADCAM_STRATEGIES`):

    - "rows": the block-(N-2) output of each image is repeated once per present class (P rows),
      the last block runs once on the P rows, the P target probabilities are summed and ONE
      ``autograd.grad`` call returns every pair's gradient (rows never mix). Fewest calls, no
      Python loop over images, no host synchronisation (given host labels): the choice on GPUs.
    - "slots": the last block runs once per image (B forwards instead of P) and the gradients come
      from one ``autograd.grad`` call per class slot j (the sum of the j-th present class of every
      image; K_max calls in all). Per-image graphs are independent, so each call only traverses the
      images it targets. Less compute (B + P block passes instead of 2P): the choice on CPU, where
      it is ~20% faster than "rows" (and single-row attention matmuls are cheaper there).

    Args:
        backbone: exposes ``forward_last(x (R,L,D)) -> (act (R,L,D), attn (R,L,L), emb (R,E))`` and
            ``logit_scale`` (already exponentiated), e.g. ``FrozenCLIP``; optionally
            ``forward_last_qkv`` and ``qkv_grad_to_act`` (the "qkv" leaf).
        last_input (Tensor): (B, L, D) output of block N-2 (CLS first); treated as a constant.
        cls_labels (Tensor): (B, C-1) multi-hot foreground labels, best on the CPU (host data: the
            pair list is read there; labels on a GPU cost one device->host copy).
        text_fg (Tensor): (C-1, E) foreground prompt embeddings.
        text_bg (Tensor): (NB, E) background prompt embeddings.
        grid (Tuple[int, int]): (h, w) patch grid, h·w = L - 1.
        norm_eps (float): min-max epsilon (``cfg.model.cam.norm_eps``).
        norm_passes (int): min-max passes (``cfg.model.cam.cam_norm_passes``; 2 = the authors').
        logit_scale (float, optional): overrides ``backbone.logit_scale``.
        strategy (str): "rows" | "slots" | "auto" ("slots" on CPU, "rows" elsewhere).
        leaf (str): "act" | "qkv" | "auto" ("qkv" when the backbone offers it), see
            :data:`GRADCAM_LEAVES`; both give the same channel weights up to fp32 rounding.

    Returns:
        GradCAMResult: cams (P, h, w), batch_index (P,), class_index (P,), attn_last (B, L, L),
        probs (B, C-1+NB), counts (B,) on the CPU.
    """
    b, seq_len, _ = last_input.shape
    h, w = grid
    if seq_len != h * w + 1:
        raise ValueError(
            f"last_input has {seq_len} tokens, expected 1 + h*w = {1 + h * w} for grid {grid}"
        )
    if tuple(cls_labels.shape) != (b, text_fg.shape[0]):
        raise ValueError(
            f"cls_labels must be (B={b}, C-1={text_fg.shape[0]}), got {tuple(cls_labels.shape)}"
        )
    if strategy not in GRADCAM_STRATEGIES + ("auto",):
        raise ValueError(
            f"strategy must be 'auto' or one of {GRADCAM_STRATEGIES}, got {strategy!r}"
        )
    has_qkv = hasattr(backbone, "forward_last_qkv") and hasattr(backbone, "qkv_grad_to_act")
    if leaf not in GRADCAM_LEAVES + ("auto",) or (leaf == "qkv" and not has_qkv):
        raise ValueError(
            f"leaf must be 'auto', 'act' or (with a backbone that has forward_last_qkv) 'qkv', "
            f"got {leaf!r}"
        )
    use_qkv = has_qkv if leaf == "auto" else leaf == "qkv"
    device = last_input.device
    if strategy == "auto":
        strategy = "slots" if device.type == "cpu" else "rows"

    # host-side layout (no device synchronisation), then copies to the device
    batch_index_h, class_index_h, rank_h, counts_h, labels_h = _host_layout(cls_labels)
    num_pairs = batch_index_h.numel()
    absent_h = torch.cat(
        [labels_h == 0, torch.zeros(b, text_bg.shape[0], dtype=torch.bool)], 1
    )  # (B, C-1+NB)

    def to_device(t: Tensor) -> Tensor:
        return t.to(device, non_blocking=True)

    batch_index, class_index, absent = map(to_device, (batch_index_h, class_index_h, absent_h))

    scale = float(backbone.logit_scale if logit_scale is None else logit_scale)
    text = torch.cat([text_fg, text_bg], dim=0).to(device=device, dtype=torch.float32)
    # already unit norm; renormalised as in the authors' head (spec §1.6)
    text = F.normalize(text, dim=-1)
    last_input = last_input.detach()

    def forward(x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """(act, leaf, attn, emb) of the last block on x."""
        if use_qkv:
            return backbone.forward_last_qkv(x)
        act, attn, emb = _checked_forward_last(backbone, x)
        return act, act, attn, emb

    def channel_weights(grad: Tensor) -> Tensor:
        """(R, L, 3D or D) leaf gradients -> (R, D) spatial means over the patch tokens of ∂/∂act."""
        mean = grad[:, 1:].float().mean(dim=1)  # CLS dropped
        return backbone.qkv_grad_to_act(mean) if use_qkv else mean

    with torch.enable_grad():
        if strategy == "rows":
            # one row per pair; an image without any present class still gets one row so that its
            # last-block attention exists. Rows of image i start at row_start[i].
            rows_per_image = counts_h.clamp_min(1)
            row_image_h = torch.repeat_interleave(torch.arange(b), rows_per_image)
            row_start_h = torch.cumsum(rows_per_image, 0) - rows_per_image
            pair_row_h = row_start_h[batch_index_h] + rank_h  # (P,)
            row_image, row_start, pair_row = map(to_device, (row_image_h, row_start_h, pair_row_h))
            act, leaf_t, attn, emb = forward(last_input[row_image])  # (R, ...)
            probs = _softmax_head(emb, text, absent[row_image], scale)
            if num_pairs > 0:
                target = probs[pair_row, class_index].sum()  # sum of the P target probabilities
                (grad,) = torch.autograd.grad(target, leaf_t)
                alpha = channel_weights(grad)[pair_row]
            else:
                alpha = act.new_zeros(0, act.shape[-1], dtype=torch.float32)
            act_pairs = act.detach()[pair_row]
            attn, probs = attn[row_start], probs[row_start]
        else:
            outs = [forward(last_input[i : i + 1]) for i in range(b)]
            leaves = [o[1] for o in outs]
            attn = torch.cat([o[2] for o in outs])
            probs = _softmax_head(torch.cat([o[3] for o in outs]), text, absent, scale)
            alpha = last_input.new_zeros(num_pairs, last_input.shape[-1], dtype=torch.float32)
            num_slots = int(counts_h.max()) if num_pairs > 0 else 0
            for slot in range(num_slots):
                sel_h = torch.nonzero(rank_h == slot).flatten()  # the slot-th class of each image
                sel = to_device(sel_h)
                target = probs[batch_index[sel], class_index[sel]].sum()
                grads = torch.autograd.grad(
                    target,
                    [leaves[i] for i in batch_index_h[sel_h].tolist()],
                    retain_graph=slot < num_slots - 1,
                )
                alpha[sel] = channel_weights(torch.cat(grads))
            act_pairs = torch.cat([o[0].detach() for o in outs])[batch_index]

    cams = cam_from_channel_weights(
        act_pairs[:, 1:].float(), alpha, grid, norm_eps, norm_passes
    )  # CLS dropped
    return GradCAMResult(
        cams=cams,
        batch_index=batch_index,
        class_index=class_index,
        attn_last=attn.detach(),
        probs=probs.detach(),
        counts=counts_h,
    )
