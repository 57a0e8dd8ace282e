"""Training augmentation (spec §8) as pure functions of an explicit random generator.

Pipeline on an RGB uint8 image (H, W, 3), in the authors' order (AFA's ``datasets/transforms.py``):

1. random rescale: r ~ U(scale_range), new size (int(r·W), int(r·H)), PIL bilinear (antialiased when
   shrinking, as PIL does);
2. horizontal flip with probability ``flip_prob``;
3. random crop S×S: when a side is shorter than S the image is pasted at a uniformly random offset
   into a zero (black) canvas of max(S, side), then a uniformly random S×S window is taken;
   ``valid`` marks the pixels that came from the image;
4. HWC -> CHW, still uint8. The model normalises ((x - mean) / std, its ``pixel_mean``/``pixel_std``),
   so the zero padding becomes -mean/std there, exactly as in the authors' code, which pads the 0-255
   image before normalising.

Randomness comes only from the ``np.random.Generator`` passed in (drawn in this order: ratio, flip,
pad offset y then x, crop offset y then x), so one seed fixes the whole augmentation. The authors
draw from the global ``random``/``np.random`` state; the distribution of the augmentation is the
same.
"""

from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image

__all__ = ["random_rescale", "random_hflip", "random_pad_crop", "augment", "to_chw"]


def random_rescale(
    image: np.ndarray,
    rng: np.random.Generator,
    scale_range: Sequence[float],
    mask: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, float, Optional[np.ndarray]]:
    """Rescale by r ~ U(lo, hi) to (int(r·W), int(r·H)) with PIL bilinear (spec §8 step 2).

    Args:
        image (np.ndarray): (H, W, 3) uint8.
        rng (np.random.Generator): the sample's generator.
        scale_range (Sequence[float]): (lo, hi), lo <= hi.
        mask (np.ndarray, optional): (H, W) uint8 training target, resized with nearest neighbour.

    Returns:
        Tuple: the (int(r·H), int(r·W), 3) uint8 image (each side at least 1), r, and the mask.
    """
    lo, hi = float(scale_range[0]), float(scale_range[1])
    if not 0 < lo <= hi:
        raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {tuple(scale_range)}")
    ratio = float(rng.uniform(lo, hi))
    h, w = image.shape[:2]
    new_w, new_h = max(1, int(ratio * w)), max(1, int(ratio * h))
    resized = Image.fromarray(image).resize((new_w, new_h), resample=Image.BILINEAR)
    if mask is not None:
        mask = np.asarray(Image.fromarray(mask).resize((new_w, new_h), resample=Image.NEAREST))
    return np.asarray(resized), ratio, mask


def random_hflip(
    image: np.ndarray,
    rng: np.random.Generator,
    flip_prob: float,
    mask: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, bool, Optional[np.ndarray]]:
    """Flip left-right with probability ``flip_prob`` (spec §8 step 3). Returns (image, flipped, mask)."""
    flipped = bool(rng.random() < flip_prob)
    if not flipped:
        return image, False, mask
    return image[:, ::-1], True, None if mask is None else mask[:, ::-1]


def random_pad_crop(
    image: np.ndarray,
    rng: np.random.Generator,
    crop_size: int,
    mask: Optional[np.ndarray] = None,
    mask_pad: int = 255,
) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Zero-pad to at least S×S at a random offset, then take a random S×S window (spec §8 step 4).

    Args:
        image (np.ndarray): (h, w, 3) uint8.
        rng (np.random.Generator): the sample's generator.
        crop_size (int): S.
        mask (np.ndarray, optional): (h, w) uint8 training target, padded with ``mask_pad`` (ignore).
        mask_pad (int): the mask's padding value.

    Returns:
        Tuple: crop (S, S, 3) uint8 (padding = 0), valid (S, S) bool (True where the pixel comes from
        the image), and the mask's crop.
    """
    h, w = image.shape[:2]
    big_h, big_w = max(crop_size, h), max(crop_size, w)
    off_y = int(rng.integers(0, big_h - h + 1))  # 0 when the side is already >= S
    off_x = int(rng.integers(0, big_w - w + 1))
    canvas = np.zeros((big_h, big_w, 3), dtype=np.uint8)
    canvas[off_y : off_y + h, off_x : off_x + w] = image
    valid = np.zeros((big_h, big_w), dtype=bool)
    valid[off_y : off_y + h, off_x : off_x + w] = True
    top = int(rng.integers(0, big_h - crop_size + 1))
    left = int(rng.integers(0, big_w - crop_size + 1))
    window = (slice(top, top + crop_size), slice(left, left + crop_size))
    if mask is not None:
        target = np.full((big_h, big_w), mask_pad, dtype=np.uint8)
        target[off_y : off_y + h, off_x : off_x + w] = mask
        mask = np.ascontiguousarray(target[window])
    return np.ascontiguousarray(canvas[window]), np.ascontiguousarray(valid[window]), mask


def augment(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    crop_size: int,
    scale_range: Optional[Sequence[float]],
    flip_prob: float,
    mask: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Rescale -> flip -> pad/crop (spec §8 steps 2-4), all randomness from ``rng``.

    A training target (``mask``: pseudo-masks of a second stage, or ground truth for a fully supervised
    model) gets the same geometry (nearest neighbour, padding 255 = ignore); the draws are the same with or
    without it, so an image's crop does not depend on whether a mask comes along.

    Args:
        image (np.ndarray): (H, W, 3) uint8 RGB.
        rng (np.random.Generator): e.g. ``np.random.default_rng(aug_seed)``.
        crop_size (int): S.
        scale_range (Sequence[float], optional): (lo, hi); None skips the rescale (and its draw).
        flip_prob (float): probability of a horizontal flip.
        mask (np.ndarray, optional): (H, W) uint8 class ids.

    Returns:
        Tuple: crop (S, S, 3) uint8, valid (S, S) bool, and the mask's crop (S, S) uint8 (or None).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"augment expects (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if mask is not None and mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")
    if scale_range is not None:
        image, _, mask = random_rescale(image, rng, scale_range, mask)
    image, _, mask = random_hflip(image, rng, flip_prob, mask)
    return random_pad_crop(image, rng, crop_size, mask)


def to_chw(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (3, H, W), contiguous."""
    return np.ascontiguousarray(image.transpose(2, 0, 1))
