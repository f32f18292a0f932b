"""Layers shared by the BigGAN family: spectral norm, conditional batch norm, self-attention, SE.

Spectral norm follows BigGAN-PyTorch (Brock et al. 2018): the left singular vector ``u`` [1, out] is a
buffer; every forward computes one power iteration from the stored ``u`` and divides the weight (reshaped
[out, -1]) by the resulting estimate of the largest singular value. Only training-mode forwards write the
new ``u`` back (and record ``sv``), so eval-mode outputs do not change from call to call. The power
iteration runs in float32, outside autocast, unless training asked for the whole network in reduced precision
(``--precision-scope all``; see ``scalegan.precision``).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .precision import island


class SpectralNorm:
    """Mixin for modules with a ``weight``: adds the ``u`` / ``sv`` buffers and ``sn_weight()``."""

    def _init_sn(self, eps: float) -> None:
        self.sn_eps = eps
        out = self.weight.shape[0]
        self.register_buffer("u", torch.randn(1, out))
        self.register_buffer("sv", torch.ones(1))

    def sn_weight(self) -> torch.Tensor:
        """The weight divided by its estimated spectral norm (one power iteration from ``u``).

        With ``sn_eval = "stored"`` (set by a model whose config asks for it), eval-mode forwards divide by the
        stored ``sv`` instead: torch's ``spectral_norm`` semantics in eval mode, used by converted TF-Hub weights.
        """
        weight = self.weight
        if not self.training and getattr(self, "sn_eval", "power") == "stored":
            return (weight.float() / self.sv.float()).to(weight.dtype)
        w_mat = weight.float().reshape(weight.shape[0], -1)  # [out, in*k*k]
        with island(weight):  # float32 under the family precision scope (and always outside autocast)
            with torch.no_grad():
                v = F.normalize(self.u.float() @ w_mat, dim=1, eps=self.sn_eps)  # [1, in*k*k]
            wv = v @ w_mat.t()  # [1, out]; gradient flows through w_mat, as in the paper
            with torch.no_grad():  # one product serves the power iteration and sigma (bitwise as two)
                u = F.normalize(wv, dim=1, eps=self.sn_eps)  # [1, out]
                if self.training:
                    self.u.copy_(u)
            sv = (wv @ u.t()).squeeze()
            if self.training:
                self.sv.copy_(sv.detach())
            return (weight.float() / sv).to(weight.dtype)


class SNConv2d(nn.Conv2d, SpectralNorm):
    """Conv2d with BigGAN-style spectral normalisation."""

    def __init__(self, *args, sn_eps: float = 1e-6, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_sn(sn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.sn_weight(), self.bias)


class SNLinear(nn.Linear, SpectralNorm):
    """Linear layer with BigGAN-style spectral normalisation."""

    def __init__(self, *args, sn_eps: float = 1e-6, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_sn(sn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.sn_weight(), self.bias)


class SNEmbedding(nn.Embedding, SpectralNorm):
    """Embedding with BigGAN-style spectral normalisation (the projection discriminator's class table)."""

    def __init__(self, *args, sn_eps: float = 1e-6, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_sn(sn_eps)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return embed_classes(y, self.sn_weight())


@torch.no_grad()
def fold_spectral_norm(module: nn.Module) -> nn.Module:
    """An eval-mode copy of ``module`` whose spectrally normalised layers are plain ``nn.Conv2d`` / ``nn.Linear`` /
    ``nn.Embedding`` layers holding their eval-mode normalised weight (``sn_weight()``) as a constant: the same
    function, without the power iteration (which an ONNX graph cannot hold). ``module`` is not modified."""
    folded = copy.deepcopy(module).eval()
    for parent in list(folded.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SpectralNorm):
                setattr(parent, name, _plain_layer(child))
    return folded


def _plain_layer(m: nn.Module) -> nn.Module:
    """The plain layer with ``m``'s eval-mode normalised weight (``m`` is in eval mode)."""
    if isinstance(m, SNConv2d):
        out = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                        bias=m.bias is not None, padding_mode=m.padding_mode)
    elif isinstance(m, SNLinear):
        out = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    elif isinstance(m, SNEmbedding):
        out = nn.Embedding(m.num_embeddings, m.embedding_dim)
    else:
        raise NotImplementedError(f"no plain layer for {type(m).__name__}")
    out = out.to(device=m.weight.device, dtype=m.weight.dtype)
    out.weight.copy_(m.sn_weight())
    if getattr(m, "bias", None) is not None:
        out.bias.copy_(m.bias)
    return out.eval()


def embed_classes(y: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rows of ``table`` [n_classes, dim] for class indices ``y`` [N], or a mix for soft labels [N, n_classes].

    Soft labels (float) let callers interpolate between classes with the same code path.
    """
    if y.is_floating_point():
        return y.to(table.dtype) @ table
    return F.embedding(y, table)


def sn_conv(in_ch: int, out_ch: int, kernel: int, eps: float, bias: bool = True) -> SNConv2d:
    """A spectrally normalised conv with 'same' padding."""
    return SNConv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias, sn_eps=eps)


class _GroupRef:
    """The process group a BN layer reduces its statistics over. Deep copies of the layer (the EMA generator,
    sampling copies) get None instead: they run on one process and normalise with local statistics."""

    __slots__ = ("group",)

    def __init__(self, group):
        self.group = group

    def __deepcopy__(self, memo):
        return None


def batch_norm(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, training: bool,
               momentum: float, eps: float, cross_replica: _GroupRef | None = None) -> torch.Tensor:
    """``F.batch_norm`` without affine; in training with ``cross_replica`` set, the batch statistics are those of
    the whole batch over every process of its group (cross-replica / synchronised BN, as in the BigGAN paper)."""
    if cross_replica is None or not training:
        return F.batch_norm(x, running_mean, running_var, None, None, training, momentum, eps)
    return _cross_replica_batch_norm(x, running_mean, running_var, momentum, eps, cross_replica.group)


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks of ``group``; the backward sums the incoming gradients over the ranks too, because every
    rank's loss depends on the sum."""

    @staticmethod
    def forward(ctx, tensor, group):
        import torch.distributed as dist

        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        return _AllReduceSum.apply(grad.contiguous(), ctx.group), None


@torch.compiler.disable  # collectives run eagerly; a compiled model breaks its graph here
def _cross_replica_batch_norm(x, running_mean, running_var, momentum, eps, group):
    """Two passes (mean, then centred second moment), each one differentiable all-reduce of per-channel sums.

    The backward all-reduces the gradients of those sums, so every rank's gradient includes the other ranks'
    losses through the shared statistics: N ranks x B/N images give the gradient of 1 x B (DDP averages it)."""
    all_reduce = _AllReduceSum.apply
    xf = x.float()  # statistics in float32 under autocast, as F.batch_norm keeps them
    c = x.shape[1]
    sums = all_reduce(torch.cat([xf.sum((0, 2, 3)), xf.new_full((1,), x.numel() // c)]), group)
    count = sums[c]  # images x pixels over all ranks
    mean = sums[:c] / count  # [C]
    centred = xf - mean.view(1, c, 1, 1)
    var = all_reduce(centred.square().sum((0, 2, 3)), group) / count  # biased, for normalising
    with torch.no_grad():
        running_mean.lerp_(mean.detach(), momentum)
        running_var.lerp_(var.detach() * (count / (count - 1).clamp_min(1)), momentum)  # unbiased, as torch
    return (centred * torch.rsqrt(var + eps).view(1, c, 1, 1)).to(x.dtype)


def set_cross_replica_bn(module: nn.Module, group) -> int:
    """Make every BN layer of ``module`` normalise over the processes of ``group`` (None: local statistics
    again). Returns the number of layers changed."""
    layers = batch_norms(module)
    for m in layers:
        m.cross_replica = _GroupRef(group) if group is not None else None
    return len(layers)


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters, buffers and state-dict keys) that can use cross-replica statistics."""

    cross_replica: _GroupRef | None = None

    def forward(self, x: torch.Tensor, truncation: float | None = None, interpolation: str = "port") -> torch.Tensor:
        if not self.training and truncation is not None and hasattr(self, "stats_mean"):
            mean, var = eval_stats(self, truncation, interpolation)
            return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)
        if self.cross_replica is None or not self.training:
            return super().forward(x)
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        out = batch_norm(x, self.running_mean, self.running_var, True, momentum, self.eps, self.cross_replica)
        return out * self.weight.view(1, -1, 1, 1).to(out.dtype) + self.bias.view(1, -1, 1, 1).to(out.dtype)


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm without affine, then ``x * (1 + gain(c)) + bias(c)``.

    ``mode``:
      - ``"linear"``: gain and bias are SN-Linear layers (no bias) of a conditioning vector ``c`` [N, cond_dim]
        (BigGAN with a shared class embedding, optionally with a z chunk; BigGAN-deep).
      - ``"embedding"``: gain and bias are per-class embedding tables of the class labels ``c`` [N] (or soft
        labels [N, n_classes]): the BigGAN-PyTorch CIFAR script's per-layer class embeddings.
      - ``"none"``: plain learned affine (unconditional G without hierarchical z).
    The ``1 +`` keeps the layer an identity at init (compare_gan lacked it). ``set_cross_replica_bn`` makes the
    batch statistics those of all processes (synchronised BN).
    """

    cross_replica: _GroupRef | None = None

    def __init__(self, num_features: int, mode: str, cond_dim: int = 0, n_classes: int = 0,
                 eps: float = 1e-5, sn_eps: float = 1e-6, momentum: float | None = 0.1):
        super().__init__()
        self.mode = mode
        self.eps = eps
        self.momentum = momentum
        if mode == "linear":
            self.gain = SNLinear(cond_dim, num_features, bias=False, sn_eps=sn_eps)
            self.bias = SNLinear(cond_dim, num_features, bias=False, sn_eps=sn_eps)
        elif mode == "embedding":
            self.gain = nn.Embedding(n_classes, num_features)
            self.bias = nn.Embedding(n_classes, num_features)
        elif mode == "none":
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            raise ValueError(f"unknown conditional BN mode {mode!r}")
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1)
        self.num_batches_tracked.zero_()

    def _momentum(self) -> float:
        if self.training:
            self.num_batches_tracked.add_(1)
        if self.momentum is None:  # cumulative average: used for "standing statistics"
            return 1.0 / float(self.num_batches_tracked.clamp(min=1))
        return self.momentum

    def forward(self, x: torch.Tensor, c: torch.Tensor | None, truncation: float | None = None,
                interpolation: str = "port") -> torch.Tensor:
        """``truncation`` (eval mode, layers with truncation-indexed statistics) picks the statistics used for
        this call only: nothing is written, so one model serves concurrent calls at different truncations."""
        momentum = self._momentum()
        mean, var = self.running_mean, self.running_var
        if not self.training and truncation is not None and hasattr(self, "stats_mean"):
            mean, var = eval_stats(self, truncation, interpolation)
        out = batch_norm(x, mean, var, self.training, momentum, self.eps, self.cross_replica)
        if self.mode == "none":
            return out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        if self.mode == "linear":
            gain, bias = self.gain(c), self.bias(c)
        else:
            gain, bias = embed_classes(c, self.gain.weight), embed_classes(c, self.bias.weight)
        return out * (1 + gain[:, :, None, None]) + bias[:, :, None, None]


class SelfAttention(nn.Module):
    """SAGAN self-attention as released with BigGAN: keys and values max-pooled 2x2, output ``x + gamma * o``."""

    def __init__(self, ch: int, sn_eps: float = 1e-6):
        super().__init__()
        if ch < 8:
            raise ValueError(f"self-attention needs >= 8 channels, got {ch}: raise ch / d_ch or move the attention "
                             "resolution (g_attn / d_attn)")
        self.ch = ch
        self.theta = sn_conv(ch, ch // 8, 1, sn_eps, bias=False)
        self.phi = sn_conv(ch, ch // 8, 1, sn_eps, bias=False)
        self.g = sn_conv(ch, ch // 2, 1, sn_eps, bias=False)
        self.o = sn_conv(ch // 2, ch, 1, sn_eps, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        theta = self.theta(x).flatten(2).transpose(1, 2)  # [N, HW, C/8]
        phi = F.max_pool2d(self.phi(x), 2).flatten(2).transpose(1, 2)  # [N, HW/4, C/8]
        g = F.max_pool2d(self.g(x), 2).flatten(2).transpose(1, 2)  # [N, HW/4, C/2]
        # softmax(theta phi^T) g without the 1/sqrt(d) scaling, as in SAGAN.
        o = F.scaled_dot_product_attention(theta, phi, g, scale=1.0)  # [N, HW, C/2]
        o = o.transpose(1, 2).reshape(n, c // 2, h, w)
        return x + self.gamma * self.o(o)


class SqueezeExcite(nn.Module):
    """Channel attention (squeeze-and-excitation): ``x * sigmoid(W2 relu(W1 mean_hw(x)))``."""

    def __init__(self, ch: int, reduction: int = 16, sn_eps: float = 1e-6):
        super().__init__()
        hidden = max(ch // reduction, 4)
        self.fc1 = SNLinear(ch, hidden, sn_eps=sn_eps)
        self.fc2 = SNLinear(hidden, ch, sn_eps=sn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))  # [N, C]
        return x * s[:, :, None, None]


def projection_logits(h: torch.Tensor, linear: nn.Module, embed: nn.Module | None, y: torch.Tensor | None,
                      classes: bool = False):
    """The projection discriminator's logits [N] from its last features [N, C, H, W]: global sum pooling of
    ``relu(h)``, a linear output, plus the inner product of the pooled features with the class embedding.

    ``classes=True`` also returns the projection's class logits [N, n_classes], the pooled features' inner product
    with every class's embedding (P2GAN's label matching): the class part of the logit, for every class at once."""
    h = F.relu(h).sum((2, 3))  # [N, C]
    out = linear(h).squeeze(1)  # [N]
    if embed is None:
        if classes:
            raise ValueError("class logits need a class-conditional discriminator")
        return out
    if y is None:
        raise ValueError("this discriminator is class-conditional: pass y (class indices)")
    if not classes:
        return out + (embed(y) * h).sum(1)
    table = embed.sn_weight()  # one power iteration, as embed(y) would do
    return out + (embed_classes(y, table) * h).sum(1), h @ table.t()


def init_weights(module: nn.Module, style: str) -> None:
    """BigGAN init: orthogonal (ImageNet scripts) or N(0, 0.02) (CIFAR script) for conv/linear/embedding weights.

    Biases, BN affine parameters and attention ``gamma`` keep their defaults.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            if style == "ortho":
                nn.init.orthogonal_(m.weight)
            elif style == "N02":
                nn.init.normal_(m.weight, 0.0, 0.02)
            else:
                raise ValueError(f"unknown init {style!r}: use 'ortho' or 'N02'")


def batch_norms(module: nn.Module) -> list[nn.Module]:
    """Every batch-norm layer (conditional or plain) in ``module``."""
    return [m for m in module.modules() if isinstance(m, (ConditionalBatchNorm2d, nn.BatchNorm2d))]


def truncation_row(stats: torch.Tensor, truncation: float, interpolation: str = "port") -> torch.Tensor:
    """BN statistics [C] for ``truncation`` in [0, 1] from ``stats`` [n_stats, C] (rows for 0, step, ..., 1).

    ``"port"`` mixes rows exactly as pytorch-pretrained-biggan does, ``m[i] * f + m[i + 1] * (1 - f)`` with
    ``f, i = modf(t / step)``: the weights are swapped relative to a linear interpolation, grid values hit their
    row exactly. ``"linear"`` interpolates correctly between the two nearest rows."""
    step = 1.0 / (stats.shape[0] - 1)
    if interpolation == "port":
        coef, start = math.modf(truncation / step)  # double precision, as the port
        start = int(start)
        if coef != 0.0:
            return stats[start] * coef + stats[start + 1] * (1 - coef)
        return stats[start].clone()
    if interpolation != "linear":
        raise ValueError(f"interpolation must be 'port' or 'linear', got {interpolation!r}")
    position = truncation / step
    start = min(int(math.floor(position)), stats.shape[0] - 2)
    return torch.lerp(stats[start], stats[start + 1], position - start)


def eval_stats(bn: nn.Module, truncation: float | None, interpolation: str = "port"):
    """The (mean, var) a BN layer normalises with in eval mode: its running statistics, or, for layers with
    truncation-indexed statistics (``stats_mean`` / ``stats_var``), the rows of ``truncation`` (clamped to 1)."""
    if truncation is None or not hasattr(bn, "stats_mean"):
        return bn.running_mean, bn.running_var
    if not truncation > 0:
        raise ValueError(f"truncation must be > 0, got {truncation}")
    t = min(float(truncation), 1.0)
    return truncation_row(bn.stats_mean, t, interpolation), truncation_row(bn.stats_var, t, interpolation)


def check_attention(config) -> None:
    """``g_attn`` / ``d_attn`` name block output resolutions (powers of two); one above the model's resolution means
    no attention. Anything else (e.g. 7, or 24) would silently apply none: an error instead."""
    for name in ("g_attn", "d_attn"):
        bad = [r for r in getattr(config, name) if r < 4 or r & (r - 1)]
        if bad:
            raise ValueError(f"{name}: {bad[0]} is not a block resolution; use powers of two such as 16, 32, 64 "
                             f"(self-attention after the blocks whose output has that resolution)")
