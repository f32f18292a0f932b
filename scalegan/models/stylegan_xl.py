"""StyleGAN-XL (Sauer, Schwarz and Geiger 2022, "StyleGAN-XL: Scaling StyleGAN to Large Diverse Datasets").

Written from the paper and the public description of autonomousvision/stylegan_xl (REFERENCE.md section 10; none of
its code, whose generator file keeps NVIDIA's licence): StyleGAN3's synthesis layers (``stylegan3.SynthesisLayer``,
``SynthesisInput``), grown progressively. A *stem* is an ordinary StyleGAN3 synthesis network at
``stem_resolution`` (16 in the paper, 11 layers: ``num_layers`` 10 plus the toRGB). Each super-resolution stage
doubles the resolution: it drops the last network's critically sampled layers (the last ``num_critical`` and the
toRGB) and appends ``head_layers + 1`` new ones whose cutoffs and stopbands continue geometrically from the last kept
layer to the new resolution / 2 (``head_specs``). Layer names follow the reference's state dicts: a stage's first new
layer is numbered one past the count of kept layers plus one, so the first stage skips one index (a stem
``L0 .. L10`` keeps ``L0 .. L7`` and appends ``L9 ..``) and later stages skip none.

The mapping network takes z (z_dim 64) and a class: ``mapping.embed`` (``nn.Embedding(n_classes, 320)``) projected
by ``mapping.embed_proj`` (FC 320 -> z_dim, leaky ReLU); z and the projection are each normalised and concatenated
(fc0 input 2 z_dim), then 2 layers to W (w_dim 512). The tracked average W is per class (``mapping.w_avg``
[n_classes, w_dim]), moved sample by sample in training mode, and truncation pulls towards the class's own average.
The reference reads the embedding from a pretrained EfficientNet-lite0 classifier (``in_embeddings/*.pkl``); here it
starts random (N(0, 1), its ``rand_embedding`` option) and a converted pickle brings the pretrained one. y is class
indices; one-hot or soft labels [N, n_classes] mix the embeddings and the class averages by their weights (one-hot:
the same lookup) and track the average of their argmax class.

D and objective: StyleGAN2's, as the StyleGAN3 family. The paper's projected discriminator runs frozen ImageNet
backbones (timm ``deit_base_distilled_patch16_224`` and ``tf_efficientnet_lite0``, plus a DeiT classifier for
guidance) whose pretrained weights cannot be downloaded here, so it is not reproduced; nor are its hinge loss,
DiffAugment, the stem's path-length term, training only the newest head (the stem frozen) or the fp16 layers.

Published configurations (README, issues): -T with G's channel_base / channel_max doubled (65536 / 1024), -R
quadrupled; z_dim 64, w_dim 512, 2 mapping layers; a stem at 16 with 11 layers and 7 head layers per doubling
(paper section 3.2; the README's Pokemon commands ``--syn_layers 10 --head_layers 7 --up_factor 2``). The presets
keep that structure; their parameter counts are not pinned (no published count was found to check them against).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..family import Family, WSpace, register, register_preset
from ..objectives.stylegan2 import StyleGAN2Objective
from ..precision import island
from . import stylegan2, stylegan3
from .stylegan2 import FullyConnectedLayer, normalize_2nd_moment
from .stylegan3 import LayerSpec, StyleGAN3Config, SynthesisInput, SynthesisLayer, layer_schedule, layer_specs


@dataclass(frozen=True)
class StyleGANXLConfig(StyleGAN3Config):
    """Architecture of a StyleGAN-XL G (and its StyleGAN2 D). The StyleGAN3 fields describe the stem
    (``num_layers``: its synthesis layers; the schedule runs to ``stem_resolution``); ``resolution`` is the output's,
    reached by doubling stages of ``head_layers`` layers (plus a toRGB) each."""

    resolution: int = 16
    n_classes: int = 1000
    z_dim: int = 64
    channel_base: int = 65536  # G's channels, doubled from StyleGAN3-T's (train.py)
    channel_max: int = 1024
    num_layers: int = 10  # the stem's layers after the input, not counting its toRGB (train.py --syn_layers)
    stem_resolution: int = 16
    head_layers: int = 7  # layers each super-resolution stage appends, not counting its toRGB
    embed_dim: int = 320  # class embedding width (EfficientNet-lite0's)

    family = "stylegan-xl"

    def __post_init__(self):
        super().__post_init__()
        s, r = self.stem_resolution, self.resolution
        if s < 16 or s & (s - 1) or s > r:
            raise ValueError(f"stem_resolution must be a power of two in [16, resolution = {r}], got {s}")
        if self.first_cutoff >= s / 2:
            raise ValueError(f"first_cutoff must be below stem_resolution / 2 = {s / 2}, got {self.first_cutoff}")
        if self.head_layers <= self.num_critical:
            raise ValueError(f"head_layers must be > num_critical = {self.num_critical}, got {self.head_layers}")
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim must be > 0, got {self.embed_dim}")

    @property
    def superres_stages(self) -> int:
        """Super-resolution stages on top of the stem (each doubles the resolution)."""
        return (self.resolution // self.stem_resolution).bit_length() - 1

    @property
    def num_ws(self) -> int:
        """W vectors the synthesis consumes: the input's and one per layer (each stage drops num_critical + 1)."""
        return self.num_layers + 2 + self.superres_stages * (self.head_layers - self.num_critical)

    def stem_config(self) -> StyleGAN3Config:
        """The StyleGAN3 config whose synthesis schedule is the stem's."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(StyleGAN3Config)}
        return StyleGAN3Config(**{**fields, "resolution": self.stem_resolution})


# --------------------------------------------------------------------------------------------- schedule
def head_specs(cfg: StyleGANXLConfig, last: LayerSpec, resolution: int, first_index: int) -> list[LayerSpec]:
    """One super-resolution stage's ``head_layers + 1`` layers after the kept layer ``last``: cutoffs and minimum
    stopbands run geometrically from ``last``'s output (its cutoff; its cutoff plus half-width) to resolution / 2
    (and last_stopband_rel times that); the first layer keeps ``last``'s sampling rate and channels, the last
    ``num_critical`` and the toRGB are critically sampled. Names start at ``L{first_index}``."""
    n = cfg.head_layers
    last_cutoff = resolution / 2
    first_stopband, last_stopband = last.out_cutoff + last.out_half_width, last_cutoff * cfg.last_stopband_rel
    exponents = np.minimum(np.arange(n + 1) / (n - cfg.num_critical), 1)
    cutoffs = last.out_cutoff * (last_cutoff / last.out_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, resolution))))
    rates[0] = last.out_sampling_rate
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = (rates + cfg.margin_size * 2).astype(int)
    sizes[-2:] = resolution
    channels = np.rint(np.minimum((cfg.channel_base / 2) / cutoffs, cfg.channel_max)).astype(int)
    channels[0], channels[-1] = last.out_channels, cfg.img_channels
    specs = []
    for i in range(n + 1):
        prev = max(i - 1, 0)
        specs.append(LayerSpec(
            name=f"L{first_index + i}_{sizes[i]}_{channels[i]}",
            in_channels=int(channels[prev]), out_channels=int(channels[i]), in_size=int(sizes[prev]),
            out_size=int(sizes[i]), in_sampling_rate=float(rates[prev]), out_sampling_rate=float(rates[i]),
            in_cutoff=float(cutoffs[prev]), out_cutoff=float(cutoffs[i]), in_half_width=float(half_widths[prev]),
            out_half_width=float(half_widths[i]), is_torgb=i == n, is_critically_sampled=i >= n - cfg.num_critical))
    return specs


def xl_layer_specs(cfg: StyleGANXLConfig) -> list[LayerSpec]:
    """Every synthesis layer after the input: the stem's, then each stage's kept layers and new head."""
    specs = layer_specs(cfg.stem_config())
    resolution = cfg.stem_resolution
    for _ in range(cfg.superres_stages):
        resolution *= 2
        kept = specs[:-(cfg.num_critical + 1)]  # the critically sampled layers are the last ones
        specs = kept + head_specs(cfg, kept[-1], resolution, len(kept) + 1)
    return specs


# --------------------------------------------------------------------------------------------- networks
class SynthesisNetwork(stylegan3.SynthesisNetwork):
    """W [N, num_ws, w_dim] -> images: the stem's Fourier input, then the stem's and the heads' layers (StyleGAN3's
    forward)."""

    def __init__(self, cfg: StyleGANXLConfig):
        nn.Module.__init__(self)  # StyleGAN3's constructor would build the stem's full schedule
        self.output_scale = cfg.output_scale
        s = layer_schedule(cfg.stem_config())
        self.input = SynthesisInput(cfg.w_dim, int(s["channels"][0]), int(s["sizes"][0]),
                                    float(s["sampling_rates"][0]), float(s["cutoffs"][0]))
        self.layer_names = []
        for spec in xl_layer_specs(cfg):
            setattr(self, spec.name, SynthesisLayer(spec, cfg))
            self.layer_names.append(spec.name)


class MappingNetwork(nn.Module):
    """z and class -> W: normalised z concatenated with the normalised projection of the class embedding, then the
    mapping layers. ``w_avg`` is the tracked average W, one row per class when conditional."""

    def __init__(self, cfg: StyleGANXLConfig):
        super().__init__()
        self.n_classes, self.num_layers, self.w_avg_beta = cfg.n_classes, cfg.mapping_layers, cfg.w_avg_beta
        if cfg.n_classes:
            self.embed = nn.Embedding(cfg.n_classes, cfg.embed_dim)
            self.embed_proj = FullyConnectedLayer(cfg.embed_dim, cfg.z_dim, activation="lrelu")
        features = [cfg.z_dim * (2 if cfg.n_classes else 1)] + [cfg.w_dim] * cfg.mapping_layers
        for i in range(cfg.mapping_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], activation="lrelu",
                                                         lr_multiplier=cfg.mapping_lr))
        self.register_buffer("w_avg", torch.zeros([cfg.n_classes, cfg.w_dim] if cfg.n_classes else [cfg.w_dim]))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None, track: bool = True) -> torch.Tensor:
        """W [N, w_dim] (float32); ``y`` class indices [N] or label weights [N, n_classes]. In training mode (and
        ``track``) the averages move towards this batch."""
        with island(z):
            x = normalize_2nd_moment(z.float())
            if self.n_classes:
                e = self.embed(y) if y.dim() == 1 else y.float() @ self.embed.weight.float()
                x = torch.cat([x, normalize_2nd_moment(self.embed_proj(e.float()))], dim=1)
            for i in range(self.num_layers):
                x = getattr(self, f"fc{i}")(x)
        if self.training and track:
            self._track(x.detach().float(), y)
        return x

    @torch.no_grad()
    def _track(self, w: torch.Tensor, y: torch.Tensor | None) -> None:
        beta = self.w_avg_beta
        if not self.n_classes:
            self.w_avg.copy_(w.mean(0).lerp(self.w_avg, beta))
            return
        # Sample by sample in batch order, as the reference: a class's average after its k samples of this batch is
        # beta^k avg + sum_j (1 - beta) beta^(samples of the class after j) w_j.
        y = y if y.dim() == 1 else y.argmax(1)
        onehot = F.one_hot(y, self.n_classes).to(w.dtype)  # [N, n_classes]
        later = (onehot.flip(0).cumsum(0).flip(0) - onehot).gather(1, y[:, None])  # [N, 1]
        added = onehot.t() @ (w * (1 - beta) * beta ** later)
        self.w_avg.copy_(self.w_avg * beta ** onehot.sum(0)[:, None] + added)

    def centres(self, y: torch.Tensor) -> torch.Tensor:
        """The classes' average W [N, w_dim] (label weights: the weighted mean of the class averages)."""
        return self.w_avg[y] if y.dim() == 1 else y.float() @ self.w_avg


