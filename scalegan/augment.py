"""Differentiable augmentation (DiffAugment, Zhao et al. 2020): the same random transforms are applied to real and
generated images before D, in D's update and in G's, so D never sees an unaugmented image and G's gradient flows
through the transform. Pure functions of a batch and a ``torch.Generator`` (drawn on the CPU, so a seeded run is
reproducible on any device and resumes exactly when the generator's state is saved).

Policies: ``translation`` (integer shifts of up to 1/8 of the size, zero padding), ``cutout`` (a zeroed square of
half the size at a random place), ``color`` (brightness, saturation, contrast).
"""

from __future__ import annotations

import torch

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """``"translation,cutout"`` -> ``("translation", "cutout")``; an unknown name is a ValueError."""
    names = tuple(p.strip() for p in (policy or "").split(",") if p.strip())
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown}: choose from {', '.join(POLICIES)} (comma-separated)")
    return names


def _uniform(n: int, generator: torch.Generator | None, x: torch.Tensor) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, generator=generator).to(device=x.device, dtype=x.dtype)


def color(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness (+U(-0.5, 0.5)), saturation (x U(0, 2) around the pixel mean) and contrast
    (x U(0.5, 1.5) around the image mean), per image."""
    n = len(x)
    x = x + (_uniform(n, generator, x) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_uniform(n, generator, x) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(n, generator, x) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by whole pixels, up to ``ratio`` of its size in each direction; vacated pixels are 0."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), generator=generator).to(x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=generator).to(x.device)
    gy = (torch.arange(h, device=x.device).view(1, h, 1) + ty + sh).expand(n, h, w)  # rows of the padded image
    gx = (torch.arange(w, device=x.device).view(1, 1, w) + tx + sw).expand(n, h, w)
    padded = torch.nn.functional.pad(x, (sw, sw, sh, sh))  # [N, C, H + 2sh, W + 2sw]
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    return padded.permute(0, 2, 3, 1)[batch, gy, gx].permute(0, 3, 1, 2).contiguous(memory_format=_layout(x))


def cutout(x: torch.Tensor, ratio: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a square of ``ratio`` times the size, centred anywhere in the image, per image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=generator).to(x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=generator).to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    top, left = cy - ch // 2, cx - cw // 2  # the square may stick out of the image
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)  # [N, H, W]
    return x * (~inside).unsqueeze(1).to(x.dtype)


def _layout(x: torch.Tensor) -> torch.memory_format:
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def diff_augment(x: torch.Tensor, policy: tuple[str, ...] | str, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """Apply the policy's transforms in the order color, translation, cutout; differentiable in ``x``."""
    names = parse_policy(policy) if isinstance(policy, str) else policy
    if "color" in names:
        x = color(x, generator)
    if "translation" in names:
        x = translation(x, generator=generator)
    if "cutout" in names:
        x = cutout(x, generator=generator)
    return x
