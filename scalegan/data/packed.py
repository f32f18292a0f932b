"""Packed datasets, written by `scalegan prepare` (`prepare.py`): decoded uint8 images in `.npy` shards.

    OUT/manifest.json      {"kind": "scalegan-packed-dataset", "version": 1, "resolution", "channels", "count",
                            "class_names", "class_counts", "shards": [{"name", "count", "sha256"}], "files": {...},
                            "source", "options", "report"}
    OUT/shard-00000.npy    uint8 [n, C, R, R]
    OUT/labels.npy         int64 [count]
    OUT/class_names.json   the class names, index order

Opening reads the manifest and the `.npy` headers only: the time does not grow with the number of images. Shards are
memory-mapped on first use, so a process (or a rank of a distributed run) reads only the images it indexes. The
manifest's `files` table is the one `scalegan/manifest.py` writes, so `scalegan verify OUT` checks the SHA-256s.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..manifest import MANIFEST, verify_folder
from ..utils import read_json
from .base import RESAMPLE, DatasetError, ImageDataset, convert_channels, to_float

KIND = "scalegan-packed-dataset"  # the marker that tells a packed folder from any other folder with a manifest
VERSION = 1
LABELS = "labels.npy"
CLASS_NAMES = "class_names.json"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.npy"


def is_packed(path: Path) -> bool:
    """Whether `path` is a folder whose manifest.json carries the packed-dataset marker."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return read_json(manifest).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def read_packed_manifest(root: Path) -> dict[str, Any]:
    """The manifest of a packed dataset, checked for its marker, version and self-consistency (no file is hashed)."""
    path = root / MANIFEST
    if not path.is_file():
        what = "does not exist" if not root.exists() else f"has no {MANIFEST}"
        raise DatasetError(f"packed dataset {root} {what}; write one with `scalegan prepare SOURCE {root} "
                           "--resolution R`")
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise DatasetError(f"{path} is not a packed dataset's manifest (no kind {KIND!r}); point packed:DIR at a "
                           "folder written by `scalegan prepare`")
    if manifest.get("version") != VERSION:
        raise DatasetError(f"{root} is packed-dataset version {manifest.get('version')!r}; this scalegan reads "
                           f"version {VERSION}: prepare it again with this version")
    try:
        shards = [(str(s["name"]), int(s["count"])) for s in manifest["shards"]]
        count, names = int(manifest["count"]), list(manifest["class_names"])
        resolution, channels = int(manifest["resolution"]), int(manifest["channels"])
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{path} is malformed ({type(e).__name__}: {e}); prepare the dataset again") from None
    if sum(n for _, n in shards) != count or count < 1:
        raise DatasetError(f"{path}: its shards hold {sum(n for _, n in shards)} images but it says {count}; "
                           "prepare the dataset again")
    manifest.update(shards=[{"name": s, "count": n} for s, n in shards], count=count, class_names=names,
                    resolution=resolution, channels=channels)
    return manifest


class PackedDataset(ImageDataset):
    """A folder written by `scalegan prepare`, read through memory maps: `tensors` is None (nothing is loaded whole),
    `labels` is a memory-mapped int64 array. A `resolution` or `channels` other than the packed ones is converted on
    read (PIL bilinear, as every resize in the package; grey <-> RGB as `convert_channels`)."""

    def __init__(self, root: str | Path, *, split: str = "train", resolution: int | None = None,
                 channels: int | None = None) -> None:
        root = Path(root)
        if root.is_file():
            raise DatasetError(f"{root} is a file; packed:DIR needs the folder `scalegan prepare` wrote")
        manifest = read_packed_manifest(root)
        super().__init__(kind="packed", path=str(root), split=split,
                         resolution=resolution or manifest["resolution"], channels=channels or manifest["channels"],
                         class_names=manifest["class_names"])
        self.manifest = manifest
        self.stored = (manifest["channels"], manifest["resolution"])
        self._names = [s["name"] for s in manifest["shards"]]
        self._starts = np.cumsum([0] + [s["count"] for s in manifest["shards"]]).tolist()
        self._shards: list[np.ndarray | None] = [None] * len(self._names)
        self._labels: np.ndarray | None = None
        self.labels  # noqa: B018 - open the labels now: a wrong length is an error at open, not mid-run

    @property
    def labels(self) -> np.ndarray:
        """int64 [count], memory-mapped."""
        if self._labels is None:
            labels = self._load(LABELS)
            if labels.shape != (len(self),) or labels.dtype != np.int64:
                raise DatasetError(f"{self.path}/{LABELS} is {labels.dtype} {labels.shape}, the manifest says int64 "
                                   f"[{len(self)}]; prepare the dataset again")
            self._labels = labels
        return self._labels

    def _load(self, name: str) -> np.ndarray:
        try:
            return np.load(Path(self.path) / name, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DatasetError(f"{self.path}/{name} cannot be read ({e}); `scalegan verify {self.path}` checks the "
                               "folder, `scalegan prepare` writes it again") from None

    def _shard(self, k: int) -> np.ndarray:
        if self._shards[k] is None:
            array = self._load(self._names[k])
            want = (self._starts[k + 1] - self._starts[k], *self.stored, self.stored[1])
            if array.shape != want or array.dtype != np.uint8:
                raise DatasetError(f"{self.path}/{self._names[k]} is {array.dtype} {list(array.shape)}, the manifest "
                                   f"says uint8 {list(want)}; prepare the dataset again")
            self._shards[k] = array
        return self._shards[k]

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.pixels(i)
        return to_float(x), y

    def pixels(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} images")
        i %= n
        k = bisect.bisect_right(self._starts, i) - 1
        pixels = np.array(self._shard(k)[i - self._starts[k]])  # a copy: one image leaves the memory map
        if (self.channels, self.resolution) != self.stored:
            pixels = self._convert(pixels)
        return torch.from_numpy(pixels), torch.tensor(int(self.labels[i]), dtype=torch.int64)

    def _convert(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [C, R, R] at the stored size -> the requested channels and resolution."""
        pixels = convert_channels(pixels[None], self.channels)[0] if self.channels < pixels.shape[0] else pixels
        if self.resolution != pixels.shape[-1]:
            hwc = pixels.transpose(1, 2, 0)
            image = Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc)
            resized = np.asarray(image.resize((self.resolution, self.resolution), RESAMPLE))
            pixels = resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1)
        return np.array(convert_channels(pixels[None], self.channels)[0])  # writable, for torch

    def class_counts(self) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        return torch.from_numpy(np.bincount(np.asarray(self.labels), minlength=self.num_classes)[: self.num_classes])

    def verify(self) -> list[str]:
        """Check every file the manifest lists (shards, labels, class names) against its SHA-256 and size; returns
        the names checked, or raises DatasetError naming the first damaged file."""
        report = verify_folder(self.path)
        if not report.ok:
            name, why = next(iter(report.damaged.items()))
            raise DatasetError(f"{self.path}/{name} is damaged: {why}; prepare the dataset again")
        missing = {LABELS, *self._names} - set(report.checked)
        if missing:
            raise DatasetError(f"{self.path}: {MANIFEST} lists no SHA-256 for {sorted(missing)}; prepare it again")
        return report.checked

    def __getstate__(self) -> dict:
        # Data-loader workers (spawn) get the paths, not copies of the memory maps.
        return {**self.__dict__, "_shards": [None] * len(self._names), "_labels": None}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "packed_resolution": self.stored[1], "packed_channels": self.stored[0]}
