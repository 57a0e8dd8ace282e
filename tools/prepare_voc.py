"""Prepare PASCAL VOC 2012 + SBD for WeCLIP: SegmentationClassAug, split lists, image-level labels.

    python tools/prepare_voc.py --voc-root data/VOCdevkit/VOC2012 --sbd-root data/benchmark_RELEASE

Writes (spec §10):

* ``<voc-root>/SegmentationClassAug/<name>.png`` for every name of train_aug ∪ val (12,031), only
  where missing: VOC's ``SegmentationClass/<name>.png`` (palette indices, 255 on boundaries) when
  VOC has the name, else SBD's ``dataset/cls/<name>.mat`` (``GTcls.Segmentation``). Each mask
  records the SHA-1 of its source file (a PNG text entry, ``weclip.data.prepare``): a re-run or an
  interrupted run reuses the masks made from the same sources and rebuilds those whose source changed
  since. Masks without that record (an already downloaded SegmentationClassAug) are used untouched,
  after checking that each has its image's size.
* ``<out-dir>/{train,val,train_aug}.txt`` (1,464 / 1,449 / 10,582), ``trainval.txt`` (2,913) and
  ``test.txt`` (1,456) when VOC's ``ImageSets/Segmentation`` has them. train_aug = SBD train ∪ SBD
  val ∪ VOC train − VOC val. Without ``--sbd-root``, train_aug = the names in an existing
  SegmentationClassAug (+ VOC train) − VOC val.
* ``<out-dir>/cls_labels.txt``: ``name id id ...`` (0-based foreground ids = mask values 1..20 minus
  1; 0 and 255 excluded) for every name with a mask.

Counts are checked against the official ones; on a difference the tool says what differs and
writes no list (``--no-check-counts`` skips the count check, e.g. for a miniature tree). Missing
images or mask sources stop the tool before any mask is written; a source that cannot be read, holds a
value that is no VOC class, differs in size from its image, or has no foreground class stops it
before any list is written. Every such problem is one ``error:`` line (exit code 2; ``--debug``
shows the traceback). Re-running is a no-op: text files are rewritten only when their content changes,
masks only when their source does.
"""

import argparse
import logging
import os
from collections import Counter
from typing import Dict, List, Optional, Sequence

from weclip.data.labels import format_label_file, format_split, read_split, write_text_if_changed
from weclip.data.prepare import run_jobs, voc_mask_job
from weclip.errors import DataError, MissingFileError
from weclip.utils.cli import run_main

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
    parser.add_argument("--debug", action="store_true", help="show the traceback of user errors")
    return parser.parse_args(argv)


def _sbd_dataset_dir(sbd_root: str) -> str:
    """Accept ``benchmark_RELEASE`` or ``benchmark_RELEASE/dataset``."""
    for candidate in (os.path.join(sbd_root, "dataset"), sbd_root):
        if os.path.isdir(os.path.join(candidate, "cls")):
            return candidate
    raise MissingFileError(
        f"--sbd-root: no cls/ folder under {sbd_root} or {os.path.join(sbd_root, 'dataset')}"
    )


def _first(items: Sequence[str], k: int = 5) -> str:
    return ", ".join(items[:k]) + (", ..." if len(items) > k else "")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    voc = args.voc_root
    seg_sets = os.path.join(voc, "ImageSets", "Segmentation")
    img_dir = os.path.join(voc, "JPEGImages")
    if not os.path.isdir(voc):
        raise MissingFileError(f"--voc-root: no such folder: {voc}")
    if not os.path.isdir(img_dir):
        raise MissingFileError(f"VOC images folder not found: {img_dir} (is --voc-root VOC2012?)")
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise DataError(f"--out-dir {args.out_dir} exists and is not a folder")
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
        raise MissingFileError(
            f"{aug_dir} does not exist and no --sbd-root was given: SBD (benchmark_RELEASE) is "
            "needed to build SegmentationClassAug and the train_aug list"
        )
    lists["train_aug"] = sorted((pool | set(lists["train"])) - val)

    # 2) what stops the tool before any mask is written: missing images, names without any mask source
    listed = sorted(set().union(*lists.values()))
    no_image = [
        os.path.join(img_dir, n + ".jpg")
        for n in listed
        if not os.path.isfile(os.path.join(img_dir, n + ".jpg"))
    ]
    if no_image:
        raise MissingFileError(
            f"{len(no_image)} listed images are missing (first: {_first(no_image)}); nothing written"
        )
    mask_names = sorted(set(lists["train_aug"]) | val | set(lists["train"]))
    jobs = []
    no_mask = []
    for name in mask_names:
        out_path = os.path.join(aug_dir, name + ".png")
        voc_png = os.path.join(voc_seg_dir, name + ".png")
        sbd_mat = os.path.join(sbd_cls, name + ".mat") if sbd_cls else None
        voc_png = voc_png if os.path.isfile(voc_png) else None
        sbd_mat = sbd_mat if sbd_mat and os.path.isfile(sbd_mat) else None
        if voc_png is None and sbd_mat is None and not os.path.isfile(out_path):
            no_mask.append(name)
        image = os.path.join(img_dir, name + ".jpg")
        jobs.append((name, out_path, voc_png, sbd_mat, NUM_CLASSES, image))
    if no_mask:
        sources = f"{voc_seg_dir}/<name>.png" + (
            f" nor {sbd_cls}/<name>.mat" if sbd_cls else " (and no --sbd-root)"
        )
        raise MissingFileError(
            f"{len(no_mask)} names have no mask in {aug_dir} and no source: neither {sources} "
            f"(first: {_first(no_mask)}); nothing written"
        )

    # 3) masks: each source checked (readable, class values, the image's size) before it is written;
    # an existing mask is reused only if it was made from the same source (weclip.data.prepare)
    results = run_jobs(voc_mask_job, jobs, len(jobs), args.workers, "SegmentationClassAug")
    labels = {name: ids for name, status, ids in results}
    counts = Counter(status for _, status, _ in results)
    written = counts["written"] + counts["rebuilt"]
    logger.info(
        "masks: %d written, %d rebuilt (their source changed), %d already present, %d kept as found "
        "(no source record: an official SegmentationClassAug?)",
        counts["written"],
        counts["rebuilt"],
        counts["existing"],
        counts["kept"],
    )
    empty = [name for name, ids in labels.items() if not ids]
    if empty:
        raise DataError(
            f"{len(empty)} masks have no foreground class "
            f"(first: {_first([os.path.join(aug_dir, n + '.png') for n in empty])}); "
            "no list or label file written"
        )

    # 4) official counts
    diffs = [
        f"{s}: {len(n)} names, official {OFFICIAL[s]}"
        for s, n in lists.items()
        if len(n) != OFFICIAL[s]
    ]
    if diffs and not args.no_check_counts:
        hint = ""
        if any(d.startswith("train_aug") for d in diffs) and not args.sbd_root:
            hint = f"; without --sbd-root, train_aug comes from {aug_dir}, which should hold 12,031 masks"
        raise DataError(
            "list sizes differ from the official ones (spec §10): "
            + "; ".join(diffs + notes)
            + hint
            + "; no list or label file written (--no-check-counts writes them anyway)"
        )

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
    run_main(main)
