"""The TF "2015-12-05" Inception network of the FID literature, and where its weights come from.

FID and IS are defined by one network: the Inception graph Google published on 2015-12-05
(`inception-2015-12-05.tgz`), not torchvision's Inception v3. pytorch-fid (`pt_inception-2015-12-05-6726825d.pth`)
and torch-fidelity (`weights-inception-2015-12-05-6726825d.pth`) ship ports of its weights to PyTorch. This
module builds that network in our own code with the same parameter names, so their files load as they are.

Differences from torchvision's Inception v3 (all needed to reproduce the TF graph):
- a 1008-way classifier (1000 ImageNet classes plus 8 unused) and no auxiliary head;
- BatchNorm eps 1e-3;
- the average pool of the pool branch in the 35x35 (A), 17x17 (C) and first 8x8 (E) blocks excludes padding
  (`count_include_pad=False`), as TF's average pool does;
- the last 8x8 block's pool branch takes a 3x3 *max* pool.

The network takes images already resized to 299x299 and normalised to [-1, 1] (`(x - 128) / 128` for pixel
values x in [0, 255]); `scalegan.metrics.features` does the resizing and scaling. Its outputs are the 2048-d
"pool3" features (FID, KID, precision/recall) and the 1008-way logits without the fc bias, which is what IS uses
in torch-fidelity (`logits_unbiased`).

Weights are never fetched implicitly: `resolve_weights_path` looks at an explicit path, then
`$SCALEGAN_INCEPTION_WEIGHTS`, then the cache folder (`scalegan.utils.cache_dir()`: `$SCALEGAN_CACHE` or
`~/.cache/scalegan`).
`download_weights` exists for users with internet access.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..utils import cache_dir, download, key_mismatch, sha256_file

__all__ = [
    "FIDInception",
    "KNOWN_WEIGHTS",
    "WeightsInfo",
    "download_weights",
    "load_inception",
    "resolve_weights_path",
]

ENV_WEIGHTS = "SCALEGAN_INCEPTION_WEIGHTS"

# The published ports of the TF graph: one checkpoint published under two names (torch hub names end in the
# first 8 hex digits of the SHA-256). The full digest and size were recorded by users of both files in public
# code and notes (95,628,359 bytes); a file with a published name must match them exactly.
PUBLISHED_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
PUBLISHED_SIZE = 95_628_359
KNOWN_WEIGHTS: dict[str, dict[str, str]] = {
    "pt_inception-2015-12-05-6726825d.pth": {
        "source": "pytorch-fid",
        "url": "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
        "pt_inception-2015-12-05-6726825d.pth",
        "sha256": PUBLISHED_SHA256,
    },
    "weights-inception-2015-12-05-6726825d.pth": {
        "source": "torch-fidelity",
        "url": "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
        "weights-inception-2015-12-05-6726825d.pth",
        "sha256": PUBLISHED_SHA256,
    },
}
DEFAULT_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
NUM_LOGITS = 1008
FEATURE_DIM = 2048
INPUT_SIZE = 299


# ----------------------------------------------------------------------------------------------------------
# Network


class ConvBN(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3), ReLU: the unit every layer of the graph is made of.

    Attribute names `conv` and `bn` match the published state dicts."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_same(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool that, like TF's, averages only the pixels inside the image."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class Block35(nn.Module):
    """35x35 block ("Mixed_5b/c/d"): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    def __init__(self, in_channels: int, pool_channels: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_avg_pool_same(x))
        return torch.cat([a, b, c, d], dim=1)


class Reduce35(nn.Module):
    """35x35 -> 17x17 reduction ("Mixed_6a"): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        c = F.max_pool2d(x, 3, stride=2)
        return torch.cat([a, b, c], dim=1)


class Block17(nn.Module):
    """17x17 block ("Mixed_6b..e") with factorised 7x7 convolutions; pool branch averages without padding."""

    def __init__(self, in_channels: int, mid: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = ConvBN(in_channels, mid, 1)
        self.branch7x7_2 = ConvBN(mid, mid, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(mid, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(in_channels, mid, 1)
        self.branch7x7dbl_2 = ConvBN(mid, mid, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(mid, mid, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(mid, mid, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(mid, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
            c = layer(c)
        c = self.branch7x7dbl_5(c)
        d = self.branch_pool(_avg_pool_same(x))
        return torch.cat([a, b, c, d], dim=1)


class Reduce17(nn.Module):
    """17x17 -> 8x8 reduction ("Mixed_7a")."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        c = F.max_pool2d(x, 3, stride=2)
        return torch.cat([a, b, c], dim=1)


