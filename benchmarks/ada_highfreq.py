"""How much high-frequency content ADA's general geometric transforms keep: the 2x Symlet-6 resampling that
``scalegan.augment.ada_augment`` uses against the former single bilinear pass.

    python benchmarks/ada_highfreq.py [--n 256] [--size 32] [--margin 4] [--seed 0] [--threads N]

Input: white noise (N(0, 1) per pixel, 3 channels, ``--size`` px, ``--n`` images, seeded). Per transform (rotation
only, isotropic scale only, fractional translation only; p = 1, so every image is transformed) both paths resample
the same images with the same matrices. Kept share = energy (sum of squares) of the discrete Laplacian (4
neighbours) of the output divided by that of the input, per image, then the mean over the batch; the Laplacian is
taken inside a border of ``--margin`` pixels on each side (where reflected pixels come in). Prints one JSON line
per (transform, path) with the share and the milliseconds per batch (median of 3, after one warm-up).
"""

from __future__ import annotations

import argparse
import time
from datetime import date

import torch
import torch.nn.functional as F
from common import emit, machine

from scalegan.augment import _resample, _resample_2x, _resample_bilinear, geometric_matrices

TRANSFORMS = {"rotation": ("rotate",), "isotropic_scale": ("scale",), "fractional_translation": ("xfrac",)}
PATHS = {"2x_sym6_bicubic": _resample, "2x_sym6_bilinear": lambda x, m: _resample_2x(x, m, "bilinear"),
         "1x_bilinear": _resample_bilinear}


def laplacian_energy(x: torch.Tensor, margin: int) -> torch.Tensor:
    """[N]: the sum of squares of each image's discrete Laplacian, inside a border of ``margin`` pixels."""
    kernel = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3)
    n, c, h, w = x.shape
    lap = F.conv2d(x.reshape(n * c, 1, h, w), kernel).view(n, c, h - 2, w - 2)
    inner = lap[:, :, margin - 1:h - 1 - margin, margin - 1:w - 1 - margin] if margin > 0 else lap
    return inner.square().sum((1, 2, 3))


def kept_share(x: torch.Tensor, out: torch.Tensor, margin: int) -> float:
    """Mean over the batch of the output's Laplacian energy over the input's."""
    return (laplacian_energy(out, margin) / laplacian_energy(x, margin)).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=256, help="images per batch")
    parser.add_argument("--size", type=int, default=32, help="image size in pixels")
    parser.add_argument("--margin", type=int, default=4, help="border left out of the Laplacian, in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.randn(args.n, 3, args.size, args.size, generator=torch.Generator().manual_seed(args.seed))
    for name, ops in TRANSFORMS.items():
        m = geometric_matrices(args.n, args.size, args.size, 1.0, torch.Generator().manual_seed(args.seed + 1), ops)
        for path, resample in PATHS.items():
            with torch.no_grad():
                out = resample(x, m)
                times = []
                for _ in range(3):
                    start = time.perf_counter()
                    resample(x, m)
                    times.append(time.perf_counter() - start)
            emit({"bench": "ada_highfreq", "transform": name, "path": path, "kept": round(kept_share(x, out,
                  args.margin), 4), "ms_per_batch": round(1000 * sorted(times)[1], 1), "n": args.n,
                  "size": args.size, "margin": args.margin, "seed": args.seed, "machine": machine(),
                  "date": date.today().isoformat()})


if __name__ == "__main__":
    main()
