"""What every converter shares: reading foreign torch files safely and checking their keys."""

from __future__ import annotations

import os

import torch

from ..utils import key_mismatch


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
