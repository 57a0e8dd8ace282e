"""Pixel normalisation shared by every model of the library: images enter a model as 0-255 RGB.

The models keep their mean / std as non-persistent buffers (``pixel_mean``, ``pixel_std``: not in
checkpoints; registered by :class:`weclip.models.base.SegmentationModel`, whose ``preprocess`` calls
:func:`normalize_pixels`), so the datasets can hand over uint8 and the device follows the model.
"""

import torch


def normalize_pixels(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 or float 0-255 RGB -> (x - mean) / std per channel, float32.

    Args:
        images (torch.Tensor): (B, 3, H, W) RGB, uint8 or float in 0-255.
        mean (torch.Tensor): (3,) per-channel mean, 0-255 scale.
        std (torch.Tensor): (3,) per-channel standard deviation, 0-255 scale.

    Returns:
        torch.Tensor: (B, 3, H, W) float32.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W) RGB, got {tuple(images.shape)}")
    return (images.float() - mean[:, None, None]) / std[:, None, None]
