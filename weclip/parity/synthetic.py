"""Synthetic VOC-like scenes for the parity recordings: shapes of VOC classes on textured backgrounds.

Random CLIP weights make CAMs that carry no semantics, but the refinement stages still depend on
the image: the box search thresholds CAMs, and PAR propagates labels along colour edges. So the
recordings use images with structure: the toy world's textures (plain, stripes, gradient, noise;
:func:`weclip.data.toy.render_background`) and outlines (circle, square, triangle, cross;
:func:`weclip.data.toy.shape_mask`), at any size (not only squares, not only multiples of 16), each
object labelled with a VOC class id (1..20) drawn at random. GT masks can carry the 255 "ignore"
band that VOC draws along object boundaries.

Every scene is a pure function of ``(seed, index, height, width)``.
"""

import dataclasses
from typing import List, Optional, Tuple

import cv2
import numpy as np

from weclip.data.toy import TOY_BG_KINDS, TOY_CLASS_NAMES, render_background, shape_mask

__all__ = ["SyntheticScene", "synthetic_scene", "scene_batch", "labels_to_multi_hot"]

_MIN_CONTRAST = 90.0  # L2 RGB distance between an object's fill and the background under it


@dataclasses.dataclass
class SyntheticScene:
    """One scene.

    Attributes:
        image (np.ndarray): (H, W, 3) uint8 RGB.
        mask (np.ndarray): (H, W) uint8: 0 background, 1..20 VOC class ids, 255 ignore band.
        labels (List[int]): sorted 0-based foreground ids present in ``mask``.
    """

    image: np.ndarray
    mask: np.ndarray
    labels: List[int]


def labels_to_multi_hot(labels: List[int], num_fg: int = 20) -> np.ndarray:
    """(num_fg,) float32 multi-hot vector of 0-based foreground ids."""
    out = np.zeros(num_fg, dtype=np.float32)
    out[list(labels)] = 1.0
    return out


def synthetic_scene(
    seed: int,
    index: int,
    height: int,
    width: int,
    *,
    num_objects: Optional[int] = None,
    max_objects: int = 3,
    num_fg: int = 20,
    ignore_band: int = 0,
) -> SyntheticScene:
    """Draw scene ``index`` of the stream ``seed`` at ``height`` x ``width``.

    Args:
        seed (int): stream seed.
        index (int): scene index in the stream.
        height (int): H.
        width (int): W.
        num_objects (int, optional): objects to draw (default uniform in [1, max_objects]).
        max_objects (int): most objects when ``num_objects`` is None.
        num_fg (int): foreground classes to draw ids from (20 for VOC).
        ignore_band (int): width in pixels of a 255 band on the outline of every object in the
            mask (0 = none), like VOC's boundary annotation.

    Returns:
        SyntheticScene: image, mask and labels (classes of the visible objects).
    """
    rng = np.random.default_rng([int(seed), int(index), int(height), int(width)])
    side = max(height, width)
    if num_objects is None:
        num_objects = int(rng.integers(1, max_objects + 1))
    kind = int(rng.integers(len(TOY_BG_KINDS)))
    canvas = render_background(rng, side, kind)[:height, :width]
    mask = np.zeros((height, width), np.uint8)
    classes = rng.choice(num_fg, size=num_objects, replace=False)
    short = min(height, width)
    outlines = np.zeros((height, width), bool)
    for cls in classes:
        diameter = rng.uniform(0.25, 0.55) * short
        cx = rng.uniform(diameter / 2 + 1, width - diameter / 2 - 1)
        cy = rng.uniform(diameter / 2 + 1, height - diameter / 2 - 1)
        outline = int(rng.integers(len(TOY_CLASS_NAMES)))
        obj = shape_mask(outline, side, (cx, cy), diameter, rng.uniform(-30, 30))
        obj = obj[:height, :width]
        under = canvas[obj].mean(0)
        for _ in range(100):  # a fill colour that stands out from the background under it
            fill = rng.uniform(0, 255, size=3)
            if np.linalg.norm(fill - under) >= _MIN_CONTRAST:
                break
        grain = rng.normal(0, 3.0, size=(height, width, 1))
        canvas[obj] = (fill[None] + grain[obj]).astype(np.float32)
        mask[obj] = int(cls) + 1  # later objects occlude earlier ones
        if ignore_band > 0:
            kernel = np.ones((2 * ignore_band + 1,) * 2, np.uint8)
            ring = cv2.dilate(obj.astype(np.uint8), kernel) != cv2.erode(
                obj.astype(np.uint8), kernel
            )
            outlines |= ring
    visible = sorted(int(v) - 1 for v in np.unique(mask) if 0 < v < 255)
    if ignore_band > 0:
        mask[outlines] = 255
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return SyntheticScene(image=image, mask=mask, labels=visible)


def scene_batch(
    seed: int, start: int, count: int, size: Tuple[int, int]
) -> Tuple[np.ndarray, np.ndarray, List[SyntheticScene]]:
    """``count`` scenes of one size as a batch.

    Returns:
        Tuple: images (B, 3, H, W) uint8, cls_labels (B, 20) float32, the scenes.
    """
    scenes = [synthetic_scene(seed, start + i, size[0], size[1]) for i in range(count)]
    images = np.stack([s.image.transpose(2, 0, 1) for s in scenes])
    labels = np.stack([labels_to_multi_hot(s.labels) for s in scenes])
    return np.ascontiguousarray(images), labels, scenes
