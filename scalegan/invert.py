"""Inversion of real images into a generator, and restoration through it (inpainting, super-resolution,
denoising, colourisation).

``invert(G, images)`` searches for a class and a latent whose image matches each input: z for BigGAN and
BigGAN-deep, W for StyleGAN2 (one W for every layer, then per-layer W+ late in the search of plain inversion).
The class is decided where it acts: in z for BigGAN; for a conditional model with a W space, whose W already
holds the class (any class's W reaches about any image), the first half of the search runs in z + class through
the mapping, picks each image's class there, and the rest refines the mapped W of the winner.
The search is Adam on the latents only (G is left as it is: eval mode, which writes nothing, and no parameter
gradients) with several restarts, on a loss of

- pixels: mean squared error of the degraded generated image against the input;
- several scales: the same on an average-pooled image pyramid (down to 4 px), and a feature loss where asked
  (``features``: a ``scalegan.perceptual.FeatureNet``, D's blocks, Inception or a classifier; by default, with a
  ``classifier`` (the project's ``SmallClassifier``), the distance of its penultimate features);
- a latent prior: BigGAN keeps z near the shell of N(0, I) (``(mean(z^2) - 1)^2``); StyleGAN2 keeps W near the
  centre it starts from (the class's average W when the model tracks one, else ``w_avg``).

Restoration takes the loss through the degradation: ``task="inpaint"`` compares known pixels only (``mask`` 1 =
known, 0 = missing) and returns the generated image with the known pixels put back from the input;
``task="superres"`` compares the generated image, down-sampled by area averaging by ``factor``, with the
low-resolution input, and returns the generated image at the model's resolution; ``task="denoise"`` compares
the generated image itself with the noisy input (the degradation is the identity) and returns the generated image;
``task="colorize"`` (RGB models) compares the generated image's grey (ITU-R BT.601 luma, 0.299 R + 0.587 G +
0.114 B, on the [-1, 1] images) with the grey input and returns the generated colour image.

Denoising keeps the search from fitting the noise by the discrepancy principle (Morozov): a clean image differs
from its noisy copy by the noise, whose expected mean square is sigma^2, so the pixel term is
``max(mse - sigma^2, 0)``: nothing pulls the generated image closer to the input than the noise level, and among
latents that reach it the prior and the feature loss decide. The pyramid's levels are hinged the same way at the
noise's share there (average pooling by 2 halves white noise's standard deviation: sigma^2 / 4 per level); unhinged,
they pulled tuned generators towards the noise (measured on 8 real Fashion-MNIST test images at sigma 0.1: BigGAN
24.1 -> 24.5 dB). This matters most for generator tuning, which can fit anything. sigma is
``noise_sigma`` where given (on the [0, 1] pixel scale), else estimated per image by ``estimate_noise_sigma``:
the median absolute finest-scale Haar diagonal coefficient / 0.6745 (Donoho and Johnstone's robust estimate;
image content is sparse there, so the median sees mostly noise; it overestimates on images with much fine
texture), over the 2x2 blocks with no pixel at the range's ends. Noisy images are stored clipped to the pixel
range, and clipping shrinks the noise where the image is black or white: of the pixels whose clean value is at an
end, half are clipped back onto it (no residual) and half keep a half-normal residual (mean square sigma^2 / 2).
With p the share of the input's pixels at an end, the expected mean square is sigma^2 (1 - p) (measured on
Fashion-MNIST test images at sigma 0.1: 0.56-0.74 sigma^2, within 0.02 of 1 - p), and that is the hinge.

Class candidates, in this order: the ``classes`` given; else a ``classifier``'s ``top_k`` (a network trained to
tell the classes; preferred to D); else the ``top_k`` classes a discriminator ``D`` scores highest (``D(x, c)``
for every class); else every class (at most
``max_classes``), narrowed to ``top_k`` after the first part of the search. The first part (a quarter of the steps)
runs every restart of every candidate; the rest continues the best restart of each of the ``top_k`` best
candidates (W-space models: the best one, the class being decided); the lowest final objective (loss + prior)
picks the class and latent of each image.

With ``tune`` (steps or a ``scalegan.tune.TuneConfig``), a copy of G is then tuned per image around its latent
on the same loss (``scalegan.tune``: DGP's progressive tuning for BigGAN, pivotal tuning for StyleGAN2), and the
result holds the tuned generators, which render the result's latents. (``scalegan
invert`` passes D only for models of more than 64 classes: on its benchmark, trying every class found the class
far more often than D's top-k.)
"""

