"""Denoising and colourisation through a generator (scalegan/invert.py ``task="denoise"`` / ``"colorize"``,
`scalegan invert --task ...`), on tiny untrained models (tests/conftest.py `tiny_overrides`): the targets are the
model's own images, so a latent exists that restores them exactly."""

import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from PIL import Image

import scalegan
from scalegan.cli import main
from scalegan.invert import Degradation, _Loss, estimate_noise_sigma, grey, invert, psnr
from scalegan.utils import read_json, to_hwc
from scalegan.weights import save_generator


def _model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    G, _ = scalegan.create_model(name, **tiny_overrides(name))
    return G.eval()


def _clean_and_noisy(G, sigma=0.1):
    """Two of G's images and a noisy copy (Gaussian, ``sigma`` on the [0, 1] scale, a fixed seed)."""
    clean = scalegan.sample(G, 2, y=torch.tensor([1, 3]), seed=3)
    noise = 2 * sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    return clean, (clean + noise).clamp(-1, 1)


def test_noise_sigma_estimate():
    """The MAD estimate finds the deviation of noise on a flat and on a smooth image (within 15%: 1024 coefficients
    per 64 px grey image, the median's relative standard error is about 4%), and little on a clean smooth one."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    smooth = (0.4 * torch.sin(2 * xx + yy))[None, None].repeat(3, 1, 1, 1)
    noise = torch.randn(smooth.shape, generator=torch.Generator().manual_seed(1))
    sigmas = torch.tensor([0.02, 0.05, 0.1]).reshape(3, 1, 1, 1)
    for base in (torch.zeros_like(smooth), smooth):
        assert torch.allclose(estimate_noise_sigma(base + 2 * sigmas * noise), sigmas.flatten(), rtol=0.15)
    assert float(estimate_noise_sigma(smooth).max()) < 0.005


def test_clipped_noise_sets_a_lower_hinge_and_does_not_fool_the_estimate():
    """Noise on an image that is half black, clipped to the pixel range as stored images are: the clipped half keeps
    half its noise at a half-normal's mean square, so the noisy image is about sigma^2 (1 - p) from the clean one
    (p = the share of pixels at an end). The hinge is set there, and the sigma estimate leaves clipped blocks out
    (with them, the median of mostly zero coefficients would read ~40% low)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    clean = torch.where(xx < 0, torch.full_like(xx, -1.0), 0.4 * torch.sin(2 * xx + yy))[None, None].repeat(3, 1, 1, 1)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))
    sigmas = torch.tensor([0.05, 0.1, 0.15])
    noisy = (clean + 2 * sigmas.reshape(3, 1, 1, 1) * noise).clamp(-1, 1)
    actual = (noisy - clean).square().flatten(1).mean(1)
    assert (actual < 0.85 * (2 * sigmas).square()).all()  # clipping took a quarter of the noise
    degrade = Degradation("denoise", 64, channels=1, noise_sigma=sigmas)
    degrade.clipped_share = (noisy.abs() >= 1 - 1 / 255).float().flatten(1).mean(1)
    assert torch.allclose(degrade.expected_residual(torch.arange(3), "cpu"), actual, rtol=0.08)
    assert torch.allclose(estimate_noise_sigma(noisy), sigmas, rtol=0.15)


def test_denoise_loss_does_not_pull_below_the_noise_level():
    """The discrepancy principle: a generated image that differs from the noisy input by less than the noise gets
    no pixel term (what is left is the pyramid's, past its own hinge); one farther away gets its excess."""
    target = torch.zeros(1, 1, 16, 16)
    degrade = Degradation("denoise", 16, channels=1, noise_sigma=0.1)  # expected mean square 4 * 0.01 on [-1, 1]
    loss = _Loss(degrade, target, None, 0.0)
    index = torch.tensor([0])
    close = torch.full((1, 1, 16, 16), 0.1)  # mean square 0.01 < 0.04
    far = torch.full((1, 1, 16, 16), 0.3)  # mean square 0.09
    # A constant image's pyramid levels (8 and 4 px) have its own mean square, 0.01 or 0.09; each level is hinged at
    # the noise's share there (0.04 / 4 = 0.01 and 0.04 / 16 = 0.0025), as average pooling shrinks white noise.
    assert torch.allclose(loss(close, index)[0], torch.tensor([(0 + (0.01 - 0.0025)) / 2]))
    assert torch.allclose(loss(far, index)[0], torch.tensor([0.09 - 0.04 + ((0.09 - 0.01) + (0.09 - 0.0025)) / 2]))
    plain = _Loss(Degradation("invert", 16, channels=1), target, None, 0.0)
    assert torch.allclose(plain(close, index)[0], torch.tensor([2 * 0.01]))