class Block8(nn.Module):
    """8x8 block ("Mixed_7b/c") with split 1x3/3x1 heads. `max_pool` selects the TF graph's pool branch: average
    (without padding) in Mixed_7b, max in Mixed_7c."""

    def __init__(self, in_channels: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], dim=1)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], dim=1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool_same(x)
        d = self.branch_pool(pooled)
        return torch.cat([a, b, c, d], dim=1)


class FIDInception(nn.Module):
    """The TF 2015-12-05 Inception graph. `forward(x)` takes `[N, 3, 299, 299]` in [-1, 1] and returns
    `(pool3 [N, 2048], logits_unbiased [N, 1008])`; `logits(x)` adds the fc bias.

    Parameter names equal those of pytorch-fid's and torch-fidelity's weight files."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = Block35(192, 32)
        self.Mixed_5c = Block35(256, 64)
        self.Mixed_5d = Block35(288, 64)
        self.Mixed_6a = Reduce35(288)
        self.Mixed_6b = Block17(768, 128)
        self.Mixed_6c = Block17(768, 160)
        self.Mixed_6d = Block17(768, 160)
        self.Mixed_6e = Block17(768, 192)
        self.Mixed_7a = Reduce17(768)
        self.Mixed_7b = Block8(1280, max_pool=False)
        self.Mixed_7c = Block8(2048, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, NUM_LOGITS)

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        """2048-d pool3 features of normalised 299x299 images."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"FIDInception expects images [N, 3, H, W], got {list(x.shape)}")
        x = self.Conv2d_1a_3x3(x)  # [N, 32, 149, 149]
        x = self.Conv2d_2a_3x3(x)  # [N, 32, 147, 147]
        x = self.Conv2d_2b_3x3(x)  # [N, 64, 147, 147]
        x = F.max_pool2d(x, 3, stride=2)  # [N, 64, 73, 73]
        x = self.Conv2d_3b_1x1(x)  # [N, 80, 73, 73]
        x = self.Conv2d_4a_3x3(x)  # [N, 192, 71, 71]
        x = F.max_pool2d(x, 3, stride=2)  # [N, 192, 35, 35]
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # [N, 288, 35, 35]
        x = self.Mixed_6a(x)  # [N, 768, 17, 17]
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # [N, 768, 17, 17]
        x = self.Mixed_7a(x)  # [N, 1280, 8, 8]
        x = self.Mixed_7c(self.Mixed_7b(x))  # [N, 2048, 8, 8]
        return x.mean(dim=(2, 3))  # [N, 2048]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.pool3(x)
        return features, features @ self.fc.weight.T  # [N, 2048], [N, 1008]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The full 1008-way logits (with the fc bias)."""
        return self.fc(self.pool3(x))


# ----------------------------------------------------------------------------------------------------------
# Weights


class WeightsInfo(dict):
    """What a metric card records about the weights: `path`, `sha256`, `known` (published file name or None)."""


def _missing_message(tried: list[str]) -> str:
    url = next(iter(KNOWN_WEIGHTS.values()))["url"]
    return (  # one line: the CLI prints it as its error line
        f"Inception weights for FID/IS not found (looked at: {'; '.join(tried)}): download the TF 2015-12-05 "
        f"Inception port of pytorch-fid or torch-fidelity (~92 MB, e.g. {url}) to "
        f"{cache_dir() / DEFAULT_WEIGHTS_NAME}, or set {ENV_WEIGHTS}=FILE, or pass --inception-weights FILE "
        "(Python: scalegan.metrics.inception.download_weights() fetches it)"
    )


