"""The one weights format: ``*.safetensors`` + ``config.json``; and ``scalegan.load``.

A weights folder holds ``config.json`` (``{"model": {family, ...fields}, "class_names": [...], ...}``) and
``model.safetensors`` (the generator to sample from: the EMA generator when training used EMA). A training
checkpoint folder has the same two files plus ``G``/``G_ema``/``D`` safetensors and ``state.pt``; a run folder
points at its newest checkpoint through ``checkpoints/latest``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .models import build_generator, config_from_dict
from .utils import atomic_path, read_json, write_json


class WeightsError(ValueError):
    """A weights file or folder that cannot be used; the message says why and what to do."""


def save_state_dict(module: nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write a module's parameters and buffers as safetensors, atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_state_dict(module: nn.Module, path: str | os.PathLike) -> None:
    """Load safetensors into ``module`` strictly; missing, unexpected or mis-shaped keys are named."""
    try:
        tensors = load_file(os.fspath(path))
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"cannot read weights file {path}: {e}. The file is missing, truncated or not a "
                           "safetensors file; re-export or re-download it.") from e
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [f"{k}: file {list(tensors[k].shape)} vs model {list(expected[k].shape)}"
                  for k in sorted(set(tensors) & set(expected)) if tensors[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        if mismatched:
            parts.append(f"mis-shaped {_few(mismatched)}")
        raise WeightsError(f"{path} does not match the model in config.json: " + "; ".join(parts))
    module.load_state_dict(tensors, strict=True)


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def write_config(directory: str | os.PathLike, model_config, **extra) -> None:
    write_json(Path(directory) / "config.json",
               {"scalegan_version": __version__, "model": model_config.to_dict(), **extra})


def save_generator(G: nn.Module, directory: str | os.PathLike, **extra) -> None:
    """Export a generator as a weights folder: ``model.safetensors`` + ``config.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_state_dict(G, directory / "model.safetensors")
    write_config(directory, G.config, class_names=list(getattr(G, "class_names", []) or []), **extra)


def resolve_weights_dir(path: str | os.PathLike) -> Path:
    """The folder holding ``config.json`` + ``model.safetensors`` for a run, checkpoint, weights folder or file."""
    p = Path(path)
    if p.is_file() and p.suffix == ".safetensors":
        p = p.parent
    if not p.exists():
        raise WeightsError(f"{path} does not exist: pass a run folder, a checkpoint folder or a weights folder")
    latest = p / "checkpoints" / "latest"
    if latest.is_file():
        p = p / "checkpoints" / latest.read_text().strip()
    if not (p / "config.json").is_file():
        raise WeightsError(f"no config.json in {p}: not a scalegan run, checkpoint or weights folder "
                           "(a run folder has checkpoints/latest once its first checkpoint is written)")
    return p


def load(path: str | os.PathLike, device: str | torch.device = "cpu", weights: str = "model") -> nn.Module:
    """Load a generator in eval mode from a run folder, checkpoint folder, weights folder or safetensors file.

    ``weights``: ``"model"`` (the sampling generator: EMA when trained with EMA), ``"G"`` or ``"G_ema"``.
    The returned module has ``.config``, ``.class_names`` and ``.sample(...)``.
    """
    p = Path(path)
    if not p.exists():  # a named pretrained model ("biggan-deep-256") resolves to its local cache folder
        from .pretrained import PRETRAINED, resolve

        if str(path) in PRETRAINED:
            p = resolve(str(path))
    from .convert import convert, detect_format

    if detect_format(p):  # a foreign checkpoint: converted in memory (``scalegan convert`` writes it once)
        return convert(p, weights="G" if weights == "G" else "G_ema").to(device).eval()
    directory = resolve_weights_dir(p)
    info = read_json(directory / "config.json")
    try:
        config = config_from_dict(info["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsError(f"{directory / 'config.json'} is not a valid scalegan model config: {e}") from e
    file = p if p.is_file() else directory / f"{weights}.safetensors"
    if not file.is_file():
        raise WeightsError(f"{file} is missing; the folder has {sorted(x.name for x in directory.iterdir())}")
    G = build_generator(config)
    load_state_dict(G, file)
    G.class_names = list(info.get("class_names") or [])
    G.class_ids = list(info.get("class_ids") or [])
    return G.to(device).eval()
