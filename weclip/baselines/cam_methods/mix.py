"""Mixing augmentations for CAM classifiers: Mixup-CAM, Manifold Mixup and FMix.

- **Mixup-CAM** (Chang et al., BMVC 2020, https://arxiv.org/abs/2008.01201; no official code was
  released): the classifier is trained on mixup pairs x̃ = λ·x_i + (1−λ)·x_j with multi-hot labels
  ỹ = λ·y_i + (1−λ)·y_j, λ ~ Beta(α, α) (mixup: Zhang et al., ICLR 2018,
  https://github.com/facebookresearch/mixup-cifar10), plus two uncertainty regularisers on the
  CAMs: the entropy of the per-pixel class distribution (`entropy_loss`) and the concentration
  loss of SCOPS (Hung et al., CVPR 2019, https://github.com/NVlabs/SCOPS), the spatial variance of
  each present class's normalised response around its centroid (`concentration_loss`).
- **Manifold Mixup** (Verma et al., ICML 2019, https://github.com/vikasverma1077/manifold_mixup):
  the same mixing applied to the hidden state after a layer drawn uniformly from a list
  (`manifold_mixup`); the official supervised code draws k ∈ {0, 1, 2} (input, after the first and
  after the second residual stage) with α = 2.
- **FMix** (Harris et al., 2020, https://arxiv.org/abs/2002.12047,
  https://github.com/ecs-vlc/FMix): a binary mask from a low-frequency Fourier image (complex
  Gaussian spectrum scaled by 1 / f^δ, δ = 3), thresholded so that a fraction λ ~ Beta(α, α)
  (α = 1) of the pixels come from the first image (`fmix`). The labels are mixed by the realised
  mask area (FMix's code uses the sampled λ, which differs by less than one pixel's share).

Every random draw comes from an explicit ``torch.Generator``: λ by inverse-CDF sampling of a
uniform draw (``scipy.special.betaincinv``), the pairing permutation by ``torch.randperm``, the
Fourier spectrum by ``torch.randn``. One λ and one permutation per batch, as in the three papers'
code.
"""

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence, Tuple

import torch
from scipy.special import betaincinv
from torch import Tensor

__all__ = [
    "FMIX_DEFAULTS",
    "MANIFOLD_MIXUP_DEFAULTS",
    "MIXUP_CAM_DEFAULTS",
    "MixResult",
    "binarise_mask",
    "concentration_loss",
    "entropy_loss",
    "fmix",
    "fourier_low_freq_image",
    "manifold_mixup",
    "mix_labels",
    "mixup",
    "pixel_class_probs",
    "sample_beta",
    "sample_fmix_mask",
]

# Keys and defaults. The Mixup-CAM paper's text was not reachable from this project (no network;
# the stored corpora hold only its abstract) and the authors released no code, so its λ_ent,
# λ_con and α below are NOT from the paper: the weights are 1 (plain sum) and α = 1 (λ uniform,
# mixup's CIFAR setting); see docs/cam_methods.md, "Unresolved".
MIXUP_CAM_DEFAULTS: Mapping[str, float] = {
    "alpha": 1.0,
    "ent_weight": 1.0,
    "con_weight": 1.0,
    "con_eps": 1e-3,  # SCOPS adds 1e-3 to each part map before normalising it
}
# Manifold Mixup's official supervised code: `--mixup_alpha 2.0`, layer_mix = randint(0, 2).
MANIFOLD_MIXUP_DEFAULTS: Mapping[str, object] = {"alpha": 2.0, "layers": (0, 1, 2)}
# FMix's official `FMixBase`: decay_power=3, alpha=1, max_soft=0.
FMIX_DEFAULTS: Mapping[str, float] = {"alpha": 1.0, "decay_power": 3.0, "max_soft": 0.0}


@dataclass
class MixResult:
    """A mixed batch.

    Attributes:
        inputs (Tensor): the mixed images (B, C, H, W) (for `manifold_mixup`: the network output).
        labels (Tensor): mixed labels (B, K) float, ``lam * y + (1 - lam) * y[index]``.
        lam (float): weight of the first sample in the labels (FMix: the realised mask area).
        index (Tensor): (B,) long, the partner of sample b is ``index[b]``.
        mask (Optional[Tensor]): FMix only, (H, W) float in [0, 1], 1 = pixel of the first image.
        layer (Optional[int]): Manifold Mixup only, the index k of the mixing point.
    """

    inputs: Tensor
    labels: Tensor
    lam: float
    index: Tensor
    mask: Optional[Tensor] = None
    layer: Optional[int] = None


