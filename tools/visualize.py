"""Overlay panels for chosen images: image | CAMs | refined CAMs | pseudo-label | prediction | ground truth.

    python tools/visualize.py configs/voc.py CKPT --names 2007_000033,2007_000042 --out work_dirs/vis
    python tools/visualize.py configs/voc.py CKPT --list names.txt --split train --cams refined

One PNG per image (``OUT/<name>.png``, panels side by side with a title strip) and ``OUT/grid.png`` (all
images, one per row). What each panel shows:

* CAM <class>: the initial Grad-CAM of a present class (spec §3), resized to the image, JET colours;
* refined <class>: the RFM-refined CAM (spec §4, validation mode = RFM with the decoder affinity);
* pseudo-label: WeCLIP's online pseudo-label (RFM + PAR, spec §5) at the image size;
* prediction: the decoder's segmentation with the config's test setting (``test.scales``, ``test.flip``,
  spec §9; ``--ms``/``--no-flip`` as in tools/infer.py);
* ground truth: the mask (white = ignore), when the split has masks.

Image-level labels come from the label file; on a split without entries there (VOC test) only the image,
the prediction (and the mask, if any) are drawn. Like ``tools/eval_pseudo.py --fit crop``, the network sees
the image cropped to a multiple of the patch size (the authors' conv1), the maps are drawn at full size.
"""

import argparse
import logging
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from PIL import Image

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(TOOLS))  # the repository, for `weclip`
sys.path.insert(0, TOOLS)  # the tools' shared module

from _weclip_tools import load_model, names_index, read_name_list  # noqa: E402

from weclip.config import load_config  # noqa: E402
from weclip.data import build_dataset, read_rgb  # noqa: E402
from weclip.engine.inference import crop_to_patch_multiple, predict_from_cfg  # noqa: E402
from weclip.utils.cli import add_runtime_args  # noqa: E402
from weclip.utils.dist import init_distributed  # noqa: E402
from weclip.utils.io import atomic_path  # noqa: E402
from weclip.utils.logging import setup_logger  # noqa: E402
from weclip.utils.visualize import cam_overlay, hstack_panels, label_overlay  # noqa: E402

logger = logging.getLogger("weclip")

CAM_CHOICES = ("initial", "refined", "both", "none")
TITLE_HEIGHT = 16  # pixels of the title strip above each panel
GAP = 4  # white pixels between panels and between grid rows


