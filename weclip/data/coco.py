"""MS COCO 2014 in the VOC-style layout of spec §10 (written by ``tools/prepare_coco.py``).

Names are the image file stems, ``COCO_<split>2014_<12-digit id>``; the folder is taken from the
name::

    <root>/<img_dir>/<split>/COCO_<split>2014_<id><img_suffix>
        e.g. JPEGImages/train/COCO_train2014_000000000009.jpg
    <root>/<mask_dir>/<split>/<id><mask_suffix>
        e.g. SegmentationClass/train/000000000009.png

Masks: 0 background, 1..80 the COCO categories in ascending category-id order (spec §2), 255 ignore.
Items are those of ``SegmentationDataset``.
"""

import os
import re
from typing import Tuple

from weclip.data.dataset import SegmentationDataset
from weclip.errors import DataError

__all__ = ["COCODataset", "parse_coco_name"]

_NAME = re.compile(r"^COCO_(train|val)2014_(\d{12})$")


def parse_coco_name(name: str) -> Tuple[str, str]:
    """``COCO_val2014_000000000042`` -> (``"val"``, ``"000000000042"``); ValueError otherwise."""
    match = _NAME.match(name)
    if match is None:
        raise DataError(
            f"{name!r} is not a COCO 2014 image name (COCO_<train|val>2014_<12 digits>)"
        )
    return match.group(1), match.group(2)


class COCODataset(SegmentationDataset):
    """COCO 2014 (81 classes) with the VOC dataset's items; only the paths differ.

    Args: those of ``SegmentationDataset`` (``mask_dir`` is "SegmentationClass" in
    ``configs/_base_/datasets/coco14.py``).
    """

    def _check_name(self, name: str) -> None:
        try:
            parse_coco_name(name)
        except ValueError as exc:
            raise DataError(f"{self.split_file}: {exc}") from None

    def image_path(self, name: str) -> str:
        folder, _ = parse_coco_name(name)
        return os.path.join(self.root, self.img_dir, folder, name + self.img_suffix)

    def mask_path(self, name: str) -> str:
        folder, image_id = parse_coco_name(name)
        return os.path.join(self.root, self.mask_dir, folder, image_id + self.mask_suffix)