class Generator(nn.Module):
    """StyleGAN-XL generator: ``G(z, y, truncation=None) -> images`` [N, C, H, W] (about [-1, 1]).

    ``latents`` are z [N, z_dim] or W [N, num_ws, w_dim]; ``truncation`` is psi towards the class's tracked average
    W; ``mix`` is ``(z2, cutoff)`` style mixing. The eval-mode forward writes nothing."""

    forward = stylegan3.Generator.forward  # W or z -> map -> synthesis, as StyleGAN3

    def __init__(self, config: StyleGANXLConfig):
        super().__init__()
        self.config = cfg = config
        self.synthesis = SynthesisNetwork(cfg)
        self.mapping = MappingNetwork(cfg)

    def labels(self, y: torch.Tensor | None) -> torch.Tensor | None:
        """Class indices [N] or label weights [N, n_classes], checked; None when unconditional."""
        cfg = self.config
        if not cfg.n_classes:
            return None
        if y is None:
            raise ValueError("this generator is class-conditional: pass y (class indices)")
        if y.dim() == 2 and y.shape[1] == cfg.n_classes:
            return y.float() if y.is_floating_point() else y.argmax(1)
        if y.dim() != 1 or y.is_floating_point():
            raise ValueError(f"y must be class indices [N] or labels [N, {cfg.n_classes}], got {list(y.shape)}")
        return y

    def map(self, z: torch.Tensor, y: torch.Tensor | None = None, truncation: float | None = None,
            mix=None) -> torch.Tensor:
        """W [N, num_ws, w_dim] of z and classes, truncated by psi = ``truncation`` towards each class's average W
        and style-mixed by ``mix``."""
        cfg = self.config
        if z.dim() != 2 or z.shape[1] != cfg.z_dim:
            raise ValueError(f"z must be [N, {cfg.z_dim}], got {list(z.shape)}")
        y = self.labels(y)
        ws = self.mapping(z, y)[:, None].repeat(1, cfg.num_ws, 1)
        if mix is not None:
            z2, cutoff = mix
            if cutoff < cfg.num_ws:  # the mixing W does not move the averages
                mixed = self.mapping(z2, y, track=False)[:, None].repeat(1, cfg.num_ws - cutoff, 1)
                ws = torch.cat([ws[:, :cutoff], mixed], 1)
        if truncation is not None and truncation != 1:
            centre = self.mapping.w_avg if y is None else self.mapping.centres(y)
            cut = cfg.num_ws if cfg.truncation_cutoff is None else min(cfg.truncation_cutoff, cfg.num_ws)
            centre = centre.to(ws.dtype).expand(ws.shape[0], -1)[:, None]
            ws = torch.cat([centre.lerp(ws[:, :cut], truncation), ws[:, cut:]], 1)
        return ws


