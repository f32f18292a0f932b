"""Small helpers every other module may use (this module imports nothing of scalegan): atomic writes, JSON,
SHA-256, the cache root, downloads, "did you mean" errors, key-mismatch reports and 8-bit image conversion."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import math
import os
import shutil
import tempfile
import types
import typing
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

__version__ = "0.1.0"


# --------------------------------------------------------------------------------------------- files
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``, on error removed.

    Readers never see a half-written file, and a failure (full disk, crash) leaves the old file intact.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:  # "File exists" alone would not say which or why
        blocker = Path(directory)
        while not blocker.exists() and blocker != blocker.parent:
            blocker = blocker.parent
        raise OSError(f"cannot write {path}: {blocker} is a file, not a folder") from e
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_json(path: str | os.PathLike, data) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def read_json(path: str | os.PathLike) -> dict:
    """A JSON file; a broken one is a ValueError that names the file."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore or re-create it") from e


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_dir() -> Path:
    """The cache root for weights and statistics: ``$SCALEGAN_CACHE`` or ``~/.cache/scalegan``."""
    return Path(os.environ.get("SCALEGAN_CACHE") or Path.home() / ".cache" / "scalegan").expanduser()


def download(url: str, target: str | os.PathLike, sha256: str | None = None,
             timeout: float = 60) -> Path:  # pragma: no cover - needs internet
    """Fetch ``url`` to ``target`` (atomically; an existing file is kept) and check its SHA-256 when given."""
    target = Path(target)
    if not target.is_file():
        with atomic_path(target) as tmp, urllib.request.urlopen(url, timeout=timeout) as response, \
                open(tmp, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    if sha256 and sha256_file(target) != sha256:
        target.unlink()
        raise ValueError(f"{url} downloaded with SHA-256 other than the published {sha256[:16]}...; try again")
    return target


# --------------------------------------------------------------------------------------------- messages
def unknown_name(kind: str, name: str, choices: Iterable[str], cutoff: float = 0.6) -> KeyError:
    """A KeyError for an unknown ``name`` of ``kind`` with close matches ("did you mean") and the choices."""
    choices = list(choices)
    close = difflib.get_close_matches(str(name), choices, n=3, cutoff=cutoff)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(choices[:20]) + ("..." if len(choices) > 20 else "")
    return KeyError(f"unknown {kind} {name!r}{hint} (known: {shown})")


def key_mismatch(found: Mapping[str, Sequence[int]], expected: Mapping[str, Sequence[int]], n: int = 5) -> str:
    """Missing, unexpected and mis-shaped keys of ``found`` against ``expected`` (name -> shape), in one phrase;
    empty when they match."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mis_shaped = [f"{k}: found {list(found[k])}, expected {list(expected[k])}"
                  for k in sorted(set(found) & set(expected)) if tuple(found[k]) != tuple(expected[k])]
    parts = [f"{what} keys {_few(keys, n)}" for what, keys in
             (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped)) if keys]
    return "; ".join(parts)


def _few(items: list[str], n: int) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


# --------------------------------------------------------------------------------------------- configs
def dataclass_from_dict(cls: type, data: Mapping | None, what: str, items: str = "fields"):
    """``cls(**data)`` for a config dataclass, after checking that every key is a field and every value fits its
    type: otherwise a ValueError naming the key (``unknown biggan config fields ['colour']; known fields: ...``)."""
    data = dict(data or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} {items} {unknown}; known fields: {sorted(known)}")
    check_types(cls, data, what)
    return cls(**data)


def check_types(cls: type, data: Mapping, what: str, fields: Mapping[str, str] | None = None) -> None:
    """Raise ValueError when a value of ``data`` does not fit the annotated type of dataclass ``cls``'s field
    (int, float, bool, str, tuples of int, dict, and ``X | None``); unknown keys are left to the caller.
    ``fields``: the field each key of ``data`` sets, where they differ (the error names the key)."""
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        name = (fields or {}).get(key, key)
        if name in hints and not _fits(value, hints[name]):
            raise ValueError(f"{what} field {key} must be {_type_name(hints[name])}, got {value!r}")


def _fits(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if origin is tuple:
        return isinstance(value, (tuple, list)) and all(_fits(v, args[0]) for v in value)
    if hint in (str, dict, list):
        return isinstance(value, hint)
    return True


def _type_name(hint) -> str:
    name = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
    return "a finite float" if hint is float else name


# --------------------------------------------------------------------------------------------- images
def device_of(module: torch.nn.Module) -> torch.device:
    """The device a module's parameters (or, without any, its buffers) live on; the CPU for an empty module."""
    return next(module.parameters(), next(module.buffers(), torch.empty(0))).device


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (float, [N, C, H, W]) -> uint8 [N, C, H, W], rounded to nearest; uint8 passes through.

    The one conversion every path uses (grids, PNG/NPZ output, metrics), so the same G and seed give the same
    8-bit pictures everywhere."""
    if images.dtype == torch.uint8:
        return images
    return ((images.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def to_hwc(images: torch.Tensor) -> np.ndarray:
    """``to_uint8`` as a NumPy array [N, H, W, C] (the layout of PNG files and NPZ sets)."""
    return to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()
