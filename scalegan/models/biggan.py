"""BigGAN (Brock, Donahue, Simonyan 2018, "Large Scale GAN Training for High Fidelity Natural Image Synthesis").

Layout of BigGAN-PyTorch's ImageNet generator and discriminator (and of its CIFAR script at 32 px), which the
TF-Hub ``biggan-128/256/512`` modules share: ch 96, hierarchical z, a shared 128-d class embedding, attention
at 64x64. With ch 96 at 128 px this file gives exactly 70,433,988 G and 87,982,370 D trainable parameters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..family import Family, register, register_preset, rename_fields, require_positive
from ..layers import (
    BatchNorm2d,
    ConditionalBatchNorm2d,
    SelfAttention,
    SNEmbedding,
    SNLinear,
    SqueezeExcite,
    check_attention,
    embed_classes,
    fold_spectral_norm,
    init_weights,
    projection_logits,
    sn_conv,
)
from ..objectives.biggan import BigGANObjective, draw_z, standing_stats

# Channel multipliers of ``ch`` per stage: (G in, G out); D: (in, out, downsample). D's first "in" is RGB.
G_ARCH = {
    32: ([4, 4, 4], [4, 4, 4]),
    64: ([16, 16, 8, 4], [16, 8, 4, 2]),
    128: ([16, 16, 8, 4, 2], [16, 8, 4, 2, 1]),
    256: ([16, 16, 8, 8, 4, 2], [16, 8, 8, 4, 2, 1]),
    512: ([16, 16, 8, 8, 4, 2, 1], [16, 8, 8, 4, 2, 1, 1]),
}
D_ARCH = {
    32: ([0, 4, 4, 4], [4, 4, 4, 4], [True, True, False, False]),
    64: ([0, 1, 2, 4, 8], [1, 2, 4, 8, 16], [True] * 4 + [False]),
    128: ([0, 1, 2, 4, 8, 16], [1, 2, 4, 8, 16, 16], [True] * 5 + [False]),
    256: ([0, 1, 2, 4, 8, 8, 16], [1, 2, 4, 8, 8, 16, 16], [True] * 6 + [False]),
    # BigGAN-PyTorch has no 512 D: this one mirrors G's 512 stages by the same pattern.
    512: ([0, 1, 1, 2, 4, 8, 8, 16], [1, 1, 2, 4, 8, 8, 16, 16], [True] * 7 + [False]),
}


@dataclass(frozen=True)
class BigGANConfig:
    """Architecture of a BigGAN G/D pair. Stored as ``config.json`` beside the weights."""

    resolution: int = 128
    n_classes: int = 1000  # 0 = unconditional
    img_channels: int = 3
    ch: int = 96  # G width multiplier
    d_ch: int = 96  # D width multiplier
    z_dim: int = 120
    shared_dim: int = 128  # shared class embedding size; 0 = per-layer class embeddings in every BN (CIFAR)
    hier: bool = True  # split z into one chunk per stage plus one for the first linear
    g_attn: tuple[int, ...] = (64,)  # resolutions after which G applies self-attention
    d_attn: tuple[int, ...] = (64,)
    # Per-stage output width multipliers of G's blocks (lowest resolution first) and of D's blocks (input
    # first); empty = BigGAN's (e.g. 4, 4, 4 at 32 px). A pyramid such as g_mult=(4, 2, 1) puts few channels at
    # the high resolutions, where most of the FLOPs are: cheaper steps for small CPU presets.
    g_mult: tuple[int, ...] = ()
    d_mult: tuple[int, ...] = ()
    g_se: bool = False  # squeeze-and-excitation in every G block
    d_se: bool = False
    bn_eps: float = 1e-5
    sn_eps: float = 1e-6
    init: str = "ortho"  # "ortho" or "N02"

    family = "biggan"

    def __post_init__(self):
        require_positive(self, "resolution", "ch", "d_ch", "z_dim", "bn_eps", "sn_eps",
                         allow_zero=("n_classes", "shared_dim"))
        for name in ("g_attn", "d_attn", "g_mult", "d_mult"):
            object.__setattr__(self, name, tuple(int(r) for r in getattr(self, name)))
        check_attention(self)
        if self.resolution not in G_ARCH:
            raise ValueError(f"BigGAN resolution {self.resolution} unsupported: use one of {sorted(G_ARCH)}")
        for name, arch in (("g_mult", G_ARCH[self.resolution][1]), ("d_mult", D_ARCH[self.resolution][1])):
            value = getattr(self, name)
            if value and (len(value) != len(arch) or min(value) < 1):
                raise ValueError(f"{name} needs {len(arch)} positive multipliers at {self.resolution} px "
                                 f"(BigGAN's: {tuple(arch)}), got {value}")
        if self.img_channels not in (1, 3):
            raise ValueError(f"img_channels must be 1 or 3, got {self.img_channels}")
        if self.n_classes < 0:
            raise ValueError("n_classes must be >= 0 (0 = unconditional)")
        if self.hier and self.z_dim % (self.num_stages + 1):
            raise ValueError(
                f"hierarchical z needs z_dim divisible by {self.num_stages + 1} (stages + 1) at "
                f"{self.resolution} px; got z_dim={self.z_dim}"
            )
        if self.hier and self.n_classes and not self.shared_dim:
            raise ValueError("hierarchical z needs a shared class embedding (shared_dim > 0)")
        if self.init not in ("ortho", "N02"):
            raise ValueError(f"init must be 'ortho' or 'N02', got {self.init!r}")

    @property
    def num_stages(self) -> int:
        return len(G_ARCH[self.resolution][0])

    @property
    def z_chunk(self) -> int:
        return self.z_dim // (self.num_stages + 1) if self.hier else 0

    def to_dict(self) -> dict:
        return {"family": self.family, **dataclasses.asdict(self)}


# --------------------------------------------------------------------------------------------- blocks
class GBlock(nn.Module):
    """``h = conv2(relu(bn2(conv1(up(relu(bn1(x))))))) + conv_sc(up(x))``, both BNs conditioned on ``c``."""

    def __init__(self, in_ch: int, out_ch: int, bn_kwargs: dict, sn_eps: float, se: bool):
        super().__init__()
        self.bn1 = ConditionalBatchNorm2d(in_ch, **bn_kwargs)
        self.conv1 = sn_conv(in_ch, out_ch, 3, sn_eps)
        self.bn2 = ConditionalBatchNorm2d(out_ch, **bn_kwargs)
        self.conv2 = sn_conv(out_ch, out_ch, 3, sn_eps)
        self.conv_sc = sn_conv(in_ch, out_ch, 1, sn_eps)  # always learnable: every G block upsamples
        self.se = SqueezeExcite(out_ch, sn_eps=sn_eps) if se else None

    def forward(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x, c)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), c)))
        if self.se is not None:
            h = self.se(h)
        return h + self.conv_sc(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    """Pre-activation residual block; the first block skips the ReLU and pools before its shortcut conv."""

    def __init__(self, in_ch: int, out_ch: int, downsample: bool, preactivation: bool, sn_eps: float, se: bool):
        super().__init__()
        self.downsample = downsample
        self.preactivation = preactivation
        self.conv1 = sn_conv(in_ch, out_ch, 3, sn_eps)
        self.conv2 = sn_conv(out_ch, out_ch, 3, sn_eps)
        self.conv_sc = sn_conv(in_ch, out_ch, 1, sn_eps) if (in_ch != out_ch or downsample) else None
        self.se = SqueezeExcite(out_ch, sn_eps=sn_eps) if se else None

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.preactivation:
            if self.conv_sc is not None:
                x = self.conv_sc(x)
            return F.avg_pool2d(x, 2) if self.downsample else x
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        return self.conv_sc(x) if self.conv_sc is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.se is not None:
            h = self.se(h)
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        return h + self.shortcut(x)


# --------------------------------------------------------------------------------------------- G and D
class Generator(nn.Module):
    """BigGAN generator: ``G(z, y, truncation=None) -> images`` in [-1, 1], [N, img_channels, resolution,
    resolution]. Truncation acts on z (``scalegan.sample`` draws it), so ``truncation`` is accepted and ignored
    here: every family's generator has the same signature. The eval-mode forward writes nothing."""

    def __init__(self, config: BigGANConfig):
        super().__init__()
        self.config = cfg = config
        g_in, g_out = G_ARCH[cfg.resolution]
        if cfg.g_mult:
            g_out = list(cfg.g_mult)
            g_in = [g_out[0], *g_out[:-1]]
        ch = cfg.ch
        self.shared = nn.Embedding(cfg.n_classes, cfg.shared_dim) if (cfg.n_classes and cfg.shared_dim) else None
        if cfg.n_classes and cfg.shared_dim:
            bn_kwargs = dict(mode="linear", cond_dim=cfg.shared_dim + cfg.z_chunk)
        elif cfg.n_classes:
            bn_kwargs = dict(mode="embedding", n_classes=cfg.n_classes)
        elif cfg.hier:
            bn_kwargs = dict(mode="linear", cond_dim=cfg.z_chunk)
        else:
            bn_kwargs = dict(mode="none")
        bn_kwargs.update(eps=cfg.bn_eps, sn_eps=cfg.sn_eps)

        first_in = cfg.z_chunk if cfg.hier else cfg.z_dim
        self.linear = SNLinear(first_in, g_in[0] * ch * 4 * 4, sn_eps=cfg.sn_eps)
        self.blocks = nn.ModuleList()
        self.attention = nn.ModuleDict()
        for i, (cin, cout) in enumerate(zip(g_in, g_out)):
            self.blocks.append(GBlock(cin * ch, cout * ch, bn_kwargs, cfg.sn_eps, cfg.g_se))
            if 4 * 2 ** (i + 1) in cfg.g_attn:
                self.attention[str(i)] = SelfAttention(cout * ch, cfg.sn_eps)
        # BigGAN-PyTorch's output BN keeps eps 1e-5 whatever the blocks use.
        self.output_bn = BatchNorm2d(g_out[-1] * ch, eps=1e-5)
        self.output_conv = sn_conv(g_out[-1] * ch, cfg.img_channels, 3, cfg.sn_eps)
        init_weights(self, cfg.init)

    def class_embedding(self, y: torch.Tensor) -> torch.Tensor:
        """The shared class embedding of labels [N] or soft labels [N, n_classes]."""
        return embed_classes(y, self.shared.weight)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None, truncation: float | None = None) -> torch.Tensor:
        cfg = self.config
        if z.dim() != 2 or z.shape[1] != cfg.z_dim:
            raise ValueError(f"z must be [N, {cfg.z_dim}], got {list(z.shape)}")
        if cfg.n_classes and y is None:
            raise ValueError("this generator is class-conditional: pass y (class indices)")
        embedding = self.class_embedding(y) if self.shared is not None else None
        if cfg.hier:
            z0, *chunks = z.split(cfg.z_chunk, dim=1)
            conds = [zc if embedding is None else torch.cat([embedding, zc], 1) for zc in chunks]
        else:
            z0 = z
            conds = [embedding if embedding is not None else y] * len(self.blocks)
        h = self.linear(z0).view(z.shape[0], -1, 4, 4)  # [N, 16ch, 4, 4], channel-major
        for i, block in enumerate(self.blocks):
            h = block(h, conds[i])
            if str(i) in self.attention:
                h = self.attention[str(i)](h)
        h = self.output_conv(F.relu(self.output_bn(h)))  # [N, C, H, W]
        return torch.tanh(h)