class Discriminator(stylegan3.Discriminator):
    """StyleGAN2's discriminator at the output resolution (the projected D needs pretrained backbones)."""


@torch.no_grad()
def w_centre(G: Generator, y: torch.Tensor | None) -> torch.Tensor:
    """The W truncation pulls towards [N, w_dim]: the class's tracked average (``y`` None: the mean of the class
    averages when conditional, [1, w_dim])."""
    w_avg = G.mapping.w_avg
    if w_avg.dim() == 1:
        return w_avg.expand(1 if y is None else len(y), -1).clone()
    if y is None:
        return w_avg.mean(0, keepdim=True)
    return w_avg[y.to(w_avg.device)].clone()


def _tiny(config: StyleGANXLConfig) -> dict:
    """A stem at 16 and (when the preset has heads) one head at 32, with few channels."""
    resolution = min(config.resolution, 32)
    return dict(resolution=resolution, stem_resolution=min(config.stem_resolution, 16), channel_base=512,
                channel_max=8, z_dim=16, w_dim=16, embed_dim=8, num_layers=4, head_layers=3, d_channel_base=256,
                d_channel_max=16, d_mapping_layers=2, mbstd_group=2)


_SG3 = stylegan3.FAMILY
FAMILY = register(Family(
    name="stylegan-xl", config=StyleGANXLConfig, generator=Generator, discriminator=Discriminator,
    objective=StyleGAN2Objective, latent_shape=lambda config: (config.z_dim,), draw_latents=stylegan2.draw_z,
    tiny=_tiny,
    w_space=WSpace(shape=lambda config: (config.num_ws, config.w_dim), map=stylegan2.map_latents, centre=w_centre),
    truncation_mode=_SG3.truncation_mode, truncation_modes=_SG3.truncation_modes,
    truncation_info=lambda config: {"meaning": "psi: W is pulled towards the class's average W (1 = none, < 1 = "
                                    "closer to the average)", "slider": [0.05, 1.0], "none_means": 1.0},
    export=stylegan3.ExportGenerator, ema_buffers="copy", precision_defaults=_SG3.precision_defaults,
    discriminator_blocks=_SG3.discriminator_blocks, discriminator_group=_SG3.discriminator_group,
    latent_layers=_SG3.latent_layers,
    about="StyleGAN-XL: class-embedding mapping, StyleGAN3 stem grown by super-resolution heads, StyleGAN2 D",
))


