"""What every converter shares: reading foreign torch files safely and checking their keys."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..utils import key_mismatch


@dataclass(frozen=True)
class Converter:
    """One foreign checkpoint format: ``detect(path)`` says whether a file or folder is one; ``convert(path,
    weights, **options)`` gives a scalegan generator (``weights``: "G_ema" or "G" where the format holds both);
    ``reads`` says what it reads, for the error of an unknown file; ``options``: the format's own keyword options of
    ``convert``, as ``scalegan convert`` flags ``(flag, argparse keywords)`` (the flag's name, less ``--``, is the
    keyword). ``networks(path)``, for formats that hold a whole training state: every network the file has, as
    scalegan modules keyed ``G``, ``G_ema``, ``D`` (fine-tuning with ``--init-from`` starts all three from it)."""

    name: str
    detect: Callable[[Path], bool]
    convert: Callable[..., torch.nn.Module]
    reads: str
    options: tuple[tuple[str, dict], ...] = ()
    networks: Callable[[Path], dict[str, torch.nn.Module]] | None = None


CONVERTERS: dict[str, Converter] = {}


def register_converter(converter: Converter) -> Converter:
    """Add a format (each converter file registers its own)."""
    if converter.name in CONVERTERS:
        raise ValueError(f"converter {converter.name!r} is registered twice")
    CONVERTERS[converter.name] = converter
    return converter


class ConvertError(ValueError):
    """A foreign checkpoint that cannot be converted; the message names the keys or files involved."""


def read_torch_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a torch file, loaded with ``weights_only=True`` onto the CPU."""
    try:
        data = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged or code-carrying pickles
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ConvertError(f"cannot read {path} as a weights-only torch file ({first}): it is damaged, not a torch "
                           "checkpoint, or holds code (scalegan reads tensors only)") from e
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ConvertError(f"{path} does not hold a state dict of tensors")
    return dict(data)


def check_keys(found: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], source: str) -> None:
    """Raise ConvertError naming unknown, missing and mis-shaped keys of ``found`` against ``expected`` shapes."""
    problems = key_mismatch({k: tuple(v.shape) for k, v in found.items()}, expected, n=8)
    if problems:
        raise ConvertError(f"{source} does not match the expected layout: {problems}")
