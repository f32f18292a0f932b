"""``scalegan info``: presets (parameter counts, configs) and saved models (config, classes, source)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

from ..api import load
from ..family import get_family
from ..registry import count_parameters, get_preset, list_models, model_config
from ..utils import read_json
from ..weights import resolve_weights_dir
from .options import HelpFormatter, parse_overrides


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="describe a preset or a saved model", formatter_class=HelpFormatter,
                       description="Parameter counts and config of a preset, or the config and classes of any "
                                   "generator source. --list names the presets.")
    p.add_argument("target", nargs="?", help="preset name, or a generator source (run / checkpoint / weights folder)")
    p.add_argument("--list", action="store_true", help="list the presets")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--set", dest="set_", action="append", metavar="KEY=VALUE",
                   help="change a model config field before counting (repeatable)")
    p.set_defaults(func=run)


def preset_info(name: str, overrides: dict | None = None) -> dict:
    """Trainable parameter counts and configs of a preset (the models are built on the meta device)."""
    config = model_config(name, **(overrides or {}))
    family = get_family(config)
    with torch.device("meta"):
        G, D = family.generator(config), family.discriminator(config)
    preset = get_preset(name)
    return {"name": name, "family": family.name, "about": preset.get("about", ""), "G_params": count_parameters(G),
            "D_params": count_parameters(D), "model": config.to_dict(), "train": preset.get("train", {})}


def run(args) -> int:
    if args.list or not args.target:
        rows = [{"name": n, "family": get_preset(n)["family"], "about": get_preset(n).get("about", "")}
                for n in list_models()]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            width = max(len(r["name"]) for r in rows)
            for r in rows:
                print(f"{r['name']:<{width}}  {r['about']}")
        return 0
    if Path(args.target).exists():
        G, info = load(args.target)
        directory = resolve_weights_dir(args.target)
        result = {"path": str(directory), **read_json(directory / "config.json"), "info": dataclasses.asdict(info),
                  "G_params": count_parameters(G)}
    elif "/" in args.target or os.sep in args.target:  # meant as a path, not a preset name
        raise ValueError(f"{args.target} does not exist (give a run, checkpoint or weights folder, or a preset name: "
                         "see `scalegan info --list`)")
    else:
        result = preset_info(args.target, parse_overrides(args.set_))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        for key, value in result.items():
            print(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    return 0
