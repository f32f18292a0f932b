"""Sampling: latents with truncation, class selection, grids, interpolation sheets, GIFs, standing statistics.

Latents are always drawn on the CPU from a ``torch.Generator`` and then moved to the model's device, so a
seed gives the same ``z`` and ``y`` on every device.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .utils import atomic_path

TRUNCATION_MODES = ("resample", "scale")


# --------------------------------------------------------------------------------------------- latents
def truncated_normal(shape: Sequence[int], threshold: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """N(0, 1) restricted to [-threshold, threshold]: the paper's truncation trick (resample large entries).

    Drawn by inverting the CDF, which gives exactly the distribution of "resample until |z| <= threshold"
    in one pass, also for very small thresholds.
    """
    if threshold <= 0:
        raise ValueError(f"truncation threshold must be > 0, got {threshold}")
    u = torch.rand(tuple(shape), generator=generator, dtype=torch.float64)
    lo = 0.5 * math.erfc(threshold / math.sqrt(2))  # Phi(-threshold)
    z = torch.special.ndtri(lo + u * (1 - 2 * lo))
    return z.clamp_(-threshold, threshold).float()


def sample_z(n: int, dim_z: int, truncation: float | None = None, mode: str = "resample",
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Latents [n, dim_z]. ``mode="resample"``: the paper's trick with threshold ``truncation``;
    ``mode="scale"``: ``truncation * truncnorm(-2, 2)`` as pytorch-pretrained-biggan does."""
    if mode not in TRUNCATION_MODES:
        raise ValueError(f"truncation mode must be one of {TRUNCATION_MODES}, got {mode!r}")
    if truncation is None:
        return torch.randn(n, dim_z, generator=generator)
    if mode == "scale":
        return truncation * truncated_normal((n, dim_z), 2.0, generator)
    return truncated_normal((n, dim_z), truncation, generator)


def class_labels(n: int, y, n_classes: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
    """Class indices [n] from ``y``: None (uniform random), an int, or a sequence/tensor of n (or 1) ints."""
    if not n_classes:
        if y is not None:
            raise ValueError("this generator is unconditional: do not pass classes")
        return None
    if y is None:
        return torch.randint(0, n_classes, (n,), generator=generator)
    y = torch.as_tensor(y)
    if y.is_floating_point() and y.dim() == 2:  # soft labels, used for class interpolation
        return y
    y = y.long().reshape(-1)
    if y.numel() == 1:
        y = y.expand(n).clone()
    if y.numel() != n:
        raise ValueError(f"got {y.numel()} class labels for {n} samples")
    bad = y[(y < 0) | (y >= n_classes)]
    if bad.numel():
        raise ValueError(f"class index {int(bad[0])} out of range: this model has classes 0..{n_classes - 1}")
    return y


def resolve_class(name: str | int, class_names: Sequence[str] | None, n_classes: int) -> int:
    """A class index from an index or a class name (case-insensitive), with close-match suggestions."""
    if isinstance(name, int) or str(name).strip().lstrip("-").isdigit():
        index = int(name)
        if not 0 <= index < n_classes:
            raise ValueError(f"class index {index} out of range: this model has classes 0..{n_classes - 1}")
        return index
    names = list(class_names or [])
    lowered = [c.lower() for c in names]
    key = str(name).strip().lower()
    if key in lowered:
        return lowered.index(key)
    if not names:
        raise ValueError(f"class {name!r}: this model has no class names, use an index 0..{n_classes - 1}")
    from . import imagenet

    if imagenet.is_imagenet(names):  # ImageNet models also take WordNet ids and every WordNet lemma
        return imagenet.resolve(name)
    close = difflib.get_close_matches(key, lowered, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(names[lowered.index(c)]) for c in close)}?" if close else ""
    shown = ", ".join(names[:20]) + ("..." if len(names) > 20 else "")
    raise ValueError(f"unknown class {name!r}{hint} (classes: {shown})")


class SamplingMixin:
    """Adds ``G.sample(...)`` to generators that have ``config.dim_z`` and ``config.n_classes``."""

    @torch.no_grad()
    def sample(self, n: int, y=None, truncation: float | None = None, truncation_mode: str = "resample",
               seed: int | None = None, batch_size: int | None = None,
               generator: torch.Generator | None = None, return_latents: bool = False):
        """Generate ``n`` images in [-1, 1] ([n, C, H, W], float32, on the model's device).

        ``y``: None (random classes), a class index, or n indices. ``seed`` (or ``generator``) makes the
        latents reproducible. ``return_latents=True`` also returns the ``(z, y)`` fed to G.
        """
        if generator is None:
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
        cfg = self.config
        z = sample_z(n, cfg.dim_z, truncation, truncation_mode, generator)
        labels = class_labels(n, y, cfg.n_classes, generator)
        device = next(self.parameters()).device
        step = batch_size or n
        out = []
        for i in range(0, n, step):
            yi = labels[i:i + step].to(device) if labels is not None else None
            out.append(self(z[i:i + step].to(device), yi).float())
        images = torch.cat(out) if out else torch.empty(0, cfg.img_channels, cfg.resolution, cfg.resolution)
        return (images, z, labels) if return_latents else images


