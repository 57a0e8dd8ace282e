"""Config-driven construction of datasets and of the training loader (reads ``cfg.data``)."""

from typing import Any, Dict, Mapping, Optional, Type

from torch.utils.data import DataLoader

from weclip.data.coco import COCODataset
from weclip.data.sampler import InfiniteSampler
from weclip.data.voc import VOCDataset

__all__ = ["DATASETS", "build_dataset", "build_train_loader"]

# data.type -> class (a plain dict, no registry framework; the toy world uses "voc")
DATASETS: Dict[str, Type[VOCDataset]] = {"voc": VOCDataset, "coco": COCODataset}


def _require(data_cfg: Mapping[str, Any], key: str) -> Any:
    if key not in data_cfg:
        raise KeyError(f"data config has no '{key}' (see configs/_base_/datasets/common.py)")
    return data_cfg[key]


def build_dataset(
    data_cfg: Mapping[str, Any], split: str, train: bool, with_labels: Optional[bool] = None
) -> VOCDataset:
    """Build the dataset of ``split`` from ``cfg.data``.

    Keys read: ``type``, ``root``, ``split_dir``, ``label_file``, ``num_classes``, ``normalize``,
    ``norm_constants``, ``crop_size``, ``scale_range``, ``flip_prob``, ``ignore_index`` and, with
    the VOC defaults when absent, ``img_dir``, ``mask_dir``, ``img_suffix``, ``mask_suffix``,
    ``mask_free_splits`` (splits without masks, e.g. VOC test).

    Args:
        data_cfg (Mapping): ``cfg.data``.
        split (str): split name (``<split_dir>/<split>.txt``), e.g. ``cfg.data.train_split``.
        train (bool): augmented training items, or full-image evaluation items.
        with_labels (bool, optional): attach ``cls_labels`` to evaluation items (always on for
            training).

    Returns:
        VOCDataset: a ``VOCDataset`` or ``COCODataset``.
    """
    kind = _require(data_cfg, "type")
    if kind not in DATASETS:
        raise ValueError(f"data.type={kind!r} is unknown; known: {', '.join(sorted(DATASETS))}")
    norm_name = _require(data_cfg, "normalize")
    constants = _require(data_cfg, "norm_constants")
    if norm_name not in constants:
        raise ValueError(
            f"data.normalize={norm_name!r} is not in data.norm_constants ({', '.join(constants)})"
        )
    mask_free = tuple(data_cfg.get("mask_free_splits", ("test",)))
    return DATASETS[kind](
        root=_require(data_cfg, "root"),
        split_dir=_require(data_cfg, "split_dir"),
        split=split,
        label_file=_require(data_cfg, "label_file"),
        num_classes=_require(data_cfg, "num_classes"),
        train=train,
        mean=constants[norm_name]["mean"],
        std=constants[norm_name]["std"],
        crop_size=_require(data_cfg, "crop_size"),
        scale_range=_require(data_cfg, "scale_range"),
        flip_prob=_require(data_cfg, "flip_prob"),
        img_dir=data_cfg.get("img_dir", "JPEGImages"),
        mask_dir=data_cfg.get("mask_dir", "SegmentationClassAug"),
        img_suffix=data_cfg.get("img_suffix", ".jpg"),
        mask_suffix=data_cfg.get("mask_suffix", ".png"),
        with_mask=split not in mask_free,
        with_labels=with_labels,
        ignore_index=_require(data_cfg, "ignore_index"),
    )


def build_train_loader(
    dataset: VOCDataset,
    *,
    batch_size: int,
    seed: int,
    start_iter: int = 0,
    num_workers: int = 0,
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
) -> DataLoader:
    """Endless training loader: ``InfiniteSampler`` keys, per-rank batches, exact resume.

    Args:
        dataset (VOCDataset): a training dataset (``train=True``).
        batch_size (int): images per rank per iteration.
        seed (int): sampler seed (order and augmentation).
        start_iter (int): iterations already done; the loader continues at sample
            ``start_iter·batch_size``.
        num_workers (int): loader processes (results do not depend on it).
        rank (int, optional): default from torch.distributed.
        world_size (int, optional): default from torch.distributed.

    Returns:
        DataLoader: yields dicts of batched tensors (``name`` as a list); never raises
        StopIteration.
    """
    if not dataset.train:
        raise ValueError("build_train_loader needs a training dataset (train=True)")
    sampler = InfiniteSampler(
        len(dataset), seed=seed, rank=rank, world_size=world_size, start=start_iter * batch_size
    )
    extra: Dict[str, Any] = (
        dict(persistent_workers=True, prefetch_factor=4) if num_workers > 0 else {}
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=True,
        **extra,
    )
