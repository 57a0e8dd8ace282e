"""Config-driven construction of datasets and of the training loader (reads ``cfg.data``)."""

from typing import Any, Dict, Mapping, Optional, Type

from torch.utils.data import DataLoader

from weclip.data.coco import COCODataset
from weclip.data.dataset import SegmentationDataset
from weclip.data.sampler import InfiniteSampler

__all__ = ["DATASETS", "build_dataset", "build_train_loader"]

# data.type -> class (a plain dict, no registry framework)
DATASETS: Dict[str, Type[SegmentationDataset]] = {
    "folder": SegmentationDataset,  # the VOC folder layout: VOC, the toy world, Pets
    "coco": COCODataset,
}


def build_dataset(
    data_cfg: Mapping[str, Any], split: str, train: bool, with_labels: Optional[bool] = None
) -> SegmentationDataset:
    """Build the dataset of ``split`` from a validated ``cfg.data`` (``weclip.schema.DataConfig``).

    Args:
        data_cfg (Mapping): ``cfg.data``.
        split (str): split name (``<split_dir>/<split>.txt``), e.g. ``cfg.data.train_split``.
        train (bool): augmented training items, or full-image evaluation items.
        with_labels (bool, optional): attach ``cls_labels`` to evaluation items (always on for
            training).

    Returns:
        SegmentationDataset: a ``SegmentationDataset`` or ``COCODataset``.
    """
    return DATASETS[data_cfg["type"]](
        root=data_cfg["root"],
        split_dir=data_cfg["split_dir"],
        split=split,
        label_file=data_cfg["label_file"],
        num_classes=data_cfg["num_classes"],
        train=train,
        crop_size=data_cfg["crop_size"],
        scale_range=data_cfg["scale_range"],
        flip_prob=data_cfg["flip_prob"],
        img_dir=data_cfg["img_dir"],
        mask_dir=data_cfg["mask_dir"],
        img_suffix=data_cfg["img_suffix"],
        mask_suffix=data_cfg["mask_suffix"],
        with_mask=split not in tuple(data_cfg["mask_free_splits"]),
        train_mask_dir=data_cfg["train_mask_dir"],
        with_labels=with_labels,
        ignore_index=data_cfg["ignore_index"],
    )


def build_train_loader(
    dataset: SegmentationDataset,
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
        dataset (SegmentationDataset): a training dataset (``train=True``).
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
