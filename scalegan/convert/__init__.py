"""Converters from foreign BigGAN checkpoints to scalegan weights (``model.safetensors`` + ``config.json``).

One file per format:

- ``pytorch_pretrained_biggan``: the folders of huggingface's ``pytorch-pretrained-biggan`` port of DeepMind's
  BigGAN-deep TF-Hub modules (``pytorch_model.bin`` + ``config.json``; biggan-deep-128/256/512).
- ``biggan_pytorch``: ajbrock/BigGAN-PyTorch generator state dicts (``G_ema.pth`` / ``G.pth``), ImageNet layout.

Foreign files are read with ``torch.load(weights_only=True)`` (no pickled code runs); unknown, missing or
mis-shaped keys are errors that name them. ``scalegan.load`` converts on the fly; ``scalegan convert`` writes
a weights folder once.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

FORMATS = ("pytorch-pretrained-biggan", "biggan-pytorch")


class ConvertError(ValueError):
    """A foreign checkpoint that cannot be converted; the message names the keys or files involved."""


def read_torch_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a torch file, loaded with ``weights_only=True`` onto the CPU."""
    try:
        data = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged or code-carrying pickles
        raise ConvertError(f"cannot read {path} as a weights-only torch file: {e}") from e
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ConvertError(f"{path} does not hold a state dict of tensors")
    return dict(data)


def check_keys(found: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], source: str) -> None:
    """Raise ConvertError naming unknown, missing and mis-shaped keys of ``found`` against ``expected`` shapes."""
    missing = sorted(set(expected) - set(found))
    unknown = sorted(set(found) - set(expected))
    mis_shaped = [f"{k}: {list(found[k].shape)}, expected {list(expected[k])}"
                  for k in sorted(set(found) & set(expected)) if tuple(found[k].shape) != tuple(expected[k])]
    if missing or unknown or mis_shaped:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unknown:
            parts.append(f"unknown keys {_few(unknown)}")
        if mis_shaped:
            parts.append(f"mis-shaped keys {_few(mis_shaped)}")
        raise ConvertError(f"{source} does not match the expected layout: " + "; ".join(parts))


def _few(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def detect_format(path: str | os.PathLike) -> str | None:
    """The foreign format of a file or folder, or None when it is not one (e.g. a scalegan weights folder)."""
    p = Path(path)
    if p.is_dir():
        if (p / "pytorch_model.bin").is_file():
            return "pytorch-pretrained-biggan"
        if not (p / "config.json").is_file() and ((p / "G_ema.pth").is_file() or (p / "G.pth").is_file()):
            return "biggan-pytorch"
        return None
    if p.is_file():
        if p.name == "pytorch_model.bin":
            return "pytorch-pretrained-biggan"
        if p.suffix == ".pth":
            return "biggan-pytorch"
    return None


def convert(path: str | os.PathLike, format: str | None = None, weights: str = "G_ema", **options) -> nn.Module:
    """A scalegan generator (eval mode, with ``class_names`` / ``class_ids``) from a foreign checkpoint.

    ``format``: one of ``FORMATS`` or None to detect it. ``weights``: for BigGAN-PyTorch folders, ``"G_ema"``
    (default; falls back to ``G.pth`` when absent) or ``"G"``. ``options`` go to the format's converter.
    """
    if not Path(path).exists():
        raise ConvertError(f"{path} does not exist")
    format = format or detect_format(path)
    if format == "pytorch-pretrained-biggan":
        from .pytorch_pretrained_biggan import convert_folder

        return convert_folder(path, **options)
    if format == "biggan-pytorch":
        from .biggan_pytorch import convert_file

        return convert_file(path, weights=weights, **options)
    if format is None:
        raise ConvertError(f"{path}: not a known foreign checkpoint (expected a pytorch-pretrained-biggan folder "
                           "with pytorch_model.bin + config.json, or a BigGAN-PyTorch G_ema.pth / G.pth)")
    raise ConvertError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}")


def imagenet_labels(n_classes: int) -> dict:
    """``class_names`` and ``class_ids`` (WordNet ids) for a 1,000-class ImageNet model, else nothing."""
    if n_classes != 1000:
        return {}
    from .. import imagenet

    return {"class_names": imagenet.class_names(), "class_ids": imagenet.wordnet_ids()}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def save_converted(G: nn.Module, out: str | os.PathLike, source: str | os.PathLike | None = None,
                   format: str | None = None) -> Path:
    """Write ``G`` as a scalegan weights folder; config.json records the source and the weights' SHA-256."""
    from ..weights import save_state_dict, write_config

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_state_dict(G, out / "model.safetensors")
    extra = {"class_names": list(getattr(G, "class_names", []) or []),
             "class_ids": list(getattr(G, "class_ids", []) or []),
             "weights_sha256": sha256_file(out / "model.safetensors")}
    if source is not None:
        extra["converted_from"] = {"format": format or detect_format(source), "path": str(source)}
    write_config(out, G.config, **extra)
    return out
