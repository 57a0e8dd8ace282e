"""Overlay panels for chosen images: image | CAMs | refined CAMs | pseudo-label | prediction | ground truth.

    python tools/visualize.py configs/voc.py CKPT --names 2007_000033,2007_000042 --out-dir work_dirs/vis
    python tools/visualize.py configs/voc.py CKPT --list names.txt --split train --cams refined

One PNG per image (``OUT_DIR/<name>.png``, panels side by side with a title strip) and ``OUT_DIR/grid.png`` (all
images, one per row). What each panel shows:

* CAM <class>: the initial Grad-CAM of a present class (spec §3), resized to the image, JET colours;
* refined <class>: the RFM-refined CAM (spec §4, validation mode = RFM with the decoder affinity);
* pseudo-label: WeCLIP's online pseudo-label (RFM + PAR, spec §5) at the image size;
* prediction: the decoder's segmentation with the config's test setting (``test.scales``, ``test.flip``,
  spec §9; ``--ms``/``--no-flip`` as in tools/infer.py);
* ground truth: the mask (white = ignore), when the split has masks.

Image-level labels come from the label file; on a split without entries there (VOC test) only the image,
the prediction (and the mask, if any) are drawn. The CAM and pseudo-label panels are exactly what
``Trainer.validate`` and ``weclip.apis.pseudo_labels`` compute (``PseudoLabelPredictor``).
"""

import argparse
import logging
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from weclip.apis import init_model
from weclip.config import load_config
from weclip.data import build_dataset
from weclip.data.images import save_png
from weclip.data.labels import read_text_lines
from weclip.errors import UserInputError
from weclip.evaluation.predictors import PseudoLabelPredictor, SegmentationPredictor
from weclip.utils.cli import add_runtime_args, parse_scales, run_main
from weclip.utils.dist import init_distributed
from weclip.utils.visualize import (
    GAP,
    cam_overlay,
    hstack_panels,
    label_overlay,
    stack_rows,
    titled,
    upscale,
)

logger = logging.getLogger("weclip")

CAM_CHOICES = ("initial", "refined", "both", "none")


def read_names(names: Optional[str], list_file: Optional[str]) -> Optional[List[str]]:
    """Image names from ``--names a,b,c`` or ``--list FILE`` (one name per line, ``#`` comments)."""
    if names:
        out = [n.strip() for n in names.split(",") if n.strip()]
    elif list_file:
        if not os.path.isfile(list_file):
            raise UserInputError(f"--list: file not found: {list_file}")
        lines = read_text_lines(list_file, "--list name list")
        out = [text.split("#")[0].split()[0] for _, text in lines if text.split("#")[0].strip()]
    else:
        return None
    if not out:
        raise UserInputError(f"no image names given ({'--names' if names else list_file})")
    return out