class Discriminator(nn.Module):
    """BigGAN projection discriminator: ``D(x, y) -> logits`` [N] (``classes=True``: and the class logits)."""

    def __init__(self, config: BigGANConfig):
        super().__init__()
        self.config = cfg = config
        d_in, d_out, down = D_ARCH[cfg.resolution]
        if cfg.d_mult:
            d_out = list(cfg.d_mult)
            d_in = [0, *d_out[:-1]]
        ch = cfg.d_ch
        self.blocks = nn.ModuleList()
        self.attention = nn.ModuleDict()
        res = cfg.resolution
        for i, (cin, cout, ds) in enumerate(zip(d_in, d_out, down)):
            in_ch = cfg.img_channels if i == 0 else cin * ch
            self.blocks.append(DBlock(in_ch, cout * ch, ds, i > 0, cfg.sn_eps, cfg.d_se))
            res = res // 2 if ds else res
            if res in cfg.d_attn:
                self.attention[str(i)] = SelfAttention(cout * ch, cfg.sn_eps)
        self.linear = SNLinear(d_out[-1] * ch, 1, sn_eps=cfg.sn_eps)
        self.embed = SNEmbedding(cfg.n_classes, d_out[-1] * ch, sn_eps=cfg.sn_eps) if cfg.n_classes else None
        init_weights(self, cfg.init)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, classes: bool = False):
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h)
            if str(i) in self.attention:
                h = self.attention[str(i)](h)
        return projection_logits(h, self.linear, self.embed, y, classes)


