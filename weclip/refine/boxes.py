"""Box masks from thresholded CAMs, as the authors' ``scoremap2bbox`` computes them (spec §4.5).

The authors threshold ``uint8(255·M)`` at ``int(θ·max)``, take the bounding rectangle of every
contour found by ``cv2.findContours(RETR_TREE)`` and fill each box half-open after clipping its
right/bottom edge to ``w-1``/``h-1``. The union of the bounding rectangles of all contours (outer
borders and hole borders) equals the union of the bounding boxes of the 8-connected foreground
components: a hole border lies inside its component's outer border, and OpenCV traces foreground as
8-connected. The clipping is monotone, so the equivalence survives it.

Two exact implementations of the components: ``cv2.connectedComponentsWithStats`` (one call per map) on
CPU, and on GPUs a label propagation in torch (:func:`component_box_masks`: every foreground pixel takes
the largest label in its 8-neighbourhood until nothing changes), so the training step does not copy the
CAMs to the host and wait for them. Both give the same masks (tested).
"""

from typing import Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BOX_MODES", "threshold_cams", "component_boxes", "component_box_masks", "box_masks"]

#: "official": the authors' clipping x1 = min(x + bw, w - 1), so a box touching the right/bottom
#: border loses its last column/row (spec §4.5, §12.13); "inclusive": the exact bounding boxes.
BOX_MODES = ("official", "inclusive")


def threshold_cams(cams: Tensor, threshold: float) -> Tensor:
    """Binary foreground maps of ``scoremap2bbox`` (spec §4.5 steps 1-2).

    Args:
        cams (Tensor): (P, h, w) CAMs in [0, 1].
        threshold (float): θ, 0.4 VOC / 0.7 COCO (``cfg.model.refine.box_threshold``).

    Returns:
        Tensor: (P, h, w) bool, ``U > int(θ · max U)`` with ``U = uint8(floor(255 · M))`` per map.
    """
    if cams.dim() != 3:
        raise ValueError(f"cams must be (P, h, w), got shape {tuple(cams.shape)}")
    # float32 product then truncation toward zero, as numpy's astype(uint8) on the authors' float32
    # map
    u = (cams.detach().float() * 255).clamp(0, 255).to(torch.uint8)
    # int(θ · max U): θ is a python float, max U an integer, the product is float64 (as in numpy);
    # floor = int for non-negative values
    t = torch.floor(threshold * u.flatten(1).amax(dim=1).to(torch.float64))
    return u.to(torch.float64) > t[:, None, None]


def component_boxes(binary: np.ndarray, mode: str = "official") -> np.ndarray:
    """Boxes (x0, y0, x1, y1) of the 8-connected components of one binary map (spec §4.5 steps 3-4).

    Args:
        binary (np.ndarray): (h, w) bool or uint8 map (non-zero = foreground).
        mode (str): "official" clips x1 to w-1 and y1 to h-1 (authors); "inclusive" clips to w and
            h.

    Returns:
        np.ndarray: (K, 4) int64 half-open boxes, fill rows y0..y1-1 and columns x0..x1-1; (0, 4) if
        the map is empty (the authors return a single (0, 0, 0, 0) box then, which fills nothing
        either).
    """
    if mode not in BOX_MODES:
        raise ValueError(f"box_mode must be one of {BOX_MODES}, got {mode!r}")
    if binary.ndim != 2:
        raise ValueError(f"binary map must be (h, w), got shape {binary.shape}")
    h, w = binary.shape
    lim_x, lim_y = (w - 1, h - 1) if mode == "official" else (w, h)
    num, _, stats, _ = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(binary != 0, dtype=np.uint8), connectivity=8
    )
    # label 0 is the background; columns x, y, width, height
    stats = stats[1:num, :4].astype(np.int64)
    x0, y0 = stats[:, 0], stats[:, 1]
    x1 = np.minimum(x0 + stats[:, 2], lim_x)
    y1 = np.minimum(y0 + stats[:, 3], lim_y)
    return np.stack([x0, y0, x1, y1], axis=1)


