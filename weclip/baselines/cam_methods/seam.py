"""SEAM: self-supervised equivariant attention for CAM classifiers.

Wang et al., "Self-supervised Equivariant Attention Mechanism for Weakly Supervised Semantic
Segmentation", CVPR 2020, https://arxiv.org/abs/2004.04581, official code
https://github.com/YudeWang/SEAM (``train_SEAM.py``, ``network/resnet38_SEAM.py``; read, not
copied). What a training step computes there (the defaults here):

- two views: the image and A(image), A = bilinear rescale by 0.3 (align_corners=True); the paper
  also studies flips and rotations, `AffineTransform` supports all of them invertibly;
- per view the raw CAM (upsampled to the view's input size) and the PCM-revised CAM;
- the PCM input is the *detached* CAM, ReLU'd, max-normalised per channel, with a background
  channel 1 − max_c fg and the non-maximal foreground channels of every pixel zeroed
  (`pcm_input`, no label masking); PCM features are the image resized to the CAM grid and 1×1
  projections of two detached backbone stages (64 + 128 channels), fused by a 1×1 conv to 192
  (`PCMFeatures`); affinity = ReLU(cos(f_i, f_j)) normalised over i, revised CAM = CAM · affinity
  (`pcm_affinity`, `pcm_refine`);
- L = L_cls + L_ER + L_ECR, L_cls = mean of the two views' multi-label soft-margin losses +
  mean of the two views' "adaptive min pooling" losses on the revised CAMs (`rvmin_loss`);
  L_ER = mean |A(ŷ_o) − ŷ_t| over foreground channels, ŷ = max-norm(CAM) · labels (`er_loss`);
  L_ECR = the two cross terms |max-onehot(ŷ_t) − A(ŷ^rv_o)| and |max-onehot(A(ŷ_o)) − ŷ^rv_t|,
  targets detached, each averaged over its top 20 % entries per image (`ecr_loss`), summed.
  The paper writes ECR as plain L1 between the PCM output of one view and the CAM of the other;
  ``ecr_target="plain"``, ``detach_target=False``, ``top_ratio=1`` give that variant.
"""

import math
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "SEAM_DEFAULTS",
    "AffineTransform",
    "PCMFeatures",
    "ecr_loss",
    "er_loss",
    "max_norm",
    "max_onehot",
    "pcm_affinity",
    "pcm_input",
    "pcm_refine",
    "rvmin_loss",
    "seam_classification_loss",
    "seam_losses",
    "with_background",
]

SEAM_DEFAULTS: Mapping[str, object] = {
    "scale": 0.3,  # train_SEAM.py: scale_factor = 0.3
    "ecr_top_ratio": 0.2,  # topk(k = int(21 * hs * ws * 0.2))
    "ecr_target": "max_onehot",  # max_onehot(cam.detach())
    "rvmin": True,  # adaptive_min_pooling_loss in loss_cls
    "pcm_hidden": (64, 128),  # f8_3, f8_4
    "pcm_out": 192,  # f9
    "er_weight": 1.0,  # loss = loss_cls + loss_er + loss_ecr
    "ecr_weight": 1.0,
}


# ----------------------------------------------------------------------------------------------
# The invertible transform
# ----------------------------------------------------------------------------------------------


