"""Colour overlays for label maps and CAMs (TensorBoard panels in training, ``tools/visualize.py``).

Everything returns ``uint8`` RGB arrays of shape HxWx3 (TensorBoard ``dataformats="HWC"``, PIL, cv2 after
an RGB->BGR flip). The palette is the PASCAL VOC colour map (class id bits spread over the RGB channels),
generated here; 255 (ignore) is drawn white.
"""

from typing import Optional, Sequence, Union

import cv2
import numpy as np
import torch

__all__ = [
    "voc_palette",
    "colorize_labels",
    "blend",
    "label_overlay",
    "cam_heatmap",
    "cam_overlay",
    "hstack_panels",
    "titled",
    "upscale",
    "stack_rows",
    "TITLE_HEIGHT",
    "GAP",
]

TITLE_HEIGHT = 16  # pixels of the title strip above each panel
GAP = 4  # white pixels between panels and between grid rows

ArrayLike = Union[np.ndarray, torch.Tensor]


def _numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: bit k of the class id sets bit (7 - k // 3) of channel k % 3.

    Args:
        num_colors (int): rows to generate (<= 256).

    Returns:
        np.ndarray: num_colors x 3 uint8; row 0 = black, 1 = (128, 0, 0), 2 = (0, 128, 0), 255 = white
        (overridden; the VOC map has (224, 224, 192) there for the boundary label).
    """
    if not 1 <= num_colors <= 256:
        raise ValueError(f"num_colors must be in [1, 256], got {num_colors}")
    ids = np.arange(num_colors)
    palette = np.zeros((num_colors, 3), dtype=np.int64)
    for k in range(8):  # 8 bits of the class id, three at a time
        for channel in range(3):
            bit = (ids >> (3 * k + channel)) & 1
            palette[:, channel] |= bit << (7 - k)
    palette = palette.astype(np.uint8)
    if num_colors == 256:
        palette[255] = 255  # ignore -> white
    return palette


def colorize_labels(labels: ArrayLike, palette: Optional[np.ndarray] = None) -> np.ndarray:
    """Paint a label map.

    Args:
        labels (Tensor | ndarray): HxW integer class ids in [0, 255].
        palette (np.ndarray, optional): 256x3 uint8; default :func:`voc_palette`.

    Returns:
        np.ndarray: HxWx3 uint8.
    """
    lab = _numpy(labels)
    if lab.ndim != 2:
        raise ValueError(f"colorize_labels expects an HxW label map, got shape {lab.shape}")
    lab = lab.astype(np.int64)
    if lab.size and (lab.min() < 0 or lab.max() > 255):
        raise ValueError(f"label values must lie in [0, 255], got [{lab.min()}, {lab.max()}]")
    palette = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    return palette[lab]


def blend(base: np.ndarray, top: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(1 - alpha) * base + alpha * top``, rounded, uint8 (same HxWx3 shapes)."""
    if base.shape != top.shape:
        raise ValueError(f"blend: shapes differ, {base.shape} vs {top.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    mixed = (1.0 - alpha) * base.astype(np.float32) + alpha * top.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def _resize_nearest(labels: np.ndarray, size: Sequence[int]) -> np.ndarray:
    h, w = int(size[0]), int(size[1])
    if labels.shape == (h, w):
        return labels
    return cv2.resize(labels.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)


def label_overlay(
    rgb: np.ndarray, labels: ArrayLike, alpha: float = 0.5, palette: Optional[np.ndarray] = None
) -> np.ndarray:
    """An image with its label map painted on top (labels resized nearest to the image when needed).

    Args:
        rgb (np.ndarray): HxWx3 uint8.
        labels (Tensor | ndarray): hxw class ids.
        alpha (float): weight of the colours.
        palette (np.ndarray, optional): 256x3 uint8.

    Returns:
        np.ndarray: HxWx3 uint8.
    """
    lab = _resize_nearest(_numpy(labels).astype(np.int64), rgb.shape[:2])
    return blend(rgb, colorize_labels(lab, palette), alpha)


def cam_heatmap(cam: ArrayLike, size: Optional[Sequence[int]] = None) -> np.ndarray:
    """A CAM as a JET heat map (blue = 0, red = 1), resized bilinearly to ``size``.

    Args:
        cam (Tensor | ndarray): hxw, values in [0, 1] (clipped).
        size (Sequence[int], optional): (H, W) of the output.

    Returns:
        np.ndarray: HxWx3 uint8 RGB.
    """
    c = _numpy(cam).astype(np.float32)
    if c.ndim != 2:
        raise ValueError(f"cam_heatmap expects an hxw map, got shape {c.shape}")
    if size is not None and c.shape != tuple(size):
        c = cv2.resize(c, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)
    gray = np.clip(np.rint(np.clip(c, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def cam_overlay(rgb: np.ndarray, cam: ArrayLike, alpha: float = 0.5) -> np.ndarray:
    """An image with a CAM heat map on top (the CAM is resized to the image).

    Args:
        rgb (np.ndarray): HxWx3 uint8.
        cam (Tensor | ndarray): hxw in [0, 1].
        alpha (float): weight of the heat map.

    Returns:
        np.ndarray: HxWx3 uint8.
    """
    return blend(rgb, cam_heatmap(cam, rgb.shape[:2]), alpha)


def hstack_panels(panels: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Panels of equal height side by side, separated by ``gap`` white columns.

    Args:
        panels (Sequence[np.ndarray]): HxWix3 uint8 each.
        gap (int): separator width in pixels.

    Returns:
        np.ndarray: Hx(sum Wi + gaps)x3 uint8.
    """
    if not panels:
        raise ValueError("hstack_panels needs at least one panel")
    height = panels[0].shape[0]
    if any(p.shape[0] != height or p.ndim != 3 or p.shape[2] != 3 for p in panels):
        raise ValueError(f"panels must be Hx?x3 with one height, got {[p.shape for p in panels]}")
    sep = np.full((height, gap, 3), 255, dtype=np.uint8)
    parts = []
    for i, panel in enumerate(panels):
        if i:
            parts.append(sep)
        parts.append(panel.astype(np.uint8))
    return np.concatenate(parts, axis=1)


def titled(panel: np.ndarray, title: str) -> np.ndarray:
    """A panel with a white title strip of ``TITLE_HEIGHT`` pixels on top (text clipped to the width).

    Args:
        panel (np.ndarray): HxWx3 uint8.
        title (str): text.

    Returns:
        np.ndarray: (TITLE_HEIGHT + H)xWx3 uint8.
    """
    strip = np.full((TITLE_HEIGHT, panel.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(
        strip,
        title,
        (2, TITLE_HEIGHT - 4),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.4,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    return np.concatenate([strip, panel], axis=0)


def upscale(panel: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (tiny images stay readable)."""
    if factor <= 1:
        return panel
    return cv2.resize(panel, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)


def stack_rows(rows: Sequence[np.ndarray], gap: int = GAP) -> np.ndarray:
    """Rows of different widths one above the other, padded white on the right, ``gap`` white rows between."""
    width = max(r.shape[1] for r in rows)
    parts = []
    for i, row in enumerate(rows):
        if i:
            parts.append(np.full((gap, width, 3), 255, dtype=np.uint8))
        pad = np.full((row.shape[0], width - row.shape[1], 3), 255, dtype=np.uint8)
        parts.append(np.concatenate([row, pad], axis=1))
    return np.concatenate(parts, axis=0)
