"""Prepare MS COCO 2014 for WeCLIP: VOC-style masks, split lists, image-level labels (spec §10).

    python tools/prepare_coco.py --coco-root data/MSCOCO --workers 8

Expects ``<coco-root>/annotations/instances_{train,val}2014.json`` and the images under
``<coco-root>/JPEGImages/{train,val}/COCO_<split>2014_<12-digit id>.jpg`` (move or link the official
folders: ``ln -s ../train2014 <coco-root>/JPEGImages/train``, same for val; ``--link-images`` makes
these links when ``<coco-root>/{train,val}2014/`` exist).

Writes:

* ``<coco-root>/SegmentationClass/{train,val}/<12-digit id>.png``: single-channel masks, 0
  background, 1..80 the categories in ascending COCO category-id order (= spec §2 order; checked
  against ``--config``), 255 on crowd regions. Overlaps: crowd regions are painted first, then the
  non-crowd instances from the largest to the smallest area, so smaller objects stay visible on top
  of larger ones and an instance inside a crowd region keeps its class. Existing masks made from the
  same annotations are kept (resume).
* ``<out-dir>/train.txt``: train images whose mask shows at least one non-crowd class (spec §10:
  82,081); ``<out-dir>/val.txt``: val images with at least one annotation, the authors' 40,137
  (``--val-images all``: every val image, 40,504).
* ``<out-dir>/cls_labels.txt``: ``name id id ...``, the 0-based ids of the classes visible in the
  mask (mask values 1..80 minus 1; what the authors' code reads from the mask, spec §3.1). Images
  with no visible class are left out.

Both instances files are checked as a whole before anything is written (top-level entries, every image
and annotation: ids, sizes, file names, categories, segmentation polygons / RLEs); the first problem is
one ``error:`` line naming the file and the entry (exit code 2; ``--debug`` shows the traceback). Each
mask records the SHA-1 of its image's size and annotations (a PNG text entry, ``weclip.data.prepare``):
re-running is a no-op (masks made from the same annotations are read back, text files rewritten only
when they change), and a mask whose annotations changed since is rebuilt, never reused. Masks without
that record (made elsewhere) are used after checking their size.
"""

import argparse
import logging
import os
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence

from weclip.config import load_config
from weclip.data.labels import format_label_file, format_split, write_text_if_changed
from weclip.data.prepare import coco_mask_job, coco_split_jobs, read_coco_instances, run_jobs
from weclip.errors import ConfigError, DataError, MissingFileError
from weclip.utils.cli import run_main

logger = logging.getLogger("weclip")