from __future__ import annotations

import dataclasses
import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .degrade import LUMA, TASKS, Degradation, at_range_end, estimate_noise_sigma, grey  # noqa: F401
from .family import get_family, latent_shape, w_shape
from .perceptual import FeatureNet, classifier_features, feature_distance
from .sampling import render
from .sources import resolve_source
from .tune import TuneConfig
from .tune import settings as tune_settings
from .tune import tune as tune_generator
from .utils import device_of


@dataclass
class InversionResult:
    """What ``invert`` found, per input image (N of them).

    ``images``: the restored images [N, C, R, R] in [-1, 1] (inpainting: known pixels from the input);
    ``latents``: z, or W+ [N, layers, dim] for a family with a W space (StyleGAN2), which ``G(latents, y)``
    renders; ``y``: classes [N] (None for an unconditional model); ``psnr``: dB of the generated image against
    the input, through the degradation (inversion and denoising: all pixels, denoising against the noisy input;
    inpainting: the known ones; super-resolution: at the input's resolution; colourisation: on grey);
    ``loss``: the final search objective (with the prior); ``candidates``: per image, every class tried, best
    first, with its objective and PSNR (after the first part of the search for classes not continued);
    ``class_source``: where the candidates came from (``given``, ``discriminator``, ``classifier``, ``all``,
    ``unconditional``); ``feature_loss``: the feature network's name (``none``). With tuning: ``generators``, one
    tuned G per image (``generators[i](latents[i:i+1], y[i:i+1])`` is image i's generated image),
    ``psnr_search``: the PSNR before tuning, ``images_search``: the restored images before tuning, ``tuning``: its
    settings. Denoising: ``noise_sigma`` [N], the noise
    level used per image (the [0, 1] pixel scale), and ``noise_sigma_source`` (``given`` or ``estimated``)."""

    images: torch.Tensor
    latents: torch.Tensor
    y: torch.Tensor | None
    psnr: torch.Tensor
    loss: torch.Tensor
    candidates: list[list[dict]] = field(default_factory=list)
    class_source: str = "unconditional"
    task: str = "invert"
    feature_loss: str = "none"
    generators: list[nn.Module] | None = None
    psnr_search: torch.Tensor | None = None
    tuning: dict | None = None
    noise_sigma: torch.Tensor | None = None
    noise_sigma_source: str | None = None
    images_search: torch.Tensor | None = None


class InversionStopped(Exception):
    """``invert``'s ``stop()`` returned True (a server's deadline): the search ended at the step it was at."""