def export_module(G: Generator, truncation: float | None = None) -> nn.Module:
    """The module ONNX export traces: an eval-mode float32 copy of ``G`` with spectral norm folded into plain
    weights. Truncation acts on z, which the caller draws, so the graph does not hold it."""
    folded = fold_spectral_norm(G).float()
    folded.truncation_baked = False
    return folded


def latent_layers(G: Generator) -> list[tuple[nn.Module, slice, int]]:
    """The layers that take z (for SeFa): the first linear layer and, with hierarchical z, every block's
    conditional-BN gain and bias layers, each on its own chunk (the last part of its input: cat([embedding, z_i]))."""
    out = [(G.linear, slice(None), 0)]
    if not G.config.hier:
        return out
    chunk = G.config.z_chunk
    for i, block in enumerate(G.blocks):
        for bn in (block.bn1, block.bn2):
            out += [(bn.gain, slice(-chunk, None), (i + 1) * chunk), (bn.bias, slice(-chunk, None), (i + 1) * chunk)]
    return out


def tune_groups(first: list[nn.Module], blocks: nn.ModuleList, attention: nn.ModuleDict) -> list[list[nn.Parameter]]:
    """G's parameters input side first, for progressive tuning after inversion (Deep Generative Prior): the
    ``first`` modules (the linear layer on z, the class embedding), then each block with its attention. The output
    BN and conv are left out, as DGP's optimiser does."""
    groups = [[p for m in first if m is not None for p in m.parameters()]]
    for i, block in enumerate(blocks):
        extra = attention[str(i)].parameters() if str(i) in attention else ()
        groups.append([*block.parameters(), *extra])
    return groups


