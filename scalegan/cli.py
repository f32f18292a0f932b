"""The ``scalegan`` command: ``train``, ``sample`` and ``info``.

Every ``train`` flag is generated from :class:`scalegan.training.config.TrainConfig`, so the help text, the
config file keys and ``RUN/train_config.json`` always agree.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
import warnings
from pathlib import Path

import torch

# --------------------------------------------------------------------------------------------- helpers


def _parse_value(text: str):
    """A ``--set`` value: JSON when it parses (numbers, true/false, null, lists), else the plain string."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return tuple(value) if isinstance(value, list) else value


def parse_overrides(items: list[str] | None) -> dict:
    """``["ch=48", "g_attn=[16]"]`` -> ``{"ch": 48, "g_attn": (16,)}``."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r} (e.g. --set ch=48)")
        out[key.strip()] = _parse_value(value.strip())
    return out


def _field_type(f: dataclasses.Field):
    """The concrete type of a TrainConfig field (``float | None`` -> float)."""
    t = typing.get_type_hints(_train_config_class())[f.name]
    if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union:
        t = next(a for a in typing.get_args(t) if a is not type(None))
    return t


def _train_config_class():
    from .training.config import TrainConfig

    return TrainConfig


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, default=str))


# --------------------------------------------------------------------------------------------- train


def add_train_parser(sub) -> None:
    TrainConfig = _train_config_class()
    p = sub.add_parser(
        "train", help="train a GAN", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train a model preset on a dataset. Values resolve as: TrainConfig defaults < the preset's "
                    "training values < --config FILE < flags. The resolved config is written to "
                    "RUN/train_config.json.")
    p.add_argument("--config", metavar="FILE", help="JSON file of training config keys (the flag names with "
                   "underscores, e.g. {\"model\": \"biggan-32\", \"lr_g\": 0.0002, \"model_overrides\": {\"ch\": 48}})")
    p.add_argument("--set", dest="set_", action="append", metavar="KEY=VALUE", default=None,
                   help="change a model config field (repeatable), e.g. --set ch=48 --set g_attn=[16]")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit without training")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)", default=argparse.SUPPRESS)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "model_overrides":
            continue
        t = _field_type(f)
        help_text = f.metadata.get("help", "")
        if t is bool:
            p.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=f"{help_text} (default: {'auto' if f.default is None else f.default})")
        else:
            default = f.default if f.default is not dataclasses.MISSING else None
            choices = f.metadata.get("choices")
            p.add_argument(_flag(f.name), type=t, default=argparse.SUPPRESS, choices=choices,
                           metavar="{" + ",".join(choices) + "}" if choices else t.__name__.upper(),
                           help=f"{help_text} (default: {default})")
    p.set_defaults(func=cmd_train)


def resolve_train_config(args) -> object:
    """TrainConfig from defaults, the preset, ``--config`` and the flags given on the command line."""
    TrainConfig = _train_config_class()
    from_file: dict = {}
    if args.config:
        try:
            from_file = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"--config {args.config}: {e}") from e
        if not isinstance(from_file, dict):
            raise ValueError(f"--config {args.config}: expected a JSON object of training config keys")
        from_file.pop("scalegan_version", None)
        if "train" in from_file and isinstance(from_file["train"], dict):  # a RUN/train_config.json
            from_file = from_file["train"]
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    flags = {k: v for k, v in vars(args).items() if k in names}
    merged = {**from_file, **flags}
    overrides = {**merged.pop("model_overrides", {}), **parse_overrides(args.set_)}
    model = merged.pop("model", TrainConfig().model)
    return TrainConfig.from_preset(model, **merged, model_overrides=overrides)


def cmd_train(args) -> int:
    from .training import train
    from .training.loop import resolve_model_config

    cfg = resolve_train_config(args)
    cfg.validate()
    if args.dry_run:
        from .data import open_dataset
        from .registry import model_config

        resolved, hardware = cfg.resolve_hardware(cfg.device)
        report = {"train": resolved.to_dict(), "hardware": hardware}
        try:
            preset = model_config(cfg.model, **cfg.model_overrides)
            dataset = open_dataset(cfg.data, resolution=preset.resolution,
                                   channels=cfg.model_overrides.get("img_channels"), root=cfg.data_root)
            report["model"] = resolve_model_config(cfg, dataset).to_dict()
            report["dataset"] = dataset.describe()
        except Exception as e:  # a dry run reports what a real run would fail on
            report["model"] = model_config(cfg.model, **cfg.model_overrides).to_dict()
            report["dataset_error"] = str(e)
        _print_json(report)
        return 0
    summary = train(cfg)
    if "checkpoint" not in summary:  # ranks other than 0 of a distributed run write nothing
        return 0
    print(f"trained to step {summary['step']} in {summary['wall_seconds']:.0f} s "
          f"({summary['s_per_it']:.2f} s/it); samples: {summary['final_grid']}; weights: {summary['checkpoint']}",
          file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------- sample


def add_sample_parser(sub) -> None:
    p = sub.add_parser(
        "sample", help="generate images from a trained generator",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Generate images from a run folder (its latest checkpoint), a checkpoint folder or a weights "
                    "folder (model.safetensors + config.json). Writes a grid PNG (--out), one PNG per image "
                    "(--png-dir) and/or an NPZ with x (uint8 N x H x W x C) and y (int64) (--npz). With no "
                    "output flag it writes --out samples.png.")
    p.add_argument("path", help="run folder, checkpoint folder, weights folder or .safetensors file")
    p.add_argument("--out", help="grid image path (PNG; one row per class with --per-class)")
    p.add_argument("--png-dir", help="write every image as DIR/NNNNNN_cCLASS.png")
    p.add_argument("--npz", help="write x (uint8 NHWC) and y (int64) to this .npz file")
    p.add_argument("--save-latents", action="store_true", help="also store z in the NPZ")
    p.add_argument("--per-class", type=int, default=None,
                   help="N samples of every class (or of the --class classes); default 10 when no --n")
    p.add_argument("--n", type=int, default=None, help="number of samples with random (or --class) classes")
    p.add_argument("--class", dest="classes", action="append", metavar="CLASS",
                   help="class index or name (repeatable); default: all classes")
    p.add_argument("--truncation", type=float, default=None, help="truncation threshold, e.g. 0.5; none = off")
    p.add_argument("--truncation-mode", choices=["resample", "scale"], default="resample",
                   help="resample: redraw |z| entries above the threshold (the paper's trick); scale: threshold * "
                        "truncnorm(-2, 2) (pytorch-pretrained-biggan)")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same images")
    p.add_argument("--interp", choices=["z", "class"], default=None,
                   help="write an interpolation sheet instead: in z at a fixed class, or between classes")
    p.add_argument("--steps", type=int, default=8, help="interpolation steps per row")
    p.add_argument("--rows", type=int, default=8, help="interpolation rows")
    p.add_argument("--gif", help="with --interp: also write the interpolation as an animated GIF")
    p.add_argument("--standing-stats", type=int, default=0, metavar="N",
                   help="recompute BN statistics over N generated batches before sampling")
    p.add_argument("--weights", choices=["model", "G", "G_ema"], default="model",
                   help="which generator of a training checkpoint (model = the EMA one when trained with EMA)")
    p.add_argument("--batch-size", type=int, default=100, help="images per forward pass")
    p.add_argument("--nrow", type=int, default=None, help="images per grid row (default: --per-class, else 10)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=cmd_sample)


def cmd_sample(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from .sampling import (
        class_labels,
        interpolation_sheet,
        make_grid,
        resolve_class,
        sample_z,
        save_gif,
        save_image,
        sheet_frames,
        standing_stats,
        to_uint8,
    )
    from .utils import atomic_path
    from .weights import load

    G = load(args.path, device=args.device, weights=args.weights)
    cfg = G.config
    if args.truncation is not None and getattr(cfg, "n_stats", 0):
        G.set_truncation(args.truncation)  # converted BigGAN-deep weights: BN statistics of this truncation
    if args.standing_stats:
        standing_stats(G, args.standing_stats, args.batch_size, seed=args.seed, truncation=args.truncation)
    classes = None
    if args.classes:
        if not cfg.n_classes:
            raise ValueError("this generator is unconditional: --class does not apply")
        classes = [resolve_class(c, G.class_names, cfg.n_classes) for c in args.classes]

    if args.interp:
        if args.gif is None and args.out is None:
            args.out = "interpolation.png"
        sheet = interpolation_sheet(G, args.rows, args.steps, args.interp, classes, args.seed, args.truncation)
        if args.out:
            save_image(make_grid(sheet, nrow=args.steps), args.out)
            print(f"wrote {args.out}", file=sys.stderr)
        if args.gif:
            save_gif(sheet_frames(sheet, args.rows, args.steps), args.gif)
            print(f"wrote {args.gif}", file=sys.stderr)
        return 0

    if not (args.out or args.png_dir or args.npz):
        args.out = "samples.png"
    if args.n is not None and args.per_class is not None:
        raise ValueError("give --n or --per-class, not both")
    nrow = args.nrow
    if args.n is None and cfg.n_classes:
        per_class = args.per_class or 10
        chosen = classes if classes is not None else list(range(cfg.n_classes))
        y = torch.tensor([c for c in chosen for _ in range(per_class)], dtype=torch.long)
        nrow = nrow or per_class
    else:
        n = args.n if args.n is not None else 64
        if args.per_class is not None:
            raise ValueError("--per-class needs a class-conditional generator; use --n")
        y = torch.tensor([classes[i % len(classes)] for i in range(n)]) if classes else None
    n = len(y) if y is not None else (args.n if args.n is not None else 64)
    nrow = nrow or 10

    # The same draws, in the same order, as G.sample(n, y, truncation, seed=seed): z first, then labels.
    generator = torch.Generator().manual_seed(args.seed)
    z = sample_z(n, cfg.dim_z, args.truncation, args.truncation_mode, generator)
    y = class_labels(n, y, cfg.n_classes, generator)
    device = next(G.parameters()).device
    chunks = []
    with torch.no_grad():
        for i in tqdm(range(0, n, args.batch_size), desc="sampling", unit="batch", disable=n <= args.batch_size,
                      file=sys.stderr):
            yi = y[i:i + args.batch_size].to(device) if y is not None else None
            chunks.append(to_uint8(G(z[i:i + args.batch_size].to(device), yi)))
    x = np.concatenate(chunks)
    if args.out:
        grid = make_grid(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1, nrow=nrow)
        save_image(grid, args.out)
        print(f"wrote {args.out} ({n} images)", file=sys.stderr)
    if args.png_dir:
        out = Path(args.png_dir)
        out.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(x):
            save_image(image, out / (f"{i:06d}_c{int(y[i])}.png" if y is not None else f"{i:06d}.png"))
        print(f"wrote {n} PNGs to {out}", file=sys.stderr)
    if args.npz:
        arrays = {"x": x, "y": (y if y is not None else torch.full((n,), -1)).numpy().astype(np.int64)}
        if args.save_latents:
            arrays["z"] = z.numpy()
        with atomic_path(args.npz) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        print(f"wrote {args.npz} (x {list(x.shape)} uint8, y int64)", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------- info


def add_info_parser(sub) -> None:
    p = sub.add_parser("info", help="describe a preset or a saved model",
                       description="Parameter counts and config of a preset, or the config and classes of a run / "
                                   "weights folder. --list names the presets.")
    p.add_argument("target", nargs="?", help="preset name, or a run / checkpoint / weights folder")
    p.add_argument("--list", action="store_true", help="list the presets")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--set", dest="set_", action="append", metavar="KEY=VALUE",
                   help="change a model config field before counting (repeatable)")
    p.set_defaults(func=cmd_info)


def preset_info(name: str, overrides: dict | None = None) -> dict:
    """Trainable parameter counts and configs of a preset (the models are built on the meta device)."""
    from .models import build_discriminator, build_generator
    from .registry import count_parameters, get_preset, model_config

    config = model_config(name, **(overrides or {}))
    with torch.device("meta"):
        G, D = build_generator(config), build_discriminator(config)
    preset = get_preset(name)
    return {"name": name, "about": preset.get("about", ""), "G_params": count_parameters(G),
            "D_params": count_parameters(D), "model": config.to_dict(), "train": preset.get("train", {})}


def cmd_info(args) -> int:
    from .registry import get_preset, list_models

    if args.list or not args.target:
        rows = [{"name": n, "about": get_preset(n).get("about", "")} for n in list_models()]
        if args.json:
            _print_json(rows)
        else:
            width = max(len(r["name"]) for r in rows)
            for r in rows:
                print(f"{r['name']:<{width}}  {r['about']}")
        return 0
    if Path(args.target).exists():
        from .registry import count_parameters
        from .utils import read_json
        from .weights import load, resolve_weights_dir

        directory = resolve_weights_dir(args.target)
        G = load(args.target)
        info = {"path": str(directory), **read_json(directory / "config.json"), "G_params": count_parameters(G)}
    else:
        info = preset_info(args.target, parse_overrides(args.set_))
    if args.json:
        _print_json(info)
    else:
        for key, value in info.items():
            print(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    return 0


# --------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="scalegan", description="BigGAN-class GANs: train, sample, evaluate, "
                                     "convert, inspect.")
    parser.add_argument("--version", action="version", version=f"scalegan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train_parser(sub)
    add_sample_parser(sub)
    add_info_parser(sub)
    from .convert.cli import add_convert_parser

    add_convert_parser(sub)
    from .metrics.cli import add_eval_parser, add_train_classifier_parser

    add_eval_parser(sub)
    add_train_classifier_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def one_line(message, category, filename, lineno, file=None, line=None):  # warnings read as messages
        print(f"scalegan {args.command}: warning: {message}", file=sys.stderr)

    warnings.showwarning = one_line
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError) as e:
        # Bad input: one clear line instead of a traceback (WeightsError and DatasetError are ValueErrors).
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"scalegan {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