NUM_CLASSES = 81  # background + 80 categories
SPLITS = ("train", "val")
# Official COCO names -> the VOC-style spellings of spec §2 (configs/_base_/datasets/coco14.py).
VOC_STYLE = {
    "motorcycle": "motorbike",
    "airplane": "aeroplane",
    "couch": "sofa",
    "potted plant": "pottedplant",
    "dining table": "diningtable",
    "tv": "tvmonitor",
}
# For information only: the authors' list sizes (spec §10) and the number of images per split.
SPEC_COUNTS = {"train": 82081, "val": 40137}
ALL_IMAGES = {"train": 82783, "val": 40504}
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--coco-root", required=True, help="holds annotations/ and JPEGImages/")
    parser.add_argument("--out-dir", default="datasets/coco", help="lists and cls_labels.txt")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument(
        "--val-images",
        choices=("all", "annotated"),
        default="annotated",
        help="val list: images with >= 1 annotation (default: the authors' 40,137, spec §10), or every val image",
    )
    parser.add_argument(
        "--link-images",
        action="store_true",
        help="create JPEGImages/{train,val} as links to <coco-root>/{train,val}2014 when missing",
    )
    parser.add_argument(
        "--skip-image-check", action="store_true", help="do not require the images (masks only)"
    )
    parser.add_argument(
        "--config",
        default=os.path.join(_REPO, "configs", "coco.py"),
        help="config whose data.class_names fixes the class order to check against",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of user errors")
    return parser.parse_args(argv)


def category_mapping(
    categories: List[Dict[str, Any]], class_names: Sequence[str], where: str = "categories"
) -> Dict[int, int]:
    """COCO category id -> class id 1..80 in ascending id order, checked against ``class_names``.

    Args:
        categories (List[dict]): the ``categories`` of an instances JSON.
        class_names (Sequence[str]): the 81 config names, background first (spec §2 spellings).
        where (str): the file, for messages.

    Returns:
        Dict[int, int]: category id -> class id.
    """
    for index, cat in enumerate(categories):
        if not (
            isinstance(cat, dict)
            and isinstance(cat.get("id"), int)
            and not isinstance(cat.get("id"), bool)
            and isinstance(cat.get("name"), str)
        ):
            raise DataError(
                f'{where}: categories[{index}] must be an object with an integer "id" and a '
                f'string "name", got {str(cat)[:80]}'
            )
    ids = [c["id"] for c in categories]
    if len(set(ids)) != len(ids):
        raise DataError(f"{where}: category ids repeat")
    cats = sorted(categories, key=lambda c: c["id"])
    names = [VOC_STYLE.get(c["name"], c["name"]) for c in cats]
    expected = list(class_names[1:])
    if names != expected:
        diff = next((i for i, (a, b) in enumerate(zip(names, expected)) if a != b), None)
        detail = (
            f"{len(names)} categories, expected {len(expected)}"
            if diff is None
            else f"class {diff + 1} is {names[diff]!r} (category id {cats[diff]['id']}), "
            f"expected {expected[diff]!r}"
        )
        raise DataError(f"{where}: COCO categories do not match the spec §2 class order: {detail}")
    return {c["id"]: i + 1 for i, c in enumerate(cats)}


def _link_images(root: str) -> None:
    for split in SPLITS:
        target = os.path.join(root, "JPEGImages", split)
        source = os.path.join(root, f"{split}2014")
        if not os.path.exists(target) and os.path.isdir(source):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(os.path.relpath(source, os.path.dirname(target)), target)
            logger.info("linked %s -> %s", target, source)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = args.coco_root
    if not os.path.isdir(root):
        raise MissingFileError(f"--coco-root: no such folder: {root}")
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise DataError(f"--out-dir {args.out_dir} exists and is not a folder")
    if args.link_images:
        _link_images(root)
    class_names = load_config(args.config).data.class_names
    if len(class_names) != NUM_CLASSES:
        raise ConfigError(
            f"{args.config}: data.class_names has {len(class_names)} names, expected 81 "
            "(background + the 80 COCO categories)"
        )

    # 1) both annotation files read and checked as a whole before anything is written
    prepared = {}
    for split in SPLITS:
        ann_file = os.path.join(root, "annotations", f"instances_{split}2014.json")
        data = read_coco_instances(ann_file)
        cat_to_class = category_mapping(data["categories"], class_names, ann_file)
        mask_dir = os.path.join(root, "SegmentationClass", split)
        jobs, num_anns, num_objects = coco_split_jobs(
            ann_file, data, split, cat_to_class, mask_dir, NUM_CLASSES
        )
        del data
        if (
            split == "train"
        ):  # the list: images whose mask shows a class (<= a non-crowd annotation)
            candidates = sorted(n for n, k in num_objects.items() if k > 0)
        elif args.val_images == "annotated":
            candidates = sorted(n for n, k in num_anns.items() if k > 0)
        else:
            candidates = sorted(num_anns)
        if not candidates:
            what = "non-crowd annotation" if split == "train" else "annotation"
            raise DataError(
                f"{ann_file}: no image has a {what}: the {split} list would be empty; "
                "nothing written"
            )
        prepared[split] = (jobs, num_anns, candidates)

    # 2) images (before the masks: a missing image folder shows in seconds, not after the masks)
    if not args.skip_image_check:
        missing_images = [
            os.path.join(root, "JPEGImages", split, name + ".jpg")
            for split, (_, _, candidates) in prepared.items()
            for name in candidates
            if not os.path.isfile(os.path.join(root, "JPEGImages", split, name + ".jpg"))
        ]
        if missing_images:
            raise MissingFileError(
                f"{len(missing_images)} listed images are missing (first: "
                f"{', '.join(missing_images[:3])}); put the official train2014/val2014 folders at "
                "<coco-root>/JPEGImages/{train,val} (or --link-images); nothing written"
            )

    # 3) masks: reused only when made from the same annotations (weclip.data.prepare)
    lists: Dict[str, List[str]] = {}
    labels: Dict[str, List[int]] = {}
    for split, (jobs, _, candidates) in prepared.items():
        results = run_jobs(coco_mask_job, jobs, len(jobs), args.workers, f"masks {split}")
        counts = Counter(status for _, status, _ in results)
        split_labels = {name: ids for name, _, ids in results if ids}
        labels.update(split_labels)
        names = sorted(split_labels) if split == "train" else candidates
        if not names:
            raise DataError(
                f"{split}: no mask shows a class (every annotation is a crowd region or covers no "
                "pixel): the list would be empty; no list written"
            )
        lists[split] = names
        logger.info(
            "%s: %d images, masks %d written, %d rebuilt (annotations changed), %d reused, %d kept "
            "(no source record); %d with a visible class, list %d (authors: %d)",
            split,
            len(jobs),
            counts["written"],
            counts["rebuilt"],
            counts["existing"],
            counts["kept"],
            len(split_labels),
            len(names),
            SPEC_COUNTS[split],
        )

    # 4) lists and labels (only when the content changes)
    changed = []
    for split, names in lists.items():
        if write_text_if_changed(os.path.join(args.out_dir, f"{split}.txt"), format_split(names)):
            changed.append(f"{split}.txt")
    if write_text_if_changed(
        os.path.join(args.out_dir, "cls_labels.txt"), format_label_file(labels)
    ):
        changed.append("cls_labels.txt")
    print(f"{'split':<6} {'list':>7} {'authors':>8} {'images':>7}")
    for split, names in lists.items():
        print(f"{split:<6} {len(names):>7} {SPEC_COUNTS[split]:>8} {ALL_IMAGES[split]:>7}")
    print(f"labels: {len(labels)} names in {os.path.join(args.out_dir, 'cls_labels.txt')}")
    print(f"files changed in {args.out_dir}: {', '.join(changed) or 'none'}")
    return 0


if __name__ == "__main__":
    run_main(main)
