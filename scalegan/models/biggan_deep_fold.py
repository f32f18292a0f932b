"""Fast inference for BigGAN-deep generators: the same function as ``G(z, y)`` in eval mode, computed with less work.

What is done once, at build time (``fast_generator``):

- spectral norm folded into plain weights (each layer's eval-mode ``sn_weight()``); the RGB conv is folded with
  its full matrix, then sliced to the channels that are kept (BigGAN-deep computes 128 and keeps 3);
- the BN statistics for the chosen truncation selected once and merged, with every conditional BN's gain and
  bias layer, into one affine map of the conditioning vector: a single matmul gives the per-sample scale and
  shift of every BN in the network (``x * a + b`` then ReLU);
- the attention's theta / phi / g 1x1 convs merged into one, its two products run as 1x1 convolutions over
  NHWC pixels on CPU; 1x1 convs as matrix products at small spatial sizes, oneDNN convolutions at larger ones
  (channels_last memory format throughout); optional bf16.

``traceable=True`` (with ``channels_last=False``) keeps every step out of place and free of per-image loops, so
that ``torch.onnx.export`` traces one graph for every batch size (``scalegan.export``).

The float32 result equals the reference path to float rounding (tested: <= 1e-5); ``G`` is not modified.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..hardware import inference_dtype
from ..layers import ConditionalBatchNorm2d, eval_stats


@torch.no_grad()
def _folded(module: nn.Module) -> torch.Tensor:
    """The eval-mode weight of a spectrally normalised layer, as a plain tensor."""
    was_training = module.training
    module.eval()
    weight = module.sn_weight().detach().clone()
    module.train(was_training)
    return weight


@torch.no_grad()
def _stats(bn: nn.Module, truncation: float | None, interpolation: str) -> tuple[torch.Tensor, torch.Tensor]:
    mean, var = eval_stats(bn, truncation, interpolation)
    return mean.clone(), var.clone()


class Pointwise(nn.Module):
    """A 1x1 conv: one matrix product over NHWC pixels at small spatial sizes (channels_last input), else oneDNN's
    convolution, which is faster once there are many pixels (2x at 16x16 and above, measured on AMD EPYC)."""

    MATMUL_BELOW = 256  # pixels per image

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.register_buffer("weight", weight.detach().reshape(weight.shape[0], -1).clone())
        self.register_buffer("bias", bias.detach().clone() if bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        if nhwc and x.shape[2] * x.shape[3] < self.MATMUL_BELOW:
            return F.linear(x.permute(0, 2, 3, 1), self.weight, self.bias).permute(0, 3, 1, 2)
        weight = self.weight[:, :, None, None]
        return F.conv2d(x, weight.contiguous(memory_format=torch.channels_last) if nhwc else weight, self.bias)


class UpsampleConv(nn.Module):
    """Nearest 2x upsampling followed by a 3x3 conv, computed at the low resolution.

    Output pixel (2i + a, 2j + b) of the upsampled conv only sees input rows {i - 1, i} (a = 0) or {i, i + 1}
    (a = 1), and the same for columns; the 3x3 kernel's taps that land on the same input pixel are summed into
    a 2x2 kernel per phase. One 2x2 conv over the 1-padded input yields all four phases (4x the channels) with
    16 instead of 36 multiply-adds per input pixel and output channel; the phases are then interleaved.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, traceable: bool = False):
        super().__init__()
        out_ch = weight.shape[0]
        self.traceable = traceable
        # rows[a][k]: which 3x3 taps (by index 0..2) fold into tap k of phase a's 2x2 kernel
        rows = {0: ([0], [1, 2]), 1: ([0, 1], [2])}
        phases = []
        for a in (0, 1):
            for b in (0, 1):
                kernel = weight.new_zeros(out_ch, weight.shape[1], 2, 2)
                for ky, taps_y in enumerate(rows[a]):
                    for kx, taps_x in enumerate(rows[b]):
                        kernel[:, :, ky, kx] = weight[:, :, taps_y][:, :, :, taps_x].sum((2, 3))
                phases.append(kernel)
        self.out_ch = out_ch
        self.register_buffer("weight", torch.cat(phases).detach().clone())  # [4 * out, in, 2, 2], phase-major
        self.register_buffer("bias", bias.detach().repeat(4).clone() if bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        y = F.conv2d(x, self.weight, self.bias, padding=1)  # [N, 4 * out, H + 1, W + 1]
        if self.traceable:  # interleave by a reshape: no buffer written in place
            phases = [y[:, p * self.out_ch:(p + 1) * self.out_ch, a:a + h, b:b + w]
                      for p, (a, b) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1)))]
            out = torch.stack(phases, 2).unflatten(2, (2, 2))  # [N, out, a, b, H, W]
            return out.permute(0, 1, 4, 2, 5, 3).reshape(n, self.out_ch, 2 * h, 2 * w)
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        out = torch.empty(n, self.out_ch, 2 * h, 2 * w, dtype=y.dtype, device=y.device, memory_format=layout)
        for phase, (a, b) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            out[:, :, a::2, b::2] = y[:, phase * self.out_ch:(phase + 1) * self.out_ch, a:a + h, b:b + w]
        return out