def resolve_weights_path(path: str | os.PathLike | None = None) -> Path:
    """The weights file to use: `path`, else `$SCALEGAN_INCEPTION_WEIGHTS`, else a published file name in the
    cache folder. Raises FileNotFoundError with download instructions when none exists."""
    tried: list[str] = []
    for candidate, origin in ((path, "argument"), (os.environ.get(ENV_WEIGHTS), ENV_WEIGHTS)):
        if candidate:
            p = Path(candidate).expanduser()
            if p.is_file():
                return p
            # An explicit choice that does not exist is an error, not a reason to fall back silently.
            raise FileNotFoundError(
                f"Inception weights file {p} (from {origin}) does not exist. " + _missing_message([str(p)])
            )
    for name in KNOWN_WEIGHTS:
        p = cache_dir() / name
        tried.append(str(p))
        if p.is_file():
            return p
    raise FileNotFoundError(_missing_message(tried))


def convert_state_dict(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Map a foreign state dict onto `FIDInception`'s names.

    Accepts the published files (torchvision-style names, identical to ours), the same with a `module.` prefix
    (saved from DataParallel), and either with or without BatchNorm's `num_batches_tracked` counters. Raises
    ValueError listing missing, unexpected or mis-shaped tensors."""
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    converted = {}
    for key, value in state.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        if key.endswith("num_batches_tracked"):
            continue  # a training counter; it does not affect inference
        converted[key] = value
    with torch.device("meta"):  # shapes only; no memory, no initialisation
        reference = FIDInception().state_dict()
    expected = {k: tuple(v.shape) for k, v in reference.items() if not k.endswith("num_batches_tracked")}
    problems = key_mismatch({k: tuple(v.shape) for k, v in converted.items()}, expected)
    if problems:
        raise ValueError(f"not a TF 2015-12-05 Inception state dict: {problems}")
    return {k: torch.as_tensor(v) for k, v in converted.items()}


def _read_state_dict(path: Path) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    # weights_only: a weights file is data; we never unpickle code from it.
    return torch.load(path, map_location="cpu", weights_only=True)


def load_inception(
    path: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[FIDInception, WeightsInfo]:
    """Build `FIDInception` with weights from `resolve_weights_path(path)`; eval mode, no gradients.

    A file named like a published one must have the published SHA-256; any file must have exactly
    the expected tensor names and shapes. Returns `(model, info)` with the path and full SHA-256 for the card."""
    p = resolve_weights_path(path)
    sha = sha256_file(p)
    known = KNOWN_WEIGHTS.get(p.name)
    if known is not None and sha != known["sha256"]:
        raise ValueError(
            f"{p} is named like {known['source']}'s published Inception weights, but its SHA-256 is {sha}, not "
            f"{known['sha256']} ({p.stat().st_size:,} bytes, published: {PUBLISHED_SIZE:,}): the download is corrupt "
            f"or truncated. Download it again from {known['url']}."
        )
    if known is None and sha == PUBLISHED_SHA256:
        known = {"source": "published TF 2015-12-05 port (renamed)"}
    try:
        state = convert_state_dict(_read_state_dict(p))
    except ValueError as e:
        raise ValueError(f"{p}: {e}") from e
    model = FIDInception()
    model.load_state_dict(state, strict=False)  # only num_batches_tracked may be absent (checked above)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    info = WeightsInfo(path=str(p), sha256=sha, known=known["source"] if known else None)
    return model, info


def random_inception(seed: int = 0) -> FIDInception:
    """An `FIDInception` with random weights and non-trivial BatchNorm statistics, for tests and benchmarks.

    Convolutions are He-scaled so that activations neither vanish nor explode through 90-odd layers."""
    g = torch.Generator().manual_seed(seed)
    model = FIDInception()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(1.0 + 0.1 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(1.0 + 0.5 * torch.rand(n, generator=g))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features**0.5)
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model.eval().requires_grad_(False)


def download_weights(directory: str | os.PathLike | None = None, name: str = DEFAULT_WEIGHTS_NAME) -> Path:
    """Download a published weights file into `directory` (default: the cache folder) and check its SHA-256; a
    file already there is checked, not fetched again. Needs internet access; nothing in the test suite calls it."""
    if name not in KNOWN_WEIGHTS:
        raise ValueError(f"unknown weights file {name!r}; known: {', '.join(KNOWN_WEIGHTS)}")
    info = KNOWN_WEIGHTS[name]
    directory = Path(directory).expanduser() if directory else cache_dir()
    return download(info["url"], directory / name, info["sha256"])
