"""A colourised Fashion-MNIST for the RGB restoration benchmarks (issue 23: colourisation needs an RGB model, and
no RGB dataset can be downloaded here).

    python benchmarks/colour_fmnist.py OUT_DIR        # writes OUT_DIR/train.npz and OUT_DIR/test.npz

Each grey image g (in [0, 1]) keeps its luma and gets a chroma: in YCbCr (ITU-R BT.601), Y = g and
(Cb, Cr) = a * 4 g (1 - g) * (cos h, sin h) with a = 0.25 * saturation, so black background and white highlights
stay neutral and the BT.601 grey of the RGB image is g again (measured on the test split: mean absolute
difference 0.11 of 255, at most 2.7: clipping and rounding).
The hue h is the class's (10 classes 36 degrees apart) plus a per-image jitter of up to +-40 degrees and a
saturation in [0.5, 1], both from the image's index: the colour is mostly, not entirely, told by the class, so
grey-to-colour is learnable but not a lookup. ``scalegan train --data npz:OUT_DIR/train.npz`` trains on it
(``--set img_channels=3`` is implied by the data)."""

from __future__ import annotations

import argparse
import gzip
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scalegan.data.idx import (
    DEFAULT_ROOTS,  # noqa: E402
    FASHION_MNIST_CLASSES,  # noqa: E402
)
from scalegan.utils import atomic_path  # noqa: E402

HUE_JITTER = math.radians(40)
FMNIST = Path(DEFAULT_ROOTS["fashion-mnist"])
SEED = {"train": 0, "test": 1}


def colourise(grey: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """grey uint8 [N, H, W] and labels [N] -> RGB uint8 [N, H, W, 3] (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n = len(grey)
    hue = labels.astype(np.float64) * (2 * math.pi / 10) + rng.uniform(-HUE_JITTER, HUE_JITTER, n)
    amplitude = 0.25 * rng.uniform(0.5, 1.0, n)
    g = grey.astype(np.float64) / 255.0
    envelope = 4 * g * (1 - g) * amplitude[:, None, None]
    cb = envelope * np.cos(hue)[:, None, None]
    cr = envelope * np.sin(hue)[:, None, None]
    rgb = np.stack([g + 1.402 * cr, g - 0.344136 * cb - 0.714136 * cr, g + 1.772 * cb], axis=-1)
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def write(out_dir: Path, split: str) -> Path:
    prefix = {"train": "train", "test": "t10k"}[split]
    with gzip.open(FMNIST / f"{prefix}-images-idx3-ubyte.gz") as f:
        grey = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FMNIST / f"{prefix}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    path = out_dir / f"{split}.npz"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, x=colourise(grey, labels, SEED[split]), y=labels, class_names=np.array(FASHION_MNIST_CLASSES))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    args = ap.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        print(write(args.out_dir, split))
    return 0


if __name__ == "__main__":
    sys.exit(main())
