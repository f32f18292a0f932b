"""Prepared arrays in an `.npz` file: uint8 images `x`, optional integer labels `y` and `class_names`."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .base import DatasetError, TensorImageDataset, array_dataset

LAYOUT = "x must be uint8 with shape [N, H, W, C] or [N, C, H, W] (C = 1 or 3) or [N, H, W] for grey, H == W"


def images_to_nchw(x: np.ndarray, source: str) -> np.ndarray:
    """Bring uint8 images in any accepted layout to `[N, C, H, W]`, or say which layout is expected."""
    if x.dtype != np.uint8:
        fix = (
            "; scale floats in [0, 1] with (x * 255).round().astype(np.uint8)" if x.dtype.kind == "f" else ""
        )
        raise DatasetError(f"{source}: x has dtype {x.dtype}; {LAYOUT}{fix}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim == 4 and x.shape[1] in (1, 3):
        pass  # already channels-first
    else:
        raise DatasetError(f"{source}: x has shape {x.shape}; {LAYOUT}")
    if x.shape[2] != x.shape[3]:
        raise DatasetError(
            f"{source}: images are {x.shape[2]}x{x.shape[3]} (H x W) but must be square; "
            "centre-crop them before packing, or use a folder: spec, which crops for you"
        )
    return x


def load_npz(
    path: str | Path,
    *,
    split: str = "train",
    resolution: int | None = None,
    channels: int | None = None,
) -> TensorImageDataset:
    """Load `x` (and `y`, `class_names` when present) from an `.npz` file; pickled objects are refused.

    A `y` of all -1 (no class) means unlabelled."""
    path = Path(path)
    source = f"npz:{path}"
    if not path.is_file():
        raise DatasetError(f"{path} does not exist; npz:FILE needs an .npz file holding an array named x")
    if not zipfile.is_zipfile(path):  # else np.load tries it as a pickle and blames pickles
        raise DatasetError(f"{source} is not an .npz file (not a zip archive: empty, truncated or another format); "
                           "write it with np.savez(FILE, x=images, y=labels)")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays.files:
                raise DatasetError(f"{source} has no array named x (arrays: {arrays.files}); {LAYOUT}")
            x = arrays["x"]
            y = arrays["y"] if "y" in arrays.files else None
            names = arrays["class_names"] if "class_names" in arrays.files else None
    except DatasetError:
        raise
    except ValueError as e:  # numpy's answer to an object array when pickles are not allowed
        raise DatasetError(
            f"{source} holds a pickled object array ({e}); store class_names as np.array(names, dtype=str) "
            "and labels as integers"
        ) from e
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DatasetError(f"{source} is not a readable .npz file ({e}); write it with np.savez") from e

    x = images_to_nchw(x, source)
    if y is not None and names is None and y.ndim == 1 and y.dtype.kind == "i" and len(y) and (y == -1).all():
        y = None  # `scalegan sample --npz` marks the samples of an unconditional generator with y = -1
    class_names = None
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DatasetError(
                f"{source}: class_names must be a 1-D string array, got {names.dtype} {names.shape}"
            )
        class_names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names.tolist()]
        if y is None:
            raise DatasetError(f"{source} has class_names but no labels y; add y or drop class_names")
    return array_dataset(
        x, y, class_names, kind="npz", path=str(path), split=split, resolution=resolution, channels=channels
    )
