"""Prepare Oxford-IIIT Pet in the VOC layout: images, masks, splits, labels, head boxes.

    python tools/prepare_pets.py --pets-root data/oxford-iiit-pet --out data/pets_species \\
        --labels species
    python tools/prepare_pets.py --pets-root data/oxford-iiit-pet --out data/pets_breeds \\
        --labels breeds --link-images

``--pets-root`` holds the two official archives unpacked (``images/``, ``annotations/``); what is
read and written is described in ``weclip/data/pets.py`` (``prepare_pets`` does the work). One
label set per ``--out`` folder (``species``: cat = 1, dog = 2; ``breeds``: the 37 breeds in
class_id order).

Behaviour (as tools/prepare_voc.py):

* Every input is checked before anything is written: missing folders or files, malformed list
  lines, breed names that disagree with their class id, trimap values outside 1..3 or trimaps of
  another size than their image, unreadable images, XMLs without a box. The first problem stops
  the tool with a message naming the file, and nothing is written.
* Idempotent and resumable: images and masks already written are kept; text files are rewritten
  only when their content changes; every file is written atomically.
* Never mixes inputs: ``pets_manifest.json`` records the SHA-256 of ``list.txt``,
  ``trainval.txt`` and ``test.txt`` and the options (label set, split, link mode). An output
  folder written from another input or with other options is refused (``--force`` rewrites every
  image and mask instead); a non-empty folder without a manifest is refused too.
* The official split sizes (3,680 / 3,669) are checked (``--no-check-counts`` for subsets).
"""

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

from weclip.data.pets import LABEL_SETS, class_names, prepare_pets


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--pets-root", required=True, help="folder with images/ and annotations/ (official layout)"
    )
    parser.add_argument("--out", required=True, help="output folder (VOC layout, lists, labels)")
    parser.add_argument("--labels", choices=LABEL_SETS, default="species", help="label set")
    parser.add_argument(
        "--link-images",
        action="store_true",
        help="symlink the RGB JPEGs instead of copying them (odd images are still re-encoded)",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="fraction of each breed's trainval images in val.txt (train.txt = the rest)",
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the train/val split")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument(
        "--force",
        action="store_true",
        help="rewrite every image and mask of an output folder written from another input",
    )
    parser.add_argument(
        "--no-check-counts",
        action="store_true",
        help="do not compare the split sizes with the official ones",
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = prepare_pets(
        args.pets_root,
        args.out,
        labels=args.labels,
        link_images=args.link_images,
        val_fraction=args.val_fraction,
        split_seed=args.split_seed,
        workers=args.workers,
        force=args.force,
        check_counts=not args.no_check_counts,
    )
    print(f"label set {args.labels}: {len(class_names(args.labels))} classes incl. background")
    for split, names in summary["splits"].items():
        print(f"{split:<9} {len(names):>6}")
    print(f"head boxes: {summary['num_boxes']} in {summary['num_box_images']} images")
    written = ", ".join(f"{k} {v}" for k, v in sorted(summary["written"].items())) or "none"
    print(f"images/masks written: {written}; already complete: {summary['present']}")
    changed = ", ".join(summary["changed"]) or "none"
    print(f"files changed in {args.out}: {changed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