class AffineTransform:
    """One invertible spatial transform of (B, C, H, W) maps: flip, quarter turns, small
    rotation, rescale, applied in that order (`invert` undoes them in reverse).

    - ``hflip``: mirror the columns; exact, self-inverse.
    - ``rot90``: k quarter turns counter-clockwise as displayed (``torch.rot90`` over (H, W));
      exact; odd k swaps H and W.
    - ``angle``: a rotation by this many degrees counter-clockwise about the map centre, bilinear
      resampling (``grid_sample``), same size, zeros outside; `valid_mask` tells which output
      pixels saw the input. Rotation is isotropic in pixels (corrected for non-square maps).
    - ``scale`` / ``size``: bilinear resize to floor(H·scale) × floor(W·scale) (the size
      ``F.interpolate(scale_factor=...)`` gives, SEAM's 0.3) or to a fixed ``size`` (P2P's
      128 × 128). `invert` resizes back to the exact pre-transform size, so give it ``size``.

    With ``align_corners=True`` (SEAM's setting) the corner pixels map onto each other, so apply ∘
    invert is the identity in continuous coordinates and the only error is the interpolation
    error of the two resamplings.

    Args:
        scale (float): resize factor (> 0); ignored when ``size`` is given.
        size (Optional[Tuple[int, int]]): fixed output size (H', W').
        hflip (bool): horizontal flip.
        rot90 (int): quarter turns (any integer, taken mod 4).
        angle (float): degrees.
        mode (str): resampling for resize and rotation: "bilinear" or "nearest".
        align_corners (bool): for resize and rotation (True in SEAM and P2P).
    """

    def __init__(
        self,
        *,
        scale: float = 1.0,
        size: Optional[Tuple[int, int]] = None,
        hflip: bool = False,
        rot90: int = 0,
        angle: float = 0.0,
        mode: str = "bilinear",
        align_corners: bool = True,
    ) -> None:
        if scale <= 0:
            raise ValueError(f"AffineTransform: scale must be > 0, got {scale}")
        if size is not None and (len(size) != 2 or min(int(size[0]), int(size[1])) < 1):
            raise ValueError(f"AffineTransform: size must be two positive ints, got {size}")
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"AffineTransform: mode must be 'bilinear' or 'nearest', got {mode!r}")
        self.scale = float(scale)
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.hflip = bool(hflip)
        self.rot90 = int(rot90) % 4
        self.angle = float(angle)
        self.mode = mode
        self.align_corners = bool(align_corners)

    def __repr__(self) -> str:
        return (
            f"AffineTransform(scale={self.scale}, size={self.size}, hflip={self.hflip}, "
            f"rot90={self.rot90}, angle={self.angle}, mode={self.mode!r}, "
            f"align_corners={self.align_corners})"
        )

    @property
    def resizes(self) -> bool:
        """Whether the transform changes the map size through scale or size."""
        return self.size is not None or self.scale != 1.0

    def _rotated_size(self, size: Tuple[int, int]) -> Tuple[int, int]:
        h, w = int(size[0]), int(size[1])
        return (w, h) if self.rot90 % 2 else (h, w)

    def output_size(self, size: Tuple[int, int]) -> Tuple[int, int]:
        """(H', W') of `apply` on an (H, W) map."""
        h, w = self._rotated_size(size)
        if self.size is not None:
            return self.size
        if self.scale != 1.0:
            # F.interpolate(scale_factor=s) gives floor(H * s)
            return max(1, int(math.floor(h * self.scale))), max(1, int(math.floor(w * self.scale)))
        return h, w

    def _interp_kwargs(self) -> Dict[str, object]:
        if self.mode == "nearest":
            return {"mode": "nearest"}
        return {"mode": "bilinear", "align_corners": self.align_corners}

    def _resize(self, x: Tensor, size: Tuple[int, int]) -> Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x, size=size, **self._interp_kwargs())

    def _rotate(self, x: Tensor, degrees: float) -> Tensor:
        """Counter-clockwise (as displayed) rotation about the centre, same size."""
        if degrees == 0.0:
            return x
        b, _, h, w = x.shape
        theta = math.radians(degrees)
        c, s = math.cos(theta), math.sin(theta)
        # output pixel q (centred, x right, y down) samples input p = [[c, -s], [s, c]] q;
        # in normalised coordinates p_n = A⁻¹ R A q_n with A = diag(half width, half height)
        ax, ay = ((w - 1) / 2, (h - 1) / 2) if self.align_corners else (w / 2, h / 2)
        ax, ay = max(ax, 1e-12), max(ay, 1e-12)
        mat = torch.tensor(
            [[c, -s * ay / ax, 0.0], [s * ax / ay, c, 0.0]], dtype=x.dtype, device=x.device
        )
        grid = F.affine_grid(mat.expand(b, 2, 3), list(x.shape), align_corners=self.align_corners)
        return F.grid_sample(
            x, grid, mode=self.mode, padding_mode="zeros", align_corners=self.align_corners
        )

    @staticmethod
    def _check(x: Tensor, name: str) -> None:
        if x.dim() != 4:
            raise ValueError(f"AffineTransform.{name} expects (B, C, H, W), got {tuple(x.shape)}")

    def apply(self, x: Tensor) -> Tensor:
        """Transform (B, C, H, W) maps: flip, quarter turns, rotation, resize.

        Returns:
            Tensor: (B, C, H', W') with (H', W') = `output_size` (H, W).
        """
        self._check(x, "apply")
        out_size = self.output_size(x.shape[-2:])
        y = torch.flip(x, dims=(-1,)) if self.hflip else x
        if self.rot90:
            y = torch.rot90(y, self.rot90, dims=(-2, -1))
        y = self._rotate(y, self.angle)
        return self._resize(y, out_size)

    def invert(self, y: Tensor, size: Optional[Tuple[int, int]] = None) -> Tensor:
        """Map (B, C, H', W') maps on the transformed grid back to the original (H, W) grid.

        Args:
            y (Tensor): maps on the transformed grid.
            size (Optional[Tuple[int, int]]): the original (H, W). Required when the transform
                resizes (floor(H·s) does not determine H); otherwise derived from ``y``.

        Returns:
            Tensor: (B, C, H, W).
        """
        self._check(y, "invert")
        if size is None:
            if self.resizes:
                raise ValueError(
                    "AffineTransform.invert: pass size=(H, W) of the original maps; a resizing "
                    "transform cannot recover it from the output"
                )
            size = self._rotated_size(y.shape[-2:])  # a quarter turn back swaps again
        size = (int(size[0]), int(size[1]))
        expected = self.output_size(size)
        if tuple(y.shape[-2:]) != expected:
            raise ValueError(
                f"AffineTransform.invert: maps of size {tuple(y.shape[-2:])} do not come from an "
                f"original of size {size} (that gives {expected})"
            )
        x = self._resize(y, self._rotated_size(size))
        x = self._rotate(x, -self.angle)
        if self.rot90:
            x = torch.rot90(x, -self.rot90, dims=(-2, -1))
        return torch.flip(x, dims=(-1,)) if self.hflip else x

    def valid_mask(self, size: Tuple[int, int], device: Optional[torch.device] = None) -> Tensor:
        """(1, 1, H', W') in [0, 1]: how much of each transformed pixel came from the input
        (1 everywhere unless ``angle`` is set; rotation leaves the corners empty)."""
        ones = torch.ones(1, 1, int(size[0]), int(size[1]), device=device)
        return self.apply(ones)