def component_box_masks(binary: Tensor, mode: str = "official", check_every: int = 8) -> Tensor:
    """Union of the (clipped) bounding boxes of the 8-connected components of binary maps, in torch.

    Labels: every foreground pixel starts with its own index (+1), then repeatedly takes the maximum label
    of its 3x3 neighbourhood among foreground pixels; when nothing changes, each component holds one label
    (its largest index). Boxes: per label, the min/max row and column of its pixels (``scatter_reduce``),
    clipped as :func:`component_boxes`, painted with a difference array (memory O(P h w)).

    Args:
        binary (Tensor): (P, h, w) bool.
        mode (str): see :data:`BOX_MODES`.
        check_every (int): propagation steps between convergence checks (each check reads one flag on the
            host; a component of diameter d needs about d steps).

    Returns:
        Tensor: (P, h, w) bool, on ``binary.device``.
    """
    if mode not in BOX_MODES:
        raise ValueError(f"box_mode must be one of {BOX_MODES}, got {mode!r}")
    p, h, w = binary.shape
    n = h * w
    fg = binary.bool()
    index = torch.arange(1, n + 1, device=binary.device, dtype=torch.float32).view(1, h, w)
    labels = torch.where(fg, index, torch.zeros((), device=binary.device))[:, None]  # (P, 1, h, w)
    for _ in range(0, n + 1, check_every):  # at most n steps: a component has at most n pixels
        before = labels
        for _ in range(check_every):
            labels = F.max_pool2d(labels, 3, stride=1, padding=1) * fg[:, None]
        if torch.equal(before, labels):
            break
    labels = labels[:, 0].long().flatten(1)  # (P, n), 0 = background, else the component's label
    rows = torch.arange(h, device=binary.device).repeat_interleave(w).expand(p, n)
    cols = torch.arange(w, device=binary.device).repeat(h).expand(p, n)
    big = torch.full((p, n + 1), n, device=binary.device, dtype=torch.long)
    small = torch.full((p, n + 1), -1, device=binary.device, dtype=torch.long)
    y0 = big.scatter_reduce(1, labels, rows, "amin")
    x0 = big.scatter_reduce(1, labels, cols, "amin")
    y1 = small.scatter_reduce(1, labels, rows, "amax") + 1  # half-open, as cv2's x + width
    x1 = small.scatter_reduce(1, labels, cols, "amax") + 1
    lim_x, lim_y = (w - 1, h - 1) if mode == "official" else (w, h)
    x1, y1 = x1.clamp(max=lim_x), y1.clamp(max=lim_y)
    valid = (
        (y0 < n) & (y1 > y0) & (x1 > x0)
    )  # labels that occur and keep a non-empty box after clipping
    valid[:, 0] = False  # label 0 is the background
    # paint the boxes with a 2-D difference array: +1 at (y0, x0) and (y1, x1), -1 at (y0, x1) and (y1, x0);
    # its 2-D prefix sum counts the boxes covering each pixel
    stride = w + 1
    diff = torch.zeros(p, (h + 1) * stride, device=binary.device, dtype=torch.int32)
    one = valid.int()
    for ys, xs, sign in ((y0, x0, 1), (y1, x1, 1), (y0, x1, -1), (y1, x0, -1)):
        diff.scatter_add_(1, (ys.clamp(0, h) * stride + xs.clamp(0, w)), sign * one)
    cover = diff.view(p, h + 1, stride).cumsum(1).cumsum(2)[:, :h, :w]
    return cover > 0


def box_masks(cams: Tensor, threshold: float, mode: str = "official") -> Tuple[Tensor, Tensor]:
    """Union-of-boxes masks of thresholded CAMs (spec §4.5).

    Args:
        cams (Tensor): (P, h, w) CAMs in [0, 1].
        threshold (float): θ (``cfg.model.refine.box_threshold``).
        mode (str): "official" | "inclusive" (``cfg.model.refine.box_mode``), see :data:`BOX_MODES`.

    Returns:
        Tuple[Tensor, Tensor]: ``masks`` (P, h, w) bool on ``cams.device`` (an all-zero CAM gives an
        all-zero mask) and ``binary`` (P, h, w) bool, the thresholded maps the boxes were taken
        from.
    """
    if mode not in BOX_MODES:
        raise ValueError(f"box_mode must be one of {BOX_MODES}, got {mode!r}")
    binary = threshold_cams(cams, threshold)
    if binary.device.type != "cpu":  # on GPUs: no copy to the host (and no wait for it)
        return component_box_masks(binary, mode), binary
    binary_np = binary.numpy()
    masks = np.zeros(binary_np.shape, dtype=bool)
    for p in range(binary_np.shape[0]):
        for x0, y0, x1, y1 in component_boxes(binary_np[p], mode):
            masks[p, y0:y1, x0:x1] = True
    return torch.from_numpy(masks).to(cams.device), binary