# --------------------------------------------------------------------------------------------- helpers
def psnr(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB per image of two batches in [-1, 1] (peak 1 on the [0, 1] scale), over the pixels where
    ``weight`` is 1 when given."""
    diff = ((a.float() - b.float()) / 2).square()
    if weight is None:
        mse = diff.flatten(1).mean(1)
    else:
        w = weight.float().expand_as(diff)
        mse = (diff * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1e-8)
    return 10 * torch.log10(1 / mse.clamp_min(1e-12))


def is_w_space(G) -> bool:
    """True for generators searched in W (a family with a W space: StyleGAN2), False for z."""
    return get_family(G).w_space is not None


@contextmanager
def frozen(module: nn.Module | None):
    """Turn off parameter gradients for the duration (the flags are put back after): only latents are optimised."""
    if module is None:
        yield
        return
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def load_discriminator(source, device: str | torch.device = "cpu") -> nn.Module | None:
    """The discriminator of a run or checkpoint folder (eval mode), or None where the source has none (weights
    folders, pretrained names, foreign checkpoints)."""
    from .manifest import check_folder
    from .weights import WeightsError, load_state_dict, read_config, resolve_weights_dir

    try:
        resolved = resolve_source(source)
        if resolved.kind != "weights":
            return None
        directory = resolve_weights_dir(resolved.path)
    except WeightsError:
        return None
    file = Path(directory) / "D.safetensors"
    if not file.is_file():
        return None
    config, _ = read_config(directory)
    check_folder(directory, ["config.json", file.name])
    D = get_family(config).discriminator(config)
    load_state_dict(D, file)
    return D.to(device).eval()


# --------------------------------------------------------------------------------------------- loss
def _pyramid_loss(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor,
                  expected: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per image on average-pooled copies (1/2, 1/4, ... down to 4 px), averaged over levels.
    ``expected`` (denoise): the noise's mean square at full resolution; each level's term is hinged at its share
    (2x2 average pooling divides white noise's variance by 4), so no level pulls towards the noise either."""
    levels = []
    while a.shape[-1] >= 8:
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        term = (a - b).square().flatten(1).mean(1)
        if expected is not None:
            expected = expected / 4
            term = (term - expected).clamp_min(0)
        levels.append(term)
    return torch.stack(levels).mean(0) / scale if levels else torch.zeros_like(scale)


class _Loss:
    """The search loss per image of a batch: pixels + pyramid + features through the degradation."""

    def __init__(self, degrade: Degradation, target: torch.Tensor, features: FeatureNet | None,
                 feature_weight: float, stop=None):
        self.degrade, self.target, self.features, self.feature_weight = degrade, target, features, feature_weight
        self.stop = stop  # asked at every step of the search and of tuning, which both go through this loss
        self.target_features = None
        if features is not None:
            weight = degrade.weight(None, target.device)  # inpainting: the holes count in neither image
            with torch.no_grad():
                self.target_features = features.features(target if weight is None else target * weight)

    def __call__(self, x: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss [B], pixel mean squared error [B]) of generated images ``x`` whose inputs are ``index``."""
        if self.stop is not None and self.stop():
            raise InversionStopped("the inversion was stopped (its caller's deadline passed)")
        target = self.target[index]
        observed = self.degrade(x, index)
        weight = self.degrade.weight(index, x.device)
        scale = torch.ones(len(x), device=x.device) if weight is None else weight.flatten(1).mean(1).expand(len(x))
        pixel = (observed - target).square().flatten(1).mean(1) / scale
        expected = self.degrade.expected_residual(index, x.device)
        data = pixel if expected is None else (pixel - expected).clamp_min(0)  # denoise: not below the noise
        loss = data + _pyramid_loss(observed, target, scale, expected)
        if self.features is not None:
            reference = [f[index.to(f.device)] for f in self.target_features]
            distance = feature_distance(self.features.features(observed), reference).to(loss.device)
            loss = loss + self.feature_weight * distance
        return loss, pixel


# --------------------------------------------------------------------------------------------- latents
@torch.no_grad()
def _w_centre(G, y: torch.Tensor | None) -> torch.Tensor:
    """The W each search starts from [B, dim] (the family's truncation centre of each class), on G's device."""
    return get_family(G).w_space.centre(G, y).to(device_of(G))


@torch.no_grad()
def _mapped(G, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """W [n, dim] of z [n, ...] and classes ``y`` [n] or None, untruncated, on G's device."""
    return get_family(G).w_space.map(G, z, y, None)[:, 0].to(device_of(G))


@torch.no_grad()
def _w_scale(G, y: torch.Tensor | None, generator: torch.Generator) -> float:
    """The spread of W around its centre (root mean square per entry), from 256 mapped z."""
    n = 256
    z = torch.randn(n, *latent_shape(G), generator=generator)
    yy = None if y is None else y[torch.randint(len(y), (n,), generator=generator).to(y.device)]
    w = _mapped(G, z, yy)
    return float((w - w.mean(0)).square().mean().sqrt().clamp_min(1e-3))


def _initial_latents(G, y: torch.Tensor | None, restart: torch.Tensor, generator: torch.Generator,
                     w_space: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(starting latents [B, ...], W centres or None) for a batch whose row i is restart ``restart[i]``.

    z: restart 0 starts at z = 0 (the "mean" image), others at N(0, I) draws. W: restart 0 starts at the centre,
    others half-way from the centre to a mapped random z of the row's class."""
    B, device = len(restart), device_of(G)
    if not w_space:
        z = torch.randn(B, *latent_shape(G), generator=generator)
        z[restart.cpu() == 0] = 0
        return z.to(device), None
    centre = _w_centre(G, y) if y is not None else _w_centre(G, None).expand(B, -1)
    mapped = _mapped(G, torch.randn(B, *latent_shape(G), generator=generator), y)
    w = torch.where((restart == 0)[:, None].to(device), centre, centre.lerp(mapped, 0.5))
    return w.clone(), centre


def _prior(latent: torch.Tensor, centre: torch.Tensor | None, w_scale: float) -> torch.Tensor:
    """The latent prior per row: z near the N(0, I) shell; W near its centre (in units of W's spread)."""
    if centre is None:
        return (latent.square().mean(1) - 1).square()
    diff = latent - (centre[:, None] if latent.dim() == 3 else centre)
    return diff.square().flatten(1).mean(1) / w_scale ** 2


def _render(G, latent: torch.Tensor, y: torch.Tensor | None, w_space: bool, truncation) -> torch.Tensor:
    """G's image of the searched latents (``sampling.render`` with gradients): W (one per layer, or per-layer W+),
    which already holds its truncation, or z. G runs in eval mode here: deterministic (StyleGAN2: constant noise)."""
    if w_space:
        ws = latent if latent.dim() == 3 else latent[:, None].expand(-1, w_shape(G)[0], -1)
        return render(G, ws, y, None, grad=torch.is_grad_enabled())
    return render(G, latent, y, truncation, grad=torch.is_grad_enabled())


# --------------------------------------------------------------------------------------------- class candidates
@torch.no_grad()
def _discriminator_scores(D: nn.Module, images: torch.Tensor, n_classes: int, chunk: int = 64) -> torch.Tensor:
    """D(x, c) for every image and class [N, n_classes]. Each image is scored in batches of its own copies (padded
    to a multiple of a minibatch-std group), so the batch statistic D may use is the same for every class."""
    group = max(int(get_family(D).discriminator_group(D.config) or 1), 1)
    device = next(D.parameters()).device
    scores = torch.empty(len(images), n_classes)
    for i, x in enumerate(images.to(device)):
        for start in range(0, n_classes, chunk):
            c = torch.arange(start, min(start + chunk, n_classes), device=device)
            padded = torch.cat([c, c.new_zeros(-len(c) % group)])
            logits = D(x[None].expand(len(padded), -1, -1, -1), padded).float().reshape(-1)
            scores[i, c.cpu()] = logits[:len(c)].cpu()
    return scores


def candidate_classes(G, preview: torch.Tensor, classes=None, D: nn.Module | None = None,
                      classifier: nn.Module | None = None, top_k: int = 3,
                      max_classes: int = 64) -> tuple[torch.Tensor | None, str]:
    """The classes to search per image [N, K] (None for an unconditional model) and where they came from:
    ``classes`` given; else the classifier's ``top_k`` (a network trained to tell the classes: preferred); else D's
    ``top_k``; else all (at most ``max_classes``)."""
    n_classes, N = G.config.n_classes, len(preview)
    if not n_classes:
        if classes:
            raise ValueError("this generator is unconditional: do not pass classes")
        return None, "unconditional"
    if classes:
        chosen = torch.tensor([int(c) for c in classes], dtype=torch.long)
        bad = chosen[(chosen < 0) | (chosen >= n_classes)]
        if bad.numel():
            raise ValueError(f"class index {int(bad[0])} out of range: this model has classes 0..{n_classes - 1}")
        return chosen.expand(N, -1).clone(), "given"
    k = min(top_k, n_classes)
    if classifier is not None:
        size = classifier.config.resolution
        x = F.interpolate(preview, size=(size, size), mode="bilinear", align_corners=False)
        with torch.no_grad():
            logits = classifier(x.to(next(classifier.parameters()).device)).float().cpu()
        if logits.shape[1] != n_classes:
            raise ValueError(f"the classifier has {logits.shape[1]} classes, the generator {n_classes}")
        return logits.topk(k, dim=1).indices, "classifier"
    if D is not None:
        return _discriminator_scores(D, preview, n_classes).topk(k, dim=1).indices, "discriminator"
    if n_classes > max_classes:
        raise ValueError(f"this model has {n_classes} classes, too many to try them all (at most {max_classes}): "
                         "pass --class, a run or checkpoint folder (its discriminator ranks the classes) or "
                         "--classifier DIR")
    return torch.arange(n_classes).expand(N, -1).clone(), "all"


# --------------------------------------------------------------------------------------------- search
@dataclass
class _Batch:
    """Rows of the search: which input, class and restart each latent belongs to."""

    index: torch.Tensor  # [B] input image
    y: torch.Tensor | None  # [B] class
    restart: torch.Tensor  # [B]
    latent: torch.Tensor  # [B, ...]
    centre: torch.Tensor | None  # [B, dim] W centre (a family with a W space)

    def take(self, rows: torch.Tensor) -> _Batch:
        pick = lambda t: None if t is None else t[rows.to(t.device)]  # noqa: E731
        return _Batch(pick(self.index), pick(self.y), pick(self.restart), pick(self.latent), pick(self.centre))


@dataclass
class _Settings:
    steps: int
    lr: float
    prior_weight: float
    w_space: bool
    w_scale: float
    wplus_from: int | None
    truncation: float | None
    progress: bool


def _learning_rate(settings: _Settings, t: int) -> float:
    """Cosine decay from ``lr`` to 2% of it over the whole search."""
    return settings.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t / max(settings.steps, 1))))


