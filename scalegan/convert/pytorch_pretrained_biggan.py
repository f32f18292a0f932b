"""huggingface ``pytorch-pretrained-biggan`` (DeepMind's BigGAN-deep TF-Hub weights, ported) -> GeneratorDeep.

A port folder holds ``pytorch_model.bin`` (a state dict: 506 tensors at 128 px) and ``config.json`` (z_dim,
class_embed_dim, channel_width, num_classes, layers, attention_layer_position, eps, n_stats). The port keeps
the self-attention as its own entry of ``generator.layers`` (before the block at ``attention_layer_position``),
51 rows of BN statistics per BN (one per truncation 0, 0.02, ..., 1) and torch's ``spectral_norm`` tensors
(``weight_orig``, ``weight_u``, ``weight_v``), which it evaluates without a power iteration:
``W = weight_orig / (u . W_mat v)``. The converted model reproduces that exactly: it stores ``weight_orig`` as
the weight, ``u`` as its left vector and sigma ``u . W_mat v`` in ``sv``, with ``sn_eval="stored"``; the BN
rows go to ``stats_mean`` / ``stats_var`` (``n_stats=51``), selected per call by ``G(z, y, truncation)``
exactly as the port does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..layers import SpectralNorm, batch_norms
from ..models.biggan_deep import G_MULT, BigGANDeepConfig, GeneratorDeep
from .common import Converter, ConvertError, check_keys, read_torch_file, register_converter


def config_from_port(port: dict) -> BigGANDeepConfig:
    """Our BigGAN-deep config for a port ``config.json``."""
    try:
        layers = [(bool(up), int(a), int(b)) for up, a, b in port["layers"]]
        ch, z_dim = int(port["channel_width"]), int(port["z_dim"])
        embed_dim = int(port.get("class_embed_dim", z_dim))
        n_classes, position = int(port["num_classes"]), int(port["attention_layer_position"])
        eps, n_stats = float(port.get("eps", 1e-4)), int(port.get("n_stats", 51))
    except (KeyError, TypeError, ValueError) as e:
        raise ConvertError(f"not a pytorch-pretrained-biggan config ({e!r} missing or malformed)") from e
    resolution = 4 * 2 ** sum(up for up, _, _ in layers)
    if resolution not in G_MULT or [a for _, a, _ in layers] + [layers[-1][2]] != G_MULT[resolution]:
        raise ConvertError(f"port layers {port['layers']} are not a BigGAN-deep layout scalegan knows")
    if [up for up, _, _ in layers] != [k % 2 == 1 for k in range(len(layers))]:
        raise ConvertError("port layers must alternate (no upsample, upsample) as the published models do")
    if embed_dim != z_dim:
        raise ConvertError(f"the port conditions on z_dim * 2 = {2 * z_dim} features: class_embed_dim must equal "
                           f"z_dim (got {embed_dim} and {z_dim})")
    if not 0 < position <= len(layers) or not layers[position - 1][0]:
        raise ConvertError(f"attention_layer_position {position} must follow an upsampling layer")
    attention_res = 4 * 2 ** sum(up for up, _, _ in layers[:position])
    return BigGANDeepConfig(resolution=resolution, n_classes=n_classes, img_channels=3, ch=ch, d_ch=ch,
                            z_dim=z_dim, shared_dim=embed_dim, rgb_channels=ch, g_attn=(attention_res,),
                            bn_eps=eps, sn_eps=eps, n_stats=n_stats, sn_eval="stored")


def _key_map(G: GeneratorDeep, position: int) -> dict[str, tuple[str, str]]:
    """Port module prefix -> (our module prefix, kind) for every port module with tensors."""
    pairs = {"embeddings": ("embeddings", "plain"), "generator.gen_z": ("linear", "sn"),
             "generator.bn": ("output_bn", "bn"), "generator.conv_to_rgb": ("output_conv", "sn")}
    for k in range(len(G.blocks)):
        j = k if k < position else k + 1  # the port's index: attention sits at `position`
        for i in range(4):
            pairs[f"generator.layers.{j}.bn_{i}"] = (f"blocks.{k}.bn{i}", "cbn")
            pairs[f"generator.layers.{j}.bn_{i}.scale"] = (f"blocks.{k}.bn{i}.gain", "sn")
            pairs[f"generator.layers.{j}.bn_{i}.offset"] = (f"blocks.{k}.bn{i}.bias", "sn")
            pairs[f"generator.layers.{j}.conv_{i}"] = (f"blocks.{k}.conv{i}", "sn")
    for k in G.attention:
        pre = f"generator.layers.{position}"
        pairs[pre] = (f"attention.{k}", "gamma")
        for ours, theirs in (("theta", "theta"), ("phi", "phi"), ("g", "g"), ("o", "o_conv")):
            pairs[f"{pre}.snconv1x1_{theirs}"] = (f"attention.{k}.{ours}", "sn")
    return pairs


def convert_state_dict(state: dict[str, torch.Tensor], port_config: dict, source: str = "state dict") -> GeneratorDeep:
    """A GeneratorDeep (eval mode, BN statistics of truncation 1) holding the port's ``state`` exactly."""
    config = config_from_port(port_config)
    G = GeneratorDeep(config)
    ours = G.state_dict()
    modules = dict(G.named_modules())
    position = int(port_config["attention_layer_position"])
    expected: dict[str, tuple[int, ...]] = {}
    plan: list[tuple[str, str, str]] = []  # (port prefix, our prefix, kind)
    for theirs, (mine, kind) in _key_map(G, position).items():
        module = modules[mine]
        if kind == "sn":
            assert isinstance(module, SpectralNorm)
            weight = module.weight
            expected[f"{theirs}.weight_orig"] = tuple(weight.shape)
            expected[f"{theirs}.weight_u"] = (weight.shape[0],)
            expected[f"{theirs}.weight_v"] = (weight[0].numel(),)
            if getattr(module, "bias", None) is not None:
                expected[f"{theirs}.bias"] = tuple(module.bias.shape)
        elif kind == "cbn":
            expected[f"{theirs}.running_means"] = tuple(ours[f"{mine}.stats_mean"].shape)
            expected[f"{theirs}.running_vars"] = tuple(ours[f"{mine}.stats_var"].shape)
        elif kind == "bn":
            for name in ("weight", "bias"):
                expected[f"{theirs}.{name}"] = tuple(ours[f"{mine}.{name}"].shape)
            expected[f"{theirs}.running_means"] = tuple(ours[f"{mine}.stats_mean"].shape)
            expected[f"{theirs}.running_vars"] = tuple(ours[f"{mine}.stats_var"].shape)
        elif kind == "gamma":
            expected[f"{theirs}.gamma"] = (1,)
        else:
            expected[f"{theirs}.weight"] = tuple(ours[f"{mine}.weight"].shape)
        plan.append((theirs, mine, kind))
    check_keys(state, expected, source)

    new = dict(ours)
    for theirs, mine, kind in plan:
        if kind == "sn":
            weight, u, v = (state[f"{theirs}.weight_{n}"].float() for n in ("orig", "u", "v"))
            # torch.nn.utils.spectral_norm's eval-mode sigma, computed with the same ops.
            sigma = torch.dot(u, torch.mv(weight.reshape(weight.shape[0], -1), v))
            new[f"{mine}.weight"], new[f"{mine}.u"], new[f"{mine}.sv"] = weight, u[None], sigma.reshape(1)
            if f"{theirs}.bias" in state:
                new[f"{mine}.bias"] = state[f"{theirs}.bias"].float()
        elif kind in ("cbn", "bn"):
            new[f"{mine}.stats_mean"] = state[f"{theirs}.running_means"].float()
            new[f"{mine}.stats_var"] = state[f"{theirs}.running_vars"].float()
            if kind == "bn":
                new[f"{mine}.weight"] = state[f"{theirs}.weight"].float()
                new[f"{mine}.bias"] = state[f"{theirs}.bias"].float()
        elif kind == "gamma":
            new[f"{mine}.gamma"] = state[f"{theirs}.gamma"].float().reshape(())
        else:
            new[f"{mine}.weight"] = state[f"{theirs}.weight"].float()
    G.load_state_dict(new, strict=True)
    for bn in batch_norms(G):  # the running statistics: those of truncation 1 (the last row), as the port's default
        bn.running_mean.copy_(bn.stats_mean[-1])
        bn.running_var.copy_(bn.stats_var[-1])
    return G.eval()


def convert_folder(path: str | os.PathLike) -> GeneratorDeep:
    """Convert a port folder (``pytorch_model.bin`` + ``config.json``), or the ``pytorch_model.bin`` in one."""
    p = Path(path)
    folder = p.parent if p.is_file() else p
    weights, config_file = folder / "pytorch_model.bin", folder / "config.json"
    for f in (weights, config_file):
        if not f.is_file():
            raise ConvertError(f"{f} is missing: a pytorch-pretrained-biggan folder holds pytorch_model.bin and "
                               "config.json (as downloaded for biggan-deep-128/256/512)")
    try:
        port_config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConvertError(f"cannot read {config_file}: {e}") from e
    return convert_state_dict(read_torch_file(weights), port_config, source=str(weights))


register_converter(Converter(
    "pytorch-pretrained-biggan",
    detect=lambda p: (p / "pytorch_model.bin").is_file() if p.is_dir() else p.name == "pytorch_model.bin",
    convert=lambda path, weights="G_ema", **options: convert_folder(path, **options),
    reads="a pytorch-pretrained-biggan folder with pytorch_model.bin + config.json",
))
