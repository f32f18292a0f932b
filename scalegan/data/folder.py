"""Image folders: `DIR/<class name>/**/*.jpg` (class index = sorted folder name order) or loose `DIR/*.png`.

Folders can be far larger than memory, so images are decoded in `__getitem__`. A scrape of the web always
holds a few broken files; they are skipped and counted rather than allowed to stop a training run hours in. Every
file is decoded once when the folder is opened (JPEGs at 1/8 scale, which reads all their data for a fraction of
the cost), so that truncated files are found then and counted in one warning, not one warning each mid-run.

The check is remembered: `DIR/.scalegan-check.json` (or, when DIR is read-only, a file under
`scalegan.utils.cache_dir()/folder-checks/`) holds, for each folder of images (a class, or DIR itself), a SHA-256 of
its files' relative paths, sizes and modification times and the names of the unreadable ones. The next open stats
every file and decodes only the folders whose hash changed, so an ImageNet-sized folder opens in seconds, not an
hour. A folder with a file modified in the last `SETTLE_NS` is not remembered: on a file system with coarse
timestamps, a rewrite in the same tick would keep the size and time that the check saw.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from ..utils import atomic_path, cache_dir, read_json
from .base import RESAMPLE, DatasetError, ImageDataset, to_float

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
DEFAULT_RESOLUTION = 128
EXAMPLES_SHOWN = 3
PROGRESS_FROM = 2000  # folders with at least this many files show a progress bar while they are checked
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
GREY_MODES = SIXTEEN_BIT_MODES | {"1", "L", "LA", "La"}  # one colour plane, with or without alpha
CHECK_FILE = ".scalegan-check.json"  # hidden: never taken for an image, and copied along with the folder
CHECK_KIND = "scalegan-folder-check"
CHECK_VERSION = 1
SETTLE_NS = 2_000_000_000  # files modified this recently (or dated in the future) are checked again next time


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


def _groups(files: list[Path], root: Path) -> dict[str, dict]:
    """The files by the folder that holds them (relative to `root`, "" for `root` itself): their relative paths,
    a SHA-256 of `relpath\\0size\\0mtime_ns` lines, and whether all of them are older than `SETTLE_NS`."""
    base, newest_allowed = str(root) + os.sep, time.time_ns() - SETTLE_NS
    groups: dict[str, dict] = {}
    for f in files:
        text = str(f)  # `root / ...` (built by _scan), except below "." whose children have no "./"
        relative = (text[len(base):] if text.startswith(base) else os.path.relpath(text, root)).replace(os.sep, "/")
        st = f.stat()
        group = groups.setdefault(relative.rpartition("/")[0], {"files": [], "names": [], "digest": hashlib.sha256(),
                                                               "settled": True})
        group["files"].append(f)
        group["names"].append(relative)
        group["digest"].update(f"{relative}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        group["settled"] &= st.st_mtime_ns <= newest_allowed
    for group in groups.values():
        group["key"] = group.pop("digest").hexdigest()
    return groups


def _fallback_check_file(root: Path) -> Path:
    """Where the check of a read-only folder is kept: the user's cache, named by the folder's absolute path."""
    name = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:32]
    return cache_dir() / "folder-checks" / f"{name}.json"


def _load_check(path: Path) -> dict[str, dict]:
    """The remembered groups in `path`; {} when it is absent, damaged or of another version (then checked again)."""
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict) or record.get("kind") != CHECK_KIND or record.get("version") != CHECK_VERSION \
            or not isinstance(record.get("groups"), dict):
        return {}
    return {name: g for name, g in record["groups"].items() if isinstance(g, dict) and isinstance(g.get("key"), str)
            and isinstance(g.get("unreadable"), list) and all(isinstance(u, str) for u in g["unreadable"])}


def _save_check(places: list[tuple[Path, dict]], root: Path, groups: dict[str, dict], count: int) -> None:
    """Write the groups to the first place that takes them (the folder, then the cache), unless one holds them."""
    if any(saved == groups for _, saved in places):
        return
    record = {"kind": CHECK_KIND, "version": CHECK_VERSION, "root": str(root.resolve()), "groups": groups}
    errors = []
    for path, _ in places:
        try:
            with atomic_path(path) as tmp, open(tmp, "w") as f:
                json.dump(record, f, separators=(",", ":"))
            return
        except OSError as e:  # a read-only folder, a full disk, no home folder: the next place, or check again
            errors.append(f"{path}: {e.strerror or e}")
    if count >= PROGRESS_FROM:  # only worth a word when the check took a while
        warnings.warn(f"could not remember the check of {root} ({'; '.join(errors)}); the next open decodes its "
                      f"{count} files again", stacklevel=4)


def _unreadable_remembered(files: list[Path], root: Path) -> list[Path]:
    """`_unreadable`, decoding only the folders whose files changed since the check that `CHECK_FILE` (or its
    fallback in the cache) remembers; then remembers this one."""
    groups = _groups(files, root)
    places = [(path, _load_check(path)) for path in (root / CHECK_FILE, _fallback_check_file(root))]
    bad: set[Path] = set()
    todo: list[str] = []
    for name, group in groups.items():
        known = next((saved[name] for _, saved in places if saved.get(name, {}).get("key") == group["key"]), None)
        if known is None:
            todo.append(name)
        else:
            unreadable = set(known["unreadable"])
            bad.update(f for f, relative in zip(group["files"], group["names"]) if relative in unreadable)
    if todo:
        bad.update(_unreadable([f for name in todo for f in groups[name]["files"]], root))
    remembered = {name: {"key": g["key"], "unreadable": [r for f, r in zip(g["files"], g["names"]) if f in bad]}
                  for name, g in groups.items() if g["settled"]}
    _save_check(places, root, remembered, len(files))
    return [f for f in files if f in bad]


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
        unreadable = _unreadable_remembered(files, root)
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
        x, y = self.pixels(i)
        return to_float(x), y

    def pixels(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
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
            return x, self.labels[j]
        raise DatasetError(
            f"no image in {self.path} could be decoded; every file failed (see warnings above)"
        )
