"""Image folders: `DIR/<class name>/**/*.jpg` (class index = sorted folder name order) or loose `DIR/*.png`.

Folders can be far larger than memory, so images are decoded in `__getitem__`. A scrape of the web always
holds a few broken files; they are skipped and counted rather than allowed to stop a training run hours in. Every
file is decoded once when the folder is opened (JPEGs at 1/8 scale, which reads all their data for a fraction of
the cost), so that truncated files are found then and counted in one warning, not one warning each mid-run.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from .base import RESAMPLE, DatasetError, ImageDataset, to_float

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
DEFAULT_RESOLUTION = 128
EXAMPLES_SHOWN = 3
PROGRESS_FROM = 2000  # folders with at least this many files show a progress bar while they are checked
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
GREY_MODES = SIXTEEN_BIT_MODES | {"1", "L", "LA", "La"}  # one colour plane, with or without alpha


class UnreadableImageWarning(UserWarning):
    """Some images in a folder could not be read and were left out."""


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _images_under(directory: Path) -> list[Path]:
    """Image files anywhere below `directory`, in a stable order, skipping hidden files and folders."""
    found = []
    for here, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(here) / n for n in sorted(names) if _is_image_file(Path(n))]
    return found


def _is_readable(path: Path) -> bool:
    """Whether PIL decodes the whole file (a JPEG at its smallest DCT scale: every byte is read, few pixels made)."""
    try:
        with Image.open(path) as image:
            image.draft(image.mode, (1, 1))  # JPEG only; other formats ignore it
            image.load()
        return True
    except Exception:  # PIL raises many types (OSError, SyntaxError, ValueError, ...) for bad files
        return False


def _unreadable(files: list[Path], root: Path) -> list[Path]:
    """The files that cannot be decoded, checked on threads (PIL's decoders release the GIL)."""
    readable: list[bool] = []
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool, tqdm(
        total=len(files), desc=f"checking {root.name}", unit="image", leave=False, disable=len(files) < PROGRESS_FROM
    ) as bar:
        for start in range(0, len(files), 1024):  # in slices: a million pending futures would be a lot of memory
            readable += pool.map(_is_readable, files[start : start + 1024])
            bar.update(len(files[start : start + 1024]))
    return [f for f, ok in zip(files, readable) if not ok]


def _examples(paths: list[Path]) -> str:
    shown = ", ".join(str(p) for p in paths[:EXAMPLES_SHOWN])
    return shown + (", ..." if len(paths) > EXAMPLES_SHOWN else "")


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert any PIL image to 8-bit "RGB" or "L", scaling 16-bit pixels and flattening alpha onto white."""
    if image.mode in SIXTEEN_BIT_MODES:
        # PIL's convert() clips 16-bit values at 255 instead of scaling them, which turns most pixels white.
        wide = np.asarray(image).astype(np.int64).clip(0, 65535)
        image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
    if "A" in image.getbands() or "transparency" in image.info:
        # Dropping alpha would expose whatever colour transparent pixels happen to store (often black);
        # viewers show transparency over white, so that is what the picture is meant to look like.
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert(mode)


def decode_image(path: str | Path, channels: int | None = None) -> Image.Image:
    """Open one image file upright (EXIF orientation applied) as 8-bit "L" (`channels=1`) or "RGB" (3), at its
    own size; `channels=None` keeps grey files grey and makes everything else RGB."""
    with Image.open(path) as image:
        if channels is None:
            channels = 1 if image.mode in GREY_MODES else 3
        image = ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
        return to_mode(image, "L" if channels == 1 else "RGB")


def square(image: Image.Image, resolution: int, resample=RESAMPLE) -> Image.Image:
    """Centre-crop to a square, then resize to ``resolution`` (bilinear unless ``resample`` says otherwise)."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((resolution, resolution), resample)


def load_image(path: str | Path, resolution: int, channels: int) -> torch.Tensor:
    """Decode one image file to uint8 `[C, H, W]`: upright, centre-cropped to a square, resized (bilinear)."""
    image = square(decode_image(path, channels), resolution)
    pixels = np.array(image)  # a writable copy: torch warns about tensors over read-only PIL memory
    pixels = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(pixels))


