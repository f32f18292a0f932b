"""Differentiable augmentation of every image D sees, real and generated, in D's updates and in G's (so D never
sees an unaugmented image and G's gradient flows through the transform). Two kinds, usable together:

- DiffAugment (Zhao et al. 2020): ``translation`` (integer shifts of up to 1/8 of the size, zero padding),
  ``cutout`` (a zeroed square of half the size at a random place), ``color`` (brightness, saturation, contrast),
  each applied to every image.
- ADA (Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data"): ``ada``, the paper's
  'bgc' pipeline (pixel blitting, general geometric, colour), each transform applied to each image with
  probability ``p``; ``Augmenter`` adjusts ``p`` during training from the sign of D's outputs on real images.

Pure functions of a batch and a ``torch.Generator``, drawn on the CPU, so a seeded run is reproducible on any
device and resumes exactly when the generator's state is saved.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout", "ada")


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """``"translation,cutout"`` -> ``("translation", "cutout")``; an unknown name is a ValueError."""
    names = tuple(p.strip() for p in (policy or "").split(",") if p.strip())
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown}: choose from {', '.join(POLICIES)} (comma-separated)")
    return names


# ------------------------------------------------------------------------------------------------ DiffAugment
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
    """Apply the policy's transforms in the order color, translation, cutout; differentiable in ``x``. ``ada``
    needs a probability: ``ada_augment`` or ``Augmenter`` applies it."""
    names = parse_policy(policy) if isinstance(policy, str) else policy
    if "ada" in names:
        raise ValueError("diff_augment: 'ada' needs a probability p; use Augmenter or ada_augment")
    if "color" in names:
        x = color(x, generator)
    if "translation" in names:
        x = translation(x, generator=generator)
    if "cutout" in names:
        x = cutout(x, generator=generator)
    return x


# ------------------------------------------------------------------------------------------------ ADA
# The 'bgc' pipeline of the paper's appendix B, in its order. Blits and general geometric transforms compose into
# one 3x3 matrix per image, colour transforms into one 4x4 matrix; each is applied once.
GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLORS = ("brightness", "contrast", "lumaflip", "hue", "saturation")
ADA_OPS = GEOMETRIC + COLORS


def _chosen(n: int, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Which of ``n`` images a transform applies to, each with probability ``p``: [N] float64, 1 or 0."""
    return (torch.rand(n, generator=generator, dtype=torch.float64) < p).double()