def _check_generator(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"an explicit torch.Generator is required, got {type(generator).__name__}")


def _uniform(generator: torch.Generator) -> float:
    """One float64 draw in [0, 1) from ``generator``."""
    return float(torch.rand((), generator=generator, dtype=torch.float64, device=generator.device))


def sample_beta(alpha: float, generator: torch.Generator) -> float:
    """λ ~ Beta(alpha, alpha) by inverse-CDF sampling of one uniform draw from ``generator``.

    Args:
        alpha (float): concentration; ``alpha <= 0`` means no mixing and returns 1.0 (the mixup
            code's convention).
        generator (torch.Generator): the only source of randomness.

    Returns:
        float: λ in [0, 1].
    """
    _check_generator(generator)
    if alpha <= 0:
        return 1.0
    return float(betaincinv(alpha, alpha, _uniform(generator)))


def _permutation(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def mix_labels(labels: Tensor, index: Tensor, lam: float) -> Tensor:
    """``lam * labels + (1 - lam) * labels[index]`` (B, K) float.

    Multi-label soft-margin / BCE and soft-target cross-entropy are linear in the target, so the
    loss on the mixed labels equals lam·loss(y) + (1 − lam)·loss(y[index]) (the mixup papers' form).
    """
    labels = labels.float()
    return lam * labels + (1.0 - lam) * labels[index]


def _check_batch(images: Tensor, labels: Tensor, name: str) -> None:
    if images.dim() < 2 or labels.dim() != 2 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{name} expects inputs (B, ...) and labels (B, K) with the same B; got "
            f"{tuple(images.shape)} and {tuple(labels.shape)}"
        )


def mixup(
    images: Tensor,
    labels: Tensor,
    *,
    generator: torch.Generator,
    alpha: float = MIXUP_CAM_DEFAULTS["alpha"],
    lam: Optional[float] = None,
) -> MixResult:
    """Input mixup of a batch with a permutation of itself (Mixup-CAM's augmentation).

    Args:
        images (Tensor): (B, C, H, W) (any (B, ...) works).
        labels (Tensor): (B, K) multi-hot (or one-hot) labels.
        generator (torch.Generator): draws λ (unless given) and the permutation.
        alpha (float): λ ~ Beta(alpha, alpha).
        lam (Optional[float]): a fixed λ instead of a draw (tests, schedules).

    Returns:
        MixResult: ``inputs = lam * images + (1 - lam) * images[index]``; lam = 1 returns
        ``images`` exactly (1·x + 0·y = x in floating point).
    """
    _check_batch(images, labels, "mixup")
    _check_generator(generator)
    lam = sample_beta(alpha, generator) if lam is None else float(lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"mixup: lam must lie in [0, 1], got {lam}")
    index = _permutation(images.shape[0], generator, images.device)
    mixed = lam * images + (1.0 - lam) * images[index]
    return MixResult(inputs=mixed, labels=mix_labels(labels, index, lam), lam=lam, index=index)


def manifold_mixup(
    stages: Sequence[Callable[[Tensor], Tensor]],
    x: Tensor,
    labels: Tensor,
    *,
    generator: torch.Generator,
    layers: Sequence[int] = MANIFOLD_MIXUP_DEFAULTS["layers"],
    alpha: float = MANIFOLD_MIXUP_DEFAULTS["alpha"],
    layer: Optional[int] = None,
    lam: Optional[float] = None,
) -> MixResult:
    """Run ``stages`` in order, mixing the hidden state before stage k (Manifold Mixup).

    k = 0 mixes the input (plain mixup); k = i mixes the output of ``stages[i-1]``; k equal to
    ``len(stages)`` mixes the final output. For a torchvision ResNet, stages = [stem + layer1,
    layer2, layer3, layer4, head] and layers (0, 1, 2) are the official code's choice (input,
    after the first residual stage, after the second).

    Args:
        stages (Sequence[Callable]): the network split into consecutive callables.
        x (Tensor): the network input (B, ...).
        labels (Tensor): (B, K).
        generator (torch.Generator): draws the layer (uniform over ``layers``), λ and the
            permutation, in that order.
        layers (Sequence[int]): the eligible mixing points.
        alpha (float): λ ~ Beta(alpha, alpha).
        layer (Optional[int]): a fixed mixing point instead of a draw.
        lam (Optional[float]): a fixed λ instead of a draw.

    Returns:
        MixResult: ``inputs`` holds the output of the last stage, ``layer`` the mixing point.
    """
    _check_batch(x, labels, "manifold_mixup")
    _check_generator(generator)
    if len(stages) == 0:
        raise ValueError("manifold_mixup: stages is empty")
    if layer is None:
        if len(layers) == 0:
            raise ValueError("manifold_mixup: layers is empty")
        pick = int(torch.randint(len(layers), (), generator=generator, device=generator.device))
        layer = int(layers[pick])
    if not 0 <= layer <= len(stages):
        raise ValueError(f"manifold_mixup: layer {layer} outside [0, {len(stages)}]")
    lam = sample_beta(alpha, generator) if lam is None else float(lam)
    index = _permutation(x.shape[0], generator, x.device)
    out = x
    for k in range(len(stages) + 1):
        if k == layer:
            out = lam * out + (1.0 - lam) * out[index]
        if k < len(stages):
            out = stages[k](out)
    return MixResult(
        inputs=out, labels=mix_labels(labels, index, lam), lam=lam, index=index, layer=layer
    )


