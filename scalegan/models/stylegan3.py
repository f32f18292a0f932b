"""StyleGAN3 (Karras et al. 2021, "Alias-Free Generative Adversarial Networks"), class-conditional as StyleGAN2-ADA.

Written from the paper and the public description of NVlabs/stylegan3's networks (REFERENCE.md section 9; no NVlabs
code): StyleGAN2's mapping network (2 layers), then a synthesis network that starts from Fourier features
(``SynthesisInput``: fixed frequencies inside the band-limit disc, rotated and translated by an affine of the first
W) and runs ``num_layers + 1`` layers, each a modulated convolution followed by a *filtered* leaky ReLU: upsample to
twice the output's sampling rate with a Kaiser-windowed low-pass FIR, apply the nonlinearity there, low-pass and
downsample to the output rate. Cutoffs, stopbands, sampling rates and channels follow the paper's per-layer schedule
(``layer_schedule``); the two layers before the toRGB are critically sampled (cutoff at half the sampling rate) and
the last layer is a linear 1x1 toRGB. ``-T`` (translation equivariant) uses 3x3 convolutions and separable filters;
``-R`` (rotation equivariant) 1x1 convolutions, radially symmetric down filters and twice G's channels. D is
StyleGAN2's (``resnet``).

Module and tensor names follow NVlabs' state dicts (facts of the file format): ``synthesis.input.*`` and
``synthesis.L{i}_{size}_{channels}.*``; with the ``-T`` 1024 configuration the layers are ``L0_36_512`` ...
``L14_1024_3``. G parameter counts of the published configurations (tested): -T / -R 1024 22,313,167 /
15,093,151; 512 24,873,519 / 16,665,594; 256 (``--cbase=16384``) 23,320,443 / 15,779,565.

Not reproduced: the fp16 layers and their clamping schedule (mixed precision runs every synthesis layer in the
autocast dtype; the mapping stays float32) and -R's D-input blur (the loss blurs D's inputs for the first 200 kimg;
the StyleGAN2 objective has no such step).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import scipy.signal
import scipy.special
import torch
import torch.nn.functional as F
from torch import nn

from ..family import Family, WSpace, register, register_preset, require_positive
from ..objectives.stylegan2 import StyleGAN2Objective
from . import stylegan2
from .stylegan2 import ARCHITECTURES, FullyConnectedLayer, MappingNetwork, StyleGAN2Config, upfirdn2d


@dataclass(frozen=True)
class StyleGAN3Config:
    """Architecture of a StyleGAN3 G (and its StyleGAN2 D). Stored as ``config.json`` beside the weights.

    Defaults are NVlabs' ``stylegan3-t``; ``-r``: ``conv_kernel=1``, ``use_radial_filters=True`` and G's
    ``channel_base`` / ``channel_max`` doubled (D's ``d_channel_base`` / ``d_channel_max`` are not)."""

    resolution: int = 1024
    n_classes: int = 0  # 0 = unconditional
    img_channels: int = 3
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 2
    mapping_lr: float = 0.01  # learning-rate multiplier of the mapping networks
    w_avg_beta: float = 0.998  # decay of the tracked average W
    channel_base: int = 32768  # G's channels at cutoff f_c: rint(min(channel_base / 2 / f_c, channel_max))
    channel_max: int = 512
    num_layers: int = 14  # synthesis layers after the input, not counting the toRGB
    num_critical: int = 2  # critically sampled layers at the end (toRGB not counted)
    first_cutoff: float = 2.0  # cutoff of the first layer (the Fourier features' bandwidth)
    first_stopband: float = 2 ** 2.1  # minimum stopband of the first layer
    last_stopband_rel: float = 2 ** 0.3  # minimum stopband of the last layers, relative to their cutoff
    margin_size: int = 10  # pixels each side beyond the image in all but the last two layers
    output_scale: float = 0.25  # the toRGB output is multiplied by this
    conv_kernel: int = 3  # 3 for -T, 1 for -R
    use_radial_filters: bool = False  # radially symmetric down filters (-R), except in critically sampled layers
    filter_size: int = 6  # taps per unit of resampling factor
    lrelu_upsampling: int = 2  # the nonlinearity runs at this many times the layer's sampling rate
    magnitude_ema_beta: float = 0.999  # decay of each layer's tracked input mean square (train.py: 0.5 ** (batch
    # / 20000))
    conv_clamp: float | None = None  # clamp layer outputs to +-conv_clamp (NVlabs: 256); None = off
    truncation_cutoff: int | None = None  # truncate only the first this-many W; None = all, 0 = none
    # D: StyleGAN2's discriminator
    d_channel_base: int = 32768
    d_channel_max: int = 512
    d_architecture: str = "resnet"
    d_mapping_layers: int = 8
    mbstd_group: int = 4  # minibatch standard deviation group size (0 = the whole batch)
    mbstd_channels: int = 1

    family = "stylegan3"

    def __post_init__(self):
        require_positive(self, "resolution", "img_channels", "z_dim", "w_dim", "mapping_layers", "mapping_lr",
                         "channel_base", "channel_max", "num_layers", "first_cutoff", "first_stopband",
                         "last_stopband_rel", "output_scale", "conv_kernel", "filter_size", "lrelu_upsampling",
                         "d_channel_base", "d_channel_max", "d_mapping_layers",
                         allow_zero=("n_classes", "num_critical", "margin_size", "mbstd_group", "mbstd_channels"))
        if self.resolution < 16 or self.resolution & (self.resolution - 1):
            raise ValueError(f"StyleGAN3 resolution must be a power of two >= 16, got {self.resolution}")
        if self.num_layers < 2 or self.num_critical >= self.num_layers:
            raise ValueError(f"num_layers must be >= 2 and num_critical < num_layers, got {self.num_layers} and "
                             f"{self.num_critical}")
        if self.first_cutoff >= self.resolution / 2:
            raise ValueError(f"first_cutoff must be below the last cutoff resolution / 2 = {self.resolution / 2}, "
                             f"got {self.first_cutoff}")
        if self.first_stopband <= self.first_cutoff or self.last_stopband_rel <= 1:
            raise ValueError("stopbands must lie above their cutoffs: first_stopband > first_cutoff and "
                             f"last_stopband_rel > 1, got {self.first_stopband} and {self.last_stopband_rel}")
        if self.d_architecture not in ARCHITECTURES:
            raise ValueError(f"d_architecture must be one of {ARCHITECTURES}, got {self.d_architecture!r}")
        for name in ("w_avg_beta", "magnitude_ema_beta"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.conv_clamp is not None and not self.conv_clamp > 0:
            raise ValueError(f"conv_clamp must be > 0 (or None for no clamping), got {self.conv_clamp}")
        if self.truncation_cutoff is not None and self.truncation_cutoff < 0:
            raise ValueError(f"truncation_cutoff must be >= 0 (or None for every W), got {self.truncation_cutoff}")

    @property
    def num_ws(self) -> int:
        """W vectors the synthesis network consumes: the input's, one per layer, the toRGB's."""
        return self.num_layers + 2

    def discriminator_config(self) -> StyleGAN2Config:
        """The StyleGAN2 config that builds this model's D."""
        return StyleGAN2Config(
            resolution=self.resolution, n_classes=self.n_classes, img_channels=self.img_channels,
            d_mapping_layers=self.d_mapping_layers, mapping_lr=self.mapping_lr, channel_base=self.d_channel_base,
            channel_max=self.d_channel_max, d_architecture=self.d_architecture, mbstd_group=self.mbstd_group,
            mbstd_channels=self.mbstd_channels, conv_clamp=self.conv_clamp)

    def to_dict(self) -> dict:
        return {"family": self.family, **dataclasses.asdict(self)}


# --------------------------------------------------------------------------------------------- schedule
@dataclass(frozen=True)
class LayerSpec:
    """One synthesis layer's place in the schedule (index i: input from layer max(i - 1, 0), output layer i)."""

    name: str
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_sampling_rate: float
    out_sampling_rate: float
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    is_torgb: bool
    is_critically_sampled: bool


def layer_schedule(cfg: StyleGAN3Config) -> dict:
    """Per-layer arrays for i = 0..num_layers (the paper's Fig. 4b): ``cutoffs``, ``stopbands``,
    ``sampling_rates``, ``half_widths``, ``sizes`` and ``channels``, float64 as the schedule is computed."""
    n, r = cfg.num_layers, cfg.resolution
    last_cutoff = r / 2
    last_stopband = last_cutoff * cfg.last_stopband_rel
    exponents = np.minimum(np.arange(n + 1) / (n - cfg.num_critical), 1)
    cutoffs = cfg.first_cutoff * (last_cutoff / cfg.first_cutoff) ** exponents
    stopbands = cfg.first_stopband * (last_stopband / cfg.first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, r))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + cfg.margin_size * 2
    sizes[-2:] = r
    channels = np.rint(np.minimum((cfg.channel_base / 2) / cutoffs, cfg.channel_max))
    channels[-1] = cfg.img_channels
    return dict(cutoffs=cutoffs, stopbands=stopbands, sampling_rates=sampling_rates, half_widths=half_widths,
                sizes=sizes.astype(int), channels=channels.astype(int))


def layer_specs(cfg: StyleGAN3Config) -> list[LayerSpec]:
    """The synthesis layers ``L0`` ... ``L{num_layers}`` (the last is the toRGB)."""
    s = layer_schedule(cfg)
    specs = []
    for i in range(cfg.num_layers + 1):
        prev = max(i - 1, 0)
        specs.append(LayerSpec(
            name=f"L{i}_{s['sizes'][i]}_{s['channels'][i]}",
            in_channels=int(s["channels"][prev]), out_channels=int(s["channels"][i]),
            in_size=int(s["sizes"][prev]), out_size=int(s["sizes"][i]),
            in_sampling_rate=float(s["sampling_rates"][prev]), out_sampling_rate=float(s["sampling_rates"][i]),
            in_cutoff=float(s["cutoffs"][prev]), out_cutoff=float(s["cutoffs"][i]),
            in_half_width=float(s["half_widths"][prev]), out_half_width=float(s["half_widths"][i]),
            is_torgb=i == cfg.num_layers, is_critically_sampled=i >= cfg.num_layers - cfg.num_critical))
    return specs


# --------------------------------------------------------------------------------------------- filters and ops
def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float,
                          radial: bool = False) -> torch.Tensor | None:
    """A Kaiser-windowed low-pass FIR summing to 1: 1-D taps [numtaps] (separable, ``scipy.signal.firwin``) or,
    with ``radial``, a radially symmetric 2-D kernel [numtaps, numtaps] (jinc times a 2-D Kaiser window). The
    Kaiser beta is the one that gives the transition band ``width`` (Hz, at rate ``fs``). None for one tap."""
    if numtaps == 1:
        return None
    if not radial:
        return torch.as_tensor(scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs),
                               dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    with np.errstate(divide="ignore", invalid="ignore"):  # r = 0 only with an odd numtaps; its limit is cutoff
        f = np.where(r > 0, scipy.special.j1(2 * np.pi * cutoff * r) / (np.pi * r), cutoff)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = scipy.signal.windows.kaiser(numtaps, beta)
    f = f * np.outer(window, window)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)


