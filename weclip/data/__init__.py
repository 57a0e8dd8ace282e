"""Datasets, augmentation, sampler and label files (spec §8, §10; docs/architecture.md)."""

from weclip.data.build import DATASETS, build_dataset, build_train_loader
from weclip.data.coco import COCODataset
from weclip.data.dataset import SegmentationDataset
from weclip.data.images import read_mask, read_rgb
from weclip.data.labels import read_label_file, read_split
from weclip.data.sampler import InfiniteSampler

__all__ = [
    "DATASETS",
    "build_dataset",
    "build_train_loader",
    "COCODataset",
    "SegmentationDataset",
    "InfiniteSampler",
    "read_rgb",
    "read_mask",
    "read_split",
    "read_label_file",
]
