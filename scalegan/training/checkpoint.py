"""Checkpoints: a folder per step, written under a temporary name and renamed into place.

``RUN/checkpoints/step_NNNNNNN/`` holds ``G``, ``G_ema``, ``D`` (safetensors), ``model.safetensors`` (the
generator to sample from) + ``config.json``, and ``state.pt`` (optimizers, step, RNG states, data position),
which loads with ``torch.load(weights_only=True)``, and ``manifest.json`` (SHA-256 and size of every file, written
last). ``RUN/checkpoints/latest`` names the newest complete one. A resumed run verifies the checkpoint against its
manifest and falls back to the newest intact one; a failed write (full disk, I/O error) leaves the previous
checkpoints and ``latest`` as they were.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from ..manifest import ManifestError, check_folder, verify_folder, write_manifest
from ..utils import atomic_path
from ..weights import WeightsError, load_state_dict, save_state_dict, write_config


def save_checkpoint(run_dir: str | os.PathLike, step: int, modules: dict[str, nn.Module], state: dict,
                    model_config, keep: int = 2, name: str | None = None, **config_extra) -> Path:
    """Write a checkpoint atomically, point ``latest`` at it and prune all but the newest ``keep``.

    With ``name`` (e.g. ``"best"``) the checkpoint goes to ``checkpoints/NAME`` instead, replacing the previous
    one there; ``latest`` and the numbered checkpoints are left alone."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    named = name is not None
    name = name or f"step_{step:07d}"
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for key, module in modules.items():
            save_state_dict(module, tmp / f"{key}.safetensors", {"step": step})
        write_config(tmp, model_config, step=step, **config_extra)
        torch.save(state, tmp / "state.pt")
        write_manifest(tmp)
    except BaseException:  # e.g. a full disk: drop the partial folder, keep the previous checkpoints
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = root / name
    if final.exists():  # the same step saved twice, or a named checkpoint replaced: swap, then delete the old
        old = root / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    if named:
        return final
    with atomic_path(root / "latest") as t, open(t, "w") as f:
        f.write(name + "\n")
    for old in sorted(p for p in root.glob("step_*") if p.is_dir() and p != final)[:-max(keep, 1) + 1 or None]:
        shutil.rmtree(old, ignore_errors=True)  # the one just written (intact: verified below on resume) stays
    return final


def latest_checkpoint_name(run_dir: str | os.PathLike) -> str | None:
    """What ``RUN/checkpoints/latest`` names (None when the run has no checkpoint yet)."""
    latest = Path(run_dir) / "checkpoints" / "latest"
    return latest.read_text().strip() if latest.is_file() else None


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    name = latest_checkpoint_name(run_dir)
    if name is None:
        return None
    path = Path(run_dir) / "checkpoints" / name
    if not path.is_dir():
        raise WeightsError(f"{path.parent / 'latest'} names {name}, which is missing: the run folder was modified")
    return path


def checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The run's numbered checkpoint folders, newest first (``latest``'s first when it names one)."""
    root = Path(run_dir) / "checkpoints"
    found = sorted((p for p in root.glob("step_*") if p.is_dir()), reverse=True)
    name = latest_checkpoint_name(run_dir)
    named = root / name if name is not None else None
    return ([named] if named in found else []) + [p for p in found if p != named]


def intact_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint of a run whose files match its manifest: ``latest`` when it is intact, else the newest
    intact one, with a warning that names what was damaged. None when the run has no checkpoint; a
    ManifestError when none is intact."""
    found = checkpoints(run_dir)
    latest = latest_checkpoint_name(run_dir)
    if not found:
        if latest is not None:
            raise WeightsError(f"{Path(run_dir) / 'checkpoints' / 'latest'} names {latest}, which is missing, and "
                               "no other checkpoint is there: the run folder was modified")
        return None
    skipped = [] if latest is None or found[0].name == latest else [f"{latest} (missing)"]
    for path in found:
        report = verify_folder(path)
        if report.ok:
            if skipped:
                warnings.warn(f"skipped damaged checkpoints {', '.join(skipped)}; using {path.name}", stacklevel=2)
            return path
        name, why = next(iter(report.damaged.items()))
        skipped.append(f"{path.name} ({name}: {why})")
    raise ManifestError(f"no intact checkpoint in {Path(run_dir) / 'checkpoints'}: {'; '.join(skipped)}. "
                        "Restore the folder from a copy, or start a new run")


def load_checkpoint(path: Path, modules: dict[str, nn.Module], verify: bool = True,
                    state: dict | None = None) -> dict:
    """Load module weights from a checkpoint folder (checked against its manifest unless ``verify`` is False:
    already checked) and return its training state (``state`` when given: already read by ``read_state``)."""
    if verify:
        check_folder(path)
    for key, module in modules.items():
        load_state_dict(module, path / f"{key}.safetensors")
    return state if state is not None else read_state(path)


def read_state(path: Path) -> dict:
    """A checkpoint's training state (``state.pt``: step, optimizers, RNG states, data position, world size)."""
    try:
        return torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"cannot read {path / 'state.pt'}: {e}") from e