def titled(panel: np.ndarray, title: str) -> np.ndarray:
    """A panel with a white title strip of ``TITLE_HEIGHT`` pixels on top (text clipped to the width).

    Args:
        panel (np.ndarray): HxWx3 uint8.
        title (str): text.

    Returns:
        np.ndarray: (TITLE_HEIGHT + H)xWx3 uint8.
    """
    strip = np.full((TITLE_HEIGHT, panel.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(
        strip,
        title,
        (2, TITLE_HEIGHT - 4),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.4,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    return np.concatenate([strip, panel], axis=0)


def upscale(panel: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (tiny images stay readable)."""
    if factor <= 1:
        return panel
    return cv2.resize(panel, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)


def stack_rows(rows: Sequence[np.ndarray], gap: int = GAP) -> np.ndarray:
    """Rows of different widths one above the other, padded white on the right, ``gap`` white rows between."""
    width = max(r.shape[1] for r in rows)
    parts = []
    for i, row in enumerate(rows):
        if i:
            parts.append(np.full((gap, width, 3), 255, dtype=np.uint8))
        pad = np.full((row.shape[0], width - row.shape[1], 3), 255, dtype=np.uint8)
        parts.append(np.concatenate([row, pad], axis=1))
    return np.concatenate(parts, axis=0)


def save_rgb_png(path: str, rgb: np.ndarray) -> None:
    """Write an HxWx3 uint8 RGB image as PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


@torch.no_grad()
def image_panels(
    model: torch.nn.Module,
    item: Dict[str, Any],
    rgb: np.ndarray,
    test_cfg: Any,
    class_names: Sequence[str],
    cams: str = "both",
    alpha: float = 0.5,
) -> List[Tuple[str, np.ndarray]]:
    """The (title, panel) list of one evaluation item.

    Args:
        model (nn.Module): ``WeCLIP`` in eval mode.
        item (dict): dataset item: ``image`` (3,H,W) normalised, optional ``mask`` (H,W), ``cls_labels`` (C-1,).
        rgb (np.ndarray): HxWx3 uint8 original image.
        test_cfg: ``cfg.test`` (scales, flip, resize_long).
        class_names (Sequence[str]): C names (index = class id).
        cams (str): "initial" | "refined" | "both" | "none".
        alpha (float): overlay weight.

    Returns:
        List[Tuple[str, np.ndarray]]: panels, each HxWx3 uint8.
    """
    device = next(model.parameters()).device
    patch = int(model.backbone.patch_size)
    image = item["image"][None].to(device)
    size = (int(image.shape[-2]), int(image.shape[-1]))
    panels: List[Tuple[str, np.ndarray]] = [("image", rgb)]
    if "cls_labels" in item:
        out = model(
            crop_to_patch_multiple(image, patch), item["cls_labels"][None].to(device), out_size=size
        )
        for p, class_id in enumerate(out["class_index"].tolist()):
            name = class_names[class_id + 1]
            if cams in ("initial", "both"):
                panels.append((f"CAM {name}", cam_overlay(rgb, out["cams"][p], alpha)))
            if cams in ("refined", "both"):
                panels.append((f"refined {name}", cam_overlay(rgb, out["cams_refined"][p], alpha)))
        panels.append(("pseudo-label", label_overlay(rgb, out["pseudo_labels"][0], alpha)))
    pred = predict_from_cfg(lambda x: model(x)["seg_logits"], image, test_cfg, patch, out_size=size)
    panels.append(("prediction", label_overlay(rgb, pred.labels[0], alpha)))
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
    parser.add_argument("checkpoint", help="training checkpoint")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--names", default=None, help="comma-separated image names")
    which.add_argument("--list", default=None, help="file with one image name per line")
    parser.add_argument(
        "--num", type=int, default=4, help="without --names/--list: the first N images"
    )
    parser.add_argument("--split", default=None, help="split list name (default: data.val_split)")
    parser.add_argument("--out", default="work_dirs/vis", help="output folder")
    parser.add_argument(
        "--cams", choices=CAM_CHOICES, default="both", help="which CAM panels to draw"
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay weight")
    parser.add_argument(
        "--min-height", type=int, default=160, help="enlarge smaller images (nearest) to this"
    )
    parser.add_argument("--ms", default=None, help="test scales, as in tools/infer.py")
    parser.add_argument("--no-flip", action="store_true", help="prediction without flip averaging")
    add_runtime_args(parser, cfg_options_help="override existing config keys", launcher=False)
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error("--num must be >= 1")
    return args


def main(argv: Optional[List[str]] = None) -> List[str]:
    args = parse_args(argv)
    setup_logger(None)
    dist_info = init_distributed("none", args.device)
    cfg = load_config(args.config, args.cfg_options)
    if args.ms:
        cfg.test.scales = tuple(float(s) for s in args.ms.split(","))
    if args.no_flip:
        cfg.test.flip = False
    split = args.split or cfg.data.val_split
    try:
        dataset = build_dataset(cfg.data, split, train=False, with_labels=True)
    except (ValueError, FileNotFoundError) as err:
        # no label-file entries for this split (VOC test): no CAM / pseudo-label panels
        logger.warning(
            "no image-level labels for split %s (%s): CAM and pseudo-label panels skipped",
            split,
            err,
        )
        dataset = build_dataset(cfg.data, split, train=False)
    wanted = read_name_list(args.names, args.list)
    indices = (
        names_index(dataset.names, wanted, dataset.split_file)
        if wanted
        else list(range(min(args.num, len(dataset))))
    )
    model, _ = load_model(cfg, args.checkpoint, dist_info.device)
    rows, written = [], []
    for index in indices:
        item = dataset[index]
        name = item["name"]
        rgb = read_rgb(dataset.image_path(name))
        panels = image_panels(
            model, item, rgb, cfg.test, cfg.data.class_names, args.cams, args.alpha
        )
        factor = max(1, math.ceil(args.min_height / rgb.shape[0]))
        row = hstack_panels([titled(upscale(p, factor), t) for t, p in panels], gap=GAP)
        path = os.path.join(args.out, f"{name}.png")
        save_rgb_png(path, row)
        rows.append(row)
        written.append(path)
        logger.info("%s: %s", path, " | ".join(t for t, _ in panels))
    grid = os.path.join(args.out, "grid.png")
    save_rgb_png(grid, stack_rows(rows))
    written.append(grid)
    print(f"{len(rows)} image(s) -> {args.out} (grid: {grid})")
    return written


if __name__ == "__main__":
    main()
