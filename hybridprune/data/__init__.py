"""Datasets as uint8 tensors (cifar10, cifar100, image_folder, digits) and a device-resident loader."""

from hybridprune.data.datasets import (
    DataSplits,
    Split,
    default_cache_dir,
    list_datasets,
    load_dataset,
    load_raw,
)
from hybridprune.data.loader import DeviceLoader, augment_batch, calibration_batches
from hybridprune.data.readers import FORMATS, DatasetFormat, RawDataset
from hybridprune.data.splits import stratified_split

__all__ = [
    "FORMATS",
    "DataSplits",
    "DatasetFormat",
    "DeviceLoader",
    "RawDataset",
    "Split",
    "augment_batch",
    "calibration_batches",
    "default_cache_dir",
    "list_datasets",
    "load_dataset",
    "load_raw",
    "stratified_split",
]
