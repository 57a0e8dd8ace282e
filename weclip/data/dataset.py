"""A segmentation dataset in the PASCAL VOC folder layout: VOC 2012 (+SBD), the toy world, Oxford-IIIT Pet,
and the base of COCO (spec §8, §10).

Layout (``tools/prepare_voc.py`` writes the lists and the label file; ``data.type = "folder"``)::

    <root>/<img_dir>/<name><img_suffix>        JPEGImages/2007_000032.jpg
    <root>/<mask_dir>/<name><mask_suffix>      SegmentationClassAug/2007_000032.png (0..C-1, 255)
    <split_dir>/<split>.txt                     one name per line
    <split_dir>/<label_file>                    "name id id ..." (0-based foreground ids)

Items:

* training (``train=True``), indexed by ``(index, aug_seed)`` from ``InfiniteSampler``::

      {"image": (3, S, S) uint8 RGB, "cls_labels": (C-1,) float32 multi-hot,
       "name": str, "valid": (S, S) bool}

* evaluation (``train=False``), indexed by ``int`` (or ``(index, seed)``, seed ignored); no
  augmentation::

      {"image": (3, H, W) uint8 RGB, "mask": (H, W) int64, "name": str}

  without ``"mask"`` when ``with_mask=False`` (VOC test), plus ``"cls_labels"`` when
  ``with_labels=True``.

Images stay uint8 RGB: the model normalises them (its ``pixel_mean``/``pixel_std``), and the same tensor
serves DenseCRF's bilateral term and overlays, so each image is read once. Image-level labels come only from
the label file (never from masks; spec §11 row 9).
"""

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from weclip.data.images import read_mask, read_rgb
from weclip.data.labels import ids_to_multihot, read_label_file, read_split
from weclip.data.transforms import augment, to_chw
from weclip.errors import DataError, MissingFileError

__all__ = ["SegmentationDataset"]

logger = logging.getLogger("weclip")

Key = Union[int, Tuple[int, int]]


