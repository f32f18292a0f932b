"""benchmarks/restore_baselines.py, the classical restorations the real-image benchmarks compare with, on synthetic
images whose answer is known."""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from scalegan.invert import estimate_noise_sigma, grey, psnr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from restore_baselines import bicubic_upsample, grey_to_rgb, harmonic_fill, nl_means  # noqa: E402


def _grid(n=32):
    return torch.meshgrid(torch.linspace(-0.8, 0.8, n), torch.linspace(-0.8, 0.8, n), indexing="ij")


def _smooth(channels=3):
    yy, xx = _grid()
    return (0.5 * torch.sin(3 * xx) * torch.cos(2 * yy))[None, None].repeat(2, channels, 1, 1)


def test_harmonic_fill_of_a_linear_ramp_is_exact():
    """A linear ramp is harmonic, so a hole inside the image (not touching the mirrored border) comes back exactly;
    the known pixels are kept as they are."""
    yy, xx = _grid()
    ramp = torch.stack([0.6 * xx - 0.3 * yy, -0.2 * xx + 0.7 * yy])[None]  # [1, 2, 32, 32]
    mask = torch.ones(1, 1, 32, 32)
    mask[..., 8:20, 10:26] = 0
    filled = harmonic_fill(ramp * mask, mask)
    assert float((filled - ramp).abs().max()) < 1e-4
    assert torch.equal(filled * mask, ramp * mask)
    grey_fill = psnr(ramp * mask, ramp)
    assert (psnr(filled, ramp) > grey_fill + 20).all()


def test_bicubic_beats_nearest_on_a_smooth_image():
    x = _smooth()
    small = F.avg_pool2d(x, 4)
    up = bicubic_upsample(small, 4)
    nearest = F.interpolate(small, scale_factor=4, mode="nearest")
    assert up.shape == x.shape
    assert (psnr(up, x) > psnr(nearest, x) + 3).all()  # measured: 41 vs 32 dB


def test_nl_means_lowers_the_error_of_a_noisy_smooth_image():
    x = _smooth()
    noisy = x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))  # sigma 0.1 on [0, 1]
    sigma = estimate_noise_sigma(noisy)
    assert torch.allclose(sigma, torch.full((2,), 0.1), rtol=0.15), sigma
    for s in (None, 0.1):
        assert (psnr(nl_means(noisy, s), x) > psnr(noisy, x) + 6).all()  # measured: 31.6 vs 20.0 dB


def test_grey_to_rgb_repeats_the_luma():
    x = _smooth() * torch.tensor([1.0, 0.5, -0.3]).reshape(1, 3, 1, 1)
    out = grey_to_rgb(x)
    assert out.shape == x.shape and torch.allclose(out, grey(x).expand(-1, 3, -1, -1))
    assert torch.equal(grey_to_rgb(grey(x)), out)


def test_colourised_fashion_mnist_keeps_the_grey_and_colours_by_class():
    """benchmarks/colour_fmnist.py: the BT.601 grey of the colour image is the input (up to clipping and rounding),
    black stays black, and the hue follows the class (two classes' mean chroma point different ways)."""
    import numpy as np
    from colour_fmnist import colourise

    g = np.tile(np.linspace(0, 255, 28).round().astype(np.uint8), (28, 1))
    grey_images = np.stack([g] * 20)
    labels = np.array([0] * 10 + [5] * 10)
    rgb = colourise(grey_images, labels, seed=3).astype(np.float64)
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    assert np.abs(luma - grey_images).max() <= 3 and np.abs(luma - grey_images).mean() < 0.5
    assert (rgb[:, :, 0] == 0).all()  # the black column has no colour
    chroma = rgb - luma[..., None]
    assert np.linalg.norm(chroma[:10].mean((0, 1, 2)) - chroma[10:].mean((0, 1, 2))) > 10
    assert np.abs(chroma).max() > 20  # coloured, not grey
