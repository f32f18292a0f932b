"""Checkpoints: a folder per step, written under a temporary name and renamed into place.

``RUN/checkpoints/step_NNNNNNN/`` holds ``G``, ``G_ema``, ``D`` (safetensors), ``model.safetensors`` (the
generator to sample from) + ``config.json``, and ``state.pt`` (optimizers, step, RNG states, data position),
which loads with ``torch.load(weights_only=True)``. ``RUN/checkpoints/latest`` names the newest complete one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from torch import nn

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
    for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    latest = Path(run_dir) / "checkpoints" / "latest"
    if not latest.is_file():
        return None
    path = latest.parent / latest.read_text().strip()
    if not path.is_dir():
        raise WeightsError(f"{latest} names {path.name}, which is missing: the run folder was modified")
    return path


def load_checkpoint(path: Path, modules: dict[str, nn.Module]) -> dict:
    """Load module weights from a checkpoint folder and return its training state."""
    for key, module in modules.items():
        load_state_dict(module, path / f"{key}.safetensors")
    try:
        return torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"cannot read {path / 'state.pt'}: {e}") from e