# ----------------------------------------------------------------------------------------------
# FMix
# ----------------------------------------------------------------------------------------------


def fourier_low_freq_image(
    size: Tuple[int, int], decay_power: float, generator: torch.Generator
) -> Tensor:
    """A random low-frequency grey image in [0, 1] (FMix's ``make_low_freq_image``).

    The half spectrum (h, w//2 + 1) has independent standard normal real and imaginary parts
    scaled by 1 / max(f, 1 / max(h, w))^decay_power, f = sqrt(fx² + fy²) in cycles per pixel;
    its inverse real FFT is shifted and scaled to [0, 1].

    Args:
        size (Tuple[int, int]): (h, w).
        decay_power (float): δ; larger values give smoother masks.
        generator (torch.Generator): draws the spectrum.

    Returns:
        Tensor: (h, w) float32 on the generator's device.
    """
    _check_generator(generator)
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"fourier_low_freq_image: size must be positive, got {size}")
    dev = generator.device
    fy = torch.fft.fftfreq(h, device=dev, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, device=dev, dtype=torch.float64)[None, :]
    freqs = torch.sqrt(fx * fx + fy * fy)  # (h, w//2 + 1)
    scale = 1.0 / freqs.clamp(min=1.0 / max(h, w)) ** decay_power
    param = torch.randn(
        (2,) + tuple(freqs.shape), generator=generator, device=dev, dtype=torch.float64
    )
    spectrum = torch.complex(scale * param[0], scale * param[1])
    grey = torch.fft.irfftn(spectrum, s=(h, w))
    grey = grey - grey.min()
    peak = grey.max()
    grey = grey / peak if peak > 0 else torch.zeros_like(grey)
    return grey.float()


