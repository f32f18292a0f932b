"""Latents: truncated normals and class labels, drawn on the CPU from a ``torch.Generator`` so that a seed gives
the same ``z`` and ``y`` on every device."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

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
    """Class indices [n] from ``y``: None (uniform random), an int, or a sequence/tensor of n (or 1) ints;
    float [n, n_classes] soft labels (class interpolation) pass through."""
    if not n_classes:
        if y is not None:
            raise ValueError("this generator is unconditional: do not pass classes")
        return None
    if y is None:
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
