"""Classical restorations to compare ``scalegan invert``'s with (issue 23's real-image benchmarks): one plain
function per task, images [N, C, H, W] in [-1, 1], no learned parts and no dependencies beyond torch.

- inpainting: ``harmonic_fill``, the hole solved as a discrete Laplace equation (each missing pixel the mean of its
  neighbours; known pixels fixed; the image border a mirror, i.e. Neumann) by conjugate gradients. Harmonic, not
  biharmonic: smooth but with kinks at the hole's edge;
- super-resolution: ``bicubic_upsample`` (up-sampling needs no anti-aliasing);
- denoising: ``nl_means``, Buades et al.'s non-local means (patches compared over a search window, weights
  exp(-max(d - 2 sigma^2, 0) / h^2));
- colourisation: ``grey_to_rgb``, the grey image in all three channels.

Benchmark-only (the package gets no new API); tests/test_restore_baselines.py checks them on synthetic images."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scalegan.invert import estimate_noise_sigma, grey


def _neighbour_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of the 4 neighbours of every pixel, neighbours outside the image counting 0."""
    padded = F.pad(x, (1, 1, 1, 1))
    return padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:]


def harmonic_fill(images: torch.Tensor, mask: torch.Tensor, tol: float = 1e-6, max_iter: int = 2000) -> torch.Tensor:
    """Fill the pixels ``mask`` marks missing (mask [N or 1, 1, H, W], 1 = known) with the harmonic function of the
    known ones: for every missing pixel p, sum over its in-image neighbours q of (u_p - u_q) = 0. The unknowns are
    solved by conjugate gradients on that symmetric positive definite system (each image and channel at once)."""
    x = images.float()
    known = (mask.float() > 0.5).expand_as(x).float()
    hole = 1 - known
    if (known.flatten(1).sum(1) == 0).any():
        raise ValueError("harmonic_fill needs at least one known pixel per image")
    degree = _neighbour_sum(torch.ones_like(x[:1, :1]))

    def A(v):  # v lives on the hole (zero elsewhere)
        return hole * (degree * v - _neighbour_sum(v))

    b = hole * _neighbour_sum(x * known)
    u = torch.zeros_like(x)
    r = b - A(u)
    p = r.clone()
    rs = (r * r).flatten(2).sum(2)[..., None, None]  # [N, C, 1, 1]: one solve per image and channel
    scale = (b * b).flatten(2).sum(2)[..., None, None].clamp_min(1e-30)
    for _ in range(max_iter):
        if bool((rs <= tol ** 2 * scale).all()):
            break
        Ap = A(p)
        alpha = rs / (p * Ap).flatten(2).sum(2)[..., None, None].clamp_min(1e-30)
        u = u + alpha * p
        r = r - alpha * Ap
        rs_new = (r * r).flatten(2).sum(2)[..., None, None]
        p = r + (rs_new / rs.clamp_min(1e-30)) * p
        rs = rs_new
    return x * known + u * hole


def bicubic_upsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Bicubic up-sampling by ``factor``, clamped to [-1, 1] (bicubic overshoots at edges)."""
    return F.interpolate(images.float(), scale_factor=factor, mode="bicubic", align_corners=False).clamp(-1, 1)


def nl_means(images: torch.Tensor, sigma: torch.Tensor | float | None = None, patch: int = 3, window: int = 11,
             h: float = 0.6) -> torch.Tensor:
    """Non-local means. ``sigma``: the noise's deviation on the [0, 1] scale (per image [N] or one; None: the MAD
    estimate ``scalegan.invert.estimate_noise_sigma``); ``patch`` / ``window``: odd sides of the compared patches
    and of the search window; the filter width is ``h`` x sigma (Buades et al.'s h ~ 0.4-0.6 sigma for small
    patches, with the 2 sigma^2 offset). Patch distances are means over the patch and the channels."""
    x = images.float()
    N = len(x)
    if sigma is None:
        sigma = estimate_noise_sigma(x)
    s = 2 * torch.as_tensor(sigma, dtype=torch.float32).reshape(-1).expand(N).reshape(N, 1, 1, 1)  # [-1, 1] scale
    radius = window // 2
    padded = F.pad(x, (radius,) * 4, mode="reflect")
    H, W = x.shape[-2:]
    total = torch.zeros_like(x)
    weights = torch.zeros_like(x[:, :1])
    width = (h * s).square().clamp_min(1e-12)
    for dy in range(window):
        for dx in range(window):
            shifted = padded[..., dy:dy + H, dx:dx + W]
            d = (x - shifted).square().mean(1, keepdim=True)
            d = F.avg_pool2d(F.pad(d, (patch // 2,) * 4, mode="replicate"), patch, stride=1)
            w = torch.exp(-(d - 2 * s.square()).clamp_min(0) / width)
            total = total + w * shifted
            weights = weights + w
    return (total / weights).clamp(-1, 1)


def grey_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """The grey image (1 channel, or RGB made grey by ITU-R BT.601 luma) in all three channels."""
    x = images.float()
    return (grey(x) if x.shape[1] == 3 else x).expand(-1, 3, -1, -1).clone()
