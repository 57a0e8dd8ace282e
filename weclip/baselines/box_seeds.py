"""Box supervision: Gaussian heat maps inside boxes -> seeds / CAM-like maps for AffinityNet.

With bounding boxes instead of image-level labels (Oxford-IIIT Pet head boxes, VOC object boxes),
each box b = (x0, y0, x1, y1, class id) gives a map that is a 2-D Gaussian centred on the box
centre inside the box and 0 outside it:

    G_b(u, v) = exp(-((u - cx)^2 / (2 sx^2) + (v - cy)^2 / (2 sy^2)))   for (u, v) in b,
    sx = sigma (x1 - x0),  sy = sigma (y1 - y0),

evaluated at pixel centres (u, v) = (j + 0.5, i + 0.5). The map of class k is the maximum over
that class's boxes. Such maps play the role of normalised CAMs (they lie in [0, 1], 1 at a box
centre) in :func:`weclip.baselines.affinitynet.confident_labels`, or directly as seeds:
:func:`box_seed_labels` labels a pixel with its class where the heat exceeds ``threshold``, 0
(background) outside every box and 255 (unknown) in a box below the threshold: the confident /
neutral map AffinityNet's affinity labels are built from. A Gaussian prior centred in the box
is a common way to turn boxes into soft object maps (objects fill box centres, box corners are
often background); no single paper fixes this recipe, so sigma = 0.25 and threshold = 0.5 are
this repository's defaults: the seed is the ellipse of semi-axes sqrt(2 ln 2) sigma = 0.29 of the
box sides (about 27% of the box area).

Box coordinates are continuous pixel edges with the origin at the top-left corner of the top-left
pixel: a PASCAL-style 1-based inclusive box (xmin..xmax) is (xmin - 1, ymin - 1, xmax, ymax);
``tools/prepare_pets.py`` writes ``boxes.json`` in this convention.

:func:`write_box_seed_masks` writes the seed label maps of a split as palette PNGs (pixel value = label,
255 = unknown): the training targets (``data.train_mask_dir``) of the box-supervised AffinityNet
(``model.seeds = "boxes"``), augmented with their images by the dataset. An image without a box gets
255 everywhere (no pair label), not background.
"""

import os
from typing import Mapping, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

__all__ = [
    "box_heatmaps",
    "box_seed_labels",
    "write_box_seed_masks",
    "write_split_box_seeds",
    "DEFAULT_SIGMA",
    "DEFAULT_SEED_THRESHOLD",
]

DEFAULT_SIGMA = 0.25
DEFAULT_SEED_THRESHOLD = 0.5


def _as_boxes(boxes, index: int, num_classes: int) -> torch.Tensor:
    t = torch.as_tensor(boxes, dtype=torch.float32)
    if t.numel() == 0:
        return t.reshape(0, 5)
    if t.dim() != 2 or t.shape[1] != 5:
        raise ValueError(
            f"image {index}: boxes must be (N, 5) [x0, y0, x1, y1, class_id], got {tuple(t.shape)}"
        )
    cls = t[:, 4]
    if bool(((cls < 1) | (cls > num_classes) | (cls != cls.round())).any()):
        raise ValueError(
            f"image {index}: box class ids must be integers 1..{num_classes}, got {cls.tolist()}"
        )
    if bool(((t[:, 2] <= t[:, 0]) | (t[:, 3] <= t[:, 1])).any()):
        raise ValueError(f"image {index}: every box needs x1 > x0 and y1 > y0, got {t.tolist()}")
    return t


