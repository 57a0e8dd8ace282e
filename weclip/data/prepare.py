"""Building blocks of ``tools/prepare_voc.py`` and ``tools/prepare_coco.py`` (spec §10).

Kept in the package (not in the scripts) so that worker processes can import them and tests can call
them. Every mask is written atomically.

Reuse rules (a re-run, or an interrupted run, must not redo finished work, and must never keep a mask
made from other input):

* every mask this module writes records what it was made from in a PNG text entry (``SOURCE_KEY``): the
  kind and SHA-1 of the source file (VOC ``SegmentationClass`` PNG, SBD ``.mat``), or for COCO the SHA-1 of
  the image's size, annotations and class mapping;
* an existing mask whose record matches the current source is read back, not rewritten; one whose record
  differs is rebuilt (the annotations changed since); one without a record (an official
  SegmentationClassAug download, or another tool's) is used as it is, after checking its size against
  the image;
* every source is checked before its mask is written (readable, class values in range, size equal to
  the image's); the COCO instances files are checked as a whole (:func:`read_coco_instances`,
  :func:`coco_split_jobs`) before any mask is written.
"""

import hashlib
import json
import logging
import multiprocessing as mp
import numbers
import os
import warnings
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from weclip.data.coco import parse_coco_name
from weclip.data.images import image_size, png_text, read_mask, save_png
from weclip.data.labels import fg_ids_from_mask
from weclip.errors import DataError, MissingFileError

__all__ = [
    "SOURCE_KEY",
    "file_fingerprint",
    "coco_fingerprint",
    "read_sbd_mat",
    "voc_mask_job",
    "read_coco_instances",
    "coco_split_jobs",
    "decode_coco_segmentation",
    "paint_coco_mask",
    "coco_mask_job",
    "run_jobs",
]

logger = logging.getLogger("weclip")

#: PNG text entry of a mask written here: what it was made from (see the module docstring)
SOURCE_KEY = "weclip-source"

# (name, status, fg ids); status: "written" (new mask), "rebuilt" (its source changed), "existing" (read
# back, made from the same source), "kept" (read back, no source record: not made by this module),
# "missing" (no mask and no source)
JobResult = Tuple[str, str, List[int]]


