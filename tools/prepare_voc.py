"""Prepare PASCAL VOC 2012 + SBD for WeCLIP: SegmentationClassAug, split lists, image-level labels.

    python tools/prepare_voc.py --voc-root data/VOCdevkit/VOC2012 --sbd-root data/benchmark_RELEASE

Writes (spec §10):

* ``<voc-root>/SegmentationClassAug/<name>.png`` for every name of train_aug ∪ val (12,031), only
  where missing: VOC's ``SegmentationClass/<name>.png`` (palette indices, 255 on boundaries) when
  VOC has the name, else SBD's ``dataset/cls/<name>.mat`` (``GTcls.Segmentation``). Existing masks
  are kept as they are, so an already downloaded SegmentationClassAug is used untouched, and an
  interrupted run resumes.
* ``<out-dir>/{train,val,train_aug}.txt`` (1,464 / 1,449 / 10,582), ``trainval.txt`` (2,913) and
  ``test.txt`` (1,456) when VOC's ``ImageSets/Segmentation`` has them. train_aug = SBD train ∪ SBD
  val ∪ VOC train − VOC val. Without ``--sbd-root``, train_aug = the names in an existing
  SegmentationClassAug (+ VOC train) − VOC val.
* ``<out-dir>/cls_labels.txt``: ``name id id ...`` (0-based foreground ids = mask values 1..20 minus
  1; 0 and 255 excluded) for every name with a mask.

Counts are checked against the official ones; on a difference the tool says what is missing and
writes no list (``--no-check-counts`` skips the count check, e.g. for a miniature tree). Missing
images or masks and masks without any foreground class are always errors. Re-running is a no-op:
text files are rewritten only when their content changes, masks never.
"""

import argparse
import logging
import os
import sys
from typing import Dict, List, Optional, Sequence

from weclip.data.labels import format_label_file, format_split, read_split, write_text_if_changed
from weclip.data.prepare import run_jobs, voc_mask_job

logger = logging.getLogger("weclip")

NUM_CLASSES = 21  # background + 20 VOC classes
# Official sizes (spec §10; SBD: 8,498 train + 2,857 val).
OFFICIAL = {"train": 1464, "val": 1449, "train_aug": 10582, "trainval": 2913, "test": 1456}
SBD_OFFICIAL = {"train": 8498, "val": 2857}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--voc-root", required=True, help="VOCdevkit/VOC2012 (JPEGImages/, SegmentationClass/, ...)"
    )
    parser.add_argument(
        "--sbd-root",
        help="SBD benchmark_RELEASE (holds dataset/cls/*.mat, dataset/{train,val}.txt)",
    )
    parser.add_argument(
        "--out-dir", default="datasets/voc", help="where the lists and cls_labels.txt go"
    )
    parser.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1), help="processes for the masks"
    )
    parser.add_argument(
        "--no-check-counts",
        action="store_true",
        help="do not compare the list sizes with the official ones",
    )
    return parser.parse_args(argv)


def _sbd_dataset_dir(sbd_root: str) -> str:
    """Accept ``benchmark_RELEASE`` or ``benchmark_RELEASE/dataset``."""
    for candidate in (os.path.join(sbd_root, "dataset"), sbd_root):
        if os.path.isdir(os.path.join(candidate, "cls")):
            return candidate
    raise FileNotFoundError(
        f"SBD: no cls/ folder under {sbd_root} or {os.path.join(sbd_root, 'dataset')}"
    )


