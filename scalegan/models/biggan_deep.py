"""BigGAN-deep (Brock, Donahue, Simonyan 2018, appendix B): bottleneck residual blocks, identity skips.

G follows DeepMind's TF-Hub BigGAN-deep modules as ported to ``pytorch-pretrained-biggan`` (50,388,609 trainable
parameters at 128 px with its 128-channel RGB conv): the full ``cat([z, embed(y)])`` conditions every BN, the
skip drops channels when a block shrinks them. D follows compare_gan's BigGAN-deep discriminator (34,590,210
parameters at 128 px, ch 128): the skip adds channels with a 1x1 conv when a block grows them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..family import Family, register, register_preset, rename_fields, require_positive, z_threshold
from ..layers import (
    BatchNorm2d,
    ConditionalBatchNorm2d,
    SelfAttention,
    SNEmbedding,
    SNLinear,
    SpectralNorm,
    SqueezeExcite,
    batch_norms,
    check_attention,
    embed_classes,
    init_weights,
    projection_logits,
    sn_conv,
)
from ..objectives.biggan import BigGANObjective, draw_z, standing_stats
from .biggan import IMAGENET_TRAIN, tune_groups
from .biggan_deep_fold import fast_generator

# Channel multipliers of ``ch`` along the network; block k maps mult[k] -> mult[k + 1].
# G blocks alternate (no resample, upsample); D blocks alternate (downsample, no resample).
G_MULT = {
    32: [4] * 8,
    64: [16] * 4 + [8] * 2 + [4, 4, 2],
    128: [16] * 4 + [8] * 2 + [4, 4, 2, 2, 1],
    256: [16] * 4 + [8] * 4 + [4, 4, 2, 2, 1],
    512: [16] * 4 + [8] * 4 + [4, 4, 2, 2, 1, 1, 1],
}
D_MULT = {
    32: [2] * 8,
    64: [2, 4, 4] + [8] * 2 + [16] * 4,
    128: [1, 2, 2, 4, 4] + [8] * 2 + [16] * 4,
    256: [1, 2, 2, 4, 4] + [8] * 4 + [16] * 4,
    512: [1, 1, 1, 2, 2, 4, 4] + [8] * 4 + [16] * 4,
}


@dataclass(frozen=True)
class BigGANDeepConfig:
    """Architecture of a BigGAN-deep G/D pair. Stored as ``config.json`` beside the weights."""

    resolution: int = 128
    n_classes: int = 1000  # 0 = unconditional
    img_channels: int = 3
    ch: int = 128
    d_ch: int = 128
    z_dim: int = 128
    shared_dim: int = 128  # class embedding: Linear(n_classes -> shared_dim) of a one-hot, no bias, no SN
    rgb_channels: int = 0  # output conv width before keeping the first img_channels; 0 = img_channels
    g_attn: tuple[int, ...] = (64,)
    d_attn: tuple[int, ...] = (64,)
    # Channel multipliers of ``ch`` along G and of ``d_ch`` along D (one more than the blocks: G from the 4 px
    # seed, D from its input conv); empty = BigGAN-deep's (G_MULT / D_MULT). A pyramid puts few channels at the
    # high resolutions, where the FLOPs are: cheaper steps for small CPU presets.
    g_mult: tuple[int, ...] = ()
    d_mult: tuple[int, ...] = ()
    g_se: bool = False
    d_se: bool = False
    bn_eps: float = 1e-4
    sn_eps: float = 1e-4
    init: str = "ortho"
    # Truncation-indexed BN statistics (the TF-Hub weights store 51 rows, for truncation 0, 0.02, ..., 1);
    # 0 = one set of running statistics.
    n_stats: int = 0
    # Eval-mode spectral norm: "power" = one power iteration from the stored u (BigGAN-PyTorch); "stored" =
    # divide by the stored sigma ``sv`` (torch's spectral_norm in eval mode, as the TF-Hub port runs).
    sn_eval: str = "power"

    family = "biggan-deep"

    def __post_init__(self):
        require_positive(self, "resolution", "ch", "d_ch", "z_dim", "bn_eps", "sn_eps",
                         allow_zero=("n_classes", "shared_dim", "rgb_channels"))
        for name in ("g_attn", "d_attn", "g_mult", "d_mult"):
            object.__setattr__(self, name, tuple(int(r) for r in getattr(self, name)))
        check_attention(self)
        if self.resolution not in G_MULT:
            raise ValueError(f"BigGAN-deep resolution {self.resolution} unsupported: use one of {sorted(G_MULT)}")
        for name, arch in (("g_mult", G_MULT[self.resolution]), ("d_mult", D_MULT[self.resolution])):
            value = getattr(self, name)
            if value and (len(value) != len(arch) or min(value) < 1):
                raise ValueError(f"{name} needs {len(arch)} positive multipliers at {self.resolution} px "
                                 f"(BigGAN-deep's: {tuple(arch)}), got {value}")
        if self.img_channels not in (1, 3):
            raise ValueError(f"img_channels must be 1 or 3, got {self.img_channels}")
        if self.n_classes < 0:
            raise ValueError("n_classes must be >= 0 (0 = unconditional)")
        if self.n_classes and not self.shared_dim:
            raise ValueError("a class-conditional BigGAN-deep needs shared_dim > 0")
        if self.rgb_channels and self.rgb_channels < self.img_channels:
            raise ValueError("rgb_channels must be 0 or >= img_channels")
        if self.init not in ("ortho", "N02"):
            raise ValueError(f"init must be 'ortho' or 'N02', got {self.init!r}")
        if self.n_stats < 0 or self.n_stats == 1:
            raise ValueError(f"n_stats must be 0 or >= 2, got {self.n_stats}")
        if self.sn_eval not in ("power", "stored"):
            raise ValueError(f"sn_eval must be 'power' or 'stored', got {self.sn_eval!r}")

    @property
    def cond_dim(self) -> int:
        return self.z_dim + (self.shared_dim if self.n_classes else 0)

    def to_dict(self) -> dict:
        return {"family": self.family, **dataclasses.asdict(self)}


# --------------------------------------------------------------------------------------------- blocks
class GBlockDeep(nn.Module):
    """Bottleneck block: 4 x (cond BN, ReLU, conv) with 1x1 -> 3x3 -> 3x3 -> 1x1; skip keeps the first channels."""

    def __init__(self, in_ch: int, out_ch: int, upsample: bool, cond_dim: int, bn_mode: str, bn_eps: float,
                 sn_eps: float, se: bool):
        super().__init__()
        mid = in_ch // 4
        self.upsample, self.out_ch = upsample, out_ch
        bn = dict(mode=bn_mode, cond_dim=cond_dim, eps=bn_eps, sn_eps=sn_eps)
        self.bn0, self.conv0 = ConditionalBatchNorm2d(in_ch, **bn), sn_conv(in_ch, mid, 1, sn_eps)
        self.bn1, self.conv1 = ConditionalBatchNorm2d(mid, **bn), sn_conv(mid, mid, 3, sn_eps)
        self.bn2, self.conv2 = ConditionalBatchNorm2d(mid, **bn), sn_conv(mid, mid, 3, sn_eps)
        self.bn3, self.conv3 = ConditionalBatchNorm2d(mid, **bn), sn_conv(mid, out_ch, 1, sn_eps)
        self.se = SqueezeExcite(out_ch, sn_eps=sn_eps) if se else None

    def forward(self, x: torch.Tensor, c: torch.Tensor | None, *stats) -> torch.Tensor:
        """``stats``: ``(truncation, interpolation)`` for the BNs (see ``ConditionalBatchNorm2d``)."""
        h = self.conv0(F.relu(self.bn0(x, c, *stats)))
        h = F.relu(self.bn1(h, c, *stats))
        if self.upsample:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.conv1(h)
        h = self.conv2(F.relu(self.bn2(h, c, *stats)))
        h = self.conv3(F.relu(self.bn3(h, c, *stats)))
        if self.se is not None:
            h = self.se(h)
        skip = x[:, : self.out_ch]
        if self.upsample:
            skip = F.interpolate(skip, scale_factor=2, mode="nearest")
        return h + skip


class DBlockDeep(nn.Module):
    """Pre-activation bottleneck block; the skip is pooled and grows channels with a 1x1 conv when needed."""

    def __init__(self, in_ch: int, out_ch: int, downsample: bool, sn_eps: float, se: bool):
        super().__init__()
        mid = max(in_ch, out_ch) // 4
        self.downsample = downsample
        self.conv0 = sn_conv(in_ch, mid, 1, sn_eps)
        self.conv1 = sn_conv(mid, mid, 3, sn_eps)
        self.conv2 = sn_conv(mid, mid, 3, sn_eps)
        self.conv3 = sn_conv(mid, out_ch, 1, sn_eps)
        self.conv_add = sn_conv(in_ch, out_ch - in_ch, 1, sn_eps) if out_ch > in_ch else None
        if out_ch < in_ch:
            raise ValueError("BigGAN-deep D blocks never shrink channels")
        self.se = SqueezeExcite(out_ch, sn_eps=sn_eps) if se else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.relu(x))
        h = self.conv1(F.relu(h))
        h = self.conv2(F.relu(h))
        h = F.relu(h)
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        h = self.conv3(h)
        if self.se is not None:
            h = self.se(h)
        skip = F.avg_pool2d(x, 2) if self.downsample else x
        if self.conv_add is not None:
            skip = torch.cat([skip, self.conv_add(skip)], 1)
        return h + skip


# --------------------------------------------------------------------------------------------- G and D
class GeneratorDeep(nn.Module):
    """BigGAN-deep generator: ``G(z, y, truncation=None) -> images`` in [-1, 1].

    In eval mode the forward writes nothing. With truncation-indexed BN statistics (``n_stats > 0``, the
    converted TF-Hub weights) ``truncation`` selects the rows used for that call (values above 1 use 1; None: the
    running statistics, which conversion sets to truncation 1); otherwise it is ignored (truncation acts on z)."""

    def __init__(self, config: BigGANDeepConfig):
        super().__init__()
        self.config = cfg = config
        mult, ch = cfg.g_mult or G_MULT[cfg.resolution], cfg.ch
        # Stored as a Linear weight [shared_dim, n_classes], the layout of the official port's `embeddings`.
        self.embeddings = nn.Linear(cfg.n_classes, cfg.shared_dim, bias=False) if cfg.n_classes else None
        self.linear = SNLinear(cfg.cond_dim, 4 * 4 * mult[0] * ch, sn_eps=cfg.sn_eps)
        self.blocks = nn.ModuleList()
        self.attention = nn.ModuleDict()
        res = 4
        for k in range(len(mult) - 1):
            up = k % 2 == 1
            self.blocks.append(GBlockDeep(mult[k] * ch, mult[k + 1] * ch, up, cfg.cond_dim, "linear",
                                          cfg.bn_eps, cfg.sn_eps, cfg.g_se))
            res = res * 2 if up else res
            if up and res in cfg.g_attn:
                self.attention[str(k)] = SelfAttention(mult[k + 1] * ch, cfg.sn_eps)
        self.output_bn = BatchNorm2d(mult[-1] * ch, eps=cfg.bn_eps)
        self.output_conv = sn_conv(mult[-1] * ch, cfg.rgb_channels or cfg.img_channels, 3, cfg.sn_eps)
        init_weights(self, cfg.init)
        if cfg.n_stats:
            for bn in batch_norms(self):
                width = bn.running_mean.shape[0]
                bn.register_buffer("stats_mean", torch.zeros(cfg.n_stats, width))
                bn.register_buffer("stats_var", torch.ones(cfg.n_stats, width))
        for m in self.modules():
            if isinstance(m, SpectralNorm):
                m.sn_eval = cfg.sn_eval
        # How rows are mixed between grid truncations: "port" (pytorch-pretrained-biggan's formula) or "linear".
        self.stats_interpolation = "port"

    def class_embedding(self, y: torch.Tensor) -> torch.Tensor:
        """The class embedding of labels [N] or soft labels [N, n_classes]."""
        return embed_classes(y, self.embeddings.weight.t())

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None, truncation: float | None = None) -> torch.Tensor:
        cfg = self.config
        if z.dim() != 2 or z.shape[1] != cfg.z_dim:
            raise ValueError(f"z must be [N, {cfg.z_dim}], got {list(z.shape)}")
        if cfg.n_classes and y is None:
            raise ValueError("this generator is class-conditional: pass y (class indices)")
        stats = (truncation, self.stats_interpolation) if cfg.n_stats else ()
        cond = torch.cat([z, self.class_embedding(y).to(z.dtype)], 1) if cfg.n_classes else z  # [N, cond_dim]
        h = self.linear(cond).view(z.shape[0], 4, 4, -1).permute(0, 3, 1, 2)  # NHWC seed, as the TF weights
        for k, block in enumerate(self.blocks):
            h = block(h, cond, *stats)
            if str(k) in self.attention:
                h = self.attention[str(k)](h)
        h = self.output_conv(F.relu(self.output_bn(h, *stats)))[:, : cfg.img_channels]  # [N, C, H, W]
        return torch.tanh(h)


class DiscriminatorDeep(nn.Module):
    """BigGAN-deep projection discriminator: ``D(x, y) -> logits`` [N] (``classes=True``: and the class logits)."""

    def __init__(self, config: BigGANDeepConfig):
        super().__init__()
        self.config = cfg = config
        mult, ch = cfg.d_mult or D_MULT[cfg.resolution], cfg.d_ch
        self.input_conv = sn_conv(cfg.img_channels, mult[0] * ch, 3, cfg.sn_eps)
        self.blocks = nn.ModuleList()
        self.attention = nn.ModuleDict()
        res = cfg.resolution
        for k in range(len(mult) - 1):
            down = k % 2 == 0
            self.blocks.append(DBlockDeep(mult[k] * ch, mult[k + 1] * ch, down, cfg.sn_eps, cfg.d_se))
            res = res // 2 if down else res
            if not down and res in cfg.d_attn:
                self.attention[str(k)] = SelfAttention(mult[k + 1] * ch, cfg.sn_eps)
        self.linear = SNLinear(mult[-1] * ch, 1, sn_eps=cfg.sn_eps)
        self.embed = SNEmbedding(cfg.n_classes, mult[-1] * ch, sn_eps=cfg.sn_eps) if cfg.n_classes else None
        init_weights(self, cfg.init)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, classes: bool = False):
        h = self.input_conv(x)
        for k, block in enumerate(self.blocks):
            h = block(h)
            if str(k) in self.attention:
                h = self.attention[str(k)](h)
        return projection_logits(h, self.linear, self.embed, y, classes)


# --------------------------------------------------------------------------------------------- the family
def export_module(G: GeneratorDeep, truncation: float | None = None) -> nn.Module:
    """The module ONNX export traces: the folded float32 generator of ``fast_generator`` (spectral norm folded, the
    BN statistics of ``truncation`` fixed) on its plain path, which traces with a dynamic batch."""
    folded = fast_generator(G, truncation, dtype=torch.float32, channels_last=False, traceable=True)
    folded.truncation_baked = bool(G.config.n_stats)  # otherwise truncation acts on z only
    return folded


def latent_layers(G: GeneratorDeep) -> list[tuple[nn.Module, slice, int]]:
    """The layers that take z (for SeFa): the first linear layer and every conditional BN, on cat([z, embedding])."""
    z = slice(0, G.config.z_dim)
    out = [(G.linear, z, 0)]
    for block in G.blocks:
        for bn in (block.bn0, block.bn1, block.bn2, block.bn3):
            out += [(bn.gain, z, 0), (bn.bias, z, 0)]
    return out


def truncation_info(config: BigGANDeepConfig) -> dict:
    """Truncation thresholds z; with per-truncation statistics it also picks them (1 at most)."""
    info = z_threshold(config)
    if config.n_stats:
        info.update(meaning=info["meaning"] + "; also selects the BN statistics (values above 1 use those of 1)",
                    slider=[0.02, 1.0])
    return info


FAMILY = register(Family(
    name="biggan-deep", config=BigGANDeepConfig, generator=GeneratorDeep, discriminator=DiscriminatorDeep,
    objective=BigGANObjective, latent_shape=lambda config: (config.z_dim,), draw_latents=draw_z,
    tiny=lambda config: dict(ch=8, d_ch=8, z_dim=8, shared_dim=8),
    # The TF-Hub statistics per truncation were computed for z = truncation * truncnorm(-2, 2).
    truncation_mode=lambda config: "scale" if config.n_stats else "resample",
    truncation_modes=("resample", "scale"), truncation_info=truncation_info,
    fold=fast_generator, fold_key=lambda config, truncation: truncation if config.n_stats else None,
    recalibrate=standing_stats, export=export_module,
    discriminator_blocks=lambda D: [nn.ModuleList([*([D.input_conv] if k == 0 else []), b,
                                                   *([D.attention[str(k)]] if str(k) in D.attention else [])])
                                    for k, b in enumerate(D.blocks)],
    latent_layers=latent_layers,
    tune_groups=lambda G: tune_groups([G.linear, G.embeddings], G.blocks, G.attention),
    upgrade=lambda data: rename_fields(data, {"dim_z": "z_dim"}),  # before 0.2: dim_z
    about="BigGAN-deep: bottleneck blocks; TF-Hub / pytorch-pretrained-biggan layout",
))

_DEEP = dict(n_classes=1000, img_channels=3, ch=128, d_ch=128, z_dim=128, shared_dim=128, rgb_channels=128,
             g_attn=(64,), d_attn=(64,), bn_eps=1e-4, sn_eps=1e-4, init="ortho")
for _res in (128, 256, 512):
    register_preset(f"biggan-deep-{_res}", "biggan-deep", dict(_DEEP, resolution=_res), IMAGENET_TRAIN,
                    f"BigGAN-deep {_res} (TF-Hub / pytorch-pretrained-biggan layout)")

# Small CPU preset for Fashion-MNIST (32x32 grey, 10 classes), BigGAN-deep's counterpart of ``biggan-fmnist``: batch
# 16, one D step, learning rates 4e-4 / 8e-4, half-life EMA, a 690 s budget, and channel pyramids in G (4/4/2/1 x ch
# at 4-8/16/32 px) and D (1/2/4/4 x d_ch at 32/16/8/4 px) as biggan-fmnist's. The best of the deep arms of the A/B
# at equal wall clock on the AVX2 stand-in (docs/cpu_recipe_round2.md: ch 48 with batch 16 and z 64 ahead of ch 32
# or 48 with batch 8 and z 128), still behind biggan-fmnist there. BigGAN-deep's ImageNet presets (batch 256 x 8
# accumulations) are far too slow on a CPU.
register_preset(
    "biggan-deep-fmnist", "biggan-deep",
    model=dict(resolution=32, n_classes=10, img_channels=1, ch=48, d_ch=48, z_dim=64, shared_dim=64,
               rgb_channels=0, g_mult=(4, 4, 4, 4, 2, 2, 1, 1), d_mult=(1, 2, 2, 4, 4, 4, 4, 4), g_attn=(),
               d_attn=(), bn_eps=1e-5, sn_eps=1e-6, init="ortho"),
    train=dict(batch_size=16, lr_g=4e-4, lr_d=8e-4, adam_eps=1e-6, ema_halflife_kimg=5.0, ema_rampup=0.1,
               iterations=30000, time_budget=690.0, sample_every=1000, ckpt_every=1000,
               objective=dict(n_d_steps=1, g_ortho=0.0)),
    about="small CPU preset for Fashion-MNIST (BigGAN-deep bottleneck blocks)",
)