def binarise_mask(
    grey: Tensor, lam: float, generator: torch.Generator, max_soft: float = 0.0
) -> Tensor:
    """Threshold a grey image so that its mean is λ (FMix's ``binarise_mask``).

    The n brightest pixels become 1 and the rest 0, with n = ceil(λ·N) or floor(λ·N) (a fair coin
    from ``generator``), so the realised area n / N is within 1 / N of λ. With ``max_soft`` > 0 a
    band of 2·s pixels (s = int(N·min(max_soft, λ, 1 − λ))) around the threshold ramps linearly
    from 1 to 0.

    Args:
        grey (Tensor): (h, w).
        lam (float): target mean in [0, 1].
        generator (torch.Generator): draws the ceil/floor coin.
        max_soft (float): softening in [0, 0.5].

    Returns:
        Tensor: (h, w) float mask.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"binarise_mask: lam must lie in [0, 1], got {lam}")
    if not 0.0 <= max_soft <= 0.5:
        raise ValueError(f"binarise_mask: max_soft must lie in [0, 0.5], got {max_soft}")
    flat = grey.reshape(-1)
    numel = flat.numel()
    order = torch.argsort(flat, descending=True, stable=True)
    num = math.ceil(lam * numel) if _uniform(generator) > 0.5 else math.floor(lam * numel)
    eff_soft = min(lam, 1.0 - lam) if (max_soft > lam or max_soft > 1.0 - lam) else max_soft
    soft = int(numel * eff_soft)
    low, high = max(num - soft, 0), min(num + soft, numel)
    mask = torch.zeros(numel, dtype=torch.float32, device=grey.device)
    mask[order[:high]] = 1.0
    mask[order[low:]] = 0.0
    if high > low:
        mask[order[low:high]] = torch.linspace(1.0, 0.0, high - low, device=grey.device)
    return mask.reshape(grey.shape)


def sample_fmix_mask(
    size: Tuple[int, int],
    *,
    generator: torch.Generator,
    alpha: float = FMIX_DEFAULTS["alpha"],
    decay_power: float = FMIX_DEFAULTS["decay_power"],
    max_soft: float = FMIX_DEFAULTS["max_soft"],
    lam: Optional[float] = None,
) -> Tuple[Tensor, float]:
    """λ ~ Beta(alpha, alpha), a low-frequency image, binarised to area λ (FMix's ``sample_mask``).

    Returns:
        Tuple[Tensor, float]: the (h, w) mask and the sampled λ.
    """
    lam = sample_beta(alpha, generator) if lam is None else float(lam)
    grey = fourier_low_freq_image(size, decay_power, generator)
    return binarise_mask(grey, lam, generator, max_soft), lam


def fmix(
    images: Tensor,
    labels: Tensor,
    *,
    generator: torch.Generator,
    alpha: float = FMIX_DEFAULTS["alpha"],
    decay_power: float = FMIX_DEFAULTS["decay_power"],
    max_soft: float = FMIX_DEFAULTS["max_soft"],
    label_weight: str = "area",
    lam: Optional[float] = None,
) -> MixResult:
    """FMix of a batch with a permutation of itself; one mask for the whole batch (FMix's code).

    ``inputs = mask * images + (1 - mask) * images[index]``.

    Args:
        images (Tensor): (B, C, H, W).
        labels (Tensor): (B, K).
        generator (torch.Generator): draws λ, the spectrum, the ceil/floor coin, the permutation.
        alpha, decay_power, max_soft: FMix's parameters (defaults from its code).
        label_weight (str): "area": labels mixed by the realised mask mean (the mask's
            area); "lambda": by the sampled λ (FMix's ``fmix_loss``).
        lam (Optional[float]): a fixed λ instead of a draw.

    Returns:
        MixResult: with ``mask`` (H, W) and ``lam`` the label weight used.
    """
    _check_batch(images, labels, "fmix")
    if images.dim() != 4:
        raise ValueError(f"fmix expects images (B, C, H, W), got {tuple(images.shape)}")
    if label_weight not in ("area", "lambda"):
        raise ValueError(f"fmix: label_weight must be 'area' or 'lambda', got {label_weight!r}")
    _check_generator(generator)
    mask, lam_sampled = sample_fmix_mask(
        images.shape[-2:],
        generator=generator,
        alpha=alpha,
        decay_power=decay_power,
        max_soft=max_soft,
        lam=lam,
    )
    mask = mask.to(device=images.device, dtype=images.dtype)
    index = _permutation(images.shape[0], generator, images.device)
    mixed = mask * images + (1.0 - mask) * images[index]
    weight = float(mask.mean()) if label_weight == "area" else lam_sampled
    return MixResult(
        inputs=mixed, labels=mix_labels(labels, index, weight), lam=weight, index=index, mask=mask
    )


# ----------------------------------------------------------------------------------------------
# Mixup-CAM's uncertainty regularisers
# ----------------------------------------------------------------------------------------------


def pixel_class_probs(
    cams: Tensor,
    *,
    cls_labels: Optional[Tensor] = None,
    bg_score: Optional[float] = None,
) -> Tensor:
    """The per-pixel class distribution of the CAMs: softmax over the class channels.

    Args:
        cams (Tensor): (B, K, h, w) class activation maps (scores, any sign).
        cls_labels (Optional[Tensor]): (B, K); when given, classes with label 0 are excluded from
            the softmax (probability 0). Mixed labels count a class present when > 0.
        bg_score (Optional[float]): when given, a background channel of this constant score is
            prepended before the softmax (output (B, K + 1, h, w), channel 0 = background). Our
            CAMs are ReLU(W·f) ≥ 0 without a background channel; a constant background score is
            the usual way to give background pixels somewhere to go.

    Returns:
        Tensor: (B, K, h, w) or (B, K + 1, h, w) probabilities summing to 1 over dim 1.
    """
    if cams.dim() != 4:
        raise ValueError(f"pixel_class_probs expects cams (B, K, h, w), got {tuple(cams.shape)}")
    scores = cams
    if cls_labels is not None:
        if cls_labels.shape != cams.shape[:2]:
            raise ValueError(
                f"pixel_class_probs: cls_labels {tuple(cls_labels.shape)} do not match cams "
                f"{tuple(cams.shape[:2])}"
            )
        present = (cls_labels > 0)[:, :, None, None]
        scores = scores.masked_fill(~present, float("-inf"))
    if bg_score is not None:
        bg = scores.new_full((cams.shape[0], 1) + tuple(cams.shape[2:]), float(bg_score))
        scores = torch.cat([bg, scores], dim=1)
    elif cls_labels is not None and bool((cls_labels > 0).sum(dim=1).eq(0).any()):
        raise ValueError("pixel_class_probs: an image has no present class and no bg_score")
    return torch.softmax(scores, dim=1)


def entropy_loss(probs: Tensor) -> Tensor:
    """Mean over pixels of the entropy −Σ_c p_c log p_c of the per-pixel class distribution.

    0·log 0 is 0 (``torch.special.xlogy``), so a one-hot distribution gives exactly 0 and a uniform
    one over K classes gives log K.

    Args:
        probs (Tensor): (B, K, h, w), summing to 1 over dim 1.

    Returns:
        Tensor: scalar (nats).
    """
    if probs.dim() != 4:
        raise ValueError(f"entropy_loss expects probs (B, K, h, w), got {tuple(probs.shape)}")
    return -torch.special.xlogy(probs, probs).sum(dim=1).mean()


def concentration_loss(
    probs: Tensor,
    cls_labels: Optional[Tensor] = None,
    *,
    eps: float = MIXUP_CAM_DEFAULTS["con_eps"],
    class_offset: int = 0,
) -> Tensor:
    """SCOPS' concentration loss: the spatial variance of each present class's response.

    For image b and present class c, q = (P_c + eps) / Σ (P_c + eps) is a spatial distribution,
    μ = Σ_u q(u)·u its centroid and the term is Σ_u q(u)·‖u − μ‖², with coordinates u =
    (2·col / w − 1, 2·row / h − 1) (SCOPS' normalised grid: one pixel = 2 / w across). Terms are
    summed over present classes and averaged over the batch.

    Args:
        probs (Tensor): (B, C, h, w) per-pixel class probabilities (e.g. `pixel_class_probs`).
        cls_labels (Optional[Tensor]): (B, K); a class is present when its label is > 0 (mixed
            labels included). None: every channel from ``class_offset`` on is used.
        eps (float): added to each map before normalising (SCOPS: 1e-3, "prevent gradient
            explosion").
        class_offset (int): index of the first class channel in ``probs`` (1 when channel 0 is a
            background added by `pixel_class_probs(bg_score=...)`; background is never included).

    Returns:
        Tensor: scalar.
    """
    if probs.dim() != 4:
        raise ValueError(f"concentration_loss expects probs (B, C, h, w), got {tuple(probs.shape)}")
    maps = probs[:, class_offset:]
    b, k, h, w = maps.shape
    if cls_labels is None:
        present = maps.new_ones(b, k, dtype=torch.bool)
    else:
        if cls_labels.shape != (b, k):
            raise ValueError(
                f"concentration_loss: cls_labels {tuple(cls_labels.shape)} do not match the "
                f"{k} class channels from offset {class_offset}"
            )
        present = cls_labels > 0
    q = maps + eps
    q = q / q.sum(dim=(2, 3), keepdim=True).clamp(min=1e-12)  # an all-zero map (eps = 0) → q = 0
    ys = torch.arange(h, device=maps.device, dtype=maps.dtype) * (2.0 / h) - 1.0
    xs = torch.arange(w, device=maps.device, dtype=maps.dtype) * (2.0 / w) - 1.0
    my = (q.sum(dim=3) * ys).sum(dim=2, keepdim=True)  # (B, K, 1) centroid row coordinate
    mx = (q.sum(dim=2) * xs).sum(dim=2, keepdim=True)
    var = (q.sum(dim=3) * (ys - my) ** 2).sum(dim=2) + (q.sum(dim=2) * (xs - mx) ** 2).sum(dim=2)
    return torch.where(present, var, torch.zeros_like(var)).sum() / b