def _optimise(G, loss_fn: _Loss, batch: _Batch, settings: _Settings, start: int, stop: int,
              desc: str) -> tuple[_Batch, torch.Tensor, torch.Tensor]:
    """Adam on the batch's latents for steps ``start..stop`` of the search; returns the batch with the final latents
    and their (search objective with the prior, pixel error) [B]: the objective ranks classes and restarts, so that
    in W, where every class's centre reaches about every image, the class whose centre is nearest wins a tie."""
    param = batch.latent.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([param], lr=settings.lr)
    for t in tqdm(range(start, stop), desc=desc, unit="step", disable=not settings.progress, file=sys.stderr):
        if settings.wplus_from is not None and t == settings.wplus_from and param.dim() == 2:
            param = param.detach()[:, None].repeat(1, w_shape(G)[0], 1).requires_grad_(True)  # W -> W+
            opt = torch.optim.Adam([param], lr=settings.lr)
        for group in opt.param_groups:
            group["lr"] = _learning_rate(settings, t)
        x = _render(G, param, batch.y, settings.w_space, settings.truncation)
        loss, _ = loss_fn(x, batch.index)
        total = loss + settings.prior_weight * _prior(param, batch.centre, settings.w_scale)
        opt.zero_grad(set_to_none=True)
        total.sum().backward()
        opt.step()
    with torch.no_grad():
        loss, pixel = loss_fn(_render(G, param, batch.y, settings.w_space, settings.truncation), batch.index)
        loss = loss + settings.prior_weight * _prior(param, batch.centre, settings.w_scale)
    done = _Batch(batch.index, batch.y, batch.restart, param.detach(), batch.centre)
    return done, loss.detach(), pixel.detach()


