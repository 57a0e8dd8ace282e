"""AffinityNet: pixel affinities learned from confident CAM regions, then a random walk.

Ahn & Kwak, "Learning Pixel-level Semantic Affinity with Image-level Supervision for Weakly
Supervised Semantic Segmentation", CVPR 2018, https://arxiv.org/abs/1803.10464 (the method section;
their released code, github.com/jiwoon-ahn/psa, fixes the details noted below).

1. **Confident regions** (:func:`confident_labels`): from normalised CAMs, the background score
   M_bg = (1 - max_k M_k)^alpha with a low alpha (4) gives the confident foreground (pixels whose
   argmax is a class), a high alpha (32) the confident background (argmax = background); the rest
   is neutral (255). ``mode="threshold"`` uses constant background thresholds instead (IRN's
   0.30 / 0.05, https://arxiv.org/abs/1904.05044). The paper refines both argmaxes with a dense
   CRF; do that on :func:`weclip.baselines.cam.scores_with_background` and combine the two label
   maps with :func:`combine_confident_labels`.
2. **Affinity labels** (:func:`affinity_labels`), on the feature grid: for pairs (i, j) with
   0 < ||x_i - x_j||_2 < radius (gamma = 5), both non-neutral: positive if the labels are equal
   (split into background-positive and foreground-positive), negative otherwise. Pairs are stored
   by offset: the half window of :func:`pair_offsets` (34 offsets for radius 5), each unordered
   pair once, as (B, O, h, w) masks for the pair (x, x + offset).
3. **Affinity head** (:class:`AffinityHead`, :class:`AffinityNet`): 1x1 convolutions reduce three
   backbone stages to 64 / 128 / 256 channels, which are resized to one grid, concatenated and
   mixed by a 1x1 convolution into the 448-channel feature f (ELU after each, bias-free, as the
   authors' code). Affinity W_ij = exp(-||f_i - f_j||_1); the authors' code takes the MEAN over
   channels, not the sum (``reduction="mean"``, default; "sum" is the paper's equation).
4. **Loss** (:func:`affinity_loss`): L = L_bg+/4 + L_fg+/4 + L-/2 with
   L+ = -mean log W over the positive pairs of each kind, L- = -mean log(1 - W) over the negative
   ones (paper: L = L_bg+ + L_fg+ + 2 L-, the same up to a factor 4; eps 1e-5 inside the logs and
   in the counts, as the authors' code).
5. **Random walk** (:func:`dense_affinity`, :func:`random_walk`): A = W on the pairs within the
   radius (and 1 on the diagonal), T = D^-1 A^beta (Hadamard power beta, D = row sums), and
   vec(M*_c) = T^t vec(M_c) for every score map c (background included). beta = 8, t = 256
   (2^8, the code's ``logt``), background alpha = 16 for the score maps to walk.

Authors'-code detail kept as an option (``interior_only``, default True): pairs are formed only
from "from" pixels at least radius-1 away from the left, right and bottom borders (their code
crops the grid; the random walk then uses the same pair set). ``interior_only=False`` forms every
in-bounds pair, as the paper's definition.
"""

from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from weclip.baselines.cam import cams_to_labels, scores_with_background
from weclip.baselines.resnet import ResNetTrunk
from weclip.refine.crf import dense_crf

__all__ = [
    "pair_offsets",
    "pair_validity",
    "shifted",
    "confident_labels",
    "crf_confident_labels",
    "combine_confident_labels",
    "downsample_labels",
    "AffinityLabels",
    "affinity_labels",
    "pair_affinities",
    "affinity_loss",
    "dense_affinity",
    "random_walk",
    "AffinityHead",
    "AffinityNet",
]

LOG_EPS = 1e-5  # inside the logs and added to the pair counts (authors' code)


def pair_offsets(radius: int = 5) -> List[Tuple[int, int]]:
    """Half-window offsets (dy, dx) with 0 < dy^2 + dx^2 < radius^2, each unordered pair once.

    (0, dx) for dx = 1..radius-1, then (dy, dx) for dy = 1..radius-1 and |dx| <= radius-1.
    Radius 5 gives 4 + 9 + 9 + 7 + 5 = 34 offsets.
    """
    if radius < 2:
        raise ValueError(f"affinity radius must be >= 2 (at least one neighbour), got {radius}")
    r = int(radius)
    offsets = [(0, dx) for dx in range(1, r)]
    for dy in range(1, r):
        for dx in range(-r + 1, r):
            if dy * dy + dx * dx < r * r:
                offsets.append((dy, dx))
    return offsets