def tiny(config: BigGANConfig) -> dict:
    """Test-sized widths at the preset's resolution (hierarchical z needs z_dim divisible by stages + 1)."""
    return dict(ch=8, d_ch=8, z_dim=4 * (config.num_stages + 1), shared_dim=8)


FAMILY = register(Family(
    name="biggan", config=BigGANConfig, generator=Generator, discriminator=Discriminator, objective=BigGANObjective,
    latent_shape=lambda config: (config.z_dim,), draw_latents=draw_z, tiny=tiny,
    truncation_modes=("resample", "scale"), recalibrate=standing_stats, export=export_module,
    discriminator_blocks=lambda D: [nn.ModuleList([b, *([D.attention[str(i)]] if str(i) in D.attention else [])])
                                    for i, b in enumerate(D.blocks)],
    latent_layers=latent_layers,
    tune_groups=lambda G: tune_groups([G.linear, G.shared], G.blocks, G.attention),
    upgrade=lambda data: rename_fields(data, {"dim_z": "z_dim"}),  # before 0.2: dim_z
    about="BigGAN: residual up/down blocks, shared class embedding, hierarchical z (BigGAN-PyTorch layout)",
))

# --------------------------------------------------------------------------------------------- presets
_IMAGENET = dict(n_classes=1000, img_channels=3, ch=96, d_ch=96, shared_dim=128, hier=True,
                 bn_eps=1e-5, sn_eps=1e-6, init="ortho")
# BigGAN-PyTorch's ImageNet script (launch_BigGAN_bs256x8.sh), except orthogonal regularisation: that script passes
# --G_ortho 0.0, the paper uses beta = 1e-4 (scalegan's g_ortho is the paper's beta; BigGAN-PyTorch's --G_ortho b
# is our b / 2, see tests/test_reference_parity.py). BigGAN-deep's presets use it too.
IMAGENET_TRAIN = dict(batch_size=256, num_accumulations=8, lr_g=1e-4, lr_d=4e-4, adam_eps=1e-6, ema_decay=0.9999,
                      ema_start=20000, objective=dict(n_d_steps=1, g_ortho=1e-4))

