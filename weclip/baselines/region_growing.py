"""Region growing of CAM seeds in feature space.

Seeded region growing refines sparse, confident CAM regions by adding neighbouring pixels that
look like them (the idea of seeded region growing, Adams & Bischof, TPAMI 1994,
https://doi.org/10.1109/34.295913, used for weak supervision by DSRG, Huang et al., CVPR 2018,
https://openaccess.thecvf.com/content_cvpr_2018/html/Huang_Weakly-Supervised_Semantic_Segmentation_CVPR_2018_paper.html,
which grows by classification score; here, as the issue specifies, the criterion is feature
similarity):

1. seeds R_k = {x : M_k(x) > seed_threshold} for every class k present in the image;
2. repeat ``num_iters`` times, for every class at once:
   mu_k = mean of the features f(x) over R_k;
   s_k(x) = cos(f(x), mu_k);
   frontier F_k = pixels 4- (or 8-) adjacent to R_k and not in it;
   R_k <- R_k  union  {x in F_k : s_k(x) > sim_threshold};
   stop early when no region changed.

So a region advances at most one pixel per iteration and never jumps over a band of dissimilar
pixels. Everything is tensor code (masks (B, K, h, w), means by one matrix product); the only
Python loop is over iterations. :func:`regions_to_labels` turns the (possibly overlapping) grown
masks into a label map: a pixel in several regions takes the class with the highest CAM, a pixel
in none is background; :func:`region_scores` gives the same decision as (B, K+1, h, w) scores that
can be resized bilinearly before the argmax (smooth region borders at the image size).

Defaults (no paper fixes them for this variant; tune with the sweep): seed threshold 0.30 (IRN's
confident-foreground threshold ``conf_fg_thres``), similarity 0.8, 10 iterations, 4-connectivity.
"""

from typing import Optional

import torch
import torch.nn.functional as F

from weclip.baselines.cam import mask_absent

__all__ = [
    "dilate_masks",
    "grow_regions",
    "region_growing",
    "regions_to_labels",
    "region_scores",
    "REGION_BG_SCORE",
]

# background score of region_scores: below every inside score (>= 0.5), above the outside 0
REGION_BG_SCORE = 0.25


def dilate_masks(masks: torch.Tensor, connectivity: int = 4) -> torch.Tensor:
    """Binary dilation by one pixel: (B, K, h, w) bool -> bool.

    Args:
        masks (torch.Tensor): (B, K, h, w) bool.
        connectivity (int): 4 (cross: up, down, left, right) or 8 (3x3 square).
    """
    if masks.dim() != 4:
        raise ValueError(f"masks are (B, K, h, w), got {tuple(masks.shape)}")
    x = masks.float()
    if connectivity == 8:
        grown = F.max_pool2d(x, 3, stride=1, padding=1)
    elif connectivity == 4:
        vertical = F.max_pool2d(x, (3, 1), stride=1, padding=(1, 0))
        horizontal = F.max_pool2d(x, (1, 3), stride=1, padding=(0, 1))
        grown = torch.maximum(vertical, horizontal)
    else:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    return grown > 0.5