def _fir_axis(x: torch.Tensor, f: torch.Tensor, dim: int, up: int, down: int, pad0: int, pad1: int,
              gain: float) -> torch.Tensor:
    """``upfirdn`` along axis ``dim`` (2: y, 3: x) with symmetric 1-D taps ``f``, as a depthwise convolution: a
    transposed one with stride ``up`` (no multiplications by the inserted zeros), a strided one for ``down``."""
    c, k = x.shape[1], f.numel()
    if torch.jit.is_tracing():  # an exported graph needs the kernel's shape as a constant: channels never vary
        c = int(c)
    kernel = (1, k) if dim == 3 else (k, 1)
    weight = (f * gain).to(x.dtype).reshape(1, 1, *kernel).repeat(c, 1, 1, 1)
    pad = [0, 0, 0, 0]
    if up > 1:
        # The transposed convolution is the full convolution of the zero-inserted signal: padding p0 instead of
        # k - 1 on the low side shifts it by k - 1 - p0; the length is n * up + p0 + p1 - k + 1.
        n = x.shape[dim]
        x = F.conv_transpose2d(x, weight, stride=(1, up) if dim == 3 else (up, 1), groups=c)
        low = pad0 - (k - 1)
        high = n * up + pad0 + pad1 - k + 1 - (x.shape[dim] + low)
        if low <= 0 and high <= 0:  # a crop: a view, no copy
            return x.narrow(dim, -low, x.shape[dim] + low + high)
        pad[0 if dim == 3 else 2], pad[1 if dim == 3 else 3] = low, high
        return F.pad(x, pad)  # negative pads crop
    pad[0 if dim == 3 else 2], pad[1 if dim == 3 else 3] = pad0, pad1
    if any(pad):
        x = F.pad(x, pad)
    return F.conv2d(x, weight, stride=(1, down) if dim == 3 else (down, 1), groups=c)