def _best_rows(keys: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    """For each distinct key, the row with the lowest loss (rows in order of the keys)."""
    order = torch.argsort(loss.cpu(), stable=True)
    seen, rows = set(), []
    for row in order.tolist():
        key = int(keys[row])
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return torch.tensor(sorted(rows, key=lambda r: int(keys[r])), dtype=torch.long)


def _pixel_psnr(pixel: torch.Tensor) -> list[float]:
    """PSNR in dB from mean squared errors on the [-1, 1] scale."""
    return [round(float(10 * torch.log10(4 / p.clamp_min(1e-12))), 3) for p in pixel.cpu()]


@contextmanager
def _eval_mode(G: nn.Module | None):
    """G in eval mode for the duration (its mode is put back after), so that forwards write nothing."""
    if G is None:
        yield
        return
    was = G.training
    G.eval()
    try:
        yield
    finally:
        G.train(was)


def _check_images(G, images: torch.Tensor, degrade: Degradation) -> torch.Tensor:
    """The inputs as the loss compares them, on G's device (colourisation: RGB inputs made grey)."""
    images = torch.as_tensor(images)
    size, channels = degrade.input_size, G.config.img_channels
    if degrade.task == "colorize" and images.dim() == 4 and images.shape[1] == 3:
        images = grey(images.float())
        channels = 1
    elif degrade.task == "colorize":
        channels = 1
    if images.dim() != 4 or images.shape[1:] != (channels, size, size):
        accepted = "1 (grey) or 3 (RGB)" if degrade.task == "colorize" else channels
        raise ValueError(f"images must be [N, {accepted}, {size}, {size}] for task {degrade.task} on this model, "
                         f"got {list(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError("images hold NaN or infinite values")
    return images.float().clamp(-1, 1).to(device_of(G))


def _noise_level(degrade: Degradation, target: torch.Tensor) -> str | None:
    """Denoising: give ``degrade`` one noise level per input (the one given, else estimated from the input);
    returns where it came from (``given`` / ``estimated``), or None for other tasks."""
    if degrade.task != "denoise":
        return None
    source = "given" if degrade.noise_sigma is not None else "estimated"
    sigma = degrade.noise_sigma if degrade.noise_sigma is not None else estimate_noise_sigma(target).cpu()
    if len(sigma) not in (1, len(target)):
        raise ValueError(f"noise_sigma: one value or one per image ({len(target)}), got {len(sigma)}")
    degrade.noise_sigma = sigma.expand(len(target)).clone()
    degrade.clipped_share = at_range_end(target).float().flatten(1).mean(1).cpu()
    return source


def _first_batch(G, candidates: torch.Tensor | None, n: int, restarts: int, generator: torch.Generator,
                 w_space: bool) -> _Batch:
    """Every restart of every candidate class of every image."""
    K = 1 if candidates is None else candidates.shape[1]
    index = torch.arange(n).repeat_interleave(K * restarts)
    restart = torch.arange(restarts).repeat(n * K)
    y = None
    if candidates is not None:
        y = candidates.repeat_interleave(restarts, dim=1).reshape(-1).to(device_of(G))
    latent, centre = _initial_latents(G, y, restart, generator, w_space)
    return _Batch(index.to(device_of(G)), y, restart, latent, centre)


def _candidate_records(batch: _Batch, loss: torch.Tensor, pixel: torch.Tensor, stage: str) -> dict:
    """{(image, class): record} for the rows of a batch."""
    out = {}
    for row, (i, value, p) in enumerate(zip(batch.index.tolist(), loss.tolist(), _pixel_psnr(pixel))):
        c = None if batch.y is None else int(batch.y[row])
        out[(i, c)] = {"class": c, "loss": round(value, 6), "psnr": p, "stage": stage}
    return out


def invert(G, images: torch.Tensor, *, classes=None, D: nn.Module | None = None, classifier: nn.Module | None = None,
           task: str = "invert", mask: torch.Tensor | None = None, factor: int = 4, restarts: int = 4,
           steps: int = 300, top_k: int = 3, max_classes: int = 64, lr: float | None = None,
           prior_weight: float = 1e-3, feature_weight: float = 0.1, wplus: bool | None = None,
           truncation: float | None = None, seed: int = 0, progress: bool = False,
           features: FeatureNet | bool | None = None, tune: int | TuneConfig | None = None,
           noise_sigma: float | None = None, stop=None) -> InversionResult:
    """Find a class and latent per image whose generated image matches it (see the module docstring).

    ``images``: float [N, C, S, S] in [-1, 1] with G's channels, S = G's resolution (``superres``: resolution /
    ``factor``; ``colorize``: 1 channel, or RGB made grey). ``classes``: candidate class indices (for every image).
    ``D`` / ``classifier``: rank the classes when none are given. ``mask`` (inpaint): [R, R] or [N, 1, R, R], 1 = known
    pixel. ``lr``: Adam's step (default 0.05 for z, 0.05 x W's spread for W). ``wplus``: per-layer W for the last
    quarter (StyleGAN2; default: on for ``invert``, off for restoration, where the extra freedom fits the degraded input
    instead of the image). ``seed`` makes the restarts reproducible. ``features``: the feature loss's network
    (``scalegan.perceptual``); None: the classifier's features when a classifier is given; False: none. ``tune``: tuning
    steps (True: the default 200), or a ``TuneConfig`` (None, False or 0: no tuning): one tuned copy of G per image.
    ``noise_sigma`` (denoise): the noise's standard deviation on the [0, 1] pixel scale; None: estimated per image.
    ``stop``: a function asked every step; True ends the work with ``InversionStopped`` (a server's timeout). G is
    not changed."""
    if restarts < 1 or steps < 1 or top_k < 1:
        raise ValueError(f"restarts, steps and top_k must be >= 1, got {restarts}, {steps}, {top_k}")
    degrade = Degradation(task, G.config.resolution, mask, factor, G.config.img_channels, noise_sigma)
    target = _check_images(G, images, degrade)
    sigma_source = _noise_level(degrade, target)
    generator = torch.Generator().manual_seed(seed)
    w_space = is_w_space(G)
    if features is None and classifier is not None:
        features = classifier_features(classifier)
    features = features or None
    tune = _tune_config(tune, seed)
    net = None if features is None else features.net
    with _eval_mode(G), _eval_mode(classifier), frozen(G), frozen(classifier), _eval_mode(net), frozen(net):
        candidates, source = candidate_classes(G, degrade.preview(target).cpu(), classes, D, classifier, top_k,
                                               max_classes)
        w_scale = _w_scale(G, None if candidates is None else candidates.reshape(-1).to(device_of(G)),
                           generator) if w_space else 1.0
        wplus = (task == "invert") if wplus is None else wplus
        settings = _Settings(steps, lr or 0.05 * w_scale, prior_weight, w_space, w_scale,
                             steps - steps // 4 if (w_space and wplus) else None, truncation, progress)
        loss_fn = _Loss(degrade, target, features, feature_weight, stop)
        n = len(target)
        in_z = w_space and candidates is not None and candidates.shape[1] > 1  # decide the class in z + class
        first = _first_batch(G, candidates, n, restarts, generator, w_space and not in_z)
        split = max(1, steps // (2 if in_z else 4)) if steps > 1 else steps  # z needs longer to tell classes
        screen = dataclasses.replace(settings, w_space=False, lr=0.05, wplus_from=None) if in_z else settings
        batch, loss, pixel = _optimise(G, loss_fn, first, screen, 0, split, f"{task}: all restarts")
        per_class = _best_rows(batch.index * (G.config.n_classes + 1) + (0 if batch.y is None else batch.y), loss)
        records = _candidate_records(batch.take(per_class), loss[per_class], pixel[per_class], "screen")
        keep = _top_per_image(batch.index[per_class], loss[per_class], 1 if in_z else top_k, per_class)
        batch = batch.take(keep)
        if in_z:  # the class is decided: refine the winner's W (its class's W space) from here
            batch = _Batch(batch.index, batch.y, batch.restart, _mapped(G, batch.latent, batch.y),
                           _w_centre(G, batch.y))
        batch, loss, pixel = _optimise(G, loss_fn, batch, settings, split, steps, f"{task}: best restarts")
        records.update(_candidate_records(batch, loss, pixel, "final"))
        best = _best_rows(batch.index, loss)
        batch, loss, pixel = batch.take(best), loss[best.to(loss.device)], pixel[best.to(pixel.device)]
        with torch.no_grad():
            generated = _render(G, batch.latent, batch.y, w_space, truncation)
            latents = batch.latent
            if w_space and latents.dim() == 2:
                latents = latents[:, None].repeat(1, w_shape(G)[0], 1)
            score = psnr(degrade(generated), target, degrade.weight(None, generated.device))
            searched, generators, restored = score, None, degrade.restore(generated, target).detach().float()
        before = restored if tune is not None else None
        if tune is not None:
            generators, latents, generated = _tune_each(G, latents, batch, loss_fn, settings, tune, progress)
            with torch.no_grad():
                score = psnr(degrade(generated), target, degrade.weight(None, generated.device))
                restored = degrade.restore(generated, target)
    per_image = [sorted((r for (i, _), r in records.items() if i == k),
                        key=lambda r: (r["stage"] != "final", r["loss"])) for k in range(n)]
    return InversionResult(restored.detach().float(), latents.detach().float(), batch.y, score.cpu(), loss.cpu(),
                           per_image, source, task, features.name if features is not None else "none", generators,
                           searched.cpu() if tune is not None else None, tune_settings(G, tune) if tune is not None
                           else None, degrade.noise_sigma, sigma_source, before)


def _tune_config(tune, seed: int) -> TuneConfig | None:
    """``invert``'s ``tune`` argument as a ``TuneConfig`` (True: the defaults; an int: that many steps) or None."""
    if tune is True:
        return TuneConfig(seed=seed)
    if isinstance(tune, int) and not isinstance(tune, bool):
        return TuneConfig(steps=tune, seed=seed) if tune else None
    return tune or None


def _tune_each(G, latents: torch.Tensor, batch: _Batch, loss_fn: _Loss, settings: _Settings, config: TuneConfig,
               progress: bool) -> tuple[list[nn.Module], torch.Tensor, torch.Tensor]:
    """One tuned copy of G per image (rows of ``batch`` in image order): (generators, latents, generated images)."""
    generators, tuned_latents, images = [], [], []
    render_fn = lambda net, latent, y: _render(net, latent, y, settings.w_space, settings.truncation)  # noqa: E731
    for i in range(len(latents)):
        index = batch.index[i:i + 1]
        y = None if batch.y is None else batch.y[i:i + 1]
        centre = None if batch.centre is None else batch.centre[i:i + 1]
        prior = lambda latent, c=centre: settings.prior_weight * _prior(latent, c, settings.w_scale)  # noqa: E731
        tuned, latent = tune_generator(G, latents[i:i + 1], y, lambda x, k=index: loss_fn(x, k)[0], render_fn, prior,
                                       config, progress)
        generators.append(tuned)
        tuned_latents.append(latent)
        with torch.no_grad():
            images.append(render_fn(tuned, latent, y))
    return generators, torch.cat(tuned_latents), torch.cat(images)


def _top_per_image(index: torch.Tensor, loss: torch.Tensor, top_k: int, rows: torch.Tensor) -> torch.Tensor:
    """Of ``rows`` (one per image and class), the ``top_k`` with the lowest loss per image."""
    order = torch.argsort(loss.cpu(), stable=True).tolist()
    counts: dict[int, int] = {}
    chosen = []
    for j in order:
        i = int(index[j])
        if counts.get(i, 0) < top_k:
            counts[i] = counts.get(i, 0) + 1
            chosen.append(int(rows[j]))
    return torch.tensor(sorted(chosen), dtype=torch.long)