def grow_regions(
    features: torch.Tensor,
    seeds: torch.Tensor,
    num_iters: int = 10,
    sim_threshold: float = 0.8,
    connectivity: int = 4,
    eps: float = 1e-8,
    center: bool = False,
) -> torch.Tensor:
    """Grow seed masks into adjacent pixels whose feature resembles the region's mean feature.

    Args:
        features (torch.Tensor): (B, D, h, w) feature map.
        seeds (torch.Tensor): (B, K, h, w) bool seed masks, one per class.
        num_iters (int): growth iterations N (>= 0).
        sim_threshold (float): a frontier pixel joins when cos(f(x), mu_k) > this.
        connectivity (int): 4 or 8.
        eps (float): guards the norms of zero vectors (their similarity is 0).
        center (bool): subtract each image's mean feature (over its h x w positions) first, so that
            the cosine compares deviations from the image's average; without it, non-negative (ReLU)
            features have high cosines almost everywhere.

    Returns:
        torch.Tensor: (B, K, h, w) bool grown masks (superset of ``seeds``).
    """
    if features.dim() != 4 or seeds.dim() != 4:
        raise ValueError(
            f"expected features (B, D, h, w) and seeds (B, K, h, w); got "
            f"{tuple(features.shape)} and {tuple(seeds.shape)}"
        )
    if features.shape[0] != seeds.shape[0] or features.shape[-2:] != seeds.shape[-2:]:
        raise ValueError(
            f"features {tuple(features.shape)} and seeds {tuple(seeds.shape)} must share B, h, w "
            "(resize one to the other first)"
        )
    if num_iters < 0:
        raise ValueError(f"num_iters must be >= 0, got {num_iters}")
    b, d, h, w = features.shape
    flat = features.reshape(b, d, h * w).float()
    if center:
        flat = flat - flat.mean(dim=2, keepdim=True)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp(min=eps)  # (B, D, n)
    region = seeds.bool().clone()
    for _ in range(num_iters):
        r = region.reshape(b, -1, h * w).float()  # (B, K, n)
        count = r.sum(dim=2, keepdim=True)  # (B, K, 1)
        mean = torch.bmm(r, flat.transpose(1, 2)) / count.clamp(min=1)  # (B, K, D)
        mean_unit = mean / mean.norm(dim=2, keepdim=True).clamp(min=eps)
        sim = torch.bmm(mean_unit, unit).reshape(b, -1, h, w)  # (B, K, h, w) cosine
        frontier = dilate_masks(region, connectivity) & ~region
        joins = frontier & (sim > sim_threshold)
        if not bool(joins.any()):
            break
        region = region | joins
    return region


def region_growing(
    cams: torch.Tensor,
    features: torch.Tensor,
    cls_labels: Optional[torch.Tensor] = None,
    seed_threshold: float = 0.30,
    sim_threshold: float = 0.8,
    num_iters: int = 10,
    connectivity: int = 4,
    center: bool = False,
) -> torch.Tensor:
    """Seeds from CAMs, then :func:`grow_regions`.

    Args:
        cams (torch.Tensor): (B, K, h, w) normalised CAMs.
        features (torch.Tensor): (B, D, h, w) features on the same grid.
        cls_labels (torch.Tensor, optional): (B, K); absent classes get no seed.
        seed_threshold (float): seeds are M_k > this. Default: 0.30.
        sim_threshold (float): Default: 0.8.
        num_iters (int): Default: 10.
        connectivity (int): Default: 4.
        center (bool): compare mean-subtracted features (:func:`grow_regions`). Default: False.

    Returns:
        torch.Tensor: (B, K, h, w) bool grown masks.
    """
    seeds = mask_absent(cams, cls_labels) > seed_threshold
    return grow_regions(features, seeds, num_iters, sim_threshold, connectivity, center=center)


def regions_to_labels(masks: torch.Tensor, cams: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) bool masks -> (B, h, w) int64 labels; overlaps go to the highest CAM.

    A pixel in no mask is 0 (background); a pixel in the masks of several classes takes the one
    whose CAM is highest there (first such class on ties); class k -> label k + 1.
    """
    if masks.shape != cams.shape:
        raise ValueError(f"masks {tuple(masks.shape)} and cams {tuple(cams.shape)} differ")
    score = torch.where(masks.bool(), cams.float(), torch.full_like(cams.float(), -1.0))
    peak, index = score.max(dim=1)
    return torch.where(peak >= 0, index + 1, torch.zeros_like(index))


def region_scores(masks: torch.Tensor, cams: torch.Tensor) -> torch.Tensor:
    """Scores (B, K+1, h, w) whose argmax is :func:`regions_to_labels` (channel c = class id c).

    Channel 0 (background) is 0.25 everywhere; channel k + 1 is (1 + M_k) / 2 inside the region of
    class k (in [0.5, 1) for CAMs in [0, 1)) and 0 outside it. So a pixel in no region is
    background, a pixel in several takes the highest CAM (the first class on ties, ``argmax``'s
    first maximum), as :func:`regions_to_labels`; resized bilinearly, a region's border falls where
    its score crosses 0.25, about halfway between an inside and an outside cell.
    """
    if masks.shape != cams.shape:
        raise ValueError(f"masks {tuple(masks.shape)} and cams {tuple(cams.shape)} differ")
    inside = masks.bool()
    fg = torch.where(
        inside, (1.0 + cams.float().clamp(0.0, 1.0)) / 2, torch.zeros_like(cams.float())
    )
    bg = torch.full_like(fg[:, :1], REGION_BG_SCORE)
    return torch.cat([bg, fg], dim=1)