def filter2d(x: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1, pad=(0, 0, 0, 0),
             gain: float = 1.0) -> torch.Tensor:
    """StyleGAN2's ``upfirdn2d`` (upsample by inserting zeros, pad x0, x1, y0, y1, filter, keep every ``down``-th
    pixel) for the symmetric filters of this model: ``f`` None (no filter), 1-D taps (along x, then y) or a 2-D
    kernel; computed without the inserted zeros or the dropped pixels (tested against ``upfirdn2d``)."""
    if f is None and up == 1:  # no filter (the toRGB): padding, subsampling, gain
        x = F.pad(x, list(pad)) if any(pad) else x
        x = x[:, :, ::down, ::down] if down > 1 else x
        return x * gain if gain != 1 else x
    if f is None or (f.dim() == 2 and up > 1):
        f = torch.ones(1, 1, device=x.device) if f is None else f
        return upfirdn2d(x, f, up=up, down=down, pad=pad, gain=gain)
    if f.dim() == 1:
        x = _fir_axis(x, f, 3, up, down, pad[0], pad[1], gain)
        return _fir_axis(x, f, 2, up, down, pad[2], pad[3], 1.0)
    c = int(x.shape[1]) if torch.jit.is_tracing() else x.shape[1]
    weight = (f * gain).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(F.pad(x, list(pad)), weight, stride=down, groups=c)


