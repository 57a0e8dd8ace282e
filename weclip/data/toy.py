"""The synthetic toy world: shapes on textured backgrounds, written in the VOC layout.

Nothing real (CLIP weights, VOC, COCO) can be downloaded in CI, so the project ships a small world where the
whole pipeline runs: K shape classes (circle, square, triangle, cross by default) drawn with random colours
on random backgrounds (plain, stripes, gradient, noise). Colour never identifies a class: the
fill colour of every object and both colours of every background are drawn uniformly at random, with a
minimum contrast between an object and the background under it so that the shape is always visible.

Layout written by :func:`write_toy_dataset` (the VOC conventions of spec §10, with lossless PNG images)::

    <root>/JPEGImages/<name>.png              RGB, uint8
    <root>/SegmentationClassAug/<name>.png    single-channel, 0 = background, 1..K = class id
    <root>/train.txt, <root>/val.txt          one name per line
    <root>/cls_labels.txt                     "<name> <id> <id> ..." with 0-based foreground ids
    <root>/toy_meta.json                      the generation parameters; written last = "complete"

Every image is a pure function of ``(seed, split, index)`` (one ``numpy`` generator per image), so the same
seed gives byte-identical files whatever the order or the subset generated.
"""

import dataclasses
import json
import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from weclip.data.images import save_png
from weclip.errors import ConfigError, DataError
from weclip.utils.io import atomic_write_text

__all__ = [
    "TOY_CLASS_NAMES",
    "TOY_BG_KINDS",
    "ToyWorldConfig",
    "ToySample",
    "shape_mask",
    "render_background",
    "generate_sample",
    "sample_rng",
    "write_toy_dataset",
    "toy_dataset_complete",
    "names_for",
]

logger = logging.getLogger("weclip")

# Foreground classes (class id = index + 1). Very distinct outlines: curved, axis-aligned, diagonal, concave.
TOY_CLASS_NAMES: Tuple[str, ...] = ("circle", "square", "triangle", "cross")
# Background textures (also the toy background prompt names, see configs/toy.py).
TOY_BG_KINDS: Tuple[str, ...] = ("plain", "stripes", "gradient", "noise")

_SPLIT_CODES = {"train": 1, "val": 2, "test": 3, "clip": 4}  # decorrelates the per-image generators
_MIN_CONTRAST = (
    90.0  # minimum L2 RGB distance between an object's fill and the mean background under it
)


@dataclasses.dataclass(frozen=True)
class ToyWorldConfig:
    """Parameters of the toy world.

    Args:
        image_size (int): side of the square images, in pixels.
        num_classes (int): number of foreground shape classes K (the first K of ``TOY_CLASS_NAMES``).
        min_objects (int): fewest objects per image (0 allows background-only images).
        max_objects (int): most objects per image; objects have distinct classes.
        min_size (float): smallest object diameter, as a fraction of ``image_size``.
        max_size (float): largest object diameter, as a fraction of ``image_size``.
        max_overlap (float): largest allowed intersection-over-smaller-box of two objects' boxes.
    """

    image_size: int = 112
    num_classes: int = 4
    min_objects: int = 1
    max_objects: int = 2
    min_size: float = 0.28
    max_size: float = 0.55
    max_overlap: float = 0.1

    def __post_init__(self) -> None:
        # the keys are those of the config's ``toy`` section (weclip.schema.ToyConfig)
        if not 1 <= self.num_classes <= len(TOY_CLASS_NAMES):
            raise ConfigError(
                f"toy.num_classes must be in [1, {len(TOY_CLASS_NAMES)}] (the shapes "
                f"{', '.join(TOY_CLASS_NAMES)}), got {self.num_classes}"
            )
        if not 0 <= self.min_objects <= self.max_objects <= self.num_classes:
            raise ConfigError(
                f"toy: need 0 <= min_objects <= max_objects <= num_classes, got min_objects="
                f"{self.min_objects}, max_objects={self.max_objects}, num_classes={self.num_classes}"
            )
        if not 0 < self.min_size <= self.max_size < 1:
            raise ConfigError(
                f"toy: need 0 < min_size <= max_size < 1, got min_size={self.min_size}, "
                f"max_size={self.max_size}"
            )
        if self.image_size < 16:
            raise ConfigError(f"toy.image_size must be >= 16, got {self.image_size}")

    @classmethod
    def from_cfg(cls, toy_cfg: Mapping[str, Any]) -> "ToyWorldConfig":
        """Build from a config's ``toy`` section (extra keys such as ``seed`` or ``num_train`` are ignored)."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{k: toy_cfg[k] for k in names if k in toy_cfg})


@dataclasses.dataclass
class ToySample:
    """One generated image.

    Attributes:
        image (np.ndarray): HxWx3 uint8 RGB.
        mask (np.ndarray): HxW uint8, 0 = background, 1..K = class id.
        labels (List[int]): sorted 0-based foreground ids present in ``mask``.
        bg_kind (int): index into ``TOY_BG_KINDS`` of the background texture.
    """

    image: np.ndarray
    mask: np.ndarray
    labels: List[int]
    bg_kind: int


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: independent of every other image."""
    if split not in _SPLIT_CODES:
        raise ValueError(f"unknown split '{split}', expected one of {sorted(_SPLIT_CODES)}")
    return np.random.default_rng([int(seed), _SPLIT_CODES[split], int(index)])


