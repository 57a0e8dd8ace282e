"""Building blocks of ``tools/prepare_voc.py`` and ``tools/prepare_coco.py`` (spec §10).

Kept in the package (not in the scripts) so that worker processes can import them and tests can call
them. Every mask is written atomically; an existing mask is never rewritten, only read back (resume
= skip).
"""

import logging
import multiprocessing as mp
import os
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from weclip.data.images import read_mask, save_png
from weclip.data.labels import fg_ids_from_mask

__all__ = [
    "read_sbd_mat",
    "voc_mask_job",
    "decode_coco_segmentation",
    "paint_coco_mask",
    "coco_mask_job",
    "run_jobs",
]

logger = logging.getLogger("weclip")

# (name, status, fg ids); status: "written" (new mask), "existing" (read back), "missing" (no
# source)
JobResult = Tuple[str, str, List[int]]


def read_sbd_mat(path: str) -> np.ndarray:
    """Read the class mask of an SBD ``dataset/cls/<name>.mat`` file (``GTcls.Segmentation``,
    values 0..20).

    Returns:
        np.ndarray: (H, W) uint8.
    """
    from scipy.io import loadmat  # local import: only VOC preparation needs scipy

    if not os.path.isfile(path):
        raise FileNotFoundError(f"SBD annotation not found: {path}")
    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
        segmentation = np.asarray(mat["GTcls"].Segmentation)
    except Exception as exc:  # corrupt file, or not the SBD struct layout
        raise ValueError(
            f"Cannot read GTcls.Segmentation from SBD file {path}: {type(exc).__name__}: {exc}"
        ) from exc
    if segmentation.ndim != 2 or segmentation.size == 0:
        raise ValueError(
            f"SBD file {path}: GTcls.Segmentation has shape {segmentation.shape}, expected (H, W)"
        )
    if segmentation.min() < 0 or segmentation.max() > 255:
        raise ValueError(f"SBD file {path}: values outside 0..255")
    return segmentation.astype(np.uint8)


def voc_mask_job(job: Tuple[str, str, Optional[str], Optional[str], int]) -> JobResult:
    """Make (or read back) ``SegmentationClassAug/<name>.png`` and return its foreground ids.

    Args:
        job: (name, out_path, voc_png or None, sbd_mat or None, num_classes). The VOC PNG (palette
        indices, 255 boundaries) wins over the SBD ``.mat`` when both exist.

    Returns:
        JobResult: (name, "existing" | "written" | "missing", fg ids).
    """
    name, out_path, voc_png, sbd_mat, num_classes = job
    if os.path.isfile(out_path):
        mask, status = read_mask(out_path), "existing"
        where = out_path
    elif voc_png is not None:
        mask, status, where = read_mask(voc_png), "written", voc_png
    elif sbd_mat is not None:
        mask, status, where = read_sbd_mat(sbd_mat), "written", sbd_mat
    else:
        return name, "missing", []
    ids = fg_ids_from_mask(mask, num_classes, where=where)  # also rejects out-of-range values
    if status == "written":
        save_png(out_path, mask)
    return name, status, ids


def decode_coco_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """COCO polygons / uncompressed RLE / compressed RLE -> (H, W) uint8 0/1 mask (pycocotools)."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        if not segmentation:  # an annotation without polygon covers nothing
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        rle = segmentation
    else:
        raise ValueError(f"unknown segmentation format {type(segmentation).__name__}")
    with warnings.catch_warnings():
        # pycocotools' decode trips NumPy 2's copy-keyword deprecation; harmless, and once per call
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
        decoded = mask_utils.decode(rle)
    return np.asarray(decoded, dtype=np.uint8).reshape(height, width)


def paint_coco_mask(
    height: int,
    width: int,
    anns: Sequence[Dict[str, Any]],
    cat_to_class: Dict[int, int],
    ignore_index: int = 255,
) -> np.ndarray:
    """Paint the annotations of one image into a class-index mask.

    Order: crowd regions first (``ignore_index``), then the non-crowd instances from the largest to
    the smallest decoded area (ties: lower annotation id first), each overwriting what is below. So
    a small object lying on a larger one keeps its pixels, and an instance inside a crowd region
    keeps its class.

    Args:
        height (int): image height.
        width (int): image width.
        anns (Sequence[dict]): COCO annotations (``segmentation``, ``iscrowd``, ``category_id``,
            ``id``).
        cat_to_class (Dict[int, int]): COCO category id -> class id 1..80.
        ignore_index (int): value painted on crowd regions.

    Returns:
        np.ndarray: (H, W) uint8; 0 background.
    """
    mask = np.zeros((height, width), dtype=np.uint8)
    instances = []
    for ann in anns:
        try:
            region = decode_coco_segmentation(ann["segmentation"], height, width).astype(bool)
        except Exception as exc:
            raise ValueError(
                f"annotation id {ann.get('id')}: cannot decode its segmentation ({exc})"
            ) from exc
        if ann.get("iscrowd", 0):
            mask[region] = ignore_index
        else:
            instances.append(
                (
                    -int(region.sum()),
                    int(ann.get("id", 0)),
                    cat_to_class[ann["category_id"]],
                    region,
                )
            )
    for _, _, class_id, region in sorted(instances, key=lambda t: (t[0], t[1])):
        mask[region] = class_id
    return mask


def coco_mask_job(
    job: Tuple[str, str, int, int, List[Dict[str, Any]], Dict[int, int], int],
) -> JobResult:
    """Make (or read back) one COCO mask and return its foreground ids (classes visible in the
    mask).

    Args:
        job: (name, out_path, height, width, annotations, cat_to_class, num_classes).

    Returns:
        JobResult: (name, "existing" | "written", fg ids).
    """
    name, out_path, height, width, anns, cat_to_class, num_classes = job
    if os.path.isfile(out_path):
        mask = read_mask(out_path)
        if mask.shape != (height, width):
            raise ValueError(
                f"Existing mask {out_path} is {mask.shape[1]}x{mask.shape[0]}, the annotations "
                f"say {width}x{height};"
                " delete it to have it rebuilt"
            )
        return name, "existing", fg_ids_from_mask(mask, num_classes, where=out_path)
    try:
        mask = paint_coco_mask(height, width, anns, cat_to_class)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    save_png(out_path, mask)
    return name, "written", fg_ids_from_mask(mask, num_classes, where=out_path)


def run_jobs(
    fn: Callable[[Any], JobResult], jobs: Iterable[Any], total: int, workers: int, desc: str
) -> List[JobResult]:
    """Run ``fn`` over ``jobs`` (in-process when ``workers <= 1``) with a progress bar.

    Returns:
        List[JobResult]: results sorted by name.
    """
    results: List[JobResult] = []
    with tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True) as bar:
        if workers <= 1:
            for job in jobs:
                results.append(fn(job))
                bar.update()
        else:
            with mp.Pool(workers) as pool:
                for result in pool.imap_unordered(fn, jobs, chunksize=16):
                    results.append(result)
                    bar.update()
    return sorted(results, key=lambda r: r[0])