def filtered_lrelu(x: torch.Tensor, fu: torch.Tensor | None, fd: torch.Tensor | None, b: torch.Tensor | None,
                   up: int = 1, down: int = 1, padding=(0, 0, 0, 0), gain: float = math.sqrt(2), slope: float = 0.2,
                   clamp: float | None = None, impl: str = "fast") -> torch.Tensor:
    """The alias-free nonlinearity: add the bias ``b``, upsample by ``up`` with ``fu`` (gain up^2, after padding by
    ``padding`` = x0, x1, y0, y1 in the upsampled grid), leaky ReLU of slope ``slope`` times ``gain``, clamp to
    +-``clamp``, low-pass with ``fd`` and keep every ``down``-th pixel.

    ``impl="ref"``: those steps literally, with StyleGAN2's ``upfirdn2d`` and 2-D kernels; ``"fast"``: separable
    passes that skip the inserted zeros and the dropped pixels, the gain folded into the up filter (leaky ReLU
    commutes with a positive scale). The two agree to float rounding (tested)."""
    if impl not in ("ref", "fast"):
        raise ValueError(f"impl must be 'ref' or 'fast', got {impl!r}")
    if b is not None:
        x = x + b.to(x.dtype)[None, :, None, None]
    if impl == "ref":
        def kernel(f):
            return torch.ones(1, 1, device=x.device) if f is None else f if f.dim() == 2 else torch.outer(f, f)

        x = upfirdn2d(x, kernel(fu), up=up, pad=padding, gain=up ** 2)
        x = (F.leaky_relu(x, slope) if slope != 1 else x) * gain
        x = x.clamp(-clamp, clamp) if clamp is not None else x
        return upfirdn2d(x, kernel(fd), down=down)
    x = filter2d(x, fu, up=up, pad=padding, gain=up ** 2 * gain)
    x = F.leaky_relu(x, slope) if slope != 1 else x
    x = x.clamp(-clamp, clamp) if clamp is not None else x
    return filter2d(x, fd, down=down)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     input_gain: torch.Tensor | None = None, padding: int = 0) -> torch.Tensor:
    """StyleGAN3's modulated convolution of ``x`` [N, I, H, W] with ``weight`` [O, I, k, k] scaled per sample by
    ``styles`` [N, I]. With ``demodulate``, weight and styles are first divided by their RMS (per output channel,
    per sample; demodulation undoes both, they only keep the numbers in range) and each output channel's modulated
    weight is normalised to unit norm. ``input_gain`` (a scalar) scales the weight after demodulation. Computed as
    scale activations, one shared convolution, scale outputs: the same function as per-sample weights."""
    dcoefs = None
    if demodulate:
        weight = weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
        w = weight[None] * styles[:, None, :, None, None]  # [N, O, I, k, k]
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]
    if input_gain is not None:
        weight = weight * input_gain
    x = x * styles.to(x.dtype)[:, :, None, None]
    x = F.conv2d(x, weight.to(x.dtype), padding=padding)
    return x * dcoefs.to(x.dtype)[:, :, None, None] if demodulate else x


