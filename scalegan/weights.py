"""The one weights format: ``*.safetensors`` + ``config.json`` (+ ``manifest.json``: SHA-256 and sizes, checked
on every load; folders written before it existed load with a note).

A weights folder holds ``model.safetensors`` (the generator to sample from: the EMA generator when training used
EMA) and ``config.json``::

    {"format": 2, "family": "biggan", "scalegan_version": "...", "model": {family, ...config fields},
     "class_names": [...], "class_ids": [...], "weights_sha256": "...", ...}

A training checkpoint folder has the same two files plus ``G``/``G_ema``/``D`` safetensors and ``state.pt``; a run
folder points at its newest checkpoint through ``checkpoints/latest``. Files written before the format version
existed (format 1: no ``format`` and ``family`` keys) load the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .family import config_from_dict, get_family, saved_state
from .manifest import check_folder, write_manifest
from .utils import __version__, atomic_path, key_mismatch, read_json, sha256_file, write_json

FORMAT_VERSION = 2


class WeightsError(ValueError):
    """A weights file or folder that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is: its family, size, classes, and where its weights came from."""

    family: str
    resolution: int
    n_classes: int
    class_names: tuple[str, ...] = ()
    class_ids: tuple[str, ...] = ()  # WordNet ids of ImageNet models
    class_counts: tuple[int, ...] = ()  # images per class in the training data (its label distribution)
    source: str = ""  # the path or name it was loaded from
    sha256: str | None = None  # of the weights file, when loaded from one


def save_state_dict(module: nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write a module's parameters and buffers as safetensors, atomically (not its family's pretrained parts: the
    constructor builds those)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in saved_state(module).items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={k: str(v) for k, v in (metadata or {}).items()})


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; an unreadable one is a WeightsError that says why and what to do."""
    try:
        return load_file(os.fspath(path))
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"cannot read weights file {path}: {e}. The file is missing, truncated or not a "
                           "safetensors file; re-export or re-download it.") from e


def load_state_dict(module: nn.Module, path: str | os.PathLike) -> None:
    """Load safetensors into ``module`` strictly (all of it but its family's pretrained parts); missing, unexpected
    or mis-shaped keys are named."""
    tensors = read_safetensors(path)
    problems = key_mismatch({k: tuple(v.shape) for k, v in tensors.items()},
                            {k: tuple(v.shape) for k, v in saved_state(module).items()})
    if problems:
        raise WeightsError(f"{path} does not match the model in config.json: {problems}")
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:  # e.g. saved from a diverged run: every image would be NaN
        raise WeightsError(f"{path}: tensor(s) {', '.join(broken[:3])}{' ...' if len(broken) > 3 else ''} hold "
                           "non-finite values (NaN or inf); the weights are unusable: use an earlier checkpoint")
    module.load_state_dict({**module.state_dict(), **tensors}, strict=True)


def write_config(directory: str | os.PathLike, model_config, **extra) -> None:
    """``config.json`` of a weights or checkpoint folder (the current format version)."""
    write_json(Path(directory) / "config.json",
               {"format": FORMAT_VERSION, "family": model_config.family, "scalegan_version": __version__,
                "model": model_config.to_dict(), **extra})