def pair_validity(
    grid: Tuple[int, int], radius: int = 5, interior_only: bool = True, device=None
) -> torch.Tensor:
    """Which pairs (x, x + offset) exist: (O, h, w) bool.

    In bounds always; with ``interior_only`` also x in rows [0, h - r + 1) and columns
    [r - 1, w - r + 1) (the authors' crop, see the module docstring).
    """
    h, w = int(grid[0]), int(grid[1])
    rows = torch.arange(h, device=device)[:, None]
    cols = torch.arange(w, device=device)[None, :]
    masks = []
    for dy, dx in pair_offsets(radius):
        ok = (rows + dy < h) & (cols + dx >= 0) & (cols + dx < w)
        if interior_only:
            ok = ok & (rows < h - radius + 1) & (cols >= radius - 1) & (cols < w - radius + 1)
        masks.append(ok)
    return torch.stack(masks)


def shifted(x: torch.Tensor, radius: int = 5, fill: float = 0.0) -> torch.Tensor:
    """Values at x + offset for every offset: (B, C, h, w) -> (B, C, O, h, w); outside = fill."""
    b, c, h, w = x.shape
    r = int(radius) - 1
    padded = F.pad(x, (r, r, 0, r), value=fill)  # left, right, top, bottom
    views = [padded[:, :, dy : dy + h, r + dx : r + dx + w] for dy, dx in pair_offsets(radius)]
    return torch.stack(views, dim=2)


def confident_labels(
    cams: torch.Tensor,
    cls_labels: Optional[torch.Tensor] = None,
    mode: str = "power",
    fg_value: Optional[float] = None,
    bg_value: Optional[float] = None,
) -> torch.Tensor:
    """Confident foreground / background / neutral (255) labels from CAMs.

    Args:
        cams (torch.Tensor): (B, K, h, w) normalised CAMs.
        cls_labels (torch.Tensor, optional): (B, K) image-level labels.
        mode (str): "power": background (1 - max)^alpha, ``fg_value`` = alpha_lo (default 4),
            ``bg_value`` = alpha_hi (default 32) (AffinityNet's code). "threshold": constant
            background thresholds, ``fg_value`` (default 0.30) and ``bg_value`` (default 0.05)
            (IRN's ``conf_fg_thres`` / ``conf_bg_thres``).

    Returns:
        torch.Tensor: (B, h, w) int64: class ids 1..K (confident foreground), 0 (confident
        background), 255 (neutral).
    """
    defaults = {"power": (4.0, 32.0), "threshold": (0.30, 0.05)}
    if mode not in defaults:
        raise ValueError(f"confident_labels mode must be 'power' or 'threshold', got {mode!r}")
    fg = defaults[mode][0] if fg_value is None else float(fg_value)
    bg = defaults[mode][1] if bg_value is None else float(bg_value)
    fg_labels = cams_to_labels(cams, cls_labels, fg, mode=mode)
    bg_labels = cams_to_labels(cams, cls_labels, bg, mode=mode)
    return combine_confident_labels(fg_labels, bg_labels)


