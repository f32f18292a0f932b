"""The dataset contract every loader returns, and the array helpers the in-memory loaders share.

An `ImageDataset` yields `(x, y)`: `x` float32 `[C, H, W]` in [-1, 1], `y` an int64 scalar class index (0 when
the dataset is unlabelled). Formats small enough to fit in memory (IDX, CIFAR, NPZ) are decoded once into a
`TensorImageDataset`, whose uint8 `tensors` a training loop may move to the accelerator whole; image folders
are decoded lazily (see `folder.py`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

# Labels at or above this are almost certainly a wrong column or a corrupt file, not a real class count;
# catching them here beats an embedding table with millions of rows.
MAX_CLASSES = 1_000_000

# One resampling filter for every resize in the package, so a folder and an array of the same pictures give
# the same pixels. PIL antialiases BILINEAR when it downscales.
RESAMPLE = Image.Resampling.BILINEAR


class DatasetError(ValueError):
    """A problem with a user's data or dataset spec; the message says what to do about it."""


class ImageDataset(Dataset):
    """Square images with optional class labels, as float32 `[C, H, W]` in [-1, 1] and int64 labels.

    Attributes: `resolution` (H == W), `channels` (1 or 3), `num_classes` (0 = unlabelled), `class_names`
    (`len == num_classes`), `tensors` (`(uint8 [N, C, H, W], int64 [N])` for in-memory datasets, else None).
    """

    tensors: tuple[torch.Tensor, torch.Tensor] | None = None

    def __init__(
        self, *, kind: str, path: str, split: str, resolution: int, channels: int, class_names: list[str]
    ) -> None:
        self.kind = kind
        self.path = path
        self.split = split
        self.resolution = resolution
        self.channels = channels
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def pixels(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Item ``i`` as uint8 ``[C, H, W]`` and its label: what ``__getitem__`` returns before ``to_float``. Data
        loader workers hand these over (a quarter of float32's bytes) and the loop converts them. Datasets that
        read or decode per item implement it; ``has_pixels`` says whether one does."""
        raise NotImplementedError(f"{type(self).__name__} has no uint8 items")

    @property
    def has_pixels(self) -> bool:
        return type(self).pixels is not ImageDataset.pixels

    @property
    def skipped(self) -> int:
        """How many source images were left out because they could not be read."""
        return 0

    def class_counts(self) -> torch.Tensor | None:
        """Images per class, int64 [num_classes], from the labels alone (no image is decoded); None when the
        dataset is unlabelled."""
        if not self.num_classes:
            return None
        labels = self.tensors[1] if self.tensors is not None else getattr(self, "labels", None)
        if labels is None:
            raise NotImplementedError(f"{type(self).__name__} does not say its class counts")
        return torch.bincount(torch.as_tensor(labels).reshape(-1), minlength=self.num_classes)[: self.num_classes]

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary, written beside training runs so a run records what it trained on."""
        return {
            "kind": self.kind,
            "path": self.path,
            "split": self.split,
            "size": len(self),
            "resolution": self.resolution,
            "channels": self.channels,
            "num_classes": self.num_classes,
            "skipped": self.skipped,
        }

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"{type(self).__name__}({fields})"


class TensorImageDataset(ImageDataset):
    """An `ImageDataset` held in memory as uint8 `[N, C, H, W]` images and int64 `[N]` labels."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        kind: str,
        path: str,
        split: str,
        class_names: list[str],
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[2] != images.shape[3]:
            raise TypeError(
                f"images must be uint8 [N, C, H, W] with H == W, got {images.dtype} {images.shape}"
            )
        if labels.shape != images.shape[:1]:
            raise TypeError(f"labels must be [N] = {images.shape[:1]}, got {labels.shape}")
        super().__init__(
            kind=kind,
            path=path,
            split=split,
            resolution=images.shape[-1],
            channels=images.shape[1],
            class_names=class_names,
        )
        self.tensors = (images, labels.to(torch.int64))

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.tensors
        return to_float(images[i]), labels[i]


class Mirrored(ImageDataset):
    """`dataset` and its left-right flipped copy (training's `--mirror`): `2 N` items, item `N + i` being item `i`
    flipped. An in-memory dataset's `tensors` hold both halves (twice its memory), so the training loop still
    moves them to the accelerator whole."""

    def __init__(self, dataset: ImageDataset) -> None:
        super().__init__(kind=dataset.kind, path=dataset.path, split=dataset.split, resolution=dataset.resolution,
                         channels=dataset.channels, class_names=dataset.class_names)
        self.dataset = dataset
        if dataset.tensors is not None:
            images, labels = dataset.tensors
            self.tensors = (torch.cat([images, images.flip(-1)]), torch.cat([labels, labels]))

    def __len__(self) -> int:
        return 2 * len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._item(i, self.dataset.__getitem__)

    def pixels(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._item(i, self.dataset.pixels)

    @property
    def has_pixels(self) -> bool:
        return self.dataset.has_pixels

    def _item(self, i: int, read) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.dataset)
        if not -2 * n <= i < 2 * n:
            raise IndexError(f"index {i} out of range for {2 * n} images")
        i %= 2 * n
        x, y = read(i % n)
        return (x.flip(-1) if i >= n else x), y

    @property
    def skipped(self) -> int:
        return self.dataset.skipped

    def class_counts(self) -> torch.Tensor | None:
        counts = self.dataset.class_counts()
        return None if counts is None else 2 * counts

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "mirror": True}


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1] (v / 127.5 - 1), the range generators output."""
    return images.to(torch.float32) / 127.5 - 1.0


def check_size(resolution: int | None, channels: int | None) -> None:
    """Reject resolutions and channel counts no loader can produce, before any file is read."""
    if resolution is not None and (not isinstance(resolution, int) or resolution < 1):
        raise DatasetError(f"resolution must be a positive integer, got {resolution!r}")
    if channels is not None and channels not in (1, 3):
        raise DatasetError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")


def check_labels(
    labels: np.ndarray, num_images: int, class_names: list[str] | None, source: str
) -> list[str]:
    """Validate integer labels against the images and class names; return the class names to use.

    Without names, classes are numbered `"0" .. str(max label)`.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DatasetError(f"{source}: labels must be one-dimensional, got shape {labels.shape}")
    if len(labels) != num_images:
        raise DatasetError(
            f"{source}: {num_images} images but {len(labels)} labels; each image needs exactly one label"
        )
    if labels.dtype.kind not in "iu":
        raise DatasetError(f"{source}: labels must be integers (class indices), got dtype {labels.dtype}")
    if num_images == 0:
        return list(class_names or [])
    limit = len(class_names) if class_names is not None else MAX_CLASSES
    bad = np.flatnonzero((labels < 0) | (labels >= limit))
    if len(bad):
        i = int(bad[0])
        if class_names is not None:
            rule = (
                f"{len(class_names)} class names are given, so labels must be in [0, {len(class_names) - 1}]"
            )
        else:
            rule = f"labels must be class indices in [0, {MAX_CLASSES - 1}]"
        raise DatasetError(
            f"{source}: label {int(labels[i])} at index {i} is out of range ({len(bad)} bad labels in all); "
            f"{rule}"
        )
    if class_names is None:
        class_names = [str(c) for c in range(int(labels.max()) + 1)]
    return list(class_names)


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 `[N, C, H, W]` with C in {1, 3} -> `channels`: grey is repeated, RGB goes to luminance.

    Luminance uses PIL's own fixed-point "L" formula so arrays and image folders agree to the pixel.
    """
    have = images.shape[1]
    if have == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=1)
    rgb = images.astype(np.uint32)
    grey = (rgb[:, 0] * 19595 + rgb[:, 1] * 38470 + rgb[:, 2] * 7471 + 0x8000) >> 16
    return grey[:, None].astype(np.uint8)


def resize_images(images: np.ndarray, resolution: int) -> np.ndarray:
    """Resize square uint8 `[N, C, H, W]` images to `resolution` with PIL, one image at a time."""
    if images.shape[-1] == resolution:
        return images
    n, c = images.shape[:2]
    out = np.empty((n, c, resolution, resolution), dtype=np.uint8)
    for k in range(n):
        hwc = images[k].transpose(1, 2, 0)
        picture = Image.fromarray(hwc[:, :, 0] if c == 1 else hwc)
        resized = np.asarray(picture.resize((resolution, resolution), RESAMPLE))
        out[k] = resized[None] if c == 1 else resized.transpose(2, 0, 1)
    return out


def array_dataset(
    images: np.ndarray,
    labels: np.ndarray | None,
    class_names: list[str] | None,
    *,
    kind: str,
    path: str,
    split: str,
    resolution: int | None,
    channels: int | None,
) -> TensorImageDataset:
    """Validate uint8 `[N, C, H, W]` images and labels, convert channels and size, wrap as a dataset.

    `labels=None` means unlabelled (num_classes 0, every label 0).
    """
    source = f"{kind}:{path}"
    if len(images) == 0:
        raise DatasetError(f"{source} has no images (split {split!r}); point the spec at a non-empty dataset")
    if labels is None:
        names: list[str] = []
        labels = np.zeros(len(images), dtype=np.int64)
    else:
        names = check_labels(labels, len(images), class_names, source)
    want = channels or images.shape[1]
    # Convert to grey before resizing and repeat grey to RGB after: resize one plane, never three.
    if want < images.shape[1]:
        images = convert_channels(images, want)
    images = resize_images(images, resolution or images.shape[-1])
    images = convert_channels(images, want)
    return TensorImageDataset(
        # Copy only where needed: arrays read straight from file buffers are read-only, which torch dislikes.
        torch.from_numpy(np.require(images, requirements=["C", "W"])),
        torch.from_numpy(np.require(labels, dtype=np.int64, requirements=["C", "W"])),
        kind=kind,
        path=path,
        split=split,
        class_names=names,
    )
