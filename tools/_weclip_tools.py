"""Pieces shared by ``tools/infer.py``, ``tools/eval_pseudo.py`` and ``tools/visualize.py``.

Loading a trained model for evaluation, naming datasets in reports, palette PNGs (read and written
atomically), sharding a split over ranks and default output folders. Not a public API: the tools import it
from their own directory.
"""

import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from weclip.engine.checkpoint import CHECKPOINT_DIR, load_decoder_checkpoint
from weclip.models.weclip import WeCLIP, build_weclip
from weclip.utils.io import atomic_path
from weclip.utils.seed import seed_everything
from weclip.utils.visualize import voc_palette

__all__ = [
    "REPO",
    "dataset_name",
    "load_model",
    "checkpoint_work_dir",
    "shard_indices",
    "save_label_png",
    "read_label_png",
    "read_name_list",
    "names_index",
    "slug",
]

logger = logging.getLogger("weclip")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dataset_name(data_cfg: Mapping[str, Any]) -> str:
    """A short dataset name for tables: "VOC" (21-class VOC layout), "COCO", else the root's folder name.

    Args:
        data_cfg (Mapping): ``cfg.data``.

    Returns:
        str: e.g. "VOC", "COCO", "toy".
    """
    kind = str(data_cfg.get("type", ""))
    if kind == "coco":
        return "COCO"
    if kind == "voc" and int(data_cfg.get("num_classes", 0)) == 21:
        return "VOC"
    return os.path.basename(os.path.normpath(str(data_cfg.get("root", "data")))) or kind


def load_model(
    cfg: Any, checkpoint: Optional[str], device: torch.device
) -> Tuple[WeCLIP, Dict[str, Any]]:
    """Build WeCLIP from ``cfg``, load the decoder of ``checkpoint`` (if any), eval mode, on ``device``.

    Args:
        cfg: the resolved config.
        checkpoint (str, optional): a training checkpoint ``iter_N.pth`` or a bare decoder state dict;
            None keeps the random decoder (only meaningful for the CLIP-only pseudo-label rows).
        device (torch.device): where the model runs.

    Returns:
        Tuple[WeCLIP, dict]: the model and ``{"checkpoint", "iteration", "train_seed"}`` (None where
        unknown).
    """
    if str(cfg.model.backbone.weights) == "random":
        # A random CLIP (tests, benchmarks) is only the trained one if it is drawn the same way: the trainer
        # seeds with train.seed right before build_weclip, so do the same with the checkpoint's seed.
        seed = int(cfg.train.seed)
        if checkpoint is not None:
            try:
                state = torch.load(checkpoint, map_location="cpu", weights_only=False)
            except Exception:  # unreadable: load_decoder_checkpoint below reports it with the path
                state = None
            if isinstance(state, Mapping) and isinstance(state.get("config"), Mapping):
                seed = int((state["config"].get("train") or {}).get("seed", seed))
        logger.warning(
            "model.backbone.weights='random': CLIP initialised with seed %d (train.seed)", seed
        )
        seed_everything(seed)
    model = build_weclip(cfg)
    info: Dict[str, Any] = {"checkpoint": checkpoint, "iteration": None, "train_seed": None}
    if checkpoint is not None:
        loaded = load_decoder_checkpoint(model, checkpoint)
        info["iteration"] = loaded.get("iteration")
        train_cfg = (loaded.get("config") or {}).get("train") or {}
        info["train_seed"] = train_cfg.get("seed")
    model.eval()
    return model.to(device), info


def checkpoint_work_dir(checkpoint: str) -> str:
    """The run folder of a checkpoint: ``WORK_DIR`` for ``WORK_DIR/checkpoints/iter_N.pth``, else its folder."""
    folder = os.path.dirname(os.path.abspath(checkpoint))
    if os.path.basename(folder) == CHECKPOINT_DIR:
        return os.path.dirname(folder)
    return folder


def shard_indices(total: int, rank: int, world_size: int) -> List[int]:
    """Rank ``rank`` takes images ``rank, rank + W, rank + 2W, ...`` of the first ``total`` (no padding,
    so every image is counted exactly once over all ranks).

    Args:
        total (int): images to process.
        rank (int): this process's rank.
        world_size (int): W.

    Returns:
        List[int]: dataset indices of this rank.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, {world_size})")
    return list(range(rank, total, world_size))


def save_label_png(path: str, labels: Any, num_colors: int = 256) -> None:
    """Write a label map as an indexed PNG with the VOC palette (pixel value = class id), atomically.

    Args:
        path (str): ``.png`` file.
        labels (Tensor | ndarray): HxW integer class ids in [0, 255].
        num_colors (int): palette entries written (256: the full VOC map, 255 = white).
    """
    lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"{path}: label map must be HxW, got shape {lab.shape}")
    if lab.size and (lab.min() < 0 or lab.max() > 255):
        raise ValueError(
            f"{path}: class ids must lie in [0, 255] for a PNG, got [{lab.min()}, {lab.max()}]"
        )
    image = Image.fromarray(lab.astype(np.uint8), mode="P")
    image.putpalette(voc_palette(num_colors).reshape(-1).tolist())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def read_label_png(path: str, size: Optional[Tuple[int, int]] = None) -> Optional[np.ndarray]:
    """Read back a label PNG written by :func:`save_label_png`; None when it is unreadable or of another size.

    Args:
        path (str): the PNG.
        size (Tuple[int, int], optional): expected (H, W).

    Returns:
        np.ndarray | None: HxW uint8 class ids.
    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("P", "L"):
                return None
            labels = np.array(image, dtype=np.uint8)
    except (OSError, ValueError):
        return None
    if size is not None and labels.shape != tuple(size):
        return None
    return labels


def read_name_list(names: Optional[str], list_file: Optional[str]) -> Optional[List[str]]:
    """Image names from ``--names a,b,c`` or ``--list FILE`` (one name per line, ``#`` comments).

    Returns:
        List[str] | None: the names, or None when neither is given.
    """
    if names:
        out = [n.strip() for n in names.split(",") if n.strip()]
    elif list_file:
        if not os.path.isfile(list_file):
            raise FileNotFoundError(f"name list not found: {list_file}")
        with open(list_file) as f:
            out = [line.split("#")[0].split()[0] for line in f if line.split("#")[0].strip()]
    else:
        return None
    if not out:
        raise ValueError(f"no image names given ({'--names' if names else list_file})")
    return out


def slug(text: str) -> str:
    """A folder-safe version of a label: "MS(1,0.75)+flip+CRF" -> "ms_1_0.75_flip_crf"."""
    out = "".join(c.lower() if c.isalnum() or c == "." else "_" for c in text)
    return "_".join(part for part in out.split("_") if part)


def names_index(dataset_names: Sequence[str], wanted: Sequence[str], split_file: str) -> List[int]:
    """Dataset indices of ``wanted`` names; ``ValueError`` naming the unknown ones and the split list."""
    index = {n: i for i, n in enumerate(dataset_names)}
    missing = [n for n in wanted if n not in index]
    if missing:
        raise ValueError(
            f"{len(missing)} name(s) not in split list {split_file}: {', '.join(missing[:5])}"
        )
    return [index[n] for n in wanted]