def crf_confident_labels(
    images: torch.Tensor,
    cams: torch.Tensor,
    cls_labels: Optional[torch.Tensor],
    crf_cfg: Mapping[str, Any],
    mode: str = "power",
    fg_value: Optional[float] = None,
    bg_value: Optional[float] = None,
) -> torch.Tensor:
    """:func:`confident_labels` with a dense CRF on both score maps first (the paper, Sec. 3.2).

    For each of the two backgrounds (``fg_value``: the strong one that leaves confident
    foreground, ``bg_value``: the weak one that leaves confident background) the maps
    [background; CAMs of the present classes] (only those channels, as psa's keys; all with
    ``cls_labels=None``) are used as CRF probabilities (unary -log of the clipped scores, as psa's
    ``crf_inference``), and the two CRF argmaxes (mapped back to class ids) are combined by
    :func:`combine_confident_labels`. The CRF snaps the confident regions to the image's
    colour edges, which the CAMs alone do not follow.

    Args:
        images (torch.Tensor): (B, 3, H, W) uint8 RGB images.
        cams (torch.Tensor): (B, K, H, W) normalised CAMs at the image size.
        cls_labels (torch.Tensor, optional): (B, K) image-level labels.
        crf_cfg (Mapping): the DenseCRF keys of :data:`weclip.refine.crf.CRF_KEYS`.
        mode, fg_value, bg_value: as :func:`confident_labels`.

    Returns:
        torch.Tensor: (B, H, W) int64 on the CAMs' device: 1..K, 0, 255 (neutral).
    """
    defaults = {"power": (4.0, 32.0), "threshold": (0.30, 0.05)}
    if mode not in defaults:
        raise ValueError(f"crf_confident_labels mode must be 'power' or 'threshold', got {mode!r}")
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[-2:] != cams.shape[-2:]:
        raise ValueError(
            f"images must be (B, 3, H, W) at the CAMs' size {tuple(cams.shape[-2:])}, got "
            f"{tuple(images.shape)}"
        )
    fg = defaults[mode][0] if fg_value is None else float(fg_value)
    bg = defaults[mode][1] if bg_value is None else float(bg_value)
    pixels = images.permute(0, 2, 3, 1).to("cpu", torch.uint8).numpy()  # (B, H, W, 3)
    # the CRF sees the background and the present classes only (psa's keys), ids mapped back after
    present = [
        np.arange(cams.shape[1] + 1)
        if cls_labels is None
        else np.concatenate([[0], 1 + np.flatnonzero(cls_labels[i].cpu().numpy() > 0)])
        for i in range(len(cams))
    ]
    maps = []
    for value in (fg, bg):
        scores = scores_with_background(cams, cls_labels, mode, value).float().cpu().numpy()
        labels = [
            present[i][dense_crf(pixels[i], scores[i][present[i]], crf_cfg)]
            for i in range(len(scores))
        ]
        maps.append(torch.from_numpy(np.stack(labels)).to(cams.device))
    return combine_confident_labels(maps[0], maps[1])


def combine_confident_labels(fg_labels: torch.Tensor, bg_labels: torch.Tensor) -> torch.Tensor:
    """255 everywhere, the class of ``fg_labels`` where it is foreground, then 0 where
    ``bg_labels`` is background (background wins, as the authors' code).

    Args:
        fg_labels (torch.Tensor): (B, h, w) labels of the strong-background map (alpha_lo).
        bg_labels (torch.Tensor): (B, h, w) labels of the weak-background map (alpha_hi).
    """
    if fg_labels.shape != bg_labels.shape:
        raise ValueError(f"label maps differ: {tuple(fg_labels.shape)} vs {tuple(bg_labels.shape)}")
    out = torch.where(fg_labels > 0, fg_labels.long(), torch.full_like(fg_labels.long(), 255))
    return out.masked_fill(bg_labels == 0, 0)