# --------------------------------------------------------------------------------------------- presets
# ImageNet (REFERENCE section 10): -T, G cbase / cmax 65536 / 1024, z 64, w 512, 2 mapping layers; a 16 px stem of
# 11 layers (paper 3.2) and 7-layer heads per doubling; Adam (0, 0.99), G lr 0.0025, D lr 0.002; the README's
# commands use batch 64; D's input is blurred (sigma 2, fading over 300 kimg). The D and objective are StyleGAN2's
# (see the module docstring): R1 gamma follows stylegan3's configs.md scale 0.5 * (resolution / 128)^2, a scalegan
# choice (StyleGAN-XL's loss has no R1).
def _imagenet_preset(resolution: int) -> None:
    register_preset(
        f"stylegan-xl-imagenet{resolution}", "stylegan-xl",
        model=dict(resolution=resolution, stem_resolution=16, n_classes=1000, img_channels=3, z_dim=64, w_dim=512,
                   mapping_layers=2, channel_base=65536, channel_max=1024, num_layers=10, head_layers=7,
                   conv_clamp=256.0, magnitude_ema_beta=0.5 ** (64 / 20000), d_channel_base=32768,
                   d_channel_max=512, d_architecture="resnet", mbstd_group=4),
        train=dict(batch_size=64, lr_g=0.0025, lr_d=0.002, beta1=0.0, beta2=0.99, adam_eps=1e-8,
                   objective=dict(r1_gamma=0.5 * (resolution / 128) ** 2, pl_weight=0.0, style_mixing=0.0,
                                  d_reg_interval=16, blur_sigma=2.0, blur_fade_kimg=300.0)),
        about=f"StyleGAN-XL-T ImageNet {resolution} layout (16 px stem, {(resolution // 16).bit_length() - 1} "
              "super-resolution stages; StyleGAN2 D, not the projected one)")