# --------------------------------------------------------------------------------------------- layers
class SynthesisInput(nn.Module):
    """Fourier features [N, C, size, size] on a grid of ``sampling_rate`` samples per unit, rotated and translated
    by an affine of w (and by the user ``transform``), then mixed by a learned C x C matrix."""

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float):
        super().__init__()
        self.channels, self.size, self.sampling_rate, self.bandwidth = channels, size, sampling_rate, bandwidth
        # Frequencies uniform inside the disc of radius bandwidth; phases uniform in [-0.5, 0.5).
        direction = torch.randn(channels, 2)
        radius = torch.rand(channels, 1).sqrt() * bandwidth
        self.register_buffer("freqs", direction / direction.norm(dim=1, keepdim=True) * radius)
        self.register_buffer("phases", torch.rand(channels) - 0.5)
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine = FullyConnectedLayer(w_dim, 4)
        with torch.no_grad():  # identity: no rotation, no translation
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        t = self.affine(w.float())  # [N, 4]: cos, sin (unnormalised), translation x, y
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        zero, one = torch.zeros_like(t[:, 0]), torch.ones_like(t[:, 0])
        rotation = torch.stack([t[:, 0], -t[:, 1], zero, t[:, 1], t[:, 0], zero, zero, zero, one], 1).reshape(-1, 3, 3)
        translation = torch.stack([one, zero, -t[:, 2], zero, one, -t[:, 3], zero, zero, one], 1).reshape(-1, 3, 3)
        m = rotation @ translation @ self.transform.float()[None]  # sample x at m @ x of the untransformed features
        freqs = self.freqs.float()[None] @ m[:, :2, :2]  # [N, C, 2]
        phases = self.phases.float()[None] + (self.freqs.float()[None] @ m[:, :2, 2:]).squeeze(2)  # [N, C]
        # Frequencies that the transform pushed beyond the bandwidth fade out linearly up to half the sampling rate.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        # Pixel centres of a grid centred on the origin, in units where the sampling rate is sampling_rate.
        grid = torch.arange(self.size, device=w.device, dtype=torch.float32) + 0.5 - self.size / 2
        grid = grid / self.sampling_rate
        x = (grid[None, None, :, None] * freqs[:, None, None, :, 0]  # x along the width
             + grid[None, :, None, None] * freqs[:, None, None, :, 1] + phases[:, None, None, :])  # [N, H, W, C]
        x = torch.sin(x * (2 * math.pi)) * amplitudes[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).t().to(x.dtype)
        return x.permute(0, 3, 1, 2)  # [N, C, H, W]


