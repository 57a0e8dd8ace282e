"""Segment your own images with a trained model: no dataset, no masks, no label files.

    python tools/segment.py photo.jpg configs/voc.py work_dirs/voc/checkpoints/iter_30000.pth
    python tools/segment.py my_photos/ configs/voc.py CKPT --out-dir work_dirs/segment --crf

For every image (a file, or every image file of a folder, sorted): ``OUT_DIR/<stem>.png``, the label map as
an indexed PNG with the VOC palette (pixel value = class id), and ``OUT_DIR/<stem>_overlay.png``, the
image with the colours on top; one line per image lists the classes found. The prediction is
``weclip.apis.segment``: the config's test setting (``test.scales``, ``test.flip``; ``--ms``/``--no-flip``
change it), optionally DenseCRF (``--crf``, ``test.crf``).
"""

import argparse
import logging
import os
from typing import List, Optional

from tqdm import tqdm

from weclip.apis import init_model, read_image, segment
from weclip.config import load_config
from weclip.data.images import save_png
from weclip.errors import MissingFileError, UserInputError
from weclip.utils.cli import add_runtime_args, parse_scales, run_main
from weclip.utils.visualize import label_overlay, voc_palette

logger = logging.getLogger("weclip")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(path: str) -> List[str]:
    """The image file ``path``, or the image files of the folder ``path`` (sorted; not recursive)."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise MissingFileError(f"no such image or folder: {path}")
    files = sorted(
        os.path.join(path, f)
        for f in os.listdir(path)
        if f.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(path, f))
    )
    if not files:
        raise UserInputError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Segment images with a trained model (label PNGs and overlays)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("image", help="an image file, or a folder of images")
    parser.add_argument("config", help="config file, e.g. configs/voc.py")
    parser.add_argument("checkpoint", help="checkpoint (ours or the authors')")
    parser.add_argument("--out-dir", default="work_dirs/segment", help="output folder")
    parser.add_argument("--ms", type=parse_scales, default=None, help="test scales (test.scales)")
    parser.add_argument("--no-flip", action="store_true", help="no flip averaging (test.flip)")
    parser.add_argument("--crf", action="store_true", help="DenseCRF (test.crf)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay weight of the colours")
    add_runtime_args(parser, cfg_options_help="override existing config keys", launcher=False)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> List[str]:
    args = parse_args(argv)
    files = list_images(args.image)
    options = dict(args.cfg_options)
    if args.ms is not None:
        options["test.scales"] = args.ms
    if args.no_flip:
        options["test.flip"] = False
    model = init_model(load_config(args.config, options), args.checkpoint, args.device)
    palette = voc_palette()
    written = []
    for path in tqdm(files, desc="segment", disable=len(files) == 1):
        pixels = read_image(path)
        result = segment(model, pixels, crf=args.crf)
        stem = os.path.splitext(os.path.basename(path))[0]
        label_path = os.path.join(args.out_dir, stem + ".png")
        save_png(label_path, result.labels, palette)
        rgb = pixels.permute(1, 2, 0).numpy()
        save_png(
            os.path.join(args.out_dir, stem + "_overlay.png"),
            label_overlay(rgb, result.labels, args.alpha),
        )
        written.append(label_path)
        logger.info("%s: %s", path, ", ".join(result.present()))
    print(f"{len(written)} image(s) -> {args.out_dir}")
    return written


if __name__ == "__main__":
    run_main(main)