for _resolution in (16, 32, 64, 128, 256):
    _imagenet_preset(_resolution)

# Small CPU preset for Fashion-MNIST (32x32 grey, 10 classes): a 16 px stem of 6 layers and one 4-layer head, at
# most 24 channels with 4-pixel margins, trained as stylegan3-t-fmnist. G and D forward and backward at batch 16 on
# one thread take about as long as stylegan3-t-fmnist's (0.89 s and 0.88 s on a loaded 2-core machine, 2026-12-05).
register_preset(
    "stylegan-xl-fmnist", "stylegan-xl",
    model=dict(resolution=32, stem_resolution=16, n_classes=10, img_channels=1, z_dim=32, w_dim=128,
               embed_dim=32, mapping_layers=2, channel_base=1024, channel_max=24, num_layers=6, head_layers=4,
               margin_size=4, magnitude_ema_beta=0.5 ** (16 / 20000), d_channel_base=1024, d_channel_max=64,
               d_architecture="resnet", d_mapping_layers=2, mbstd_group=4),
    train=dict(batch_size=16, lr_g=0.005, lr_d=0.005, beta1=0.0, beta2=0.99, adam_eps=1e-8,
               ema_halflife_kimg=5.0, ema_rampup=0.1, iterations=30000, time_budget=690.0, sample_every=1000,
               ckpt_every=1000, objective=dict(r1_gamma=0.1, pl_weight=0.0, style_mixing=0.0)),
    about="small StyleGAN-XL CPU preset for Fashion-MNIST (16 px stem, one 32 px head)",
)