def _lognormal(n: int, std_log2: float, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """lognormal(0, std_log2 * ln 2) where chosen, exactly 1 elsewhere: [N] float64."""
    return torch.exp2(torch.randn(n, generator=generator, dtype=torch.float64) * std_log2 * _chosen(n, p, generator))


def _angle(n: int, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """U(-pi, pi) where chosen, exactly 0 elsewhere: [N] float64."""
    return (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi * _chosen(n, p, generator)


def _eye(n: int, size: int) -> torch.Tensor:
    return torch.eye(size, dtype=torch.float64).repeat(n, 1, 1)


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _eye(len(sx), 3)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rotate2d(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    m = _eye(len(cos), 3)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    return m


def _translate2d(t: torch.Tensor) -> torch.Tensor:
    m = _eye(len(t), 3)
    m[:, :2, 2] = t
    return m


def _check_ops(ops: tuple[str, ...], known: tuple[str, ...]) -> None:
    unknown = [o for o in ops if o not in known]
    if unknown:
        raise ValueError(f"unknown ADA transform {unknown}: choose from {', '.join(known)}")


def geometric_matrices(n: int, height: int, width: int, p: float, generator: torch.Generator | None = None,
                       ops: tuple[str, ...] = GEOMETRIC) -> torch.Tensor:
    """[N, 3, 3] float64 (CPU): per image, the map from output to input pixel coordinates (origin at the image
    centre, unit one pixel) of the enabled geometric transforms, each applied with probability ``p`` (the two
    rotations with ``1 - sqrt(1 - p)`` each, so that at least one happens with probability ``p``).

    Every parameter's distribution is symmetric about the identity, so a matrix drawn as a transform serves as its
    own inverse, and the inverses compose in pipeline order. An image no transform chose gets exactly the identity.
    """
    _check_ops(ops, GEOMETRIC)
    g, m = generator, _eye(n, 3)
    size = torch.tensor([width, height], dtype=torch.float64)
    if "xflip" in ops:  # i ~ U{0, 1}: a chosen image flips half the time, as in the paper
        flip = torch.randint(2, (n,), generator=g).double() * _chosen(n, p, g)
        m = m @ _scale2d(1 - 2 * flip, torch.ones(n, dtype=torch.float64))
    if "rotate90" in ops:  # i ~ U{0, 3} quarter turns, from exact cosines and sines
        quarter = (torch.randint(4, (n,), generator=g) * _chosen(n, p, g)).long()
        cos = torch.tensor([1.0, 0, -1, 0], dtype=torch.float64)[quarter]
        sin = torch.tensor([0.0, 1, 0, -1], dtype=torch.float64)[quarter]
        m = m @ _rotate2d(cos, sin)
    if "xint" in ops:  # t ~ U(-0.125, 0.125) of the size, rounded to whole pixels
        t = ((torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1) * 0.125 * size).round()
        m = m @ _translate2d(t * _chosen(n, p, g)[:, None])
    if "scale" in ops:  # s ~ lognormal(0, 0.2 ln 2), isotropic
        s = _lognormal(n, 0.2, p, g)
        m = m @ _scale2d(s, s)
    p_rot = 1 - math.sqrt(max(1 - p, 0.0))
    if "rotate" in ops:  # theta ~ U(-180, 180) degrees, before the anisotropic scale ...
        theta = _angle(n, p_rot, g)
        m = m @ _rotate2d(theta.cos(), theta.sin())
    if "aniso" in ops:  # s ~ lognormal(0, 0.2 ln 2): x by s, y by 1/s
        s = _lognormal(n, 0.2, p, g)
        m = m @ _scale2d(s, 1 / s)
    if "rotate" in ops:  # ... and after it
        theta = _angle(n, p_rot, g)
        m = m @ _rotate2d(theta.cos(), theta.sin())
    if "xfrac" in ops:  # t ~ N(0, 0.125) of the size
        t = torch.randn(n, 2, generator=g, dtype=torch.float64) * 0.125 * size
        m = m @ _translate2d(t * _chosen(n, p, g)[:, None])
    return m


def color_matrices(n: int, p: float, generator: torch.Generator | None = None, ops: tuple[str, ...] = COLORS
                   ) -> torch.Tensor:
    """[N, 4, 4] float64 (CPU): per image, the affine map of (R, G, B, 1) (images in [-1, 1]) of the enabled
    colour transforms, each applied with probability ``p``, composed in pipeline order. Luma flip, hue rotation
    and saturation act about the luma axis v = (1, 1, 1) / sqrt(3). Unchosen transforms are exactly the identity."""
    _check_ops(ops, COLORS)
    g, m = generator, _eye(n, 4)
    v = torch.tensor([1.0, 1, 1, 0], dtype=torch.float64) / math.sqrt(3)
    rgb = torch.diag(torch.tensor([1.0, 1, 1, 0], dtype=torch.float64))  # identity on colours, 0 on the 1
    along = torch.outer(v, v)  # projection onto the luma axis
    if "brightness" in ops:  # b ~ N(0, 0.2), added to R, G and B
        b = torch.randn(n, generator=g, dtype=torch.float64) * 0.2 * _chosen(n, p, g)
        shift = _eye(n, 4)
        shift[:, :3, 3] = b[:, None]
        m = shift @ m
    if "contrast" in ops:  # c ~ lognormal(0, 0.5 ln 2), about 0 (mid-grey)
        c = _lognormal(n, 0.5, p, g).view(n, 1, 1)
        m = (torch.eye(4, dtype=torch.float64) + (c - 1) * rgb) @ m
    if "lumaflip" in ops:  # i ~ U{0, 1}: reflect the luma component
        i = (torch.randint(2, (n,), generator=g).double() * _chosen(n, p, g)).view(n, 1, 1)
        m = (torch.eye(4, dtype=torch.float64) - 2 * i * along) @ m
    if "hue" in ops:  # theta ~ U(-180, 180) degrees about the luma axis (Rodrigues' formula)
        theta = _angle(n, p, g).view(n, 1, 1)
        cross = torch.zeros(4, 4, dtype=torch.float64)  # [v]x, the cross product with v
        cross[0, 1], cross[0, 2], cross[1, 2] = -v[2], v[1], -v[0]
        cross = cross - cross.T
        m = (torch.eye(4, dtype=torch.float64) + theta.sin() * cross + (1 - theta.cos()) * (along - rgb)) @ m
    if "saturation" in ops:  # s ~ lognormal(0, 1 ln 2): scale the distance from the luma axis
        s = _lognormal(n, 1.0, p, g).view(n, 1, 1)
        m = (torch.eye(4, dtype=torch.float64) + (s - 1) * (rgb - along)) @ m
    return m


def _is_identity(m: torch.Tensor) -> bool:
    return bool((m == torch.eye(m.shape[-1], dtype=m.dtype)).all())


# Symlet-6 (the least asymmetric Daubechies wavelet with 6 vanishing moments): its orthonormal low-pass filter, 12
# taps, sum sqrt(2), unit energy. Up with it and down with it time-reversed (synthesis, then analysis) is the
# identity, so the 2x round trip of ADA's general geometric transforms blurs nothing by itself.
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)


def _affine(scale: tuple[float, float], shift: tuple[float, float]) -> torch.Tensor:
    """[3, 3] float64: (x, y) -> (scale x + shift)."""
    return torch.tensor([[scale[0], 0, shift[0]], [0, scale[1], shift[1]], [0, 0, 1]], dtype=torch.float64)


def _blits(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[N] bool: which matrices move every output pixel centre onto an input pixel centre (x-flips, quarter turns
    and whole-pixel shifts, composed), so the image is a copy of its pixels."""
    a = m[:, :2, :2]
    signed_permutation = ((a == 0) | (a.abs() == 1)).all((1, 2)) & (a @ a.transpose(1, 2) == torch.eye(2)).all((1, 2))
    offset = _index_offset(m, height, width)
    return signed_permutation & (offset == offset.round()).all(1) & (m[:, 2] == torch.tensor([0.0, 0, 1])).all(1)


def _index_offset(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[N, 2]: the input pixel index (x, y) that ``m`` maps output pixel (0, 0) to."""
    centre = torch.tensor([0.5 - width / 2, 0.5 - height / 2, 1.0], dtype=torch.float64)
    return (m @ centre)[:, :2] + torch.tensor([width / 2 - 0.5, height / 2 - 0.5], dtype=torch.float64)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices outside [0, size) mirrored about the edge pixels, which are not repeated (``F.pad``'s reflect)."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


def _blit(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Copy pixels where blit matrices ``m`` (see ``_blits``) send them, reflecting at the borders: exact."""
    n, c, h, w = x.shape
    a = m[:, :2, :2].round().long().to(x.device)  # [N, 2, 2]
    offset = _index_offset(m, h, w).round().long().to(x.device)  # [N, 2]
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    ix = a[:, 0, 0].view(n, 1, 1) * cols + a[:, 0, 1].view(n, 1, 1) * rows + offset[:, 0].view(n, 1, 1)
    iy = a[:, 1, 0].view(n, 1, 1) * cols + a[:, 1, 1].view(n, 1, 1) * rows + offset[:, 1].view(n, 1, 1)
    index = (_reflect(iy, h) * w + _reflect(ix, w)).view(n, 1, h * w).expand(n, c, h * w)  # [N, C, H * W]
    return x.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)


def _resample_bilinear(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """The former single-pass path, kept to measure against (benchmarks/ada_highfreq.py and its test): bilinear
    ``grid_sample`` of ``x`` (float32) at ``m`` @ (output pixel centre), reflecting at the borders."""
    n, _, h, w = x.shape
    unit = torch.diag(torch.tensor([2 / w, 2 / h, 1.0], dtype=torch.float64))  # pixels -> [-1, 1]
    pixels = torch.diag(torch.tensor([w / 2, h / 2, 1.0], dtype=torch.float64))
    theta = (unit @ m @ pixels)[:, :2].to(device=x.device, dtype=torch.float32)  # [N, 2, 3]
    ys = (torch.arange(h, device=x.device, dtype=torch.float32) + 0.5) * (2 / h) - 1
    xs = (torch.arange(w, device=x.device, dtype=torch.float32) + 0.5) * (2 / w) - 1
    points = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, device=x.device)], -1)
    grid = torch.einsum("hwk,njk->nhwj", points, theta)  # [N, H, W, 2]: (x, y) in [-1, 1]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _upsampling(size: int, device: torch.device) -> torch.Tensor:
    """[2 size + 10, size] float32: 2x upsampling of ``size`` samples with the Symlet-6 filter (gain 1), all the
    2x samples it reaches; its transpose, halved, filters and downsamples (gain 1). As matrix products on a
    Sapphire Rapids CPU the two passes ran 5x (up) and 13x (down) faster than ``conv_transpose2d`` / strided
    ``conv2d`` on one-channel images (32 px, padded to 64); the dense matrices cost O(size^3) per image, so
    large images on a CPU are slow (GPUs not measured)."""
    taps = torch.tensor(SYM6, dtype=torch.float64) * math.sqrt(2)
    rows = 2 * torch.arange(size).view(1, size) + torch.arange(len(SYM6)).view(-1, 1)  # [12, size]
    matrix = torch.zeros(2 * size + len(SYM6) - 2, size, dtype=torch.float64)
    matrix[rows, torch.arange(size).expand_as(rows)] = taps.view(-1, 1).expand_as(rows)
    return matrix.to(device=device, dtype=torch.float32)


def _resample_2x(x: torch.Tensor, m: torch.Tensor, mode: str = "bicubic") -> torch.Tensor:
    """ADA's general geometric resampling of ``x`` (float32) at ``m`` @ (output pixel): reflect-pad by the margin
    the matrices reach (at most the image size less one per side; beyond it, zeros), upsample 2x with the Symlet-6
    low-pass filter, sample at 2x (``mode``: grid_sample's bicubic, or bilinear as in the paper), filter with the
    time-reversed filter and keep every other sample.

    Per axis, upsampling puts padded input pixel ``i`` around 2x sample ``2 i + delay`` (``delay``: the filter's
    centroid, its delay at low frequencies; 5.1, not the 5.5 of a symmetric filter, an error of 0.2 px that
    rotations and scaling would move off-centre), and downsampling reads output pixel ``j`` around 2x sample
    ``2 j + delay`` of the sampled image."""
    n, c, h, w = x.shape
    taps = torch.tensor(SYM6, dtype=torch.float64)
    length, delay = len(SYM6), float((torch.arange(len(SYM6)) * taps).sum() / taps.sum())
    out_h, out_w = 2 * h + length - 2, 2 * w + length - 2  # the 2x samples that downsampling reads
    # 2x output sample (k_x, k_y) -> output pixel coordinates (origin at the image centre, unit one pixel).
    to_out = _affine((0.5, 0.5), (0.5 - w / 2 - delay / 2, 0.5 - h / 2 - delay / 2))
    # The input pixel indices the corners of that grid reach: with the sampling's neighbours (2 2x samples for
    # bicubic) and the filter's support, the margins to pad by.
    corners = torch.tensor([[0.0, 0, 1], [out_w - 1, 0, 1], [0, out_h - 1, 1], [out_w - 1, out_h - 1, 1]],
                           dtype=torch.float64)
    centre = torch.tensor([w / 2 - 0.5, h / 2 - 0.5], dtype=torch.float64)
    reach = torch.einsum("nij,kj->nki", m @ to_out, corners)[..., :2] + centre  # [N, 4, 2]
    neighbours = 1.0 if mode == "bicubic" else 0.5
    low = reach.amin((0, 1)) - neighbours + (delay - length + 1) / 2
    high = reach.amax((0, 1)) + neighbours + delay / 2
    size = torch.tensor([w, h], dtype=torch.float64)
    pad_low = (-low).ceil().clamp(min=0).minimum(size - 1).long().tolist()
    pad_high = (high - (size - 1)).ceil().clamp(min=0).minimum(size - 1).long().tolist()
    padded = F.pad(x.reshape(n * c, 1, h, w), (pad_low[0], pad_high[0], pad_low[1], pad_high[1]), mode="reflect")
    up = _upsampling(padded.shape[-2], x.device) @ padded[:, 0] @ _upsampling(padded.shape[-1], x.device).T
    up_h, up_w = up.shape[-2:]
    # Input pixel coordinates -> padded pixel indices -> 2x samples of ``up`` -> grid_sample's [-1, 1].
    to_grid = (_affine((2 / up_w, 2 / up_h), (1 / up_w - 1, 1 / up_h - 1)) @ _affine((2, 2), (delay, delay))
               @ _affine((1, 1), tuple((centre + torch.tensor(pad_low)).tolist())))
    theta = (to_grid @ m @ to_out)[:, :2].to(device=x.device, dtype=torch.float32)  # [N, 2, 3]
    ks_y = torch.arange(out_h, device=x.device, dtype=torch.float32)
    ks_x = torch.arange(out_w, device=x.device, dtype=torch.float32)
    points = torch.stack([ks_x.expand(out_h, out_w), ks_y[:, None].expand(out_h, out_w),
                          torch.ones(out_h, out_w, device=x.device)], -1)
    grid = torch.einsum("hwk,njk->nhwj", points, theta)  # [N, 2H + 10, 2W + 10, 2]
    sampled = F.grid_sample(up.view(n, c, up_h, up_w), grid, mode=mode, padding_mode="zeros", align_corners=False)
    sampled = sampled.reshape(n * c, out_h, out_w)
    return (_upsampling(h, x.device).T @ sampled @ _upsampling(w, x.device)).view(n, c, h, w) / 4


def _resample(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``x`` (float32) resampled at ``m`` @ (output pixel): images whose matrix is a blit are exact copies of their
    pixels, the others go through ``_resample_2x``."""
    blits = _blits(m, *x.shape[-2:])
    if blits.all():
        return _blit(x, m)
    if not blits.any():
        return _resample_2x(x, m)
    copied, general = blits.nonzero()[:, 0], (~blits).nonzero()[:, 0]
    parts = torch.cat([_blit(x[copied.to(x.device)], m[copied]), _resample_2x(x[general.to(x.device)], m[general])])
    return parts[torch.cat([copied, general]).argsort().to(x.device)]


def _recolor(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """x' = A x + b per pixel, with A, b from the [N, 4, 4] colour matrices; 1 channel: brightness x contrast."""
    m = m.to(device=x.device, dtype=torch.float32)
    if x.shape[1] == 1:
        return x * m[:, 0, 0].view(-1, 1, 1, 1) + m[:, 0, 3].view(-1, 1, 1, 1)
    return torch.einsum("nij,njhw->nihw", m[:, :3, :3], x) + m[:, :3, 3].view(-1, 3, 1, 1)


def ada_augment(x: torch.Tensor, p: float, generator: torch.Generator | None = None,
                ops: tuple[str, ...] = ADA_OPS) -> torch.Tensor:
    """ADA's 'bgc' pipeline on ``x`` [N, C, H, W] in [-1, 1]: each enabled transform applied to each image with
    probability ``p`` (pixel blitting: x-flip, quarter turns, integer translation up to 1/8 of the size; general
    geometric: isotropic scale, rotation, anisotropic scale, fractional translation; colour: brightness, contrast,
    luma flip, hue rotation, saturation). Differentiable in ``x``; computed in float32 (also under autocast),
    returned in ``x``'s dtype and memory format. ``p = 0`` returns ``x`` itself.

    Geometric transforms compose into one matrix per image. An image whose matrix only flips, turns by quarters
    and shifts by whole pixels is a copy of its pixels (reflected at the borders). Any other is resampled as in
    the paper: reflect-padded by the margin its matrix reaches, upsampled 2x with the Symlet-6 wavelet's
    low-pass filter, sampled at 2x, low-pass filtered and downsampled 2x; the sampling at 2x is bicubic where the
    paper's is bilinear (on white noise it keeps ~0.6-0.7 of the Laplacian's energy against ~0.43-0.47 for
    bilinear at 2x and ~0.26-0.34 for the former single bilinear pass; benchmarks/ada_highfreq.py). On 1-channel
    images only brightness and contrast apply: luma flip, hue and saturation are the identity there (for grey, hue
    and saturation are no-ops anyway)."""
    _check_ops(ops, ADA_OPS)
    n, c, h, w = x.shape
    color_ops = tuple(o for o in ops if o in COLORS and (c == 3 or o in ("brightness", "contrast")))
    if c not in (1, 3) and color_ops:
        raise ValueError(f"ADA colour transforms need 1 or 3 channels, got {c}")
    geometric = geometric_matrices(n, h, w, p, generator, tuple(o for o in ops if o in GEOMETRIC))
    colors = color_matrices(n, p, generator, color_ops)
    if _is_identity(geometric) and _is_identity(colors):
        return x
    layout, dtype = _layout(x), x.dtype
    with torch.autocast(x.device.type, enabled=False):
        out = x.float()
        if not _is_identity(geometric):
            out = _resample(out, geometric)
        if not _is_identity(colors):
            out = _recolor(out, colors)
    return out.to(dtype).contiguous(memory_format=layout)


class Augmenter:
    """The augmentation a training run applies to every image D sees: ADA with the current ``p`` (when the policy
    has ``ada``), then the policy's DiffAugment transforms; all draws from ``generator``.

    Adaptive ``p`` (``target > 0``): the objective calls ``observe(D(real))`` on D's real logits; the loop calls
    ``update(images per iteration)`` once per iteration, and every ``interval`` iterations ``p`` moves by
    ``sign(r_t - target) * images * interval / (kimg * 1000)`` (so it can cross [0, 1] in ``kimg`` thousand
    images) where r_t = E[sign(D(real))] since the last move, then is clamped to [0, 1]. With ``target = 0``
    ``p`` stays at its initial value. ``leak_warning()`` says, once, when ``p`` has passed ``LEAK_P``."""

    # Above this p the paper saw augmentations start to leak into generated images (rotated, recoloured samples).
    LEAK_P = 0.8

    def __init__(self, policy: str | tuple[str, ...], generator: torch.Generator | None = None, p: float = 0.0,
                 target: float = 0.6, kimg: float = 500.0, interval: int = 4):
        names = parse_policy(policy) if isinstance(policy, str) else tuple(policy)
        self.ada = "ada" in names
        self.diff_policy = tuple(name for name in names if name != "ada")
        self.generator = generator if generator is not None else torch.Generator()
        self.p, self.target, self.kimg, self.interval = float(p), float(target), float(kimg), int(interval)
        self.iterations = 0  # update() calls, for the interval
        self.signs: torch.Tensor | None = None  # [sum of sign(D(real)), count] since the last move of p
        self.leak_warned = False

    @property
    def adaptive(self) -> bool:
        return self.ada and self.target > 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.ada:
            images = ada_augment(images, self.p, self.generator)
        if self.diff_policy:
            images = diff_augment(images, self.diff_policy, self.generator)
        return images

    def observe(self, real_logits: torch.Tensor) -> None:
        """Accumulate sign(D(real)) (detached, on the logits' device; float32 counts are exact below 2^24)."""
        if not self.adaptive:
            return
        logits = real_logits.detach().float()
        stats = torch.stack([logits.sign().sum(), logits.new_tensor(float(logits.numel()))])
        self.signs = stats if self.signs is None else self.signs.to(stats.device) + stats

    def update(self, batch_images: int, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Once per iteration (``batch_images``: images per iteration over all ranks). ``reduce`` sums the
        [sum, count] accumulator over ranks, so every rank moves ``p`` alike."""
        if not self.adaptive:
            return
        self.iterations += 1
        if self.iterations % self.interval or self.signs is None:
            return
        total, count = (reduce(self.signs) if reduce is not None else self.signs).tolist()
        self.signs = None
        if count > 0:
            r_t = total / count
            direction = (r_t > self.target) - (r_t < self.target)
            self.p = min(max(self.p + direction * batch_images * self.interval / (self.kimg * 1000), 0.0), 1.0)

    def leak_warning(self) -> str | None:
        """The first time ADA's ``p`` is above ``LEAK_P``, a message saying what that risks and what helps; else
        None (the flag is per process: a resumed run says it again once)."""
        if not self.ada or self.leak_warned or self.p <= self.LEAK_P:
            return None
        self.leak_warned = True
        return (f"ADA's augmentation probability p = {self.p:.3f} passed {self.LEAK_P}: augmentations may leak into "
                "the generated images (rotated, flipped or recoloured samples). More data, --mirror (x-flipped "
                "copies of the data), a higher --ada-target (p rises while r_t is above it) or an earlier "
                "checkpoint help")

    def state_dict(self) -> dict:
        """Generator state, ``p``, and the pending accumulators (for an exact resume)."""
        return {"generator": self.generator.get_state(), "p": self.p, "iterations": self.iterations,
                "signs": self.signs.detach().cpu() if self.signs is not None else None}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``'s values; a fixed ``p`` (not adaptive) stays the configured one."""
        self.generator.set_state(state["generator"])
        if self.adaptive:
            self.p = float(state["p"])
        self.iterations = int(state.get("iterations", 0))
        self.signs = state.get("signs")
