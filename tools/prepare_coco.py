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
  of larger ones and an instance inside a crowd region keeps its class. Existing masks are kept
  (resume).
* ``<out-dir>/train.txt``: train images whose mask shows at least one non-crowd class (spec §10:
  82,081); ``<out-dir>/val.txt``: val images with at least one annotation, the authors' 40,137
  (``--val-images all``: every val image, 40,504).
* ``<out-dir>/cls_labels.txt``: ``name id id ...``, the 0-based ids of the classes visible in the
  mask (mask values 1..80 minus 1; what the authors' code reads from the mask, spec §3.1). Images
  with no visible class are left out.

Re-running is a no-op: masks are skipped when present, text files rewritten only when they change.
"""

import argparse
import logging
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from weclip.config import load_config
from weclip.data.coco import parse_coco_name
from weclip.data.labels import format_label_file, format_split, write_text_if_changed
from weclip.data.prepare import coco_mask_job, run_jobs

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
    return parser.parse_args(argv)


def category_mapping(
    categories: List[Dict[str, Any]], class_names: Sequence[str]
) -> Dict[int, int]:
    """COCO category id -> class id 1..80 in ascending id order, checked against ``class_names``.

    Args:
        categories (List[dict]): the ``categories`` of an instances JSON.
        class_names (Sequence[str]): the 81 config names, background first (spec §2 spellings).

    Returns:
        Dict[int, int]: category id -> class id.
    """
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
        raise ValueError(f"COCO categories do not match the spec §2 class order: {detail}")
    return {c["id"]: i + 1 for i, c in enumerate(cats)}


def _link_images(root: str) -> None:
    for split in SPLITS:
        target = os.path.join(root, "JPEGImages", split)
        source = os.path.join(root, f"{split}2014")
        if not os.path.exists(target) and os.path.isdir(source):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(os.path.relpath(source, os.path.dirname(target)), target)
            logger.info("linked %s -> %s", target, source)


def _split_jobs(
    root: str, split: str, class_names: Sequence[str]
) -> Tuple[List[tuple], Dict[str, int]]:
    """Mask jobs of one split and, per image name, its number of annotations."""
    from pycocotools.coco import COCO

    ann_file = os.path.join(root, "annotations", f"instances_{split}2014.json")
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")
    try:
        coco = COCO(ann_file)
    except Exception as exc:
        raise ValueError(f"Cannot load {ann_file}: {type(exc).__name__}: {exc}") from exc
    try:
        cat_to_class = category_mapping(coco.dataset.get("categories", []), class_names)
    except ValueError as exc:
        raise ValueError(f"{ann_file}: {exc}") from None
    unknown = {a["category_id"] for a in coco.dataset.get("annotations", [])} - set(cat_to_class)
    if unknown:
        raise ValueError(f"{ann_file}: annotations use unknown category ids {sorted(unknown)}")
    jobs, num_anns = [], {}
    for img_id in sorted(coco.getImgIds()):
        info = coco.imgs[img_id]
        name = os.path.splitext(info["file_name"])[0]
        folder, digits = parse_coco_name(name)
        if folder != split or int(digits) != img_id:
            raise ValueError(f"{ann_file}: image id {img_id} has file_name {info['file_name']!r}")
        anns = coco.imgToAnns.get(img_id, [])
        keep = ("segmentation", "iscrowd", "category_id", "id")
        anns = [{k: a[k] for k in keep if k in a} for a in anns]
        out_path = os.path.join(root, "SegmentationClass", split, f"{digits}.png")
        jobs.append(
            (name, out_path, info["height"], info["width"], anns, cat_to_class, NUM_CLASSES)
        )
        num_anns[name] = len(anns)
    return jobs, num_anns


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = args.coco_root
    if args.link_images:
        _link_images(root)
    class_names = load_config(args.config).data.class_names
    if len(class_names) != NUM_CLASSES:
        raise ValueError(
            f"{args.config}: data.class_names has {len(class_names)} names, expected 81"
        )

    lists: Dict[str, List[str]] = {}
    labels: Dict[str, List[int]] = {}
    missing_images: List[str] = []
    for split in SPLITS:
        jobs, num_anns = _split_jobs(root, split, class_names)
        results = run_jobs(coco_mask_job, jobs, len(jobs), args.workers, f"masks {split}")
        written = sum(status == "written" for _, status, _ in results)
        split_labels = {name: ids for name, _, ids in results if ids}
        labels.update(split_labels)
        if split == "train":
            names = sorted(split_labels)
        elif args.val_images == "annotated":
            names = sorted(n for n, k in num_anns.items() if k > 0)
        else:
            names = sorted(num_anns)
        lists[split] = names
        logger.info(
            "%s: %d images, %d masks written, %d with a visible class, list %d (authors: %d)",
            split,
            len(jobs),
            written,
            len(split_labels),
            len(names),
            SPEC_COUNTS[split],
        )
        if not args.skip_image_check:
            for name in names:
                path = os.path.join(root, "JPEGImages", split, name + ".jpg")
                if not os.path.isfile(path):
                    missing_images.append(path)

    if missing_images:
        logger.error(
            "ERROR: %d listed images are missing (first: %s); put the official %s folders at "
            "<coco-root>/JPEGImages/{train,val} (or --link-images); no list written",
            len(missing_images),
            ", ".join(missing_images[:5]),
            "train2014/val2014",
        )
        return 1
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
    sys.exit(main())
