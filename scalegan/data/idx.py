"""IDX files, the format of MNIST and Fashion-MNIST: `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.

The 28x28 digits and garments are padded with 2 pixels of background to 32x32, so that the power-of-two
generators BigGAN uses fit without resizing the strokes.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from .base import DatasetError, TensorImageDataset, array_dataset

# Magic numbers: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MNIST_CLASSES = [str(d) for d in range(10)]

DEFAULT_ROOTS = {
    "fashion-mnist": "/usr/share/datasets/fashion-mnist",
    "mnist": "/usr/share/datasets/mnist",
}
CLASS_NAMES = {"fashion-mnist": FASHION_MNIST_CLASSES, "mnist": MNIST_CLASSES}
# Debian ships Fashion-MNIST as a package; MNIST has none, so its hint says where to put the files instead.
INSTALL_HINTS = {
    "fashion-mnist": "install it with `apt-get install dataset-fashion-mnist` or pass --data-root DIR",
    "mnist": "put MNIST's train-images-idx3-ubyte.gz and the other IDX files there or pass --data-root DIR",
    "idx": "pass a directory that holds {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
}
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
MNIST_SIZE = 28
PAD = 2


def idx_file(directory: Path, split: str, part: str) -> Path | None:
    """The IDX file for `split` and `part` ("images-idx3" or "labels-idx1"), plain or gzipped, or None."""
    prefix = SPLIT_PREFIX[split]
    # Some mirrors write "train-images.idx3-ubyte" instead of "train-images-idx3-ubyte".
    stems = [f"{prefix}-{part}-ubyte", f"{prefix}-{part.replace('-', '.')}-ubyte"]
    for stem in stems:
        for name in (stem, stem + ".gz"):
            if (directory / name).is_file():
                return directory / name
    return None


def has_idx_files(directory: Path) -> bool:
    """Whether `directory` looks like an IDX dataset (used by auto-detection)."""
    return any(idx_file(directory, split, "images-idx3") for split in SPLIT_PREFIX)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one uint8 IDX file (gzipped or not), checking its magic number and its size against the header."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip's own magic: trust the bytes, not the file name
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetError(f"{path} is a damaged gzip file ({e}); download it again") from e
    what = "images" if magic == IMAGES_MAGIC else "labels"
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        shown = "none (file too short)" if found is None else f"0x{found:08x}"
        raise DatasetError(
            f"{path} is not an IDX {what} file: magic number {shown}, expected 0x{magic:08x}; "
            "check that the file is the unmodified MNIST-format download"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path} is truncated inside its header; download it again")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(shape)
    if len(raw) != expected:
        raise DatasetError(
            f"{path} holds {len(raw)} bytes but its header promises {expected} (shape {shape}); "
            "the file is truncated or damaged, download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_idx(
    directory: str | Path,
    *,
    kind: str = "idx",
    split: str = "train",
    resolution: int | None = None,
    channels: int | None = None,
) -> TensorImageDataset:
    """Load an IDX image/label pair from `directory`; `kind` ("fashion-mnist", "mnist", "idx") names it."""
    directory = Path(directory)
    hint = INSTALL_HINTS[kind]
    if not directory.is_dir():
        raise DatasetError(f"{kind} directory {directory} does not exist; {hint}")
    images_path = idx_file(directory, split, "images-idx3")
    labels_path = idx_file(directory, split, "labels-idx1")
    if images_path is None or labels_path is None:
        prefix = SPLIT_PREFIX[split]
        raise DatasetError(
            f"{directory} lacks the {split} split: expected {prefix}-images-idx3-ubyte[.gz] and "
            f"{prefix}-labels-idx1-ubyte[.gz]; {hint}"
        )
    images = read_idx(images_path, IMAGES_MAGIC)  # [N, H, W]
    labels = read_idx(labels_path, LABELS_MAGIC)  # [N]
    if images.shape[1] != images.shape[2]:
        raise DatasetError(
            f"{images_path} holds {images.shape[1]}x{images.shape[2]} images; they must be square"
        )
    if images.shape[1:] == (MNIST_SIZE, MNIST_SIZE):
        images = np.pad(images, ((0, 0), (PAD, PAD), (PAD, PAD)))  # background is 0 in both datasets
    return array_dataset(
        images[:, None],  # [N, 1, H, W]
        labels,
        CLASS_NAMES.get(kind),
        kind=kind,
        path=str(directory),
        split=split,
        resolution=resolution,
        channels=channels,
    )
