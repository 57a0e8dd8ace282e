"""Map plumbing shared by the baseline models: grids, packing, predicted labels, score logits.

The CNN baselines compute maps on a feature grid of stride s (a CAM grid, an affinity grid) and
hand them to the library at the image size (docs/architecture.md, "The model interface"). These
helpers keep the two aligned exactly:

* :func:`pad_to_multiple`: zero-pad the (normalised) image at the bottom/right to a multiple of s,
  so that grid cell (i, j) covers exactly the pixels [s i, s (i + 1)) x [s j, s (j + 1));
* :func:`grid_to_image`: a grid map upsampled by exactly s (bilinear, align_corners=False) to the
  padded size and cropped back to the image: the inverse geometry of the padding;
* :func:`image_to_grid`: an image-size map zero-padded the same way and average-pooled by s (how
  AffinityNet's code brings CAMs to its feature grid);
* :func:`pack_present`: (B, C, H, W) scores of every class -> [bg; present classes] padded to the
  batch's largest count, with the class id of each channel (the format of
  ``model.pseudo_label_scores`` and ``weclip.refine.pseudo_label.scores_to_labels``);
* :func:`predicted_labels`: image-level labels from a classifier's logits (the "predict" mode of
  the CAM models, which has no labels);
* :func:`score_logits`: non-negative scores as log-probabilities, so that the softmax of the
  "logits" is the per-pixel normalised scores and their argmax is the scores' argmax.
"""

from typing import Tuple

import torch
import torch.nn.functional as F

from weclip.cam.gradcam import present_pairs

__all__ = [
    "IGNORE_INDEX",
    "pad_to_multiple",
    "grid_to_image",
    "image_to_grid",
    "pair_maps",
    "pack_present",
    "predicted_labels",
    "score_logits",
]

IGNORE_INDEX = 255
SCORE_EPS = 1e-5  # floor of the scores before the log in score_logits (the CRF's probability clip)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad (B, C, H, W) at the bottom and right to the next multiple of ``multiple``."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    return F.pad(x, (0, pad_w, 0, pad_h)) if (pad_h or pad_w) else x


def grid_to_image(maps: torch.Tensor, stride: int, size: Tuple[int, int]) -> torch.Tensor:
    """Grid maps (B, K, h, w) of a padded input -> (B, K, H, W) at the image size.

    Upsampled by exactly ``stride`` (bilinear, align_corners=False) to (h s, w s), then the padding
    rows/columns are cropped: (H, W) = ``size``, with H <= h s and W <= w s.
    """
    height, width = int(size[0]), int(size[1])
    if maps.shape[-2] * stride < height or maps.shape[-1] * stride < width:
        raise ValueError(
            f"a {tuple(maps.shape[-2:])} grid at stride {stride} does not cover {height}x{width}"
        )
    if stride != 1:
        maps = F.interpolate(maps, scale_factor=float(stride), mode="bilinear", align_corners=False)
    return maps[..., :height, :width]


def image_to_grid(maps: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, K, H, W) maps -> (B, K, ceil(H/s), ceil(W/s)): zero-padded to a multiple, mean-pooled."""
    if stride == 1:
        return maps
    return F.avg_pool2d(pad_to_multiple(maps, stride), stride)


def pair_maps(
    maps: torch.Tensor, cls_labels: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The maps of the present (image, class) pairs.

    Args:
        maps (torch.Tensor): (B, K, h, w) one map per foreground class.
        cls_labels (torch.Tensor): (B, K) multi-hot.

    Returns:
        tuple: ``maps`` (P, h, w), ``batch_index`` (P,), ``class_index`` (P,) (foreground ids),
        images in order and classes ascending (``weclip.cam.gradcam.present_pairs``).
    """
    batch_index, class_index = present_pairs(cls_labels)
    return maps[batch_index, class_index], batch_index, class_index


def pack_present(
    scores: torch.Tensor, cls_labels: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Keep the background and the present classes of every image, in class order.

    Args:
        scores (torch.Tensor): (B, C, H, W), channel c = class id c (0 = background).
        cls_labels (torch.Tensor): (B, C-1) multi-hot.

    Returns:
        tuple: ``packed`` (B, 1 + Kmax, H, W) with zeros in padding channels, and ``keys``
        (B, 1 + Kmax) long: the class id of each channel, 255 for padding. A padding channel (all
        zeros, after every real channel) never wins ``scores_to_labels``' first-maximum argmax
        over non-negative scores.
    """
    b = scores.shape[0]
    present = cls_labels > 0
    counts = present.sum(dim=1)
    k_max = int(counts.max()) if b else 0
    packed = scores.new_zeros(b, 1 + k_max, *scores.shape[-2:])
    keys = torch.full((b, 1 + k_max), IGNORE_INDEX, dtype=torch.long, device=scores.device)
    packed[:, 0] = scores[:, 0]
    keys[:, 0] = 0
    batch_index, class_index = present_pairs(cls_labels)
    rank = (
        torch.arange(batch_index.numel(), device=scores.device)
        - (torch.cumsum(counts, 0) - counts)[batch_index]
    )
    packed[batch_index, 1 + rank] = scores[batch_index, 1 + class_index]
    keys[batch_index, 1 + rank] = class_index + 1
    return packed, keys


def predicted_labels(
    logits: torch.Tensor, kind: str = "multilabel", threshold: float = 0.5
) -> torch.Tensor:
    """Image-level labels (B, K) from classification logits, for prediction without labels.

    ``kind="multilabel"``: the classes with sigmoid(logit) > ``threshold``, and at least the
    top-scoring one (every image of the datasets here holds an object). ``kind="single"``: the
    argmax class.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits are (B, K), got {tuple(logits.shape)}")
    top = F.one_hot(logits.argmax(dim=1), logits.shape[1]).bool()
    if kind == "single":
        return top.to(logits.dtype)
    if kind != "multilabel":
        raise ValueError(f"kind must be 'multilabel' or 'single', got {kind!r}")
    return (top | (torch.sigmoid(logits) > threshold)).to(logits.dtype)


def score_logits(scores: torch.Tensor, eps: float = SCORE_EPS) -> torch.Tensor:
    """log(s / sum_c s) per pixel, s floored at ``eps``: (B, C, H, W) -> (B, C, H, W).

    The softmax of the result is the normalised scores (what DenseCRF takes as probabilities) and
    its argmax is the argmax of the floored scores (ties where several scores are below ``eps``).
    """
    s = scores.float().clamp_min(eps)
    return s.log() - s.sum(dim=1, keepdim=True).log()