class SegmentationDataset(Dataset):
    """Image-level-labelled segmentation dataset in the VOC layout (see the module docstring).

    Args:
        root (str): dataset root holding ``img_dir`` and ``mask_dir``.
        split_dir (str): folder of the split lists and the label file.
        split (str): split name; the list is ``<split_dir>/<split>.txt``.
        label_file (str): label file name inside ``split_dir``.
        num_classes (int): C, including background.
        train (bool): training items (augmented crops) or evaluation items (full images).
        crop_size (int): S (training only). Default: 320.
        scale_range (Sequence[float], optional): random rescale range (training only). Default:
            (0.5, 2.0).
        flip_prob (float): horizontal flip probability (training only). Default: 0.5.
        img_dir (str): image folder under ``root``. Default: "JPEGImages".
        mask_dir (str): mask folder under ``root``. Default: "SegmentationClassAug".
        img_suffix (str): image file suffix. Default: ".jpg".
        mask_suffix (str): mask file suffix. Default: ".png".
        with_mask (bool): evaluation items carry the mask (False for VOC test). Default: True.
        train_mask_dir (str, optional): training items also carry a ``mask`` target read from this folder
            (under ``root`` unless absolute; ``<name><mask_suffix>``), augmented with the image: pseudo-masks
            for a second-stage network, or the ground truth (``mask_dir``) for a fully supervised one. None
            (WeCLIP's weak supervision): training never reads a mask.
        with_labels (bool, optional): load the label file; default True for training, False for
            evaluation.
        ignore_index (int): mask value of ignored pixels. Default: 255.
        check_files (bool): check at construction that every image (and mask) exists. Default: True.
    """

    def __init__(
        self,
        *,
        root: str,
        split_dir: str,
        split: str,
        label_file: str,
        num_classes: int,
        train: bool,
        crop_size: int = 320,
        scale_range: Optional[Sequence[float]] = (0.5, 2.0),
        flip_prob: float = 0.5,
        img_dir: str = "JPEGImages",
        mask_dir: str = "SegmentationClassAug",
        img_suffix: str = ".jpg",
        mask_suffix: str = ".png",
        with_mask: bool = True,
        train_mask_dir: Optional[str] = None,
        with_labels: Optional[bool] = None,
        ignore_index: int = 255,
        check_files: bool = True,
    ) -> None:
        super().__init__()
        self.root = root
        self.split = split
        self.num_classes = int(num_classes)
        self.train = bool(train)
        self.crop_size = int(crop_size)
        self.scale_range = None if scale_range is None else tuple(float(v) for v in scale_range)
        self.flip_prob = float(flip_prob)
        self.img_dir, self.mask_dir = img_dir, mask_dir
        self.img_suffix, self.mask_suffix = img_suffix, mask_suffix
        self.with_mask = bool(with_mask) and not self.train
        self.train_mask_dir = train_mask_dir if self.train else None
        self.with_labels = self.train if with_labels is None else bool(with_labels)
        if self.train and not self.with_labels:
            raise ValueError("training items need image-level labels (with_labels=True)")
        self.ignore_index = int(ignore_index)

        self.split_file = os.path.join(split_dir, f"{split}.txt")
        self.names: List[str] = read_split(self.split_file)
        self.label_path = os.path.join(split_dir, label_file)
        self.labels: Dict[str, np.ndarray] = {}
        if self.with_labels:
            self.labels = self._labels_for_split(read_label_file(self.label_path, self.num_classes))
        for name in self.names:
            self._check_name(name)
        if check_files:
            self._check_files()
        logger.info(
            "%s %s: %d images (%s)",
            type(self).__name__,
            split,
            len(self.names),
            "train" if train else "eval",
        )

    # ------------------------------------------------------------------ paths (overridden by COCO)
    def _check_name(self, name: str) -> None:
        """Hook for layouts whose paths are derived from the name (COCO); VOC accepts any name."""

    def image_path(self, name: str) -> str:
        """Path of the image of ``name``."""
        return os.path.join(self.root, self.img_dir, name + self.img_suffix)

    def mask_path(self, name: str) -> str:
        """Path of the mask of ``name``."""
        return os.path.join(self.root, self.mask_dir, name + self.mask_suffix)

    def target_path(self, name: str) -> str:
        """Path of the training target of ``name`` (``train_mask_dir``; the masks themselves when it is
        ``mask_dir``)."""
        if self.train_mask_dir == self.mask_dir:
            return self.mask_path(name)
        return os.path.join(self.root, self.train_mask_dir, name + self.mask_suffix)

    # ------------------------------------------------------------------ checks
    def _labels_for_split(self, labels: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        missing = [n for n in self.names if n not in labels]
        if missing:
            raise DataError(
                f"{len(missing)} name(s) of split list {self.split_file} are missing from "
                f"label file {self.label_path} (first: {', '.join(missing[:5])})"
            )
        if self.train:
            used = np.zeros(self.num_classes - 1, dtype=bool)
            for name in self.names:
                used[labels[name]] = True
            if not used.all():
                logger.warning(
                    "%s: foreground ids %s never occur in split %s; "
                    "does num_classes=%d match the data?",
                    self.label_path,
                    np.flatnonzero(~used).tolist(),
                    self.split,
                    self.num_classes,
                )
        return {n: labels[n] for n in self.names}

    def _check_files(self) -> None:
        kinds = (
            [("image", self.image_path)]
            + ([("mask", self.mask_path)] if self.with_mask else [])
            + ([("training mask", self.target_path)] if self.train_mask_dir else [])
        )
        for kind, path_of in kinds:
            missing = [path_of(n) for n in self.names if not os.path.isfile(path_of(n))]
            if missing:
                raise MissingFileError(
                    f"{len(missing)} {kind} file(s) of split list {self.split_file} not found "
                    f"(first: {', '.join(missing[:3])})"
                )

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return len(self.names)

    def _split_key(self, key: Key) -> Tuple[int, Optional[int]]:
        if isinstance(key, (tuple, list)) and len(key) == 2:
            return int(key[0]), int(key[1])
        if isinstance(key, (int, np.integer)):
            return int(key), None
        raise TypeError(f"dataset key must be an index or (index, aug_seed), got {key!r}")

    def __getitem__(self, key: Key) -> Dict[str, Any]:
        index, aug_seed = self._split_key(key)
        name = self.names[index]
        image = read_rgb(self.image_path(name))  # (H, W, 3) uint8
        if self.train:
            if aug_seed is None:
                raise TypeError(
                    f"training item {index} needs a key (index, aug_seed), e.g. from "
                    "weclip.data.sampler.InfiniteSampler; augmentation never uses global RNG state"
                )
            return self._train_item(name, image, np.random.default_rng(aug_seed))
        return self._eval_item(name, image)

    def _train_item(self, name: str, image: np.ndarray, rng: np.random.Generator) -> Dict[str, Any]:
        target = (
            self._read_mask(self.target_path(name), image, name) if self.train_mask_dir else None
        )
        crop, valid, target = augment(
            image,
            rng,
            crop_size=self.crop_size,
            scale_range=self.scale_range,
            flip_prob=self.flip_prob,
            mask=target,
        )
        item = {
            "image": torch.from_numpy(to_chw(crop)),  # (3, S, S) uint8
            "cls_labels": torch.from_numpy(
                ids_to_multihot(self.labels[name], self.num_classes)
            ),  # (C-1,)
            "name": name,
            "valid": torch.from_numpy(valid),  # (S, S) bool
        }
        if target is not None:
            item["mask"] = torch.from_numpy(target.astype(np.int64))  # (S, S), 255 on padding
        return item

    def _read_mask(self, path: str, image: np.ndarray, name: str) -> np.ndarray:
        """A mask of the image's size whose values are class ids or ignore (file named otherwise)."""
        mask = read_mask(path)  # (H, W) uint8
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"Mask {path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but image "
                f"{self.image_path(name)} is {image.shape[1]}x{image.shape[0]}"
            )
        bad = (mask >= self.num_classes) & (mask != self.ignore_index)
        if bad.any():
            raise DataError(
                f"Mask {path}: value {int(mask[bad][0])} is neither a class id "
                f"0..{self.num_classes - 1} nor ignore ({self.ignore_index})"
            )
        return mask

    def _eval_item(self, name: str, image: np.ndarray) -> Dict[str, Any]:
        item: Dict[str, Any] = {
            "image": torch.from_numpy(to_chw(image)),  # (3, H, W) uint8
            "name": name,
        }
        if self.with_mask:
            mask = self._read_mask(self.mask_path(name), image, name)
            item["mask"] = torch.from_numpy(mask.astype(np.int64))  # (H, W)
        if self.with_labels:
            item["cls_labels"] = torch.from_numpy(
                ids_to_multihot(self.labels[name], self.num_classes)
            )
        return item