@torch.no_grad()
def image_panels(
    item: Dict[str, Any],
    segment: SegmentationPredictor,
    pseudo: Optional[PseudoLabelPredictor],
    class_names: Sequence[str],
    cams: str = "both",
    alpha: float = 0.5,
) -> List[Tuple[str, np.ndarray]]:
    """The (title, panel) list of one evaluation item.

    Args:
        item (dict): dataset item: ``image`` (3,H,W) uint8, optional ``mask`` (H,W), ``cls_labels`` (C-1,).
        segment (SegmentationPredictor): the prediction panel (the config's test setting).
        pseudo (PseudoLabelPredictor, optional): CAM and pseudo-label panels (needs ``cls_labels``).
        class_names (Sequence[str]): C names (index = class id).
        cams (str): "initial" | "refined" | "both" | "none".
        alpha (float): overlay weight.

    Returns:
        List[Tuple[str, np.ndarray]]: panels, each HxWx3 uint8.
    """
    rgb = item["image"].permute(1, 2, 0).numpy()
    panels: List[Tuple[str, np.ndarray]] = [("image", rgb)]
    if pseudo is not None and "cls_labels" in item:
        out = pseudo(item)
        for p, class_id in enumerate(out["class_index"].tolist()):
            name = class_names[class_id + 1]
            if cams in ("initial", "both"):
                panels.append((f"CAM {name}", cam_overlay(rgb, out["cams"][p], alpha)))
            if cams in ("refined", "both"):
                panels.append((f"refined {name}", cam_overlay(rgb, out["cams_refined"][p], alpha)))
        panels.append(("pseudo-label", label_overlay(rgb, out["pseudo"], alpha)))
    panels.append(("prediction", label_overlay(rgb, segment(item)["labels"], alpha)))
    if "mask" in item:
        panels.append(("ground truth", label_overlay(rgb, item["mask"], alpha)))
    return panels


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Overlay panels: image / CAM / pseudo-label / prediction / GT",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("config", help="config file, e.g. configs/voc.py")
    parser.add_argument("checkpoint", help="checkpoint")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--names", default=None, help="comma-separated image names")
    which.add_argument("--list", default=None, help="file with one image name per line")
    parser.add_argument("--num", type=int, default=4, help="without --names/--list: the first N")
    parser.add_argument("--split", default=None, help="split list name (default: data.val_split)")
    parser.add_argument(
        "--out-dir", "--out", dest="out_dir", default="work_dirs/vis", help="output folder"
    )
    parser.add_argument("--cams", choices=CAM_CHOICES, default="both", help="which CAM panels")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay weight")
    parser.add_argument(
        "--min-height", type=int, default=160, help="enlarge smaller images to this"
    )
    parser.add_argument(
        "--ms", type=parse_scales, default=None, help="test scales, as tools/infer.py"
    )
    parser.add_argument("--no-flip", action="store_true", help="prediction without flip averaging")
    add_runtime_args(parser, cfg_options_help="override existing config keys", launcher=False)
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error("--num must be >= 1")
    return args


def main(argv: Optional[List[str]] = None) -> List[str]:
    args = parse_args(argv)
    dist_info = init_distributed("none", args.device)
    options = dict(args.cfg_options)
    if args.ms is not None:
        options["test.scales"] = args.ms
    if args.no_flip:
        options["test.flip"] = False
    cfg = load_config(args.config, options)
    split = args.split or cfg.data.val_split
    try:
        dataset = build_dataset(cfg.data, split, train=False, with_labels=True)
    except UserInputError as err:  # no label-file entries for this split (VOC test)
        logger.warning("no image-level labels for split %s (%s): no CAM panels", split, err)
        dataset = build_dataset(cfg.data, split, train=False)
    wanted = read_names(args.names, args.list)
    if wanted:
        index = {n: i for i, n in enumerate(dataset.names)}
        missing = [n for n in wanted if n not in index]
        if missing:
            raise UserInputError(
                f"{len(missing)} name(s) not in split list {dataset.split_file}: {', '.join(missing[:5])}"
            )
        indices = [index[n] for n in wanted]
    else:
        indices = list(range(min(args.num, len(dataset))))
    model = init_model(cfg, args.checkpoint, dist_info.device)
    segment = SegmentationPredictor(
        model, scales=cfg.test.scales, flip=cfg.test.flip, resize_long=cfg.test.resize_long
    )
    pseudo = PseudoLabelPredictor(model) if dataset.with_labels and args.cams != "none" else None
    rows, written = [], []
    for index in indices:
        item = dataset[index]
        panels = image_panels(item, segment, pseudo, cfg.data.class_names, args.cams, args.alpha)
        factor = max(1, math.ceil(args.min_height / item["image"].shape[-2]))
        row = hstack_panels([titled(upscale(p, factor), t) for t, p in panels], gap=GAP)
        path = os.path.join(args.out_dir, f"{item['name']}.png")
        save_png(path, row)
        rows.append(row)
        written.append(path)
        logger.info("%s: %s", path, " | ".join(t for t, _ in panels))
    grid = os.path.join(args.out_dir, "grid.png")
    save_png(grid, stack_rows(rows))
    written.append(grid)
    print(f"{len(rows)} image(s) -> {args.out_dir} (grid: {grid})")
    return written


if __name__ == "__main__":
    run_main(main)
