"""Bounding boxes of a dataset: ``boxes.json`` (read, write) and boxes derived from masks.

``boxes.json`` (written by ``tools/prepare_pets.py`` for the Oxford-IIIT Pet head boxes,
``weclip/data/pets.py``) maps an image name to its boxes ``[[x0, y0, x1, y1, class_id], ...]`` in
continuous pixel edges (origin at the top-left corner of the top-left pixel; a 1-based inclusive
PASCAL box xmin..xmax is x0 = xmin - 1, x1 = xmax), class ids 1..C-1. The box-supervised AffinityNet
(``model.seeds = "boxes"``) turns them into seed masks (``weclip.baselines.box_seeds``).

:func:`boxes_from_mask` derives the tight box of every connected region of each class of a label map:
box supervision for a dataset that only has masks (the toy world; VOC's ``SegmentationObject``
instances would give per-object boxes the same way).
"""

import json
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from scipy import ndimage

from weclip.data.pets import format_boxes_json
from weclip.errors import DataError, MissingFileError
from weclip.utils.io import atomic_write_text

__all__ = ["read_boxes_json", "write_boxes_json", "boxes_from_mask"]

Box = List[float]


def read_boxes_json(path: str, num_classes: Optional[int] = None) -> Dict[str, List[Box]]:
    """Read ``boxes.json``: name -> list of ``[x0, y0, x1, y1, class_id]``.

    Args:
        path (str): the file.
        num_classes (int, optional): C; when given, class ids must be 1..C-1.

    Raises:
        MissingFileError: no such file.
        DataError: not JSON, not a name -> list-of-boxes object, a box that is not 5 numbers, an empty
            box (x1 <= x0 or y1 <= y0) or a class id out of range (the file and image named).
    """
    try:
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
    except FileNotFoundError:
        raise MissingFileError(f"boxes file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(payload, dict):
        raise DataError(f"{path}: expected an object name -> boxes, got {type(payload).__name__}")
    boxes: Dict[str, List[Box]] = {}
    for name, entries in payload.items():
        if not isinstance(entries, list):
            raise DataError(f"{path}: image {name!r}: expected a list of boxes")
        out = []
        for box in entries:
            if (
                not isinstance(box, list)
                or len(box) != 5
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
            ):
                raise DataError(
                    f"{path}: image {name!r}: a box is [x0, y0, x1, y1, class_id], got {box!r}"
                )
            x0, y0, x1, y1, cls = box
            if x1 <= x0 or y1 <= y0:
                raise DataError(f"{path}: image {name!r}: empty box {box!r}")
            if cls != int(cls) or cls < 1 or (num_classes is not None and cls > num_classes - 1):
                top = f"1..{num_classes - 1}" if num_classes is not None else ">= 1"
                raise DataError(f"{path}: image {name!r}: class id {cls!r} is not in {top}")
            out.append([float(x0), float(y0), float(x1), float(y1), int(cls)])
        boxes[str(name)] = out
    return boxes


def write_boxes_json(path: str, boxes: Mapping[str, Sequence[Sequence[float]]]) -> None:
    """Write ``boxes.json`` atomically (one image per line, names sorted; ``format_boxes_json``)."""
    atomic_write_text(path, format_boxes_json(boxes))


def boxes_from_mask(
    mask: np.ndarray, ignore_index: int = 255, connectivity: int = 8
) -> List[List[int]]:
    """The tight box of every connected region of every class of a label map.

    Args:
        mask (np.ndarray): (H, W) class ids, 0 = background, ``ignore_index`` ignored.
        ignore_index (int): value that is neither background nor a class.
        connectivity (int): 4 or 8 (regions touching diagonally are one object with 8).

    Returns:
        list: ``[x0, y0, x1, y1, class_id]`` in continuous edges (a region covering columns
        j0..j1 has x0 = j0, x1 = j1 + 1), sorted by class id, then by y0, x0.
    """
    if mask.ndim != 2:
        raise ValueError(f"a mask is (H, W), got shape {mask.shape}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    boxes = []
    for cls in sorted(int(c) for c in np.unique(mask) if c not in (0, ignore_index)):
        regions, _ = ndimage.label(mask == cls, structure=structure)
        for rows, cols in ndimage.find_objects(regions):
            boxes.append([cols.start, rows.start, cols.stop, rows.stop, cls])
    boxes.sort(key=lambda b: (b[4], b[1], b[0]))
    return boxes
