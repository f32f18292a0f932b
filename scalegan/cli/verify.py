"""``scalegan verify``: check a run, checkpoint or weights folder against its manifests (scalegan/manifest.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..manifest import MANIFEST, verify_folder, write_manifest
from ..training.checkpoint import checkpoints, latest_checkpoint_name
from .options import HelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "verify", help="check a run, checkpoint or weights folder against its manifest (SHA-256 and sizes)",
        formatter_class=HelpFormatter,
        description="Compare every file of a checkpoint or weights folder with the SHA-256 and size its "
                    "manifest.json recorded when it was written. A run folder: every checkpoint (and checkpoints/best),"
                    " then which one --resume would continue from. Prints a line per folder; exit status 0 when all "
                    "are intact, 1 when something is damaged, 2 for a path that is none of these.")
    p.add_argument("path", metavar="PATH", help="a run folder, a checkpoint folder, a weights folder or a "
                   ".safetensors file in one")
    p.add_argument("--quick", action="store_true", help="check presence and sizes only, not SHA-256")
    p.add_argument("--write", action="store_true", help="write a manifest for folders that have none (written "
                   "before manifests existed), from their files as they are now")
    p.set_defaults(func=run)


def folders(path: Path) -> tuple[list[Path], bool]:
    """The folders to check under ``path`` and whether it is a run folder."""
    if path.is_file() and path.suffix == ".safetensors":
        path = path.parent
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: pass a run, checkpoint or weights folder")
    if (path / "checkpoints").is_dir():
        found = checkpoints(path)
        best = path / "checkpoints" / "best"
        return sorted(found, reverse=True) + ([best] if best.is_dir() else []), True
    if not (path / "config.json").is_file() and not (path / MANIFEST).is_file():
        raise ValueError(f"{path} is not a scalegan run, checkpoint or weights folder (no config.json, no "
                         "checkpoints/)")
    return [path], False


def run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    targets, is_run = folders(path)
    intact, damaged = [], 0
    for folder in targets:
        report = verify_folder(folder, quick=args.quick)
        if report.legacy and args.write:
            write_manifest(folder)
            print(f"WROTE    {folder}: {MANIFEST} from its files as they are now")
            intact.append(folder)
        elif report.legacy:
            print(f"NOTE     {folder}: no {MANIFEST} (written before scalegan 0.2); "
                  + ("model.safetensors matches config.json's weights_sha256" if report.checked else "not verified")
                  + " (--write adds one)")
            intact.append(folder)
        elif report.ok:
            print(f"OK       {folder} ({len(report.checked)} files)")
            intact.append(folder)
        else:
            damaged += 1
            for name, why in report.damaged.items():
                print(f"DAMAGED  {folder / name}: {why}")
    if is_run:
        latest = latest_checkpoint_name(path)
        numbered = [p.name for p in intact if p.name.startswith("step_")]  # newest first
        resume = latest if latest in numbered else next(iter(numbered), None)
        print(f"run {path}: latest = {latest or 'none'}; --resume continues from "
              f"{resume or 'nothing (no intact checkpoint)'}")
    if not targets:
        print(f"run {path}: no checkpoints yet")
    return 1 if damaged else 0