# BigGAN-PyTorch's CIFAR script: ch 64, per-layer class embeddings, no hierarchy, no attention, N(0, 0.02).
register_preset(
    "biggan-32", "biggan",
    model=dict(resolution=32, n_classes=10, img_channels=3, ch=64, d_ch=64, z_dim=128, shared_dim=0,
               hier=False, g_attn=(), d_attn=(), bn_eps=1e-5, sn_eps=1e-8, init="N02"),
    train=dict(batch_size=50, lr_g=2e-4, lr_d=2e-4, adam_eps=1e-8, ema_decay=0.9999, ema_start=1000,
               objective=dict(n_d_steps=4, g_ortho=0.0)),
    about="BigGAN-PyTorch CIFAR-10 script layout (G 4.30M, D 4.21M parameters)",
)
register_preset("biggan-64", "biggan", dict(_IMAGENET, resolution=64, z_dim=120, g_attn=(32,), d_attn=(32,)),
                IMAGENET_TRAIN, "ImageNet 64x64, ch 96")
register_preset("biggan-128", "biggan", dict(_IMAGENET, resolution=128, z_dim=120, g_attn=(64,), d_attn=(64,)),
                IMAGENET_TRAIN, "ImageNet 128x128, ch 96 (BigGAN-PyTorch / TF-Hub biggan-128 layout)")
register_preset("biggan-256", "biggan", dict(_IMAGENET, resolution=256, z_dim=140, g_attn=(128,), d_attn=(64,)),
                IMAGENET_TRAIN, "ImageNet 256x256, ch 96 (TF-Hub biggan-256 layout)")
register_preset("biggan-512", "biggan", dict(_IMAGENET, resolution=512, z_dim=128, g_attn=(64,), d_attn=(64,)),
                IMAGENET_TRAIN, "ImageNet 512x512, ch 96 (TF-Hub biggan-512 layout)")
# Small CPU preset for the demo: Fashion-MNIST, 32x32 grey, 10 classes. Chosen by time to quality
# (benchmarks/time_to_quality.py, float32 on an AVX2-only CPU; the A/B tables are docs/cpu_recipe.md and
# docs/cpu_recipe_round2.md): channel pyramids in G (128/64/32 channels at 8/16/32 px) and D (32/64/128/128),
# z 128 (32 per hierarchical chunk), batch 8, one D step per G step, learning rates 4e-4 (G) and 8e-4 (D) decayed
# by a cosine to 0.1x over the run (the iterations its time budget holds, measured once at the start and saved with
# the run, or its iterations, whichever are fewer), and a half-life EMA with ramp-up.
register_preset(
    "biggan-fmnist", "biggan",
    model=dict(resolution=32, n_classes=10, img_channels=1, ch=32, d_ch=32, g_mult=(4, 2, 1),
               d_mult=(1, 2, 4, 4), z_dim=128, shared_dim=64, hier=True, g_attn=(), d_attn=(), bn_eps=1e-5,
               sn_eps=1e-6, init="ortho"),
    # The projection's class cross-entropy at 0.3 (P2GAN's label matching) lifts class consistency from 0.90 to 0.98
    # at the stand-in's full budget with FD level; with it, a decay to 0.1x lowers FD from 3.1 to 2.4 for 0.007 of
    # class consistency (docs/cpu_recipe_round2.md). The time budget ends the run, not the
    # iteration count: the demo's command stays under 15 minutes on a 2-core AVX2-only CPU and trains longer where
    # the hardware is faster (precision auto: bf16 there).
    train=dict(batch_size=8, lr_g=4e-4, lr_d=8e-4, adam_eps=1e-6, lr_schedule="cosine", lr_final=0.1,
               ema_halflife_kimg=5.0, ema_rampup=0.1,
               iterations=30000, time_budget=690.0, sample_every=1000, ckpt_every=1000,
               objective=dict(n_d_steps=1, g_ortho=0.0, class_loss=0.3)),
    about="small CPU preset for Fashion-MNIST (the demo)",
)
