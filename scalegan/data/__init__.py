"""Datasets: IDX (MNIST, Fashion-MNIST), CIFAR pickles, image folders, `.npz` arrays and packed folders
(`scalegan prepare`: `prepare.py` writes them, `packed.py` reads them).

`open_dataset(spec)` is the entry point; every dataset it returns is an `ImageDataset` that yields float32
`[C, H, W]` images in [-1, 1] and int64 class labels.
"""

from .base import DatasetError, ImageDataset, Mirrored, TensorImageDataset
from .datasets import open_dataset
from .folder import FolderImageDataset, UnreadableImageWarning
from .packed import PackedDataset

__all__ = [
    "DatasetError",
    "FolderImageDataset",
    "ImageDataset",
    "Mirrored",
    "PackedDataset",
    "TensorImageDataset",
    "UnreadableImageWarning",
    "open_dataset",
]
