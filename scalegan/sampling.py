"""Sampling: the one ``sample`` function, class names, grids, interpolation sheets and GIFs.

Every path that generates images (``scalegan.sample``, ``scalegan.BigGAN(...).generate``, ``scalegan sample``,
``scalegan eval``, the training loop's grids) draws its latents here, through the family's ``draw_latents``
hook, with the family's default truncation mode, so one model, seed and truncation give one set of images.
Latents are drawn on the CPU from a ``torch.Generator`` and then moved to the model's device.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from . import imagenet
from .family import get_family
from .latents import class_labels
from .utils import atomic_path, device_of, to_hwc, unknown_name


# --------------------------------------------------------------------------------------------- latents
def resolve_truncation_mode(G, mode: str | None = None) -> str:
    """``mode``, checked against G's family, or the family's default for G's config."""
    family = get_family(G)
    if mode is None:
        return family.truncation_mode(G.config)
    if mode not in family.truncation_modes:
        raise ValueError(f"truncation mode {mode!r} does not apply to {family.name} models: use one of "
                         f"{', '.join(family.truncation_modes)}")
    return mode


def draw(G, n: int, y=None, truncation: float | None = None, generator: torch.Generator | None = None,
         truncation_mode: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The latents and class labels ``sample`` feeds to ``G``, on the CPU: latents first, then labels."""
    if n < 0:
        raise ValueError(f"the number of images must be >= 0, got {n}")
    if truncation is not None and not truncation > 0:
        raise ValueError(f"truncation must be > 0 (or None for none), got {truncation}")
    mode = resolve_truncation_mode(G, truncation_mode)
    latents = get_family(G).draw_latents(G.config, n, truncation, mode, generator)
    return latents, class_labels(n, y, G.config.n_classes, generator)


@torch.no_grad()
def sample(G, n: int, y=None, truncation: float | None = None, seed: int | None = None, *,
           truncation_mode: str | None = None, generator: torch.Generator | None = None,
           batch_size: int | None = None, return_latents: bool = False, progress: bool = False):
    """``n`` images in [-1, 1] ([n, C, H, W], float32, on G's device) from generator ``G`` (in its current mode).

    ``y``: None (random classes), a class index, or n indices. ``truncation``: None (off) or the family's
    truncation (BigGAN: the threshold of z; it also selects truncation-indexed BN statistics). ``seed`` (or
    ``generator``) makes the draw reproducible. ``truncation_mode``: None for the family's default for this
    model (BigGAN: "resample", the paper's trick; converted BigGAN-deep: "scale", which its statistics assume).
    ``return_latents=True`` also returns the ``(latents, y)`` fed to G. ``batch_size``: most images per forward
    pass (the images do not depend on it); ``progress``: a progress bar (on stderr) when there are several.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
    latents, labels = draw(G, n, y, truncation, generator, truncation_mode)
    device = device_of(G)
    step = batch_size or max(n, 1)
    out = []
    for i in tqdm(range(0, n, step), desc="sampling", unit="batch", disable=not progress or n <= step,
                  file=sys.stderr):
        yi = labels[i:i + step].to(device) if labels is not None else None
        out.append(G(latents[i:i + step].to(device), yi, truncation=truncation).float())
    cfg = G.config
    images = torch.cat(out) if out else torch.empty(0, cfg.img_channels, cfg.resolution, cfg.resolution)
    return (images, latents, labels) if return_latents else images


def resolve_class(name: str | int, class_names: Sequence[str] | None, n_classes: int) -> int:
    """A class index from an index or a class name (case-insensitive), with close-match suggestions; ImageNet
    models also take WordNet ids and every WordNet lemma."""
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
    if imagenet.is_imagenet(names):
        return imagenet.resolve(name)
    raise ValueError(unknown_name("class", name, names, cutoff=0.5).args[0])


# --------------------------------------------------------------------------------------------- images
def make_grid(images: torch.Tensor, nrow: int, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile [N, C, H, W] images in [-1, 1] (or uint8) into one uint8 image [H', W', C], ``nrow`` per row."""
    arr = to_hwc(images)
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
               truncation_mode: str | None = None) -> torch.Tensor:
    """``per_class`` samples of each class, class-major (one row per class when tiled with nrow=per_class)."""
    y = torch.tensor([c for c in classes for _ in range(per_class)], dtype=torch.long)
    return sample(G, len(y), y=y, truncation=truncation, truncation_mode=truncation_mode, seed=seed, batch_size=256)


@torch.no_grad()
def interpolation_sheet(G, rows: int, steps: int, kind: str = "z", classes: Sequence[int] | None = None,
                        seed: int = 0, truncation: float | None = None,
                        truncation_mode: str | None = None) -> torch.Tensor:
    """Interpolation rows [rows * steps, C, H, W]: ``kind="z"`` lerps between two latents at a fixed class;
    ``kind="class"`` keeps the latent fixed and mixes the class conditioning from one class to another."""
    cfg = G.config
    generator = torch.Generator().manual_seed(seed)
    device = next(G.parameters()).device
    t = torch.linspace(0, 1, steps)
    if kind == "z":  # in the family's latent space: z for BigGAN, W for StyleGAN2 (``map_latents``)
        z0, _ = draw(G, rows, None if not cfg.n_classes else 0, truncation, generator, truncation_mode)
        z1, _ = draw(G, rows, None if not cfg.n_classes else 0, truncation, generator, truncation_mode)
        y = class_labels(rows, classes[:rows] if classes is not None else None, cfg.n_classes, generator)
        map_latents = get_family(G).map_latents
        if map_latents is not None:
            z0, z1 = map_latents(G, z0, y, truncation), map_latents(G, z1, y, truncation)
        z = torch.lerp(z0[:, None], z1[:, None], t.view(1, -1, *[1] * (z0.dim() - 1))).flatten(0, 1)
        y = y.repeat_interleave(steps) if y is not None else None
    elif kind == "class":
        if not cfg.n_classes:
            raise ValueError("class interpolation needs a class-conditional generator")
        z, _ = draw(G, rows, 0, truncation, generator, truncation_mode)
        z = z.repeat_interleave(steps, 0)
        if classes is not None and len(classes) >= 2:
            pairs = [(classes[i % len(classes)], classes[(i + 1) % len(classes)]) for i in range(rows)]
        else:
            pairs = torch.randint(0, cfg.n_classes, (rows, 2), generator=generator).tolist()
        y = torch.zeros(rows * steps, cfg.n_classes)
        for r, (a, b) in enumerate(pairs):
            y[r * steps:(r + 1) * steps, a] += 1 - t
            y[r * steps:(r + 1) * steps, b] += t
    else:
        raise ValueError(f"interpolation kind must be 'z' or 'class', got {kind!r}")
    out = [G(z[i:i + 256].to(device), y[i:i + 256].to(device) if y is not None else None,
             truncation=truncation).float() for i in range(0, len(z), 256)]
    return torch.cat(out)


@torch.no_grad()
def style_mixing_sheet(G, n: int, layers: range | None = None, seed: int = 0, truncation: float | None = None,
                       y=None) -> torch.Tensor:
    """A style-mixing grid [(n + 1)^2, C, H, W] (tile with nrow = n + 1): the first row holds n column sources,
    the first column n row sources (top-left blank), and cell (i, j) is row source i with the W of ``layers``
    taken from column source j (default: the first half of the layers, the coarse styles). Needs a family that
    generates from a layered latent space (``map_latents``: StyleGAN2's W)."""
    family = get_family(G)
    if family.map_latents is None:
        raise ValueError(f"style mixing needs a model with per-layer styles; {family.name} models have none")
    cfg = G.config
    generator = torch.Generator().manual_seed(seed)
    z, labels = draw(G, 2 * n, y if y is not None or not cfg.n_classes else None, None, generator)
    ws = family.map_latents(G, z, labels, truncation)  # [2n, num_ws, w_dim]
    rows, cols = ws[:n], ws[n:]
    layers = layers if layers is not None else range(ws.shape[1] // 2)
    mixed = rows[:, None].repeat(1, n, 1, 1)  # [n, n, num_ws, w_dim]
    mixed[:, :, list(layers)] = cols[None, :, list(layers)]
    device = next(G.parameters()).device
    y_cells = labels[:n].repeat_interleave(n) if labels is not None else None

    def render(w, yy):
        return G(w.to(device), yy.to(device) if yy is not None else None).float().cpu()

    sources = render(torch.cat([cols, rows]), torch.cat([labels[n:], labels[:n]]) if labels is not None else None)
    cells = render(mixed.flatten(0, 1), y_cells)
    blank = torch.full_like(sources[:1], 1.0)
    out = [blank, sources[:n]]
    for i in range(n):
        out += [sources[n + i:n + i + 1], cells[i * n:(i + 1) * n]]
    return torch.cat(out)


def sheet_frames(sheet: torch.Tensor, rows: int, steps: int) -> list[np.ndarray]:
    """GIF frames from an interpolation sheet: frame k shows column k of every row, ping-ponged."""
    cols = sheet.reshape(rows, steps, *sheet.shape[1:])
    frames = [make_grid(cols[:, k], nrow=min(rows, 8)) for k in range(steps)]
    return frames + frames[-2:0:-1]