# ----------------------------------------------------------------------------------------------
# CAM normalisation (SEAM's tool/visualization.max_norm, train_SEAM.max_onehot)
# ----------------------------------------------------------------------------------------------


def max_norm(cams: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-channel min-max normalisation of ReLU'd maps: ReLU(x − min − eps) / (max − min + eps).

    Args:
        cams (Tensor): (B, C, h, w).
        eps (float): 1e-5 in SEAM.

    Returns:
        Tensor: (B, C, h, w) in [0, 1).
    """
    if cams.dim() != 4:
        raise ValueError(f"max_norm expects (B, C, h, w), got {tuple(cams.shape)}")
    x = F.relu(cams)
    flat = x.flatten(2)
    hi = flat.max(dim=-1).values[..., None, None]
    lo = flat.min(dim=-1).values[..., None, None]
    return F.relu(x - lo - eps) / (hi - lo + eps)


def with_background(fg: Tensor) -> Tensor:
    """Prepend SEAM's background channel 1 − max_c fg: (B, K, h, w) → (B, K + 1, h, w)."""
    if fg.dim() != 4:
        raise ValueError(f"with_background expects (B, K, h, w), got {tuple(fg.shape)}")
    return torch.cat([1.0 - fg.max(dim=1, keepdim=True).values, fg], dim=1)


def max_onehot(x: Tensor) -> Tensor:
    """Zero the foreground channels (1..) that are not the per-pixel foreground maximum; the
    background channel 0 is kept (SEAM's ``max_onehot``; ties all survive). Not in place."""
    fg = x[:, 1:]
    keep = fg == fg.max(dim=1, keepdim=True).values
    return torch.cat([x[:, :1], fg * keep], dim=1)


# ----------------------------------------------------------------------------------------------
# PCM
# ----------------------------------------------------------------------------------------------


def pcm_input(cams: Tensor, cls_labels: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    """The CAM fed to the PCM (``resnet38_SEAM.Net.forward``), detached.

    ReLU; fg = ReLU(x − eps) / (max + eps) per channel; background = 1 − max_c fg; then in each
    pixel the foreground channels below the foreground maximum are set to 0.

    Args:
        cams (Tensor): (B, K, h, w) raw foreground CAMs.
        cls_labels (Optional[Tensor]): (B, K). None (SEAM): no label masking, absent classes take
            part in the maximum; given: foreground channels are multiplied by the labels first.
        eps (float): 1e-5.

    Returns:
        Tensor: (B, K + 1, h, w), channel 0 = background, no autograd graph.
    """
    with torch.no_grad():
        x = F.relu(cams.detach())
        hi = x.flatten(2).max(dim=-1).values[..., None, None] + eps
        fg = F.relu(x - eps) / hi
        if cls_labels is not None:
            fg = fg * cls_labels.to(fg.dtype)[:, :, None, None]
        # SEAM zeroes fg values < the fg maximum: the same as max_onehot (x <= max always)
        return max_onehot(with_background(fg))


class PCMFeatures(nn.Module):
    """The PCM's feature branch: [image resized, ReLU(1×1(stage_i.detach()))...] → 1×1 conv.

    SEAM: stages conv4 (512 ch) and conv5 (1024 ch) of ResNet-38 → 64 and 128 channels, plus the
    3 image channels → ``f9`` to 192 channels; no biases; kaiming-normal projections and
    xavier-uniform (gain 4) fusion. For a torchvision ResNet-50, layer2 (512) and layer3 (1024)
    are the analogous stages. Every input is resized (bilinear, align_corners=True) to the CAM grid.

    Args:
        in_channels (Sequence[int]): channels of the backbone stages used.
        hidden (Sequence[int]): projection widths, one per stage.
        out_channels (int): fused width.
        with_image (bool): include the 3 image channels.
    """

    def __init__(
        self,
        in_channels: Sequence[int] = (512, 1024),
        hidden: Sequence[int] = SEAM_DEFAULTS["pcm_hidden"],
        out_channels: int = SEAM_DEFAULTS["pcm_out"],
        with_image: bool = True,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(hidden):
            raise ValueError(
                f"PCMFeatures: in_channels {tuple(in_channels)} and hidden {tuple(hidden)} differ "
                "in length"
            )
        self.with_image = bool(with_image)
        self.proj = nn.ModuleList(
            nn.Conv2d(c, h, kernel_size=1, bias=False) for c, h in zip(in_channels, hidden)
        )
        fused_in = sum(hidden) + (3 if with_image else 0)
        self.fuse = nn.Conv2d(fused_in, out_channels, kernel_size=1, bias=False)
        for conv in self.proj:
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.fuse.weight, gain=4)

    def forward(
        self, image: Optional[Tensor], stages: Sequence[Tensor], size: Tuple[int, int]
    ) -> Tensor:
        """Args:
            image (Optional[Tensor]): (B, 3, H, W) network input (required when with_image).
            stages (Sequence[Tensor]): backbone stage outputs (B, C_i, h_i, w_i); detached here.
            size (Tuple[int, int]): the CAM grid (h, w).

        Returns:
            Tensor: (B, out_channels, h, w).
        """
        if len(stages) != len(self.proj):
            raise ValueError(f"PCMFeatures: expected {len(self.proj)} stages, got {len(stages)}")
        parts = []
        if self.with_image:
            if image is None:
                raise ValueError("PCMFeatures: with_image=True needs the image")
            parts.append(F.interpolate(image, size=size, mode="bilinear", align_corners=True))
        for conv, feat in zip(self.proj, stages):
            f = F.relu(conv(feat.detach()))
            if tuple(f.shape[-2:]) != tuple(size):
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=True)
            parts.append(f)
        return self.fuse(torch.cat(parts, dim=1))


def pcm_affinity(features: Tensor, eps: float = 1e-5) -> Tensor:
    """A[i, j] = ReLU(cos(f_i, f_j)) / (Σ_i ReLU(cos(f_i, f_j)) + eps) (columns sum to ≈ 1).

    Args:
        features (Tensor): (B, D, h, w).
        eps (float): 1e-5 in the norm and the column sum (SEAM).

    Returns:
        Tensor: (B, n, n), n = h·w row-major.
    """
    if features.dim() != 4:
        raise ValueError(f"pcm_affinity expects (B, D, h, w), got {tuple(features.shape)}")
    f = features.flatten(2)
    f = f / (f.norm(dim=1, keepdim=True) + eps)
    aff = F.relu(torch.bmm(f.transpose(1, 2), f))
    return aff / (aff.sum(dim=1, keepdim=True) + eps)


def pcm_refine(cams: Tensor, affinity: Tensor) -> Tensor:
    """Revised CAM: y_rv[:, :, j] = Σ_i y[:, :, i] · A[i, j].

    Args:
        cams (Tensor): (B, C, h, w) on the affinity's grid (n = h·w); SEAM resizes the CAM to
            the feature grid first (bilinear, align_corners=True), the caller's job here.
        affinity (Tensor): (B, n, n).

    Returns:
        Tensor: (B, C, h, w).
    """
    b, c, h, w = cams.shape
    if affinity.shape != (b, h * w, h * w):
        raise ValueError(
            f"pcm_refine: affinity {tuple(affinity.shape)} does not match cams {tuple(cams.shape)}"
        )
    return torch.bmm(cams.flatten(2), affinity).view(b, c, h, w)


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------


def _labels_bg(cls_labels: Tensor) -> Tensor:
    """(B, K) → (B, K + 1, 1, 1) with a leading 1 for background."""
    ones = cls_labels.new_ones(cls_labels.shape[0], 1)
    return torch.cat([ones, cls_labels], dim=1).float()[:, :, None, None]


def seam_classification_loss(logits_o: Tensor, logits_t: Tensor, cls_labels: Tensor) -> Tensor:
    """Mean of the two views' multi-label soft-margin losses (SEAM's loss_cls1, loss_cls2).

    SEAM's logits are the GAP of the raw CAM; for a GAP + linear classifier they are its logits.
    """
    t = cls_labels.float()
    return 0.5 * (
        F.multilabel_soft_margin_loss(logits_o, t) + F.multilabel_soft_margin_loss(logits_t, t)
    )


def rvmin_loss(rv: Tensor, cls_labels: Tensor) -> Tensor:
    """SEAM's ``adaptive_min_pooling_loss`` on the label-masked foreground of a revised CAM.

    x = max_c (rv · labels)[fg]; mean of ReLU over the h·w // 4 smallest values per image.

    Args:
        rv (Tensor): (B, K + 1, H, W) raw PCM output (channel 0 background).
        cls_labels (Tensor): (B, K).
    """
    fg = (rv * _labels_bg(cls_labels))[:, 1:]
    n, _, h, w = fg.shape
    k = max(1, (h * w) // 4)
    x = fg.max(dim=1).values.reshape(n, -1)
    y = torch.topk(x, k=k, dim=-1, largest=False).values
    return F.relu(y).sum() / (k * n)


def er_loss(a: Tensor, b: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """L_ER = mean |a − b| over foreground channels (``torch.mean(torch.abs(...))``).

    Args:
        a (Tensor): (B, K, h, w) transformed normalised CAMs of the original view.
        b (Tensor): (B, K, h, w) normalised CAMs of the transformed view.
        mask (Optional[Tensor]): (1 or B, 1, h, w) weights (e.g. `valid_mask` for rotations);
            the mean is then Σ mask·|a − b| / (K · Σ mask).
    """
    if a.shape != b.shape:
        raise ValueError(f"er_loss: shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    diff = (a - b).abs()
    if mask is None:
        return diff.mean()
    m = mask.expand(a.shape[0], 1, *a.shape[-2:])
    return (diff * m).sum() / (a.shape[1] * m.sum()).clamp(min=1e-12)


def ecr_loss(
    target: Tensor,
    revised: Tensor,
    *,
    top_ratio: float = SEAM_DEFAULTS["ecr_top_ratio"],
    target_mode: str = SEAM_DEFAULTS["ecr_target"],
    detach_target: bool = True,
    mask: Optional[Tensor] = None,
) -> Tensor:
    """One ECR term: mean of the top ``top_ratio`` of |f(target) − revised| per image.

    Args:
        target (Tensor): (B, K + 1, h, w) normalised CAM with background (the other view's).
        revised (Tensor): (B, K + 1, h, w) normalised, label-masked PCM output of this view.
        top_ratio (float): fraction of the (K + 1)·h·w entries kept (SEAM: 0.2, int() rounding).
        target_mode (str): "max_onehot" (SEAM's code) or "plain" (the paper's formula).
        detach_target (bool): SEAM's code detaches the target.
        mask (Optional[Tensor]): (1 or B, 1, h, w) multiplies the differences before the top-k.
    """
    if target.shape != revised.shape:
        raise ValueError(
            f"ecr_loss: shapes differ: {tuple(target.shape)} vs {tuple(revised.shape)}"
        )
    if not 0.0 < top_ratio <= 1.0:
        raise ValueError(f"ecr_loss: top_ratio must lie in (0, 1], got {top_ratio}")
    t = target.detach() if detach_target else target
    if target_mode == "max_onehot":
        t = max_onehot(t)
    elif target_mode != "plain":
        raise ValueError(
            f"ecr_loss: target_mode must be 'max_onehot' or 'plain', got {target_mode!r}"
        )
    diff = (t - revised).abs()
    if mask is not None:
        diff = diff * mask
    n, c, h, w = diff.shape
    k = max(1, int(c * h * w * top_ratio))
    return torch.topk(diff.reshape(n, -1), k=k, dim=-1).values.mean()


def seam_losses(
    cam_o: Tensor,
    cam_t: Tensor,
    rv_o: Tensor,
    rv_t: Tensor,
    cls_labels: Tensor,
    transform: AffineTransform,
    *,
    top_ratio: float = SEAM_DEFAULTS["ecr_top_ratio"],
    target_mode: str = SEAM_DEFAULTS["ecr_target"],
    detach_target: bool = True,
    use_valid_mask: bool = False,
) -> Dict[str, Tensor]:
    """SEAM's ER, ECR and rvmin terms from both views, as ``train_SEAM.py`` computes them.

    Args:
        cam_o (Tensor): (B, K, H, W) raw CAM of the original view at its input size.
        cam_t (Tensor): (B, K, H', W') raw CAM of the transformed view at its input size,
            (H', W') = transform.output_size((H, W)).
        rv_o (Tensor): (B, K + 1, H, W) raw PCM output of the original view (channel 0 bg).
        rv_t (Tensor): (B, K + 1, H', W') raw PCM output of the transformed view.
        cls_labels (Tensor): (B, K) multi-hot.
        transform (AffineTransform): the view transform A.
        top_ratio, target_mode, detach_target: see `ecr_loss`.
        use_valid_mask (bool): weight ER/ECR by `transform.valid_mask` (for rotations).

    Returns:
        Dict[str, Tensor]: {"er", "ecr", "rvmin"}; SEAM's total is
        seam_classification_loss + rvmin + er + ecr.
    """
    size_o = tuple(cam_o.shape[-2:])
    if tuple(cam_t.shape[-2:]) != transform.output_size(size_o):
        raise ValueError(
            f"seam_losses: cam_t size {tuple(cam_t.shape[-2:])} is not the transformed size "
            f"{transform.output_size(size_o)} of cam_o {size_o}"
        )
    if rv_o.shape[1] != cam_o.shape[1] + 1 or rv_t.shape[1] != cam_t.shape[1] + 1:
        raise ValueError("seam_losses: rv_o / rv_t must have K + 1 channels (background first)")
    lab = cls_labels.float()[:, :, None, None]
    lab_bg = _labels_bg(cls_labels)
    rvmin = 0.5 * (rvmin_loss(rv_o, cls_labels) + rvmin_loss(rv_t, cls_labels))
    a = transform.apply(max_norm(cam_o)) * lab
    a_rv = transform.apply(max_norm(rv_o)) * lab_bg
    b = max_norm(cam_t) * lab
    b_rv = max_norm(rv_t) * lab_bg
    mask = transform.valid_mask(size_o, device=cam_o.device) if use_valid_mask else None
    er = er_loss(a, b, mask)
    kw = dict(top_ratio=top_ratio, target_mode=target_mode, detach_target=detach_target, mask=mask)
    ecr = ecr_loss(with_background(b), a_rv, **kw) + ecr_loss(with_background(a), b_rv, **kw)
    return {"er": er, "ecr": ecr, "rvmin": rvmin}
