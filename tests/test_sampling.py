"""Truncation, class selection, determinism, grids, interpolation, standing statistics."""

import numpy as np
import pytest
import torch

from scalegan.latents import class_labels, sample_z, truncated_normal
from scalegan.layers import batch_norms
from scalegan.media import make_grid, sheet_frames
from scalegan.models import build_generator
from scalegan.objectives.biggan import standing_stats
from scalegan.registry import model_config
from scalegan.sampling import class_grid, interpolation_sheet, resolve_class, sample
from scalegan.utils import to_hwc


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return build_generator(model_config("biggan-fmnist", ch=8, d_ch=8)).eval()


@pytest.mark.parametrize("threshold", [0.04, 0.5, 2.0])
def test_truncated_normal_bounds_and_shape(threshold):
    z = truncated_normal((2000, 16), threshold, torch.Generator().manual_seed(0))
    assert z.abs().max() <= threshold
    # The truncated standard normal's variance: 1 - 2 t phi(t) / (2 Phi(t) - 1).
    t = torch.tensor(threshold, dtype=torch.float64)
    phi = torch.exp(-t * t / 2) / (2 * torch.pi) ** 0.5
    big_phi = 0.5 * (1 + torch.erf(t / 2 ** 0.5))
    var = 1 - 2 * t * phi / (2 * big_phi - 1)
    assert abs(z.double().var().item() - var.item()) < 0.03 * var.item()
    assert abs(z.mean().item()) < 0.02 * threshold + 0.01


def test_sample_z_modes():
    g = torch.Generator().manual_seed(1)
    z = sample_z(500, 8, 0.5, "scale", g)
    assert z.abs().max() <= 1.0 + 1e-6 and z.abs().max() > 0.5  # 0.5 * truncnorm(-2, 2)
    assert torch.equal(sample_z(4, 8, None, generator=torch.Generator().manual_seed(3)),
                       torch.randn(4, 8, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="truncation mode"):
        sample_z(2, 8, 0.5, "clip")
    with pytest.raises(ValueError, match="> 0"):
        sample_z(2, 8, 0.0)


def test_sample_is_deterministic_and_in_range(G):
    a = sample(G, 6, y=[0, 1, 2, 3, 4, 5], truncation=0.7, seed=5)
    b = sample(G, 6, y=[0, 1, 2, 3, 4, 5], truncation=0.7, seed=5, batch_size=4)
    c = sample(G, 6, y=[0, 1, 2, 3, 4, 5], truncation=0.7, seed=6)
    assert a.shape == (6, 1, 32, 32)
    assert torch.allclose(a, b, atol=1e-6)
    assert (a - c).abs().mean() > 1e-3  # another seed, other images
    images, z, y = sample(G, 3, y=2, seed=0, truncation=0.7, return_latents=True)
    assert y.tolist() == [2, 2, 2] and torch.allclose(G(z, y), images, atol=1e-6)
    # The latents are the paper's truncated z (resample mode, the default of a natively trained BigGAN).
    assert torch.equal(z, truncated_normal((3, G.config.z_dim), 0.7, torch.Generator().manual_seed(0)))
    assert torch.equal(sample(G, 3, y=2, seed=0, truncation=0.7, truncation_mode="scale"),
                       G(sample_z(3, G.config.z_dim, 0.7, "scale", torch.Generator().manual_seed(0)), y))
    with pytest.raises(ValueError, match="truncation mode 'clip' does not apply"):
        sample(G, 1, truncation=0.5, truncation_mode="clip")
    with pytest.raises(ValueError, match="truncation must be > 0"):
        sample(G, 1, truncation=-1.0)


def test_class_labels_and_names():
    assert class_labels(3, 4, 10).tolist() == [4, 4, 4]
    with pytest.raises(ValueError, match="out of range"):
        class_labels(2, [0, 10], 10)
    with pytest.raises(ValueError, match="2 class labels for 3"):
        class_labels(3, [0, 1], 10)
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert resolve_class("trouser", names, 10) == 1
    assert resolve_class("7", names, 10) == 7
    with pytest.raises(ValueError, match="did you mean 'Sneaker'"):
        resolve_class("sneakers", names, 10)
    with pytest.raises(ValueError, match="out of range"):
        resolve_class(12, names, 10)


def test_grids_and_sheets(G):
    images = class_grid(G, [0, 3, 9], per_class=4, seed=0)
    assert images.shape == (12, 1, 32, 32)
    grid = make_grid(images, nrow=4)
    assert grid.shape == (3 * 34 + 2, 4 * 34 + 2, 1) and grid.dtype == np.uint8
    assert np.array_equal(grid[2:34, 2:34, 0], to_hwc(images[:1])[0, :, :, 0])
    for kind in ("z", "class"):
        sheet = interpolation_sheet(G, rows=2, steps=5, kind=kind, classes=[1, 8], seed=0)
        assert sheet.shape == (10, 1, 32, 32)
        frames = sheet_frames(sheet, rows=2, steps=5)
        assert len(frames) == 8  # 5 forward + 3 back (ping-pong without repeating the ends)
    sheet = interpolation_sheet(G, rows=1, steps=3, kind="class", classes=[1, 8], seed=0)
    # The ends of a class interpolation are the pure classes at the same z.
    z = sample_z(1, G.config.z_dim, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(sheet[0], G(z, torch.tensor([1]))[0], atol=1e-5)
    assert torch.allclose(sheet[2], G(z, torch.tensor([8]))[0], atol=1e-5)


def test_standing_stats_is_the_plain_average(G):
    import copy

    Gs = copy.deepcopy(G)
    sv = [m.u.clone() for m in Gs.modules() if hasattr(m, "u")]
    standing_stats(Gs, n_batches=3, batch_size=8, seed=0)
    assert not Gs.training
    assert all(torch.equal(a, m.u) for a, m in zip(sv, [m for m in Gs.modules() if hasattr(m, "u")]))
    bn = batch_norms(Gs)[0]
    assert int(bn.num_batches_tracked) == 3
    # The same three batches by hand: running_mean is the mean of the three batch means.
    means = []
    handle = batch_norms(G)[0].register_forward_hook(lambda m, inp, out: means.append(inp[0].mean((0, 2, 3))))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(3):
            z = sample_z(8, G.config.z_dim, generator=g)
            y = class_labels(8, None, G.config.n_classes, g)
            G(z, y)
    handle.remove()
    assert torch.allclose(bn.running_mean, torch.stack(means).mean(0), atol=1e-5)