# --------------------------------------------------------------------------------------------- standing stats
@torch.no_grad()
def standing_stats(G: torch.nn.Module, n_batches: int = 16, batch_size: int = 64, seed: int = 0,
                   truncation: float | None = None) -> None:
    """Recompute every BN's running statistics as the plain average over ``n_batches`` generated batches.

    Only the BN layers run in training mode, so spectral-norm vectors are left untouched. G ends in eval mode.
    """
    from .models.layers import batch_norms

    bns = batch_norms(G)
    saved = [bn.momentum for bn in bns]
    G.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
        bn.training = True  # this BN only: its SN gain/bias layers stay in eval mode
    generator = torch.Generator().manual_seed(seed)
    device = next(G.parameters()).device
    cfg = G.config
    for _ in range(n_batches):
        z = sample_z(batch_size, cfg.dim_z, truncation, generator=generator).to(device)
        y = class_labels(batch_size, None, cfg.n_classes, generator)
        G(z, y.to(device) if y is not None else None)
    for bn, momentum in zip(bns, saved):
        bn.momentum = momentum
    G.eval()


# --------------------------------------------------------------------------------------------- images
def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] float [N, C, H, W] -> uint8 [N, H, W, C] (the NPZ layout evaluators read)."""
    x = ((images.detach().float().cpu() + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def make_grid(images: torch.Tensor, nrow: int, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile [N, C, H, W] images in [-1, 1] into one uint8 image [H', W', C], ``nrow`` images per row."""
    arr = to_uint8(images)
    n, h, w, c = arr.shape
    ncol = nrow
    nrows = math.ceil(n / ncol)
    grid = np.full((nrows * (h + padding) + padding, ncol * (w + padding) + padding, c), pad_value, np.uint8)
    for k in range(n):
        r, col = divmod(k, ncol)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top:top + h, left:left + w] = arr[k]
    return grid


def _pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def save_image(array: np.ndarray, path: str | os.PathLike) -> None:
    """Write a uint8 [H, W, C] array as PNG (or by extension), atomically."""
    with atomic_path(path) as tmp:
        _pil(array).save(tmp, format=_format(path))


def save_gif(frames: Sequence[np.ndarray], path: str | os.PathLike, duration_ms: int = 80) -> None:
    """Write uint8 [H, W, C] frames as a looping animated GIF, atomically."""
    images = [_pil(f) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)


def _format(path) -> str:
    ext = os.path.splitext(str(path))[1].lower().lstrip(".")
    return {"jpg": "JPEG", "jpeg": "JPEG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP"}.get(ext, "PNG")


# --------------------------------------------------------------------------------------------- sheets
@torch.no_grad()
def class_grid(G, classes: Sequence[int], per_class: int, seed: int = 0, truncation: float | None = None,
               truncation_mode: str = "resample") -> torch.Tensor:
    """``per_class`` samples of each class, class-major (one row per class when tiled with nrow=per_class)."""
    y = torch.tensor([c for c in classes for _ in range(per_class)], dtype=torch.long)
    return G.sample(len(y), y=y, truncation=truncation, truncation_mode=truncation_mode, seed=seed, batch_size=256)


@torch.no_grad()
def interpolation_sheet(G, rows: int, steps: int, kind: str = "z", classes: Sequence[int] | None = None,
                        seed: int = 0, truncation: float | None = None) -> torch.Tensor:
    """Interpolation rows [rows * steps, C, H, W]: ``kind="z"`` lerps between two latents at a fixed class;
    ``kind="class"`` keeps z fixed and mixes the class conditioning from one class to another."""
    cfg = G.config
    generator = torch.Generator().manual_seed(seed)
    device = next(G.parameters()).device
    t = torch.linspace(0, 1, steps)
    if kind == "z":
        z0 = sample_z(rows, cfg.dim_z, truncation, generator=generator)
        z1 = sample_z(rows, cfg.dim_z, truncation, generator=generator)
        z = torch.lerp(z0[:, None], z1[:, None], t[None, :, None]).reshape(rows * steps, -1)
        ys = classes if classes is not None else None
        y = class_labels(rows, ys[:rows] if ys is not None else None, cfg.n_classes, generator)
        y = y.repeat_interleave(steps) if y is not None else None
    elif kind == "class":
        if not cfg.n_classes:
            raise ValueError("class interpolation needs a class-conditional generator")
        z = sample_z(rows, cfg.dim_z, truncation, generator=generator).repeat_interleave(steps, 0)
        if classes is not None and len(classes) >= 2:
            pairs = [(classes[i % len(classes)], classes[(i + 1) % len(classes)]) for i in range(rows)]
        else:
            a = torch.randint(0, cfg.n_classes, (rows, 2), generator=generator)
            pairs = a.tolist()
        y = torch.zeros(rows * steps, cfg.n_classes)
        for r, (a, b) in enumerate(pairs):
            y[r * steps:(r + 1) * steps, a] += 1 - t
            y[r * steps:(r + 1) * steps, b] += t
    else:
        raise ValueError(f"interpolation kind must be 'z' or 'class', got {kind!r}")
    out = [G(z[i:i + 256].to(device), y[i:i + 256].to(device) if y is not None else None).float()
           for i in range(0, len(z), 256)]
    return torch.cat(out)


def sheet_frames(sheet: torch.Tensor, rows: int, steps: int) -> list[np.ndarray]:
    """GIF frames from an interpolation sheet: frame k shows column k of every row, ping-ponged."""
    cols = sheet.reshape(rows, steps, *sheet.shape[1:])
    frames = [make_grid(cols[:, k], nrow=min(rows, 8)) for k in range(steps)]
    return frames + frames[-2:0:-1]