def read_config(directory: str | os.PathLike) -> tuple[object, dict]:
    """The model config and the whole ``config.json`` of a folder (any format version)."""
    path = Path(directory) / "config.json"
    data = read_json(path)
    try:
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        if not isinstance(data.get("format", 1), int) or data.get("format", 1) > FORMAT_VERSION:
            raise ValueError(f"format {data.get('format')!r} is newer than this scalegan reads ({FORMAT_VERSION}): "
                             "upgrade scalegan")
        if not isinstance(data.get("model"), dict):
            raise ValueError("no model section (a JSON object of model config fields)")
        model = dict(data["model"])
        model.setdefault("family", data.get("family"))
        config = config_from_dict(model)
        for key in ("class_names", "class_ids"):
            names = data.get(key) or []
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"{key} must be a list of strings, got {json.dumps(names)[:80]}")
            if len(names) > config.n_classes:
                raise ValueError(f"{len(names)} {key.replace('_', ' ')} for a model of {config.n_classes} classes")
        counts = data.get("class_counts") or []
        if not isinstance(counts, list) or not all(isinstance(c, int) and c >= 0 for c in counts) or (
                counts and (len(counts) != config.n_classes or not sum(counts))):
            raise ValueError(f"class_counts must be {config.n_classes} non-negative integers, got "
                             f"{json.dumps(counts)[:80]}")
        return config, data
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsError(f"{path} is not a valid scalegan model config: {e}") from e


def save_generator(G: nn.Module, directory: str | os.PathLike, class_names=(), class_ids=(), **extra) -> Path:
    """Export a generator as a weights folder: ``model.safetensors`` + ``config.json`` (with the weights'
    SHA-256, written after the weights so that a later check compares the two)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_state_dict(G, directory / "model.safetensors")
    write_config(directory, G.config, class_names=list(class_names), class_ids=list(class_ids),
                 weights_sha256=sha256_file(directory / "model.safetensors"), **extra)
    write_manifest(directory, ["model.safetensors", "config.json"])
    return directory


def resolve_weights_dir(path: str | os.PathLike) -> Path:
    """The folder holding ``config.json`` + ``model.safetensors`` for a run, checkpoint, weights folder or file."""
    p = Path(path)
    if p.is_file() and p.suffix == ".safetensors":
        p = p.parent
    if not p.exists():
        raise WeightsError(f"{path} does not exist: pass a run folder, a checkpoint folder or a weights folder")
    if p.is_file():
        onnx = " (serve .onnx files with `scalegan serve --backend onnx`)" if p.suffix == ".onnx" else ""
        raise WeightsError(f"{path} is a file but not a .safetensors file: pass a run folder, a checkpoint folder, a "
                           f"weights folder or its model.safetensors{onnx}")
    latest = p / "checkpoints" / "latest"
    if latest.is_file():
        p = p / "checkpoints" / latest.read_text().strip()
        if not p.is_dir():
            raise WeightsError(f"{latest} names checkpoint {p.name!r}, which does not exist: restore it, or write the "
                               "name of an existing checkpoint folder into checkpoints/latest")
    if not (p / "config.json").is_file():
        raise WeightsError(f"no config.json in {p}: not a scalegan run, checkpoint or weights folder "
                           "(a run folder has checkpoints/latest once its first checkpoint is written)")
    return p


def load_weights(path: str | os.PathLike, device: str | torch.device = "cpu",
                 weights: str = "model") -> tuple[nn.Module, ModelInfo]:
    """A generator (eval mode) and its info from a run folder, checkpoint folder, weights folder or safetensors
    file. ``weights``: ``"model"`` (the sampling generator), ``"G"`` or ``"G_ema"`` of a training checkpoint."""
    p = Path(path)
    directory = resolve_weights_dir(p)
    config, data = read_config(directory)
    file = p if p.is_file() else directory / f"{weights}.safetensors"
    if not file.is_file():
        raise WeightsError(f"{file} is missing; the folder has {sorted(x.name for x in directory.iterdir())}")
    check_folder(directory, ["config.json", file.name] if file.parent == directory else ["config.json"])
    G = get_family(config).generator(config)
    load_state_dict(G, file)
    info = ModelInfo(family=config.family, resolution=config.resolution, n_classes=config.n_classes,
                     class_names=tuple(data.get("class_names") or ()), class_ids=tuple(data.get("class_ids") or ()),
                     class_counts=tuple(data.get("class_counts") or ()),
                     source=str(path), sha256=data.get("weights_sha256") if file.name == "model.safetensors" else None)
    return G.to(device).eval(), info