def file_fingerprint(kind: str, path: str) -> str:
    """``"<kind> sha1=<hex>"`` of a source file's bytes (the record stored in a mask)."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{kind} sha1={digest.hexdigest()}"


def coco_fingerprint(
    height: int, width: int, anns: Sequence[Mapping[str, Any]], cat_to_class: Mapping[int, int]
) -> str:
    """``"coco sha1=<hex>"`` of what one COCO mask is painted from: size, annotations, class mapping."""
    payload = {
        "size": [int(height), int(width)],
        "anns": list(anns),
        "classes": sorted((int(k), int(v)) for k, v in cat_to_class.items()),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return f"coco sha1={hashlib.sha1(text.encode('utf-8')).hexdigest()}"


def _reusable_mask(
    out_path: str, fingerprint: Optional[str], shape: Optional[Tuple[int, int]], what: str
) -> Optional[Tuple[np.ndarray, str]]:
    """Read back an existing mask if it may be reused: (mask, "existing" | "kept"); None to rebuild it.

    Args:
        out_path (str): the existing mask.
        fingerprint (str, optional): the record of the current source (None: no source now).
        shape (tuple, optional): (H, W) the mask must have (the image's), if known.
        what (str): what ``shape`` comes from, for the message.
    """
    stored = png_text(out_path).get(SOURCE_KEY)
    if stored is not None and fingerprint is not None and stored != fingerprint:
        return None  # made by this module from other input: rebuild
    mask = read_mask(out_path)
    if shape is not None and mask.shape != tuple(shape):
        origin = "made from other input" if stored is None else "stale"
        raise DataError(
            f"Existing mask {out_path} is {mask.shape[1]}x{mask.shape[0]} (WxH), {what} "
            f"{shape[1]}x{shape[0]}: {origin}; delete it to have it rebuilt"
        )
    return mask, ("existing" if stored is not None else "kept")


def read_sbd_mat(path: str) -> np.ndarray:
    """Read the class mask of an SBD ``dataset/cls/<name>.mat`` file (``GTcls.Segmentation``,
    values 0..20).

    Returns:
        np.ndarray: (H, W) uint8.

    Raises:
        MissingFileError: the file does not exist.
        DataError: not a MATLAB file of the SBD layout, or values outside 0..255 (file named).
    """
    from scipy.io import loadmat  # local import: only VOC preparation needs scipy

    if not os.path.isfile(path):
        raise MissingFileError(f"SBD annotation not found: {path}")
    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
        segmentation = np.asarray(mat["GTcls"].Segmentation)
    except Exception as exc:  # corrupt file, or not the SBD struct layout
        raise DataError(
            f"Cannot read GTcls.Segmentation from SBD file {path}: {type(exc).__name__}: {exc}"
        ) from exc
    if segmentation.ndim != 2 or segmentation.size == 0:
        raise DataError(
            f"SBD file {path}: GTcls.Segmentation has shape {segmentation.shape}, expected (H, W)"
        )
    if not np.issubdtype(segmentation.dtype, np.number):
        raise DataError(
            f"SBD file {path}: GTcls.Segmentation holds {segmentation.dtype}, not numbers"
        )
    if segmentation.min() < 0 or segmentation.max() > 255:
        raise DataError(f"SBD file {path}: values outside 0..255")
    return segmentation.astype(np.uint8)


def voc_mask_job(
    job: Tuple[str, str, Optional[str], Optional[str], int, Optional[str]],
) -> JobResult:
    """Make (or read back) ``SegmentationClassAug/<name>.png`` and return its foreground ids.

    Args:
        job: (name, out_path, voc_png or None, sbd_mat or None, num_classes, image path or None).
            The VOC PNG (palette indices, 255 boundaries) wins over the SBD ``.mat`` when both
            exist. With an image path, the mask must have the image's size.

    Returns:
        JobResult: (name, status, fg ids); status as ``JobResult`` describes.
    """
    name, out_path, voc_png, sbd_mat, num_classes, image_path = job
    source = ("voc", voc_png) if voc_png is not None else ("sbd", sbd_mat) if sbd_mat else None
    fingerprint = file_fingerprint(*source) if source else None
    shape = image_size(image_path) if image_path and os.path.isfile(image_path) else None
    status = "written"
    if os.path.isfile(out_path):
        reused = _reusable_mask(out_path, fingerprint, shape, f"its image {image_path} is")
        if reused is not None:
            mask, status = reused
            return name, status, fg_ids_from_mask(mask, num_classes, where=out_path)
        status = "rebuilt"
    elif source is None:
        return name, "missing", []
    kind, where = source
    mask = read_mask(where) if kind == "voc" else read_sbd_mat(where)
    if shape is not None and mask.shape != shape:
        raise DataError(
            f"{where} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image {image_path} is "
            f"{shape[1]}x{shape[0]}"
        )
    ids = fg_ids_from_mask(mask, num_classes, where=where)  # also rejects out-of-range values
    save_png(out_path, mask, text={SOURCE_KEY: fingerprint})
    return name, status, ids


def read_coco_instances(path: str) -> Dict[str, Any]:
    """Read a COCO instances JSON and check its top level (``images``, ``annotations``, ``categories``).

    Raises:
        MissingFileError: the file does not exist.
        DataError: not JSON, or a top-level entry missing or not a list (file and entry named).
    """
    if not os.path.isfile(path):
        raise MissingFileError(f"COCO annotation file not found: {path}")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a JSON text file ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(
            f"{path}: the top level is a {type(data).__name__}, expected an object with "
            '"images", "annotations" and "categories"'
        )
    for key in ("images", "annotations", "categories"):
        if key not in data:
            hint = " (an image_info_* file has no annotations)" if key == "annotations" else ""
            raise DataError(
                f'{path}: no "{key}" entry: not a COCO instances file{hint}; expected '
                '"images", "annotations" and "categories"'
            )
        if not isinstance(data[key], list):
            raise DataError(f'{path}: "{key}" is a {type(data[key]).__name__}, expected a list')
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _segmentation_problem(segmentation: Any, height: int, width: int) -> Optional[str]:
    """What is wrong with a COCO ``segmentation`` entry (None when it can be decoded)."""
    if isinstance(segmentation, list):
        for polygon in segmentation:
            if (
                not isinstance(polygon, list)
                or len(polygon) < 4
                or len(polygon) % 2
                or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in polygon)
            ):
                return (
                    "a polygon must be a flat list [x1, y1, x2, y2, ...] of at least 2 points, got "
                    f"{str(polygon)[:60]}"
                )
        return None
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
            return f'an RLE needs "size": [height, width], got {size!r}'
        if list(size) != [height, width]:
            return f"RLE size {size} differs from the image's [height, width] [{height}, {width}]"
        if isinstance(counts, list):
            if not all(_is_int(v) and v >= 0 for v in counts) or sum(counts) != height * width:
                return (
                    f"uncompressed RLE counts must be non-negative integers summing to "
                    f"{height}x{width} = {height * width} pixels"
                )
            return None
        if isinstance(counts, str):
            return None
        return f'RLE "counts" must be a list or a string, got {type(counts).__name__}'
    return f"expected polygons (a list) or an RLE (an object), got {type(segmentation).__name__}"


def coco_split_jobs(
    path: str,
    data: Mapping[str, Any],
    split: str,
    cat_to_class: Mapping[int, int],
    mask_dir: str,
    num_classes: int,
) -> Tuple[List[tuple], Dict[str, int], Dict[str, int]]:
    """Check every image and annotation of one COCO split, and make its mask jobs (nothing is written).

    Args:
        path (str): the instances file (for messages).
        data (Mapping): its content, from :func:`read_coco_instances`.
        split (str): "train" or "val" (file names must be ``COCO_<split>2014_<12-digit id>.jpg``).
        cat_to_class (Mapping[int, int]): category id -> class id.
        mask_dir (str): ``<coco-root>/SegmentationClass/<split>``.
        num_classes (int): classes including background.

    Returns:
        tuple: (jobs for :func:`coco_mask_job`, image name -> number of annotations, image name ->
        number of non-crowd annotations).

    Raises:
        DataError: the first problem found, naming the file, the entry and its id.
    """
    images: Dict[int, Dict[str, Any]] = {}
    names: Dict[int, str] = {}
    for index, info in enumerate(data["images"]):
        where = f"{path}: images[{index}]"
        if not isinstance(info, dict):
            raise DataError(f"{where} is a {type(info).__name__}, expected an object")
        for key in ("id", "file_name", "height", "width"):
            if key not in info:
                raise DataError(f'{where} (id {info.get("id")}) has no "{key}"')
        img_id, file_name = info["id"], info["file_name"]
        if not _is_int(img_id) or not isinstance(file_name, str):
            raise DataError(f"{where}: id must be an integer and file_name a string")
        if (
            not (_is_int(info["height"]) and _is_int(info["width"]))
            or min(info["height"], info["width"]) < 1
        ):
            raise DataError(
                f"{where} (id {img_id}): height and width must be positive integers, got "
                f"{info['height']!r} x {info['width']!r}"
            )
        if img_id in images:
            raise DataError(f"{where}: image id {img_id} repeats")
        name = os.path.splitext(file_name)[0]
        try:
            folder, digits = parse_coco_name(name)
        except DataError:
            folder, digits = None, None
        if folder != split or int(digits) != img_id:
            raise DataError(
                f"{where}: image id {img_id} has file_name {file_name!r}, expected "
                f"'COCO_{split}2014_{img_id:012d}.jpg'"
            )
        images[img_id], names[img_id] = info, name
    if not images:
        raise DataError(f'{path}: "images" is empty')
    per_image: Dict[int, List[Dict[str, Any]]] = {i: [] for i in images}
    keep = ("segmentation", "iscrowd", "category_id", "id")
    for index, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{index}]"
        if not isinstance(ann, dict):
            raise DataError(f"{where} is a {type(ann).__name__}, expected an object")
        where += f" (id {ann.get('id')})"
        for key in ("image_id", "category_id", "segmentation"):
            if key not in ann:
                raise DataError(f'{where} has no "{key}"')
        if ann["image_id"] not in images:
            raise DataError(f'{where}: image_id {ann["image_id"]!r} is not in "images"')
        if ann["category_id"] not in cat_to_class:
            raise DataError(f'{where}: category_id {ann["category_id"]!r} is not in "categories"')
        if ann.get("iscrowd", 0) not in (0, 1):
            raise DataError(f"{where}: iscrowd must be 0 or 1, got {ann['iscrowd']!r}")
        info = images[ann["image_id"]]
        problem = _segmentation_problem(ann["segmentation"], info["height"], info["width"])
        if problem:
            raise DataError(f"{where}: segmentation: {problem}")
        per_image[ann["image_id"]].append({k: ann[k] for k in keep if k in ann})
    jobs, num_anns, num_objects = [], {}, {}
    for img_id in sorted(images):
        info, name, anns = images[img_id], names[img_id], per_image[img_id]
        out_path = os.path.join(mask_dir, f"{img_id:012d}.png")
        jobs.append(
            (name, out_path, info["height"], info["width"], anns, dict(cat_to_class), num_classes)
        )
        num_anns[name] = len(anns)
        num_objects[name] = sum(not a.get("iscrowd", 0) for a in anns)
    return jobs, num_anns, num_objects


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
        raise DataError(f"unknown segmentation format {type(segmentation).__name__}")
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
            raise DataError(
                f"annotation id {ann.get('id')}: cannot decode its segmentation "
                f"({type(exc).__name__}: {exc})"
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
        job: (name, out_path, height, width, annotations, cat_to_class, num_classes), from
            :func:`coco_split_jobs`.

    Returns:
        JobResult: (name, "written" | "rebuilt" | "existing" | "kept", fg ids).
    """
    name, out_path, height, width, anns, cat_to_class, num_classes = job
    fingerprint = coco_fingerprint(height, width, anns, cat_to_class)
    status = "written"
    if os.path.isfile(out_path):
        reused = _reusable_mask(out_path, fingerprint, (height, width), "the annotations say")
        if reused is not None:
            mask, status = reused
            return name, status, fg_ids_from_mask(mask, num_classes, where=out_path)
        status = "rebuilt"
    try:
        mask = paint_coco_mask(height, width, anns, cat_to_class)
    except DataError as exc:
        raise DataError(f"{name}: {exc}") from None
    save_png(out_path, mask, text={SOURCE_KEY: fingerprint})
    return name, status, fg_ids_from_mask(mask, num_classes, where=out_path)


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