class FolderImageDataset(ImageDataset):
    """Images in a folder, decoded on access; unreadable files are skipped, counted and warned about."""

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        resolution: int | None = None,
        channels: int | None = None,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            what = "is a file, not a folder" if root.exists() else "does not exist"
            raise DatasetError(f"image folder {root} {what}; folder:DIR needs a directory of images")
        files, labels, class_names = self._scan(root)
        super().__init__(
            kind="folder",
            path=str(root),
            split=split,
            resolution=resolution or DEFAULT_RESOLUTION,
            channels=channels or 3,
            class_names=class_names,
        )
        unreadable = _unreadable(files, root)
        if len(unreadable) == len(files):
            raise DatasetError(
                f"none of the {len(files)} image files in {root} could be read (e.g. {_examples(files)}); "
                "check that they are images and not, say, HTML error pages saved by a downloader"
            )
        bad = set(unreadable)
        kept = [(f, y) for f, y in zip(files, labels) if f not in bad]
        if unreadable:
            # A class left without images still has its index (and its row in a conditional model): say so.
            emptied = sorted(set(class_names) - {class_names[y] for _, y in kept}) if class_names else []
            warnings.warn(
                f"skipped {len(unreadable)} unreadable image file(s) of {len(files)} in {root}: "
                f"{_examples(unreadable)}"
                + (f"; class folder(s) {emptied[:EXAMPLES_SHOWN]} have no readable image left" if emptied else ""),
                UnreadableImageWarning,
                stacklevel=3,
            )
        self.files = [f for f, _ in kept]
        self.labels = torch.tensor([y for _, y in kept], dtype=torch.int64)
        self._unreadable = len(unreadable)
        self._failed: set[int] = set()  # indices that passed the scan but failed to decode later

    @staticmethod
    def _scan(root: Path) -> tuple[list[Path], list[int], list[str]]:
        """Files, labels and class names: class subfolders if any hold images, else the loose files."""
        subfolders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        per_class = {d.name: _images_under(d) for d in subfolders}
        class_names = [name for name, found in per_class.items() if found]
        loose = [f for f in sorted(root.iterdir()) if f.is_file() and _is_image_file(f)]
        if not class_names:
            if not loose:
                raise DatasetError(
                    f"image folder {root} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in it "
                    "or its subfolders; point folder:DIR at the folder that holds them"
                )
            return loose, [0] * len(loose), []  # unlabelled
        empty = [d.name for d in subfolders if not per_class[d.name]]
        if loose or empty:
            warnings.warn(
                f"{root}: using {len(class_names)} class subfolders; ignoring {len(loose)} image(s) directly "
                f"in the folder and {len(empty)} subfolder(s) without images {empty[:EXAMPLES_SHOWN]}",
                stacklevel=4,
            )
        files, labels = [], []
        for y, name in enumerate(class_names):
            files += per_class[name]
            labels += [y] * len(per_class[name])
        return files, labels, class_names

    def __len__(self) -> int:
        return len(self.files)

    @property
    def skipped(self) -> int:
        return self._unreadable + len(self._failed)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.files)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} images")  # also ends plain iteration
        for j in (k % n for k in range(i, i + n)):
            if j in self._failed:
                continue
            try:
                x = load_image(self.files[j], self.resolution, self.channels)
            except Exception as e:  # a file damaged or replaced after the folder was checked
                self._failed.add(j)
                warnings.warn(
                    f"could not decode {self.files[j]} ({type(e).__name__}: {e}); "
                    "using the next readable image instead",
                    UnreadableImageWarning,
                    stacklevel=2,
                )
                continue
            return to_float(x), self.labels[j]
        raise DatasetError(
            f"no image in {self.path} could be decoded; every file failed (see warnings above)"
        )
