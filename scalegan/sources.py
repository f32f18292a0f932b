"""Where a generator comes from: one resolver for every command and function that takes a SOURCE (``load``,
``train --init-from``, ``invert``, ``serve``, ``convert``, ``export``).

A source is, in this order: an existing path (a run folder, a checkpoint folder, a weights folder or a
``.safetensors`` file, or a foreign checkpoint that ``scalegan.convert`` detects), else a pretrained name
(``ARCH.TAG``, ``scalegan.pretrained``; the names before 0.2 with a one-line note). Anything else is an error that
lists what would be accepted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .convert import detect_format
from .pretrained import PRETRAINED, canonical
from .weights import WeightsError


@dataclass(frozen=True)
class Source:
    """A resolved source: ``kind`` "weights" (a scalegan run, checkpoint or weights folder, or a safetensors file),
    "foreign" (a checkpoint of another project, ``format``) or "pretrained" (``name``, and the ``format`` of its
    source files; ``pretrained.resolve`` finds its cache folder); ``spec``: what the user wrote."""

    spec: str
    kind: str
    path: Path | None = None
    format: str | None = None
    name: str | None = None

    def __str__(self) -> str:
        return self.spec


def resolve_source(spec: str | os.PathLike | Source) -> Source:
    """The ``Source`` ``spec`` names; neither a path nor a pretrained name is a WeightsError that says what is."""
    if isinstance(spec, Source):
        return spec
    path = Path(spec)
    if path.exists():
        fmt = detect_format(path)
        return Source(str(spec), "foreign" if fmt else "weights", path, fmt)
    name = canonical(str(spec))
    if name is not None:
        return Source(str(spec), "pretrained", None, PRETRAINED[name].format, name)
    raise WeightsError(f"{spec} does not exist and is not a pretrained name ({', '.join(sorted(PRETRAINED))}): pass "
                       "a run folder, a checkpoint folder, a weights folder, a .safetensors file, a foreign "
                       "checkpoint (scalegan convert --help) or a pretrained name")


def exists(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` resolves (a cheap check before any data is read; pretrained weights are not opened)."""
    try:
        resolve_source(spec)
    except WeightsError:
        return False
    return True


def display_name(spec: str | os.PathLike) -> str:
    """A short name for a source: a pretrained name, else the folder's name (a ``.safetensors`` file or a foreign
    file: its folder's when named model / G / G_ema, else its stem)."""
    source = resolve_source(spec)
    if source.kind == "pretrained":
        return source.name
    path = source.path
    if path.is_file():
        return path.parent.resolve().name if path.stem in ("model", "G", "G_ema") else path.stem
    return path.resolve().name or str(spec)