@pytest.mark.parametrize("tune", [None, 5])
def test_denoise_restores_a_generated_image(tune):
    """The restored image is closer to the clean image than the noisy input (sigma 0.15) is, by >= 2 dB (measured
    here: 29.9 / 22.8 dB without tuning and 24.1 / 24.5 dB with 5 tuning steps, over 16.5 / 18.0 dB: the smallest
    margin is 4.8 dB): the generator cannot draw the noise, so the search finds the image under it. (On this tiny
    model the hinge at the noise level changes little: its G cannot fit noise even when tuned for 5 steps.)"""
    G = _model("biggan-fmnist")
    clean, noisy = _clean_and_noisy(G, sigma=0.15)
    result = invert(G, noisy, task="denoise", steps=80, restarts=2, classes=[1, 3], seed=0, tune=tune)
    assert result.task == "denoise" and result.noise_sigma_source == "estimated"
    assert torch.allclose(result.noise_sigma, estimate_noise_sigma(noisy))
    assert 0.13 < float(result.noise_sigma[0]) < 0.17, result.noise_sigma  # image 1's is lower: clipping at +-1
    assert (psnr(result.images, clean) >= psnr(noisy, clean) + 2).all(), (psnr(result.images, clean),
                                                                         psnr(noisy, clean))
    given = invert(G, noisy, task="denoise", steps=2, restarts=1, classes=[1], noise_sigma=0.05)
    assert given.noise_sigma.tolist() == pytest.approx([0.05, 0.05]) and given.noise_sigma_source == "given"
    with pytest.raises(ValueError, match="one value or one per image"):
        invert(G, noisy, task="denoise", steps=1, classes=[1], noise_sigma=torch.tensor([0.1, 0.1, 0.1]))
    with pytest.raises(ValueError, match="denoise only"):
        invert(G, noisy, task="invert", steps=1, noise_sigma=0.1)


@pytest.mark.parametrize("name", ["biggan-32", "stylegan2-cifar"])
def test_colorize_matches_the_grey_and_returns_colour(name):
    """From the grey of an RGB model's image: 3-channel output whose grey matches the input's (>= 22 dB through the
    degradation; measured: 41-45 dB BigGAN, 25-26 dB StyleGAN2 in 60 steps), and the same search from the RGB
    image, which is made grey first."""
    G = _model(name)
    clean = scalegan.sample(G, 2, y=torch.tensor([1, 3]), seed=3)
    search = dict(task="colorize", steps=60, restarts=2, classes=[1, 3], seed=0)
    result = invert(G, grey(clean), **search)
    assert result.images.shape == clean.shape
    assert (result.psnr >= 22).all(), result.psnr
    assert torch.allclose(psnr(grey(result.images), grey(clean)), result.psnr, atol=1e-3)
    from_rgb = invert(G, clean, **search)
    assert torch.allclose(from_rgb.images, result.images, atol=1e-4)


def test_colorize_needs_an_rgb_model():
    G = _model("biggan-fmnist")
    with pytest.raises(ValueError, match="needs an RGB model; this one is grey"):
        invert(G, torch.zeros(1, 1, 32, 32), task="colorize", steps=1)


def _png(path, image) -> str:
    array = to_hwc(image[None])[0]
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(path)
    return str(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    for name in ("biggan-fmnist", "biggan-32", "stylegan2-cifar"):
        out[name] = save_generator(_model(name), tmp_path_factory.mktemp(name), class_names=list("abcde"))
    return out


@pytest.mark.parametrize("name, task, extra", [
    ("biggan-fmnist", "denoise", []), ("biggan-fmnist", "denoise", ["--noise-sigma", "0.08"]),
    ("biggan-32", "colorize", []), ("stylegan2-cifar", "colorize", []), ("stylegan2-cifar", "denoise", [])])
def test_cli_tasks_with_tuning(folders, tmp_path, capsys, name, task, extra):
    """Both tasks run with --tune 5 from the CLI; summary.json records the task and (denoise) the sigma used."""
    G, _ = scalegan.load(folders[name])
    clean, noisy = _clean_and_noisy(G)
    image = _png(tmp_path / "in.png", grey(clean[0:1])[0] if task == "colorize" else noisy[0])
    out = tmp_path / "out"
    assert main(["invert", str(folders[name]), image, "--out-dir", str(out), "--task", task, "--search-steps", "6",
                 "--restarts", "1", "--class", "1", "--tune", "5", *extra]) == 0
    assert "then tuned" in capsys.readouterr().out
    summary = read_json(out / "summary.json")
    entry = summary["images"][0]
    assert summary["task"] == task and summary["tuning"]["steps"] == 5
    written = np.asarray(Image.open(out / "in.png"))
    assert written.shape == ((32, 32, 3) if G.config.img_channels == 3 else (32, 32))
    if task == "denoise":
        given = float(extra[1]) if extra else None
        assert summary["noise_sigma"] == given
        assert summary["noise_sigma_source"] == ("given" if extra else "estimated")
        assert entry["noise_sigma"] == pytest.approx(given if extra else 0.1, rel=0.01 if extra else 0.3)
    else:
        assert summary["noise_sigma"] is None and "noise_sigma" not in entry


@pytest.mark.parametrize("argv, hint", [
    (["--task", "colorize"], "--task colorize needs an RGB model; this one is grey"),
    (["--noise-sigma", "0.1"], "--noise-sigma applies to --task denoise only"),
    (["--task", "denoise", "--noise-sigma", "-1"], "--noise-sigma"),
], ids=["colorize-grey-model", "sigma-without-denoise", "negative-sigma"])
def test_cli_bad_task_input_is_one_error_line(folders, tmp_path, capsys, argv, hint):
    image = _png(tmp_path / "x.png", torch.zeros(1, 32, 32))
    assert main(["invert", str(folders["biggan-fmnist"]), image, "--out-dir", str(tmp_path / "o"),
                 "--search-steps", "1", *argv]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scalegan invert: error: ") and hint in lines[0], err
    assert "Traceback" not in out + err and not (tmp_path / "o").exists()