class SynthesisLayer(nn.Module):
    """Modulated convolution (padding k - 1) and filtered leaky ReLU; the toRGB layer is a linear, undemodulated 1x1
    convolution without filters. ``magnitude_ema`` tracks the input's mean square in training mode only; its
    inverse square root is the convolution's input gain."""

    def __init__(self, spec: LayerSpec, cfg: StyleGAN3Config):
        super().__init__()
        self.is_torgb = spec.is_torgb
        self.conv_clamp = cfg.conv_clamp
        self.magnitude_ema_beta = cfg.magnitude_ema_beta
        self.kernel = 1 if spec.is_torgb else cfg.conv_kernel
        self.affine = FullyConnectedLayer(cfg.w_dim, spec.in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(spec.out_channels, spec.in_channels, self.kernel, self.kernel))
        self.bias = nn.Parameter(torch.zeros(spec.out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.weight_gain = 1 / math.sqrt(spec.in_channels * self.kernel ** 2)

        # The nonlinearity runs at twice the higher of the two rates (the toRGB: at the rate, no nonlinearity).
        tmp_rate = max(spec.in_sampling_rate, spec.out_sampling_rate) * (1 if spec.is_torgb else cfg.lrelu_upsampling)
        self.up = int(round(tmp_rate / spec.in_sampling_rate))
        self.down = int(round(tmp_rate / spec.out_sampling_rate))
        up_taps = cfg.filter_size * self.up if self.up > 1 and not spec.is_torgb else 1
        down_taps = cfg.filter_size * self.down if self.down > 1 and not spec.is_torgb else 1
        self.register_buffer("up_filter", design_lowpass_filter(up_taps, spec.in_cutoff, spec.in_half_width * 2,
                                                                tmp_rate))
        self.register_buffer("down_filter", design_lowpass_filter(
            down_taps, spec.out_cutoff, spec.out_half_width * 2, tmp_rate,
            radial=cfg.use_radial_filters and not spec.is_critically_sampled))

        # Padding in the upsampled grid so that the output is out_size: the full convolution gives in + k - 1
        # samples, upsampling multiplies them by up, the two filters take taps - 1 each, and downsampling keeps
        # every down-th of (out - 1) * down + 1. The low side takes the extra half sample (pixel centres align).
        total = (spec.out_size - 1) * self.down + 1 - (spec.in_size + self.kernel - 1) * self.up
        total += up_taps + down_taps - 2
        low = (total + self.up) // 2
        self.padding = (low, total - low, low, total - low)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                magnitude = x.detach().float().square().mean()
                self.magnitude_ema.copy_(magnitude.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=not self.is_torgb,
                             input_gain=self.magnitude_ema.rsqrt(), padding=self.kernel - 1)
        gain, slope = (1.0, 1.0) if self.is_torgb else (math.sqrt(2), 0.2)
        return filtered_lrelu(x, self.up_filter, self.down_filter, self.bias, self.up, self.down, self.padding,
                              gain=gain, slope=slope, clamp=self.conv_clamp)


class SynthesisNetwork(nn.Module):
    """W [N, num_ws, w_dim] -> images: ``input``, then layers ``L0_...`` to the toRGB, times ``output_scale``."""

    def __init__(self, cfg: StyleGAN3Config):
        super().__init__()
        self.output_scale = cfg.output_scale
        s = layer_schedule(cfg)
        self.input = SynthesisInput(cfg.w_dim, int(s["channels"][0]), int(s["sizes"][0]),
                                    float(s["sampling_rates"][0]), float(s["cutoffs"][0]))
        self.layer_names = []
        for spec in layer_specs(cfg):
            setattr(self, spec.name, SynthesisLayer(spec, cfg))
            self.layer_names.append(spec.name)

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        x = self.input(ws[:, 0])  # [N, C0, s0, s0]
        for i, name in enumerate(self.layer_names):
            x = getattr(self, name)(x, ws[:, i + 1])
        return x.float() * self.output_scale  # [N, img_channels, R, R]


# --------------------------------------------------------------------------------------------- G, D
class Generator(nn.Module):
    """StyleGAN3 generator: ``G(z, y, truncation=None) -> images`` [N, C, H, W] (about [-1, 1]).

    ``latents`` are z [N, z_dim] or W [N, num_ws, w_dim]; ``truncation`` is psi towards the tracked average W
    (the class's own for a conditional model), ``mix`` is ``(z2, cutoff)`` style mixing, as StyleGAN2's
    ``Generator``, whose mapping, truncation and mixing this one shares. The eval-mode forward writes nothing."""

    # The mapping side is StyleGAN2's (same fields on this config): one definition of truncation and mixing.
    one_hot = stylegan2.Generator.one_hot
    map = stylegan2.Generator.map

    def __init__(self, config: StyleGAN3Config):
        super().__init__()
        self.config = cfg = config
        self.synthesis = SynthesisNetwork(cfg)
        self.mapping = MappingNetwork(cfg.z_dim, cfg.n_classes, cfg.w_dim, cfg.mapping_layers, cfg.mapping_lr,
                                      cfg.w_avg_beta)

    def forward(self, latents: torch.Tensor, y: torch.Tensor | None = None, truncation: float | None = None,
                mix=None, return_ws: bool = False):
        cfg = self.config
        if latents.dim() == 3:
            if latents.shape[1:] != (cfg.num_ws, cfg.w_dim):
                raise ValueError(f"W must be [N, {cfg.num_ws}, {cfg.w_dim}], got {list(latents.shape)}")
            ws = latents
        else:
            ws = self.map(latents, y, truncation, mix)
        img = self.synthesis(ws)
        return (img, ws) if return_ws else img


class Discriminator(stylegan2.Discriminator):
    """StyleGAN2's discriminator (NVlabs trains StyleGAN3 with it), built from the ``d_*`` fields."""

    def __init__(self, config: StyleGAN3Config):
        super().__init__(config.discriminator_config())
        self.config = config


class ExportGenerator(stylegan2.ExportGenerator):
    """``G(z, y)`` in eval mode at one truncation psi: what ONNX export traces (StyleGAN3 has no noise inputs)."""

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.G(z, y, truncation=self.truncation)


def _latent_layers(G: Generator) -> list:
    """The affines that take W: the input's (rotation and translation) and every layer's styles."""
    synthesis = G.synthesis
    return [(synthesis.input.affine, slice(None), 0)] + [
        (getattr(synthesis, name).affine, slice(None), 0) for name in synthesis.layer_names]


FAMILY = register(Family(
    name="stylegan3", config=StyleGAN3Config, generator=Generator, discriminator=Discriminator,
    objective=StyleGAN2Objective, latent_shape=lambda config: (config.z_dim,), draw_latents=stylegan2.draw_z,
    tiny=lambda config: dict(resolution=min(config.resolution, 32), channel_base=512, channel_max=8, z_dim=16,
                             w_dim=16, num_layers=4, d_channel_base=256, d_channel_max=16, d_mapping_layers=2,
                             mbstd_group=2),
    w_space=WSpace(shape=lambda config: (config.num_ws, config.w_dim), map=stylegan2.map_latents,
                   centre=stylegan2.w_centre),
    truncation_mode=lambda config: "w", truncation_modes=("w",),
    truncation_info=lambda config: {"meaning": "psi: W is pulled towards the average W (1 = none, < 1 = closer to "
                                    "the average)", "slider": [0.05, 1.0], "none_means": 1.0},
    export=ExportGenerator, ema_buffers="copy",
    precision_defaults=lambda config, precision: ({"conv_clamp": 256.0} if precision == "fp16"
                                                  and config.conv_clamp is None else {}),
    discriminator_blocks=lambda D: [getattr(D, f"b{res}") for res in D.resolutions],
    discriminator_group=lambda config: config.mbstd_group,
    latent_layers=_latent_layers,
    about="StyleGAN3 (alias-free): Fourier-feature input, filtered leaky ReLU layers (-T / -R), StyleGAN2 D",
))


# --------------------------------------------------------------------------------------------- presets
# NVlabs train.py: -T cbase 32768, cmax 512, kernel 3; -R kernel 1, radial filters, G's cbase / cmax doubled (D's
# not); conv clamp 256; batch 32, G lr 0.0025, D lr 0.002, Adam (0, 0.99) eps 1e-8, EMA half-life batch * 10 / 32
# kimg with ramp-up 0.05; R1 every 16 D steps with the paper's gamma, no path length, no style mixing;
# magnitude EMA beta 0.5 ** (batch / 20000); -R blurs D's input (sigma 10 fading over batch * 200 / 32 kimg). The
# paper's FFHQ runs used --mirror=1.
def _stylegan3_preset(kind: str, resolution: int, cbase: int, gamma: float, batch: int = 32, lr_d: float = 0.002,
                      about: str = "", **train) -> None:
    radial = kind == "r"
    model = dict(resolution=resolution, n_classes=0, img_channels=3, z_dim=512, w_dim=512, mapping_layers=2,
                 channel_base=cbase * (2 if radial else 1), channel_max=512 * (2 if radial else 1),
                 conv_kernel=1 if radial else 3, use_radial_filters=radial, conv_clamp=256.0,
                 magnitude_ema_beta=0.5 ** (batch / 20000), d_channel_base=cbase, d_channel_max=512,
                 d_architecture="resnet", mbstd_group=4)
    register_preset(
        f"stylegan3-{kind}-{resolution}", "stylegan3", model=model,
        train=dict(batch_size=batch, lr_g=0.0025, lr_d=lr_d, beta1=0.0, beta2=0.99, adam_eps=1e-8,
                   ema_halflife_kimg=batch * 10 / 32, ema_rampup=0.05,
                   objective=dict(r1_gamma=gamma, pl_weight=0.0, style_mixing=0.0, d_reg_interval=16,
                                  **(dict(blur_sigma=10.0, blur_fade_kimg=batch * 200 / 32) if radial else {})),
                   **train),
        about=about)


_stylegan3_preset("t", 1024, 32768, 32.8, mirror=True, about="StyleGAN3-T 1024 (FFHQ; G 22.3M parameters)")
_stylegan3_preset("r", 1024, 32768, 32.8, mirror=True, about="StyleGAN3-R 1024 (FFHQ; G 15.1M parameters)")
_stylegan3_preset("t", 512, 32768, 8.2, mirror=True, about="StyleGAN3-T 512 (AFHQv2; G 24.9M parameters)")
_stylegan3_preset("r", 512, 32768, 16.4, mirror=True, about="StyleGAN3-R 512 (AFHQv2; G 16.7M parameters)")
# The published 256 pickles (FFHQ-U) match the configs.md ablation setting --cbase=16384, batch 64, D lr 0.0025.
_stylegan3_preset("t", 256, 16384, 1.0, batch=64, lr_d=0.0025, mirror=True,
                  about="StyleGAN3-T 256 (FFHQ-U, --cbase=16384; G 23.3M parameters)")
_stylegan3_preset("r", 256, 16384, 1.0, batch=64, lr_d=0.0025, mirror=True,
                  about="StyleGAN3-R 256 (FFHQ-U, --cbase=16384; G 15.8M parameters)")

# Small CPU preset for Fashion-MNIST (32x32 grey, 10 classes), trained as stylegan2-fmnist (R1 0.1, no path
# length, no style mixing). 6 layers of at most 24 channels with 4-pixel margins: G and D forward and backward at
# batch 16 take about 0.25 s on one core (stylegan2-fmnist: 0.13 s), a whole training iteration about twice that;
# 8 layers of 32 channels with NVlabs' 10-pixel margins were 3-4 times slower (the maps at twice the sampling rate
# dominate at 32 px).
register_preset(
    "stylegan3-t-fmnist", "stylegan3",
    model=dict(resolution=32, n_classes=10, img_channels=1, z_dim=128, w_dim=128, mapping_layers=2,
               channel_base=1024, channel_max=24, num_layers=6, margin_size=4, magnitude_ema_beta=0.5 ** (16 / 20000),
               d_channel_base=1024, d_channel_max=64, d_architecture="resnet", d_mapping_layers=2, mbstd_group=4),
    train=dict(batch_size=16, lr_g=0.005, lr_d=0.005, beta1=0.0, beta2=0.99, adam_eps=1e-8,
               ema_halflife_kimg=5.0, ema_rampup=0.1, iterations=30000, time_budget=690.0, sample_every=1000,
               ckpt_every=1000, objective=dict(r1_gamma=0.1, pl_weight=0.0, style_mixing=0.0)),
    about="small StyleGAN3-T CPU preset for Fashion-MNIST",
)
