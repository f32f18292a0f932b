"""Synthetic JPEG class folders for the data benchmarks (`data_throughput.py`, `prepare_scale.py`).

Each image is smooth random colour at four scales (bicubic-upsampled noise of 3, 12, 48 and 96 cells across) plus
fine grey grain, saved at JPEG quality 90: about 0.6 bytes per pixel (~80 KB at 384 x 320), near ImageNet's (~110 KB
at ~400 x 350), so decoding costs about what a photo of that size costs. Images are deterministic in (seed, index)
and written as `DIR/class_KK/img_NNNNNNN.jpg` (image i in class i % classes) under a hidden temporary name, then
renamed; `DIR/.synthetic.json` records the settings once every image is there. A folder with the same settings is
reused, an interrupted one is completed, one with other settings is refused.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

MARKER = ".synthetic.json"
OCTAVES = ((3, 1.0), (12, 0.5), (48, 0.35), (96, 0.25))  # (cells across, amplitude): shapes down to texture
GRAIN = 32.0  # std of the per-pixel grey grain


class SyntheticFolderError(ValueError):
    """A folder that holds something other than the requested synthetic images."""


def image_size(index: int, size: tuple[int, int], jitter: float, seed: int) -> tuple[int, int]:
    """Width and height of image `index`: `size` scaled by up to +-`jitter` in each direction (photos vary)."""
    if not jitter:
        return size
    rng = np.random.default_rng([seed, index, 1])
    scale = 1 + rng.uniform(-jitter, jitter, 2)
    return max(8, round(size[0] * scale[0])), max(8, round(size[1] * scale[1]))


def jpeg_bytes(index: int, size: tuple[int, int], quality: int = 90, seed: int = 0) -> bytes:
    """The JPEG file of synthetic image `index` at `size` (width, height)."""
    rng = np.random.default_rng([seed, index])
    width, height = size
    total = np.repeat(rng.standard_normal((height, width, 1), dtype=np.float32) * GRAIN, 3, axis=2)
    for cells, amplitude in OCTAVES:
        small = rng.integers(0, 256, (max(2, cells * height // width), cells, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), np.float32)
        total += amplitude * (smooth - 128)
    pixels = np.clip(128 + 0.8 * total, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def image_path(root: Path, index: int, classes: int) -> Path:
    return root / f"class_{index % classes:02d}" / f"img_{index:07d}.jpg"


def _write(job: tuple[str, int, int, tuple[int, int], float, int, int]) -> int:
    """Write one image unless it is there; returns its size in bytes."""
    root, index, classes, size, jitter, quality, seed = job
    path = image_path(Path(root), index, classes)
    if path.is_file():
        return path.stat().st_size
    data = jpeg_bytes(index, image_size(index, size, jitter, seed), quality, seed)
    tmp = path.with_name(f".{path.name}.tmp")  # hidden: a loader never sees a half-written image
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return len(data)


def make_jpeg_folder(root: str | os.PathLike, n: int, classes: int = 10, size: tuple[int, int] = (384, 320),
                     jitter: float = 0.15, quality: int = 90, seed: int = 0, workers: int = 2) -> dict:
    """Make (or reuse) a class folder of `n` synthetic JPEGs; returns its settings with `mean_kb`, the mean file
    size, and `seconds` (0 when reused). Raises SyntheticFolderError for a folder made with other settings."""
    root = Path(root)
    settings = {"n": n, "classes": classes, "size": list(size), "jitter": jitter, "quality": quality, "seed": seed}
    marker = root / MARKER
    if marker.is_file():
        found = json.loads(marker.read_text())
        theirs = {k: found.get(k) for k in settings}
        if theirs == settings:
            return {**found, "seconds": 0.0, "reused": True}
        raise SyntheticFolderError(f"{root} holds synthetic images made with other settings ({theirs}); pass "
                                   "another folder or delete it")
    if root.is_dir() and any(p for p in root.iterdir() if not p.name.startswith((".", "class_"))):
        raise SyntheticFolderError(f"{root} holds files that are not synthetic images; pass an empty or new folder")
    for k in range(min(classes, n)):  # no empty class folder: prepare refuses those
        (root / f"class_{k:02d}").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    jobs = ((str(root), i, classes, tuple(size), jitter, quality, seed) for i in range(n))
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            sizes = list(pool.imap_unordered(_write, jobs, chunksize=64))
    else:
        sizes = [_write(job) for job in jobs]
    result = {**settings, "mean_kb": round(sum(sizes) / max(n, 1) / 1000, 1)}
    marker.write_text(json.dumps(result) + "\n")
    return {**result, "seconds": round(time.perf_counter() - start, 2), "reused": False}


def estimated_bytes(n: int, size: tuple[int, int], quality: int = 90, seed: int = 0, sample: int = 8) -> int:
    """The folder's size in bytes, from `sample` images made now."""
    made = [len(jpeg_bytes(i, size, quality, seed)) for i in range(sample)]
    return int(n * sum(made) / len(made))