def shape_mask(
    class_id: int, size: int, center: Tuple[float, float], diameter: float, angle: float
) -> np.ndarray:
    """Rasterise one shape.

    Args:
        class_id (int): 0-based foreground id (index into ``TOY_CLASS_NAMES``).
        size (int): image side S.
        center (Tuple[float, float]): (x, y) centre in pixels.
        diameter (float): extent of the shape in pixels (circle diameter, square/cross side).
        angle (float): rotation in degrees (ignored for the circle).

    Returns:
        np.ndarray: SxS bool mask.
    """
    name = TOY_CLASS_NAMES[class_id]
    canvas = np.zeros((size, size), np.uint8)
    r = diameter / 2.0
    if name == "circle":
        cv2.circle(
            canvas, (int(round(center[0])), int(round(center[1]))), int(round(r)), 1, thickness=-1
        )
        return canvas.astype(bool)
    if name == "square":
        pts = np.array([[-r, -r], [r, -r], [r, r], [-r, r]])
    elif name == "triangle":  # equilateral, centroid at the centre, circumradius ~ r
        k = np.deg2rad([-90.0, 30.0, 150.0])
        pts = np.stack([np.cos(k), np.sin(k)], 1) * r * 1.1
        pts[:, 1] += r * 0.2  # the circumcentre sits high; move it down so the box is centred
    elif name == "cross":  # plus sign, arm width = 0.4 diameter
        a = 0.2 * diameter
        pts = np.array(
            [
                [-a, -r],
                [a, -r],
                [a, -a],
                [r, -a],
                [r, a],
                [a, a],
                [a, r],
                [-a, r],
                [-a, a],
                [-r, a],
                [-r, -a],
                [-a, -a],
            ]
        )
    else:  # pragma: no cover - TOY_CLASS_NAMES and this function change together
        raise ValueError(f"no renderer for toy class '{name}'")
    t = np.deg2rad(angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    pts = pts @ rot.T + np.asarray(center)[None]
    cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    return canvas.astype(bool)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def render_background(rng: np.random.Generator, size: int, kind: int) -> np.ndarray:
    """Draw a background texture with random colours.

    Args:
        rng (np.random.Generator): the image's generator.
        size (int): image side S.
        kind (int): index into ``TOY_BG_KINDS``.

    Returns:
        np.ndarray: SxSx3 float32 RGB in [0, 255].
    """
    c0, c1 = _random_colour(rng), _random_colour(rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    name = TOY_BG_KINDS[kind]
    if name == "plain":  # one colour (plus the grain below)
        w = np.zeros((size, size), np.float32)
    elif name == "stripes":
        t = rng.uniform(0, np.pi)
        period = rng.uniform(6, 16)
        u = xx * np.cos(t) + yy * np.sin(t)
        w = (np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi)) > 0).astype(np.float32)
    elif name == "gradient":
        t = rng.uniform(0, 2 * np.pi)
        u = (xx - size / 2) * np.cos(t) + (yy - size / 2) * np.sin(t)
        w = np.clip(u / size + 0.5, 0, 1)
    elif name == "noise":  # blotchy low-frequency noise: a coarse random field, upsampled
        coarse = rng.uniform(0, 1, size=(size // 8 + 1, size // 8 + 1)).astype(np.float32)
        w = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    else:  # pragma: no cover
        raise ValueError(f"no renderer for background '{name}'")
    img = c0[None, None] * (1 - w[..., None]) + c1[None, None] * w[..., None]
    img += rng.normal(0, 4.0, size=img.shape)  # sensor-like grain, everywhere
    return img.astype(np.float32)


def _box_overlap(
    a: Tuple[float, float, float, float], b: Tuple[float, float, float, float]
) -> float:
    """Intersection over the smaller area of two (x0, y0, x1, y1) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(smaller, 1e-6)


def generate_sample(
    rng: np.random.Generator, cfg: ToyWorldConfig, num_objects: Optional[int] = None
) -> ToySample:
    """Generate one image, its mask and its labels.

    Args:
        rng (np.random.Generator): the image's generator (see :func:`sample_rng`).
        cfg (ToyWorldConfig): world parameters.
        num_objects (int, optional): force the number of objects (default: uniform in
            [cfg.min_objects, cfg.max_objects]).

    Returns:
        ToySample: image, mask (0 = bg, 1..K), sorted 0-based labels, background kind.
    """
    s = cfg.image_size
    if num_objects is None:
        num_objects = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    if not 0 <= num_objects <= cfg.num_classes:
        raise ValueError(f"num_objects must be in [0, {cfg.num_classes}], got {num_objects}")
    bg_kind = int(rng.integers(len(TOY_BG_KINDS)))
    img = render_background(rng, s, bg_kind)
    mask = np.zeros((s, s), np.uint8)
    classes = rng.permutation(cfg.num_classes)[:num_objects]
    boxes: List[Tuple[float, float, float, float]] = []
    for cls in classes:
        for _ in range(50):  # rejection sampling of a placement that barely overlaps the others
            d = rng.uniform(cfg.min_size, cfg.max_size) * s
            cx, cy = rng.uniform(d / 2 + 1, s - d / 2 - 1, size=2)
            box = (cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2)
            if all(_box_overlap(box, b) <= cfg.max_overlap for b in boxes):
                break
        boxes.append(box)
        obj = shape_mask(int(cls), s, (cx, cy), d, rng.uniform(-20, 20))
        under = img[obj].mean(0)
        for _ in range(100):  # a fill colour that stands out from the background under the object
            fill = _random_colour(rng)
            if np.linalg.norm(fill - under) >= _MIN_CONTRAST:
                break
        shade = rng.normal(0, 3.0, size=(s, s, 1))  # faint grain inside the object
        img[obj] = (fill[None] + shade[obj]).astype(np.float32)
        mask[obj] = cls + 1  # later objects occlude earlier ones; the mask holds what is visible
    labels = sorted(int(v) - 1 for v in np.unique(mask) if v > 0)
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return ToySample(image=image, mask=mask, labels=labels, bg_kind=bg_kind)


def _meta(cfg: ToyWorldConfig, seed: int, num_train: int, num_val: int) -> Dict[str, object]:
    return {
        "format": "weclip-toy-v1",
        "seed": int(seed),
        "num_train": int(num_train),
        "num_val": int(num_val),
        "class_names": list(TOY_CLASS_NAMES[: cfg.num_classes]),
        "config": dataclasses.asdict(cfg),
    }


def toy_dataset_complete(
    root: str, cfg: ToyWorldConfig, seed: int, num_train: int, num_val: int
) -> bool:
    """True if ``root`` holds a finished dataset generated with exactly these parameters."""
    path = os.path.join(root, "toy_meta.json")
    if not os.path.isfile(path):
        return False
    try:
        with open(path) as f:
            found = json.load(f)
    except (OSError, json.JSONDecodeError):
        return False
    return found == _meta(cfg, seed, num_train, num_val)


def write_toy_dataset(
    root: str,
    cfg: ToyWorldConfig = ToyWorldConfig(),
    seed: int = 0,
    num_train: int = 1200,
    num_val: int = 300,
    force: bool = False,
) -> Dict[str, List[str]]:
    """Write the toy dataset in the VOC layout under ``root`` (see the module docstring).

    Skips all work when ``root`` already holds a complete dataset with the same parameters (unless
    ``force``). ``toy_meta.json`` is written last, so an interrupted run is regenerated next time.

    Args:
        root (str): output directory.
        cfg (ToyWorldConfig): world parameters.
        seed (int): dataset seed; same seed and parameters -> byte-identical files.
        num_train (int): number of training images.
        num_val (int): number of validation images.
        force (bool): regenerate even if complete.

    Returns:
        Dict[str, List[str]]: split name -> image names.
    """
    if os.path.exists(root) and not os.path.isdir(root):
        raise DataError(f"toy dataset root {root} exists and is not a folder")
    for folder in ("JPEGImages", "SegmentationClassAug"):
        path = os.path.join(root, folder)
        if os.path.exists(path) and not os.path.isdir(path):
            raise DataError(f"toy dataset: {path} exists and is not a folder")
    splits = {"train": num_train, "val": num_val}
    names = {sp: list(names_for(sp, n)) for sp, n in splits.items()}
    if not force and toy_dataset_complete(root, cfg, seed, num_train, num_val):
        logger.info("toy dataset already complete in %s, nothing to do", root)
        return names
    meta_path = os.path.join(root, "toy_meta.json")
    if os.path.exists(meta_path):
        os.remove(
            meta_path
        )  # parameters changed or forced: the old marker no longer describes the files
    os.makedirs(os.path.join(root, "JPEGImages"), exist_ok=True)
    os.makedirs(os.path.join(root, "SegmentationClassAug"), exist_ok=True)
    label_lines: List[str] = []
    for split, count in splits.items():
        for i in tqdm(range(count), desc=f"toy {split}", leave=False):
            sample = generate_sample(sample_rng(seed, split, i), cfg)
            name = names[split][i]
            save_png(os.path.join(root, "JPEGImages", f"{name}.png"), sample.image)
            save_png(os.path.join(root, "SegmentationClassAug", f"{name}.png"), sample.mask)
            label_lines.append(" ".join([name] + [str(c) for c in sample.labels]))
        atomic_write_text(
            os.path.join(root, f"{split}.txt"), "".join(n + "\n" for n in names[split])
        )
    atomic_write_text(
        os.path.join(root, "cls_labels.txt"), "".join(line + "\n" for line in label_lines)
    )
    atomic_write_text(
        meta_path, json.dumps(_meta(cfg, seed, num_train, num_val), indent=2, sort_keys=True) + "\n"
    )
    logger.info("wrote toy dataset to %s (%d train, %d val)", root, num_train, num_val)
    return names


def names_for(split: str, count: int) -> Sequence[str]:
    """Image names of a split, in order."""
    return [f"toy_{split}_{i:05d}" for i in range(count)]
