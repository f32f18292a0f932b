"""Latents: truncated normals and class labels, drawn on the CPU from a ``torch.Generator`` so that a seed gives
the same ``z`` and ``y`` on every device."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .family import latent_shapes

TRUNCATION_MODES = ("resample", "scale")


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


def sample_z(n: int, z_dim: int, truncation: float | None = None, mode: str = "resample",
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Latents [n, z_dim]. ``mode="resample"``: the paper's trick with threshold ``truncation``;
    ``mode="scale"``: ``truncation * truncnorm(-2, 2)`` as pytorch-pretrained-biggan does."""
    if mode not in TRUNCATION_MODES:
        raise ValueError(f"truncation mode must be one of {TRUNCATION_MODES}, got {mode!r}")
    if truncation is None:
        return torch.randn(n, z_dim, generator=generator)
    if mode == "scale":
        return truncation * truncated_normal((n, z_dim), 2.0, generator)
    return truncated_normal((n, z_dim), truncation, generator)


def class_labels(n: int, y, n_classes: int, generator: torch.Generator | None = None,
                 class_weights: torch.Tensor | None = None) -> torch.Tensor | None:
    """Class indices [n] from ``y``: None (random: uniform, or drawn from ``class_weights`` [n_classes], e.g. the
    training data's class counts), an int, or a sequence/tensor of n (or 1) ints; float [n, n_classes] soft labels
    (class interpolation) pass through. Equal weights draw exactly as uniform does."""
    if not n_classes:
        if y is not None:
            raise ValueError("this generator is unconditional: do not pass classes")
        return None
    if y is None:
        if class_weights is not None and not is_uniform(class_weights):
            return torch.multinomial(torch.as_tensor(class_weights, dtype=torch.float64), n, replacement=True,
                                     generator=generator)
        return torch.randint(0, n_classes, (n,), generator=generator)
    y = torch.as_tensor(y)
    if y.is_floating_point() and y.dim() == 2:
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


def is_uniform(class_weights) -> bool:
    """Whether ``class_weights`` (None, or counts / probabilities per class) give every class the same share."""
    if class_weights is None:
        return True
    w = torch.as_tensor(class_weights, dtype=torch.float64)
    return bool((w == w[0]).all())


def quota_labels(n: int, class_weights, n_classes: int) -> torch.Tensor:
    """``n`` class indices in proportion to ``class_weights`` (None: uniform), without randomness: each class gets
    its share rounded by largest remainder (ties to the lower class), interleaved evenly. Uniform weights give
    ``arange(n) % n_classes``, the balanced labels evaluation used before label distributions."""
    w = torch.ones(n_classes, dtype=torch.float64) if class_weights is None else torch.as_tensor(
        class_weights, dtype=torch.float64)
    if w.shape != (n_classes,) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"class weights must be {n_classes} non-negative numbers, not all 0")
    share = w / w.sum() * n
    counts = share.floor().long()
    remainder = share - counts
    extra = sorted(range(n_classes), key=lambda k: (-float(remainder[k]), k))[: n - int(counts.sum())]
    counts[extra] += 1
    places = [((j + 0.5) / int(c), k) for k, c in enumerate(counts.tolist()) for j in range(c)]
    return torch.tensor([k for _, k in sorted(places)], dtype=torch.int64)


# --------------------------------------------------------------------------------------------- latents files
def save_latents(path, latents: torch.Tensor, y: torch.Tensor | None, *, truncation: float | None = None,
                 **extra) -> None:
    """Write a latents file (NPZ) that ``load_latents``, ``scalegan sample --latents``, ``scalegan edit`` and the
    server read back: ``latents`` float32 (z, or W+ [n, layers, dim] for a family with a W space), ``y`` int64 [n]
    (-1 for an unconditional model), ``truncation`` (NaN for none: applied when rendering z, ignored for W) and
    any ``extra`` arrays (e.g. ``psnr``). Written atomically."""
    from .utils import write_bytes

    write_bytes(path, latents_bytes(latents, y, truncation=truncation, **extra))


def latents_bytes(latents: torch.Tensor, y: torch.Tensor | None, *, truncation: float | None = None,
                  **extra) -> bytes:
    """The bytes of the latents file ``save_latents`` writes (the server sends and reads them)."""
    import io

    import numpy as np

    latents = torch.as_tensor(latents).detach().float().cpu()
    n = len(latents)
    labels = torch.full((n,), -1, dtype=torch.long) if y is None else torch.as_tensor(y).long().reshape(-1).cpu()
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} class labels for {n} latents")
    buffer = io.BytesIO()
    np.savez(buffer, latents=latents.numpy(), y=labels.numpy(),
             truncation=np.float64("nan" if truncation is None else truncation),
             **{k: np.asarray(v) for k, v in extra.items()})
    return buffer.getvalue()


def load_latents(path, config) -> tuple[torch.Tensor, torch.Tensor | None, float | None]:
    """``(latents, y, truncation)`` from a latents file written by ``save_latents`` (or ``scalegan sample --npz
    --save-latents``), checked against a model ``config``: shapes, dtype, class range. Errors are one line that names
    the file and the fix."""
    import zipfile

    import numpy as np

    try:
        if hasattr(path, "read"):  # a file object (the server's request body)
            head = path.read(4)
            path.seek(0)
        else:
            with open(path, "rb") as f:
                head = f.read(4)
        if head != b"PK\x03\x04":  # an NPZ is a zip archive
            raise ValueError("not a zip archive")
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path}: not a readable latents NPZ ({e}); write one with `scalegan invert` or "
                         "`scalegan sample --npz FILE --save-latents`") from None
    key = "latents" if "latents" in arrays else "z" if "z" in arrays else None
    if key is None:
        raise ValueError(f"{path}: no 'latents' array (found {sorted(arrays) or 'none'}); write one with "
                         "`scalegan invert` or `scalegan sample --npz FILE --save-latents`")
    lat = arrays[key]
    if lat.dtype.kind != "f":
        raise ValueError(f"{path}: latents must be floating point, got {lat.dtype}")
    shapes = latent_shapes(config)  # z, and W+ where the family has a W space
    if tuple(lat.shape[1:]) not in shapes:
        raise ValueError(f"{path}: latents of shape {list(lat.shape)} do not fit this model, which takes "
                         f"{' or '.join(str(['n', *s]).replace(chr(39), '') for s in shapes)}")
    if not np.isfinite(lat).all():
        raise ValueError(f"{path}: latents hold NaN or infinite values")
    latents = torch.from_numpy(lat.astype(np.float32))
    y = None
    if "y" in arrays:
        labels = arrays["y"]
        if labels.dtype.kind not in "iu" or labels.ndim != 1 or len(labels) != len(lat):
            raise ValueError(f"{path}: 'y' must be {len(lat)} integer class labels, got {labels.dtype} "
                             f"{list(labels.shape)}")
        if config.n_classes:
            y = class_labels(len(lat), torch.from_numpy(labels.astype(np.int64)), config.n_classes)
        elif (labels != -1).any():
            raise ValueError(f"{path}: class labels given for an unconditional model (use -1)")
    if config.n_classes and y is None:
        raise ValueError(f"{path}: this model is class-conditional and the file has no 'y' labels")
    t = float(arrays["truncation"]) if "truncation" in arrays and np.ndim(arrays["truncation"]) == 0 else math.nan
    return latents, y, (None if math.isnan(t) else t)