def downsample_labels(labels: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of (B, H, W) labels to ``size`` (values kept exactly)."""
    small = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")
    return small[:, 0].long()


class AffinityLabels(NamedTuple):
    """Pair masks (B, O, h, w) bool for the pairs (x, x + offset) of :func:`pair_offsets`."""

    bg_pos: torch.Tensor
    fg_pos: torch.Tensor
    neg: torch.Tensor


def affinity_labels(
    labels: torch.Tensor, radius: int = 5, interior_only: bool = True, ignore_index: int = 255
) -> AffinityLabels:
    """Affinity labels from a confident label map on the feature grid.

    Args:
        labels (torch.Tensor): (B, h, w) from :func:`confident_labels` (0 bg, 1..K, 255 neutral),
            already at the grid of the affinity features (:func:`downsample_labels`).
        radius (int): gamma. Default: 5.
        interior_only (bool): the authors' pair crop. Default: True.
        ignore_index (int): neutral label. Default: 255.

    Returns:
        AffinityLabels: ``bg_pos`` (both background), ``fg_pos`` (same foreground class),
        ``neg`` (different labels); pairs with a neutral end or outside the grid are in none.
    """
    if labels.dim() != 3:
        raise ValueError(f"labels are (B, h, w), got {tuple(labels.shape)}")
    labels = labels.long()
    grid = (labels.shape[1], labels.shape[2])
    exists = pair_validity(grid, radius, interior_only, labels.device)[None]  # (1, O, h, w)
    here = labels[:, None]  # (B, 1, h, w)
    there = shifted(labels[:, None].float(), radius, fill=float(ignore_index))[:, 0].long()
    known = exists & (here != ignore_index) & (there != ignore_index)
    same = here == there
    return AffinityLabels(
        bg_pos=known & same & (here == 0),
        fg_pos=known & same & (here != 0),
        neg=known & ~same,
    )


def pair_affinities(
    features: torch.Tensor, radius: int = 5, reduction: str = "mean"
) -> torch.Tensor:
    """W(x, x + offset) = exp(-L1 distance of the features): (B, D, h, w) -> (B, O, h, w).

    ``reduction`` "mean" (authors' code: mean over the D channels) or "sum" (the paper). Values
    for pairs leaving the grid are meaningless (compared with zero padding); mask them with
    :func:`pair_validity` or the labels.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    others = shifted(features, radius)  # (B, D, O, h, w)
    diff = (others - features[:, :, None]).abs()
    dist = diff.mean(dim=1) if reduction == "mean" else diff.sum(dim=1)
    return torch.exp(-dist)


def affinity_loss(aff: torch.Tensor, labels: AffinityLabels) -> Dict[str, torch.Tensor]:
    """AffinityNet's loss: L = L_bg+/4 + L_fg+/4 + L-/2 (module docstring, item 4).

    Args:
        aff (torch.Tensor): (B, O, h, w) affinities in (0, 1] from :func:`pair_affinities`.
        labels (AffinityLabels): masks of the same shape.

    Returns:
        dict: ``loss`` and its terms ``bg_loss``, ``fg_loss``, ``neg_loss`` (scalars) and the
        pair counts ``bg_count``, ``fg_count``, ``neg_count`` (float, without the eps).
    """
    if aff.shape != labels.bg_pos.shape:
        raise ValueError(
            f"affinities {tuple(aff.shape)} and labels {tuple(labels.bg_pos.shape)} differ"
        )
    aff = aff.float()
    bg, fg, neg = (m.float() for m in labels)
    log_pos = torch.log(aff + LOG_EPS)
    log_neg = torch.log(1.0 + LOG_EPS - aff)
    bg_loss = -(bg * log_pos).sum() / (bg.sum() + LOG_EPS)
    fg_loss = -(fg * log_pos).sum() / (fg.sum() + LOG_EPS)
    neg_loss = -(neg * log_neg).sum() / (neg.sum() + LOG_EPS)
    return {
        "loss": bg_loss / 4 + fg_loss / 4 + neg_loss / 2,
        "bg_loss": bg_loss,
        "fg_loss": fg_loss,
        "neg_loss": neg_loss,
        "bg_count": bg.sum().detach(),
        "fg_count": fg.sum().detach(),
        "neg_count": neg.sum().detach(),
    }


def dense_affinity(
    features: torch.Tensor,
    radius: int = 5,
    reduction: str = "mean",
    interior_only: bool = True,
) -> torch.Tensor:
    """Dense affinity matrix A (B, n, n), n = h w, positions row-major.

    A[i, j] = W_ij for the pairs of :func:`pair_validity` (both directions), A[i, i] = 1, and 0
    for pairs beyond the radius.
    """
    b, _, h, w = features.shape
    aff = pair_affinities(features, radius, reduction)  # (B, O, h, w)
    valid = pair_validity((h, w), radius, interior_only, features.device)  # (O, h, w)
    offsets = torch.tensor(pair_offsets(radius), device=features.device)  # (O, 2)
    rows = torch.arange(h, device=features.device)[None, :, None]
    cols = torch.arange(w, device=features.device)[None, None, :]
    src = (rows * w + cols).expand(len(offsets), h, w)  # (O, h, w)
    dst = src + (offsets[:, 0] * w + offsets[:, 1])[:, None, None]
    src, dst = src[valid], dst[valid]  # (P,)
    values = aff[:, valid]  # (B, P)
    dense = torch.zeros(b, h * w, h * w, dtype=aff.dtype, device=features.device)
    dense[:, src, dst] = values
    dense[:, dst, src] = values
    diagonal = torch.arange(h * w, device=features.device)
    dense[:, diagonal, diagonal] = 1.0
    return dense


def random_walk(
    scores: torch.Tensor, affinity: torch.Tensor, beta: float = 8.0, num_iters: int = 256
) -> torch.Tensor:
    """Propagate score maps with T = D^-1 A^beta: vec(M*) = T^t vec(M).

    Args:
        scores (torch.Tensor): (B, K, h, w) maps to propagate (e.g. background + CAMs,
            :func:`weclip.baselines.cam.scores_with_background` with ``mode="power"``, 16).
        affinity (torch.Tensor): (B, n, n), n = h w, non-negative, from :func:`dense_affinity`.
        beta (float): Hadamard power. Default: 8.
        num_iters (int): t >= 0 (t products or repeated squaring, whichever is cheaper).
            Default: 256.

    Returns:
        torch.Tensor: (B, K, h, w).
    """
    if scores.dim() != 4:
        raise ValueError(f"scores are (B, K, h, w), got {tuple(scores.shape)}")
    b, k, h, w = scores.shape
    n = h * w
    if tuple(affinity.shape) != (b, n, n):
        raise ValueError(f"affinity must be (B, n, n) = {(b, n, n)}, got {tuple(affinity.shape)}")
    if num_iters < 0:
        raise ValueError(f"num_iters must be >= 0, got {num_iters}")
    powered = affinity.float().pow(beta)
    degree = powered.sum(dim=2, keepdim=True)
    if bool((degree <= 0).any()):
        raise ValueError("an affinity row sums to 0: every position needs A[i, i] > 0")
    transition = powered / degree  # rows sum to 1
    vec = scores.float().reshape(b, k, n).transpose(1, 2)  # (B, n, K)
    t = int(num_iters)
    # T^t v: t products with the K maps cost ~ t n^2 K, repeated squaring (the authors' code) ~ log2(t) n^3
    # (+ one product); the cheaper order is taken, the result is the same up to float rounding.
    if t * k <= max(1, t.bit_length()) * n:
        for _ in range(t):
            vec = torch.bmm(transition, vec)
        walked = vec
    else:
        walked = torch.bmm(torch.linalg.matrix_power(transition, t), vec)  # (B, n, K)
    return walked.transpose(1, 2).reshape(b, k, h, w)


class AffinityHead(nn.Module):
    """1x1 reductions of several stages -> resize -> concat -> 1x1 mix (ELU after each).

    Args:
        in_channels (Sequence[int]): channels of the input stages (e.g. layer2..layer4).
        mid_channels (Sequence[int]): reduced channels per stage. Default: (64, 128, 256).
        out_channels (int): channels of f. Default: 448.

    Initialisation as the authors' code: kaiming-normal reductions, xavier-uniform (gain 4) mix.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        mid_channels: Sequence[int] = (64, 128, 256),
        out_channels: int = 448,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(mid_channels):
            raise ValueError(
                f"{len(in_channels)} input stages but {len(mid_channels)} reduction widths"
            )
        self.reduce = nn.ModuleList(
            nn.Conv2d(int(c), int(m), 1, bias=False) for c, m in zip(in_channels, mid_channels)
        )
        self.mix = nn.Conv2d(int(sum(mid_channels)), int(out_channels), 1, bias=False)
        for conv in self.reduce:
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.mix.weight, gain=4)

    def forward(self, stages: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stage maps (B, C_i, h_i, w_i) -> f (B, out_channels, h_0, w_0) at the first's grid."""
        if len(stages) != len(self.reduce):
            raise ValueError(f"expected {len(self.reduce)} stage maps, got {len(stages)}")
        size = stages[0].shape[-2:]
        parts = []
        for conv, x in zip(self.reduce, stages):
            y = F.elu(conv(x))
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            parts.append(y)
        return F.elu(self.mix(torch.cat(parts, dim=1)))


class AffinityNet(nn.Module):
    """ResNet trunk + :class:`AffinityHead` on layer2, layer3, layer4.

    Args:
        arch (str): trunk arch. Default: "resnet50".
        weights (str): "random" or local ImageNet weights for the trunk.
        output_stride (int): trunk stride; 8 (default) keeps the three stages at stride 8, as the
            paper's ResNet-38 (the affinity grid is layer2's, stride 8, in every case).
        base_width (int): trunk width (64 = torchvision).
        mid_channels, out_channels: see :class:`AffinityHead`.
        stem_pool (bool): keep the trunk's stem max-pool (False for small images: the grid is
            then at stride 4). Default: True.
    """

    def __init__(
        self,
        arch: str = "resnet50",
        weights: Optional[str] = "random",
        output_stride: int = 8,
        base_width: int = 64,
        mid_channels: Sequence[int] = (64, 128, 256),
        out_channels: int = 448,
        stem_pool: bool = True,
    ) -> None:
        super().__init__()
        self.trunk = ResNetTrunk(arch, output_stride, True, base_width, weights, stem_pool)
        self.head = AffinityHead(self.trunk.stage_channels[1:], mid_channels, out_channels)
        self.feature_stride = self.trunk.stage_strides[1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> affinity features f (B, out_channels, h, w)."""
        return self.head(self.trunk(images)[1:])
