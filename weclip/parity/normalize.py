"""The authors' input normalisation, in numpy: what their ``datasets/transforms.py`` ``normalize_img``
computes (ImageNet mean/std on 0-255 RGB values; https://github.com/zbf1991/WeCLIP, spec §1.2).

The parity recorder stores fixture inputs normalised with :func:`official_normalize` and checks, at
record time, that it equals their function bit for bit; the parity tests normalise the stored
``uint8`` images with the same function.
"""

import numpy as np

__all__ = ["OFFICIAL_MEAN", "OFFICIAL_STD", "official_normalize"]

#: their normalize_img mean and std (ImageNet's, on 0-255 RGB values)
OFFICIAL_MEAN = (123.675, 116.28, 103.53)
OFFICIAL_STD = (58.395, 57.12, 57.375)


def official_normalize(images: np.ndarray) -> np.ndarray:
    """Their ``normalize_img`` arithmetic: float64 ``(x - mean) / std``, stored as float32.

    Args:
        images (np.ndarray): (B, 3, H, W) uint8 RGB.

    Returns:
        np.ndarray: (B, 3, H, W) float32.
    """
    x = np.asarray(images).astype(np.float64)
    mean = np.asarray(OFFICIAL_MEAN)[None, :, None, None]
    std = np.asarray(OFFICIAL_STD)[None, :, None, None]
    return ((x - mean) / std).astype(np.float32)