def box_heatmaps(
    boxes: Sequence,
    num_classes: int,
    size: Tuple[int, int],
    sigma: float = DEFAULT_SIGMA,
    device=None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-class Gaussian heat maps and box masks.

    Args:
        boxes (Sequence): one entry per image, (N_i, 5) ``[x0, y0, x1, y1, class_id]`` (tensor,
            array or nested list; N_i may be 0), class ids 1..K.
        num_classes (int): K foreground classes.
        size (Tuple[int, int]): (H, W) of the maps.
        sigma (float): Gaussian std as a fraction of the box side. Default: 0.25.
        device: device of the outputs.

    Returns:
        heat (torch.Tensor): (B, K, H, W) float in [0, 1], 0 outside the boxes.
        inside (torch.Tensor): (B, K, H, W) bool, pixel centre inside a box of the class.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    height, width = int(size[0]), int(size[1])
    v = torch.arange(height, dtype=torch.float32, device=device)[:, None] + 0.5
    u = torch.arange(width, dtype=torch.float32, device=device)[None, :] + 0.5
    heat = torch.zeros(len(boxes), num_classes, height, width, device=device)
    inside = torch.zeros(len(boxes), num_classes, height, width, dtype=torch.bool, device=device)
    for index, image_boxes in enumerate(boxes):
        t = _as_boxes(image_boxes, index, num_classes).to(device)
        for x0, y0, x1, y1, cls in t.tolist():
            k = int(cls) - 1
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            sx, sy = sigma * (x1 - x0), sigma * (y1 - y0)
            in_box = (u >= x0) & (u <= x1) & (v >= y0) & (v <= y1)  # (H, W)
            g = torch.exp(-((u - cx) ** 2 / (2 * sx * sx) + (v - cy) ** 2 / (2 * sy * sy)))
            heat[index, k] = torch.maximum(heat[index, k], torch.where(in_box, g, 0.0))
            inside[index, k] |= in_box
    return heat, inside


def box_seed_labels(
    heat: torch.Tensor, inside: torch.Tensor, threshold: float = DEFAULT_SEED_THRESHOLD
) -> torch.Tensor:
    """Seed label map: class where heat > threshold, 0 outside all boxes, 255 elsewhere.

    Where the seeds of several classes overlap the class with the highest heat wins (first class on
    ties).

    Args:
        heat (torch.Tensor): (B, K, H, W) from :func:`box_heatmaps`.
        inside (torch.Tensor): (B, K, H, W) bool box masks.
        threshold (float): seed threshold. Default: 0.5.

    Returns:
        torch.Tensor: (B, H, W) int64 in {0, 1..K, 255}.
    """
    if heat.shape != inside.shape or heat.dim() != 4:
        raise ValueError(f"heat {tuple(heat.shape)} and inside {tuple(inside.shape)} must match")
    peak, index = heat.max(dim=1)
    labels = torch.full_like(index, 255)
    labels = torch.where(peak > threshold, index + 1, labels)
    return labels.masked_fill(~inside.any(dim=1), 0)


def write_box_seed_masks(
    boxes: Mapping[str, Sequence],
    sizes: Mapping[str, Tuple[int, int]],
    num_classes: int,
    out_dir: str,
    sigma: float = DEFAULT_SIGMA,
    threshold: float = DEFAULT_SEED_THRESHOLD,
    names: Optional[Sequence[str]] = None,
) -> int:
    """Write ``out_dir/<name>.png``: :func:`box_seed_labels` of each image's boxes at its size.

    Args:
        boxes (Mapping): name -> (N, 5) boxes (``weclip.data.boxes.read_boxes_json``).
        sizes (Mapping): name -> (H, W) of the image.
        num_classes (int): K foreground classes.
        out_dir (str): the folder (created).
        sigma (float): Gaussian std / box side.
        threshold (float): seed threshold.
        names (Sequence[str], optional): images to write (default: every name of ``sizes``); an image
            without boxes gets 255 everywhere.

    Returns:
        int: the number of files written.
    """
    from weclip.data.images import save_png
    from weclip.utils.visualize import voc_palette

    palette = voc_palette()
    names = list(sizes) if names is None else list(names)
    for name in tqdm(names, desc="box seeds", leave=False):
        height, width = sizes[name]
        image_boxes = boxes.get(name, [])
        if len(image_boxes) == 0:
            labels = torch.full((height, width), 255, dtype=torch.long)
        else:
            heat, inside = box_heatmaps([image_boxes], num_classes, (height, width), sigma)
            labels = box_seed_labels(heat, inside, threshold)[0]
        save_png(os.path.join(out_dir, name + ".png"), labels.numpy().astype("uint8"), palette)
    return len(names)


def write_split_box_seeds(config: str, split: Optional[str] = None) -> str:
    """The box seeds of a box-supervised AffinityNet config's training split, where it reads them.

    Reads ``<data.split_dir>/boxes.json`` and the image sizes (file headers only) of the split's images,
    and writes :func:`write_box_seed_masks` with ``model.boxes`` (sigma, threshold) into the config's
    ``data.train_mask_dir`` (under ``data.root`` unless absolute)::

        python -c "from weclip.baselines.box_seeds import write_split_box_seeds as w; \\
            w('configs/baselines/pets_species_affinitynet_boxes.py')"

    Args:
        config (str): a config with ``model.seeds = "boxes"``.
        split (str, optional): default ``data.train_split``.

    Returns:
        str: the output folder.
    """
    from PIL import Image

    from weclip.config import load_config
    from weclip.data.boxes import read_boxes_json
    from weclip.data.labels import read_split
    from weclip.errors import ConfigError

    cfg = load_config(config)
    if cfg.model.get("seeds") != "boxes" or not cfg.data.train_mask_dir:
        raise ConfigError(
            f"{config}: box seeds are written for model.seeds='boxes' and a data.train_mask_dir"
        )
    data = cfg.data
    names = read_split(os.path.join(data.split_dir, f"{split or data.train_split}.txt"))
    boxes = read_boxes_json(os.path.join(data.split_dir, "boxes.json"), int(data.num_classes))
    sizes = {}
    for name in names:
        with Image.open(os.path.join(data.root, data.img_dir, name + data.img_suffix)) as image:
            sizes[name] = (image.height, image.width)
    out_dir = os.path.join(data.root, data.train_mask_dir)
    write_box_seed_masks(
        boxes, sizes, int(data.num_classes) - 1, out_dir,
        cfg.model.boxes.sigma, cfg.model.boxes.threshold, names,
    )  # fmt: skip
    return out_dir