class FastGeneratorDeep(nn.Module):
    """Inference-only BigGAN-deep generator with folded weights; build it with ``fast_generator``."""

    def __init__(self, G: nn.Module, truncation: float | None = None, interpolation: str | None = None,
                 dtype: torch.dtype | None = None, channels_last: bool = True, traceable: bool = False):
        super().__init__()
        cfg = self.config = G.config
        if traceable and channels_last:
            raise ValueError("the traceable fast path needs channels_last=False (its attention loops per image)")
        self.traceable = traceable
        interpolation = interpolation or getattr(G, "stats_interpolation", "port")
        self.channels_last = channels_last
        self.dtype = dtype or torch.float32
        self.truncation = truncation
        conv = dict(dtype=self.dtype)

        self.embed = G.embeddings.weight.t().detach().clone() if G.embeddings is not None else None
        self.register_buffer("linear_w", _folded(G.linear))
        self.register_buffer("linear_b", G.linear.bias.detach().clone())

        # One affine map cond -> [a, b] for all conditional BNs: a = s (1 + g(c)), b = t (1 + g(c)) + beta(c)
        # with s = 1 / sqrt(var + eps), t = -mean * s.
        rows, offsets, self.slices = [], [], []
        start = 0
        for block in G.blocks:
            for bn in (block.bn0, block.bn1, block.bn2, block.bn3):
                assert isinstance(bn, ConditionalBatchNorm2d) and bn.mode == "linear"
                mean, var = _stats(bn, truncation, interpolation)
                s = torch.rsqrt(var + bn.eps)
                t = -mean * s
                wg, wb = _folded(bn.gain), _folded(bn.bias)  # [C, cond]
                rows += [s[:, None] * wg, t[:, None] * wg + wb]
                offsets += [s, t]
                width = s.shape[0]
                self.slices.append((start, width))
                start += 2 * width
        self.register_buffer("bn_w", torch.cat(rows))
        self.register_buffer("bn_b", torch.cat(offsets))

        def plain(sn_conv: nn.Conv2d, rows: slice | None = None) -> nn.Module:
            weight, bias = _folded(sn_conv), sn_conv.bias
            if rows is not None:
                weight, bias = weight[rows], (bias[rows] if bias is not None else None)
            if weight.shape[-1] == 1:
                return Pointwise(weight, bias).to(**conv)
            out = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[-1], padding=weight.shape[-1] // 2,
                            bias=bias is not None)
            out.weight.data.copy_(weight)
            if bias is not None:
                out.bias.data.copy_(bias)
            return out.to(**conv)

        self.blocks = nn.ModuleList()
        for block in G.blocks:
            m = nn.Module()
            m.upsample, m.out_ch = block.upsample, block.out_ch
            m.conv0, m.conv1, m.conv2, m.conv3 = (plain(c) for c in (block.conv0, block.conv1, block.conv2,
                                                                   block.conv3))
            if block.upsample:
                m.conv1 = UpsampleConv(_folded(block.conv1), block.conv1.bias, traceable).to(**conv)
            if block.se is not None:
                raise NotImplementedError("the fast path does not cover squeeze-and-excitation blocks (g_se)")
            self.blocks.append(m)
        self.attention = nn.ModuleDict()
        for key, attn in G.attention.items():
            m = nn.Module()
            m.qkv = Pointwise(torch.cat([_folded(attn.theta), _folded(attn.phi), _folded(attn.g)]), None).to(**conv)
            m.o = plain(attn.o)
            m.register_buffer("gamma", attn.gamma.detach().clone())
            m.split = (attn.ch // 8, attn.ch // 8, attn.ch // 2)
            self.attention[key] = m

        bn = G.output_bn
        mean, var = _stats(bn, truncation, interpolation)
        s = torch.rsqrt(var + bn.eps) * bn.weight.detach()
        self.register_buffer("out_a", s.clone())
        self.register_buffer("out_b", (bn.bias.detach() - mean * s).clone())
        self.output_conv = plain(G.output_conv, slice(0, cfg.img_channels))
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def _format(self, h: torch.Tensor) -> torch.Tensor:
        return h.contiguous(memory_format=torch.channels_last) if self.channels_last else h

    @torch.no_grad()
    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None, truncation: float | None = None) -> torch.Tensor:
        """``G(z, y)`` at the truncation this module was built for; another ``truncation`` is an error when the
        source model has truncation-indexed statistics (build another module for it)."""
        cfg = self.config
        if cfg.n_stats and truncation is not None and truncation != self.truncation:
            raise ValueError(f"this folded generator holds the statistics of truncation {self.truncation}, not "
                             f"{truncation}: fold again for that truncation")
        if z.dim() != 2 or z.shape[1] != cfg.z_dim:
            raise ValueError(f"z must be [N, {cfg.z_dim}], got {list(z.shape)}")
        z = z.float()
        if cfg.n_classes:
            if y is None:
                raise ValueError("this generator is class-conditional: pass y (class indices)")
            embedding = y.to(self.embed.dtype) @ self.embed if y.is_floating_point() else F.embedding(y, self.embed)
            cond = torch.cat([z, embedding], 1)
        else:
            cond = z
        n = z.shape[0]
        affine = F.linear(cond, self.bn_w, self.bn_b).to(self.dtype)  # [N, 2 * sum(C)]: every BN's scale/shift
        h = F.linear(cond, self.linear_w, self.linear_b).view(n, 4, 4, -1).permute(0, 3, 1, 2).to(self.dtype)
        h = self._format(h)
        k = 0

        def bn_relu(x: torch.Tensor) -> torch.Tensor:
            nonlocal k
            start, width = self.slices[k]
            k += 1
            a = affine[:, start:start + width, None, None]
            b = affine[:, start + width:start + 2 * width, None, None]
            return torch.addcmul(b, x, a).relu_()

        for index, block in enumerate(self.blocks):
            x = h
            h = block.conv0(bn_relu(h))
            h = block.conv1(bn_relu(h))  # upsamples too in upsampling blocks
            h = block.conv2(bn_relu(h))
            h = block.conv3(bn_relu(h))
            skip = x[:, : block.out_ch]
            if block.upsample and self.traceable:
                h = h + F.interpolate(skip, scale_factor=2, mode="nearest")
            elif block.upsample:  # add the nearest-upsampled skip by broadcasting, without materialising it
                n_, c_, hh, ww = skip.shape
                h.view(n_, c_, hh, 2, ww, 2).add_(skip[:, :, :, None, :, None])
            else:
                h = h + skip
            if str(index) in self.attention:
                h = self._attend(self.attention[str(index)], h)
        h = torch.addcmul(self.out_b.to(self.dtype)[None, :, None, None], h,
                          self.out_a.to(self.dtype)[None, :, None, None]).relu_()
        return torch.tanh(self.output_conv(h)).float()

    def _attend(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        n, c, hh, ww = x.shape
        theta, phi, g = m.qkv(x).split(m.split, dim=1)
        phi = F.max_pool2d(phi, 2).flatten(2)  # [N, C/8, HW/4]
        g = F.max_pool2d(g, 2).flatten(2).transpose(1, 2)  # [N, HW/4, C/2]
        if self.channels_last and x.device.type == "cpu":
            # Per image, both products as 1x1 convolutions over the NHWC pixels: oneDNN runs them about twice as
            # fast as the batched matmul on CPUs where its BLAS is weak (AMD), and no slower elsewhere.
            outs = []
            for i in range(n):
                logits = F.conv2d(theta[i:i + 1], phi[i].t()[:, :, None, None])  # [1, HW/4, H, W], NHWC
                k = logits.shape[1]
                # softmax over the pooled positions: the channels, contiguous in memory
                p = torch.softmax(logits.permute(0, 2, 3, 1).reshape(hh * ww, k), -1)
                p = p.view(1, hh, ww, k).permute(0, 3, 1, 2)
                outs.append(F.conv2d(p, g[i].t()[:, :, None, None]))  # [1, C/2, H, W]
            o = torch.cat(outs)
        else:
            # Plain matmul + softmax: on CPU, scaled_dot_product_attention's math path adds masking passes.
            theta = theta.flatten(2).transpose(1, 2)  # [N, HW, C/8]
            o = torch.bmm(torch.softmax(torch.bmm(theta, phi), -1), g)  # [N, HW, C/2]
            o = o.view(n, hh, ww, c // 2).permute(0, 3, 1, 2)
            o = o if self.channels_last else o.contiguous()
        return x + m.gamma.to(x.dtype) * m.o(o)


def fast_generator(G: nn.Module, truncation: float | None = None, interpolation: str | None = None,
                   dtype: torch.dtype | None = None, channels_last: bool = True,
                   traceable: bool = False) -> FastGeneratorDeep:
    """A fast, inference-only copy of BigGAN-deep generator ``G`` for one truncation.

    ``truncation``: whose BN statistics to use when ``G`` stores them per truncation (``n_stats > 0``; None =
    the statistics currently in ``G``'s running buffers); ``interpolation``: ``"port"`` or ``"linear"`` (see
    ``layers.truncation_row``); ``dtype``: ``torch.bfloat16`` for bf16 convolutions (the conditioning
    matmuls stay float32), ``"auto"`` for bf16 where the device computes it natively (float32 elsewhere), None
    for float32 (an explicit bf16 where it is emulated warns); ``channels_last``: NHWC activations, faster on CPU
    and GPU; ``traceable``: out-of-place steps only, for ONNX export (needs ``channels_last=False``). Build it on
    ``G``'s device.
    """
    if getattr(G.config, "family", None) != "biggan-deep":
        raise NotImplementedError(f"the fast path covers BigGAN-deep generators, got {type(G).__name__}")
    dtype = inference_dtype(dtype, next(G.parameters()).device)
    fast = FastGeneratorDeep(G, truncation, interpolation, dtype, channels_last, traceable)
    return fast.to(next(G.parameters()).device).eval()
