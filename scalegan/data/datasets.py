"""`open_dataset`: a spec string ("fashion-mnist", "cifar10:DIR", "folder:DIR", a bare path) -> a dataset."""

from __future__ import annotations

import os
from pathlib import Path

from .base import DatasetError, ImageDataset, check_size
from .cifar import load_cifar
from .folder import FolderImageDataset
from .idx import DEFAULT_ROOTS, has_idx_files, load_idx
from .npz import load_npz
from .packed import PackedDataset, is_packed

KINDS = ("fashion-mnist", "mnist", "idx", "cifar10", "cifar100", "folder", "npz", "packed")
SPLITS = ("train", "test")
ACCEPTED = (
    "accepted dataset specs: 'fashion-mnist[:DIR]', 'mnist[:DIR]' (IDX files, default directories under "
    "/usr/share/datasets), 'idx:DIR', 'cifar10:DIR', 'cifar100:DIR' (the extracted python-version folders), "
    "'folder:DIR' (class subfolders of images, or loose images), 'npz:FILE' (arrays x and optional y), "
    "'packed:DIR' (written by `scalegan prepare`), "
    "or an existing path whose format is detected"
)


def parse_spec(spec: str | os.PathLike[str]) -> tuple[str, str | None]:
    """Split a spec into (kind, location); kind "auto" means a bare path whose format must be detected."""
    text = os.fspath(spec)
    if not isinstance(text, str) or not text:
        raise DatasetError(f"empty or non-text dataset spec {spec!r}; {ACCEPTED}")
    prefix, sep, rest = text.partition(":")
    if sep and prefix.lower() in KINDS:
        return prefix.lower(), rest or None
    if text.lower() in KINDS:
        return text.lower(), None
    if Path(text).expanduser().exists():
        return "auto", text
    raise DatasetError(
        f"unknown dataset spec {text!r}: not a dataset name and no such file or directory; {ACCEPTED}"
    )


def detect_kind(path: Path) -> str:
    """The format of an existing file or directory, from the names of the files in it."""
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return "npz"
        raise DatasetError(f"{path} is a file but not an .npz; {ACCEPTED}")
    if is_packed(path):
        return "packed"
    if has_idx_files(path):
        return "idx"
    if (path / "data_batch_1").is_file():
        return "cifar10"
    if (path / "meta").is_file() and (path / "train").is_file():
        return "cifar100"
    return "folder"


def open_dataset(
    spec: str,
    resolution: int | None = None,
    channels: int | None = None,
    split: str = "train",
    root: str | None = None,
) -> ImageDataset:
    """Open the dataset that `spec` names, as float32 `[C, H, W]` images in [-1, 1] with int64 labels.

    `resolution` resizes (default: the format's own size; 128 for folders; packed datasets resize on read).
    `channels` is 1 or 3 (default: the format's own). `split` is "train" or "test" (folders, npz files and packed
    folders have one split and return it for both). `root` is the directory for a spec without one, e.g.
    `open_dataset("mnist", root=DIR)`; a location written in the spec itself wins. Every data problem raises
    `DatasetError` with the fix in its message.
    """
    check_size(resolution, channels)
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    kind, location = parse_spec(spec)
    location = location or root
    if location is None:
        if kind not in DEFAULT_ROOTS:
            raise DatasetError(f"{kind} needs a location: write {kind}:PATH or pass --data-root PATH")
        location = DEFAULT_ROOTS[kind]
    path = Path(location).expanduser()
    if kind == "auto":
        kind = detect_kind(path)

    if kind in ("fashion-mnist", "mnist", "idx"):
        return load_idx(path, kind=kind, split=split, resolution=resolution, channels=channels)
    if kind in ("cifar10", "cifar100"):
        return load_cifar(path, kind=kind, split=split, resolution=resolution, channels=channels)
    if kind == "npz":
        return load_npz(path, split=split, resolution=resolution, channels=channels)
    if kind == "packed":
        return PackedDataset(path, split=split, resolution=resolution, channels=channels)
    return FolderImageDataset(path, split=split, resolution=resolution, channels=channels)