def _first(items: Sequence[str], k: int = 5) -> str:
    return ", ".join(items[:k]) + (", ..." if len(items) > k else "")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    voc = args.voc_root
    seg_sets = os.path.join(voc, "ImageSets", "Segmentation")
    img_dir = os.path.join(voc, "JPEGImages")
    if not os.path.isdir(img_dir):
        raise FileNotFoundError(f"VOC images folder not found: {img_dir}")
    aug_dir = os.path.join(voc, "SegmentationClassAug")
    voc_seg_dir = os.path.join(voc, "SegmentationClass")

    # 1) split lists
    lists: Dict[str, List[str]] = {
        s: read_split(os.path.join(seg_sets, f"{s}.txt")) for s in ("train", "val")
    }
    for optional in ("trainval", "test"):
        path = os.path.join(seg_sets, f"{optional}.txt")
        if os.path.isfile(path):
            lists[optional] = read_split(path)
        else:
            logger.info("no %s (optional; the VOC2012 test tarball adds test.txt)", path)
    val = set(lists["val"])
    notes: List[str] = []  # explanations of count differences
    sbd_cls: Optional[str] = None
    if args.sbd_root:
        sbd_dir = _sbd_dataset_dir(args.sbd_root)
        sbd_cls = os.path.join(sbd_dir, "cls")
        sbd_lists = {s: read_split(os.path.join(sbd_dir, f"{s}.txt")) for s in ("train", "val")}
        for s, names in sbd_lists.items():
            if len(names) != SBD_OFFICIAL[s]:
                notes.append(
                    f"{os.path.join(sbd_dir, s + '.txt')} lists {len(names)} names, "
                    f"official {SBD_OFFICIAL[s]}"
                )
        pool = set(sbd_lists["train"]) | set(sbd_lists["val"])
    elif os.path.isdir(aug_dir):
        pool = {f[:-4] for f in os.listdir(aug_dir) if f.endswith(".png")}
        logger.info(
            "no --sbd-root: train_aug = the %d masks in %s + VOC train - VOC val",
            len(pool),
            aug_dir,
        )
    else:
        raise FileNotFoundError(
            f"{aug_dir} does not exist and no --sbd-root was given: SBD (benchmark_RELEASE) is "
            "needed to build "
            "SegmentationClassAug and the train_aug list"
        )
    lists["train_aug"] = sorted((pool | set(lists["train"])) - val)

    # 2) masks (built where missing) and their foreground ids
    mask_names = sorted(set(lists["train_aug"]) | val | set(lists["train"]))
    jobs = []
    for name in mask_names:
        voc_png = os.path.join(voc_seg_dir, name + ".png")
        sbd_mat = os.path.join(sbd_cls, name + ".mat") if sbd_cls else None
        jobs.append(
            (
                name,
                os.path.join(aug_dir, name + ".png"),
                voc_png if os.path.isfile(voc_png) else None,
                sbd_mat if sbd_mat and os.path.isfile(sbd_mat) else None,
                NUM_CLASSES,
            )
        )
    results = run_jobs(voc_mask_job, jobs, len(jobs), args.workers, "SegmentationClassAug")
    labels = {name: ids for name, status, ids in results if status != "missing"}
    written = sum(status == "written" for _, status, _ in results)
    existing = sum(status == "existing" for _, status, _ in results)
    logger.info("masks: %d written, %d already present", written, existing)

    # 3) problems that always stop the tool
    problems: List[str] = []
    no_mask = [name for name, status, _ in results if status == "missing"]
    if no_mask:
        sources = f"{voc_seg_dir}/<name>.png" + (
            f" nor {sbd_cls}/<name>.mat" if sbd_cls else " (and no --sbd-root)"
        )
        problems.append(
            f"{len(no_mask)} names have no mask in {aug_dir} and no source: neither {sources} "
            f"(first: {_first(no_mask)})"
        )
    empty = [name for name, ids in labels.items() if not ids]
    if empty:
        problems.append(
            f"{len(empty)} masks have no foreground class "
            f"(first: {_first([os.path.join(aug_dir, n + '.png') for n in empty])})"
        )
    listed = sorted(set().union(*lists.values()))
    no_image = [
        os.path.join(img_dir, n + ".jpg")
        for n in listed
        if not os.path.isfile(os.path.join(img_dir, n + ".jpg"))
    ]
    if no_image:
        problems.append(f"{len(no_image)} listed images are missing (first: {_first(no_image)})")
    if problems:
        for p in problems:
            logger.error("ERROR: %s", p)
        logger.error("no list or label file written")
        return 1

    # 4) official counts
    diffs = [
        f"{s}: {len(n)} names, official {OFFICIAL[s]}"
        for s, n in lists.items()
        if len(n) != OFFICIAL[s]
    ]
    if diffs and not args.no_check_counts:
        for d in diffs + notes:
            logger.error("COUNT: %s", d)
        if any(d.startswith("train_aug") for d in diffs) and not args.sbd_root:
            logger.error(
                "COUNT: without --sbd-root, train_aug comes from %s; it should hold 12,031 masks",
                aug_dir,
            )
        logger.error("no list or label file written (--no-check-counts to write them anyway)")
        return 1

    # 5) write lists and labels (only when the content changes)
    changed = []
    for split, names in lists.items():
        if write_text_if_changed(os.path.join(args.out_dir, f"{split}.txt"), format_split(names)):
            changed.append(f"{split}.txt")
    if write_text_if_changed(
        os.path.join(args.out_dir, "cls_labels.txt"), format_label_file(labels)
    ):
        changed.append("cls_labels.txt")
    print(f"{'split':<10} {'images':>7} {'official':>8}")
    for split, names in lists.items():
        print(f"{split:<10} {len(names):>7} {OFFICIAL[split]:>8}")
    print(
        f"labels: {len(labels)} names in {os.path.join(args.out_dir, 'cls_labels.txt')}; "
        f"masks written: {written}"
    )
    print(f"files changed in {args.out_dir}: {', '.join(changed) if changed else 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
