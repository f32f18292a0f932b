"""Manifests: the SHA-256 and size of every file of a checkpoint or weights folder, in ``manifest.json``.

Written last, after the files it lists (a checkpoint's inside its temporary folder, before the rename), so a folder
with a manifest was complete when written; ``verify_folder`` tells later damage (altered, truncated or missing
files) apart from folders written before manifests existed, which still load with a note.

    {"format": 1, "files": {"model.safetensors": {"sha256": "...", "size": 123}, "config.json": {...}, ...}}
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .utils import read_json, sha256_file, write_json

MANIFEST = "manifest.json"
FORMAT = 1


class ManifestError(ValueError):
    """A folder whose files do not match its manifest; the message names the file and what to do."""


@dataclass
class Report:
    """What ``verify_folder`` found: ``damaged`` maps a file name to what is wrong with it; ``legacy``: the folder
    has no manifest (written before manifests existed), so only ``config.json``'s ``weights_sha256`` was checked."""

    folder: Path
    checked: list[str] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)
    legacy: bool = False

    @property
    def ok(self) -> bool:
        return not self.damaged

    def error(self) -> ManifestError:
        name, why = next(iter(self.damaged.items()))
        more = f" (and {len(self.damaged) - 1} more)" if len(self.damaged) > 1 else ""
        return ManifestError(f"{self.folder / name} is damaged: {why}{more}. Restore the folder from a copy, "
                             "or use an older checkpoint (`scalegan verify RUN` lists the intact ones)")


def write_manifest(folder: str | os.PathLike, names: list[str] | None = None) -> Path:
    """Write ``manifest.json`` for ``names`` (default: every file of ``folder`` but the manifest), atomically."""
    folder = Path(folder)
    if names is None:
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST
                       and not p.name.startswith("."))
    files = {n: {"sha256": sha256_file(folder / n), "size": (folder / n).stat().st_size} for n in names}
    write_json(folder / MANIFEST, {"format": FORMAT, "files": files})
    return folder / MANIFEST


def read_manifest(folder: str | os.PathLike) -> dict[str, dict] | None:
    """The manifest's ``files`` table, None when the folder has none; a damaged manifest is a ManifestError."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = read_json(path)
        files = data["files"]
        if not isinstance(files, dict) or not all(isinstance(v, dict) and {"sha256", "size"} <= v.keys()
                                                  for v in files.values()):
            raise TypeError("its 'files' table is malformed")
        return files
    except (ValueError, KeyError, TypeError) as e:
        raise ManifestError(f"{path} is damaged ({e}): restore the folder from a copy, or use an older "
                            "checkpoint") from None


def verify_folder(folder: str | os.PathLike, names: list[str] | None = None, *, quick: bool = False) -> Report:
    """Check ``names`` (default: every file the manifest lists) against the manifest: presence, size and (unless
    ``quick``) SHA-256. A folder without a manifest is reported ``legacy``: its ``model.safetensors`` is checked
    against ``config.json``'s ``weights_sha256`` where that exists."""
    folder = Path(folder)
    report = Report(folder)
    try:
        files = read_manifest(folder)
    except ManifestError:
        report.damaged[MANIFEST] = "unreadable or malformed"
        return report
    if files is None:
        report.legacy = True
        files = _legacy_table(folder)
    for name in names if names is not None else sorted(files):
        entry = files.get(name)
        if entry is None:
            if not report.legacy:
                report.damaged[name] = "not listed in manifest.json"
            continue
        report.checked.append(name)
        path = folder / name
        if not path.is_file():
            report.damaged[name] = "missing"
        elif entry.get("size") is not None and path.stat().st_size != entry["size"]:
            report.damaged[name] = f"size {path.stat().st_size} bytes, the manifest says {entry['size']} (truncated?)"
        elif not quick and sha256_file(path) != entry["sha256"]:
            report.damaged[name] = "its SHA-256 differs from the manifest's (the bytes were altered)"
    return report


def _legacy_table(folder: Path) -> dict[str, dict]:
    """What a folder without a manifest can be checked against: ``weights_sha256`` in config.json."""
    try:
        data = read_json(folder / "config.json")
    except (OSError, ValueError):
        return {}
    digest = data.get("weights_sha256") if isinstance(data, dict) else None
    return {"model.safetensors": {"sha256": digest, "size": None}} if isinstance(digest, str) else {}


def check_folder(folder: str | os.PathLike, names: list[str] | None = None) -> Report:
    """``verify_folder``, raising ManifestError on damage and noting (a warning) a folder without a manifest."""
    report = verify_folder(folder, names)
    if not report.ok:
        raise report.error()
    if report.legacy:
        warnings.warn(f"{Path(folder)} has no manifest.json (written before scalegan 0.2): its files were not "
                      "verified; `scalegan verify --write` adds one", stacklevel=2)
    return report
