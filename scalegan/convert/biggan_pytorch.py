"""ajbrock/BigGAN-PyTorch generator state dicts (``G_ema.pth`` / ``G.pth``, ImageNet layout) -> Generator.

BigGAN-PyTorch names: ``shared.weight``; ``linear``; ``blocks.{i}.0`` (the GBlock: ``conv1``, ``conv2``,
``conv_sc``, ``bn1`` / ``bn2`` with SN-Linear ``gain`` / ``bias`` and ``stored_mean`` / ``stored_var``);
``blocks.{i}.1`` (attention: ``theta``, ``phi``, ``g``, ``o``, ``gamma``); ``output_layer.0`` (BN: ``gain``,
``bias``, ``stored_mean``, ``stored_var``) and ``output_layer.2`` (the RGB conv). Spectral-norm layers carry
``u0`` [1, out] and ``sv0`` [1] buffers.

Spectral norm is reproduced with BigGAN-PyTorch's own semantics, which scalegan's SN layers share: every
forward runs one power iteration from the stored ``u0`` (eps ``sn_eps``, 1e-6 in the ImageNet scripts) and
divides W by ``v W^T u``; only training-mode forwards write ``u`` back, so eval-mode outputs are fixed. ``u0``
becomes our ``u``, ``sv0`` our ``sv``. The class embedding comes first in each BN's conditioning vector
(``[embedding, z_chunk]``), as in scalegan; BN eps 1e-5, the output BN's too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..layers import SpectralNorm
from ..models.biggan import G_ARCH, BigGANConfig, Generator
from .common import Converter, ConvertError, check_keys, read_torch_file, register_converter


def config_from_state(state: dict[str, torch.Tensor], bn_eps: float = 1e-5, sn_eps: float = 1e-6) -> BigGANConfig:
    """Our BigGAN config read off a BigGAN-PyTorch generator state dict (shapes name every size)."""
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.0\.", k))})
    needed = ("shared.weight", "linear.weight", "output_layer.0.gain", "blocks.0.0.bn1.gain.weight")
    absent = [k for k in needed if k not in state]
    if absent or not blocks:
        raise ConvertError(f"not a BigGAN-PyTorch ImageNet generator: missing keys {', '.join(absent) or 'blocks.*'}"
                           " (the CIFAR layout without a shared embedding is not supported)")
    n_stages = len(blocks)
    resolution = 4 * 2 ** n_stages
    if resolution not in G_ARCH:
        raise ConvertError(f"{n_stages} generator blocks give {resolution} px, which BigGAN does not define")
    n_classes, shared_dim = state["shared.weight"].shape
    z_chunk = state["blocks.0.0.bn1.gain.weight"].shape[1] - shared_dim
    first_in = state["linear.weight"].shape[1]
    hier = z_chunk > 0
    if hier and first_in != z_chunk:
        raise ConvertError(f"linear.weight takes {first_in} inputs but the BNs take z chunks of {z_chunk}")
    z_dim = first_in * (n_stages + 1) if hier else first_in
    ch = state["output_layer.0.gain"].shape[0] // G_ARCH[resolution][1][-1]
    attention = tuple(4 * 2 ** (i + 1) for i in blocks if f"blocks.{i}.1.gamma" in state)
    return BigGANConfig(resolution=resolution, n_classes=int(n_classes), img_channels=3, ch=int(ch), d_ch=int(ch),
                        z_dim=int(z_dim), shared_dim=int(shared_dim), hier=hier, g_attn=attention,
                        d_attn=(64,) if resolution >= 128 else (), bn_eps=bn_eps, sn_eps=sn_eps)


def _rename(ours: str) -> str:
    """Our state-dict key -> BigGAN-PyTorch's."""
    key = re.sub(r"\.u$", ".u0", re.sub(r"\.sv$", ".sv0", ours))
    key = re.sub(r"^blocks\.(\d+)\.", r"blocks.\1.0.", key)
    key = re.sub(r"^attention\.(\d+)\.", r"blocks.\1.1.", key)
    key = re.sub(r"^output_bn\.weight$", "output_layer.0.gain", key)
    key = re.sub(r"^output_bn\.bias$", "output_layer.0.bias", key)
    key = re.sub(r"^output_conv\.", "output_layer.2.", key)
    key = re.sub(r"^(.*bn[12])\.running_mean$", r"\1.stored_mean", key)
    key = re.sub(r"^(.*bn[12])\.running_var$", r"\1.stored_var", key)
    key = re.sub(r"^output_bn\.running_mean$", "output_layer.0.stored_mean", key)
    return re.sub(r"^output_bn\.running_var$", "output_layer.0.stored_var", key)


def convert_state_dict(state: dict[str, torch.Tensor], bn_eps: float = 1e-5, sn_eps: float = 1e-6,
                       source: str = "state dict") -> Generator:
    """A Generator (eval mode) holding a BigGAN-PyTorch generator state dict exactly."""
    config = config_from_state(state, bn_eps, sn_eps)
    G = Generator(config)
    ours = G.state_dict()
    mapping = {_rename(k): k for k in ours if not k.endswith("num_batches_tracked")}
    expected = {theirs: tuple(ours[mine].shape) for theirs, mine in mapping.items()}
    check_keys(state, expected, source)
    new = dict(ours)
    for theirs, mine in mapping.items():
        new[mine] = state[theirs].to(ours[mine].dtype)
    G.load_state_dict(new, strict=True)
    assert all(isinstance(m, SpectralNorm) for m in G.modules() if hasattr(m, "sv"))
    return G.eval()


def convert_file(path: str | os.PathLike, weights: str = "G_ema", bn_eps: float = 1e-5,
                 sn_eps: float = 1e-6) -> Generator:
    """Convert ``G_ema.pth`` / ``G.pth`` (or a folder holding them: ``weights`` picks, G_ema falling back to G)."""
    p = Path(path)
    if p.is_dir():
        if weights not in ("G_ema", "G"):
            raise ConvertError(f"weights must be 'G_ema' or 'G' for a BigGAN-PyTorch folder, got {weights!r}")
        candidates = [p / f"{weights}.pth"] + ([p / "G.pth"] if weights == "G_ema" else [])
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise ConvertError(f"no {' or '.join(c.name for c in candidates)} in {p}")
        p = found[0]
    return convert_state_dict(read_torch_file(p), bn_eps, sn_eps, source=str(p))


def _detect(p: Path) -> bool:
    if p.is_dir():
        return not (p / "config.json").is_file() and ((p / "G_ema.pth").is_file() or (p / "G.pth").is_file())
    return p.suffix == ".pth"


register_converter(Converter(
    "biggan-pytorch", detect=_detect, convert=convert_file, reads="a BigGAN-PyTorch G_ema.pth / G.pth",
    options=(("--bn-eps", dict(type=float, default=1e-5, help="BigGAN-PyTorch: BN eps (1e-5 in its scripts)")),
             ("--sn-eps", dict(type=float, default=1e-6, help="BigGAN-PyTorch: SN eps (1e-6 in its ImageNet "
                                                              "scripts)"))),
))
