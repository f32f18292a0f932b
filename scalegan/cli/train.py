"""``scalegan train``: every flag is generated from ``TrainConfig`` and from the objective configs of the registered
families, so the help text, the config file keys and ``RUN/train_config.json`` always agree."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path

from ..family import FAMILIES
from ..registry import model_config
from ..training import TrainConfig, train
from ..training.config import FLAT_KEYS, GENERIC, SECTIONS, flatten, objective_keys, upgrade
from ..training.loop import open_training_data
from .options import SHARED_TYPES, HelpFormatter, add_threads, any_float, any_int, parse_overrides

_SKIP = {"model_overrides", "objective"}  # given as --set KEY=VALUE and as the objective flags


def _concrete(cls, f: dataclasses.Field):
    """The flag type of a dataclass field (``float | None`` -> float)."""
    t = typing.get_type_hints(cls)[f.name]
    if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union:
        t = next(a for a in typing.get_args(t) if a is not type(None))
    return t


def _with_default(help_text: str, default) -> str:
    """The help text with the field's default (argparse's is SUPPRESS), unless the text already says it."""
    if "default" in help_text:
        return help_text
    return f"{help_text} (default: {default!r})" if default == "" else f"{help_text} (default: {default})"


def _add_field(group, cls, f: dataclasses.Field, dest: str) -> None:
    t, help_text = _concrete(cls, f), f.metadata.get("help", "")
    flag = "--" + dest.rsplit(".", 1)[-1].replace("_", "-")
    optional = f.metadata.get("optional")
    if optional is not None:  # a switch that also takes one word: --resume, --resume auto, --no-resume
        def value(text: str):
            if text != optional:
                raise argparse.ArgumentTypeError(f"expected nothing or {optional!r}, got {text!r}")
            return text
        group.add_argument(flag, dest=dest, nargs="?", const=True, type=value, default=argparse.SUPPRESS,
                           metavar=optional, help=_with_default(help_text, f.default))
        group.add_argument("--no-" + flag[2:], dest=dest, action="store_false", default=argparse.SUPPRESS,
                           help=argparse.SUPPRESS)
        return
    if t is bool:
        default = "auto" if f.default is None else f.default
        group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=_with_default(help_text, default))
        return
    choices = f.metadata.get("choices")
    kind = SHARED_TYPES.get(dest.rsplit(".", 1)[-1]) or {int: any_int, float: any_float}.get(t, t)  # shared: its type
    group.add_argument(flag, dest=dest, type=kind, default=argparse.SUPPRESS, choices=choices,
                       metavar="{" + ",".join(choices) + "}" if choices else t.__name__.upper(),
                       help=_with_default(help_text, f.default))


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a GAN", formatter_class=HelpFormatter,
        description="Train a model preset on a dataset. Values resolve as: TrainConfig defaults < the preset's "
                    "training values < --config FILE < flags. The resolved config is written to "
                    "RUN/train_config.json.")
    p.add_argument("--config", metavar="FILE", help="JSON file of training config keys (the flag names with "
                   "underscores, e.g. {\"model\": \"biggan-32\", \"lr_g\": 0.0002, \"model_overrides\": {\"ch\": 48}, "
                   "\"objective\": {\"n_d_steps\": 1}}), or a RUN/train_config.json")
    p.add_argument("--set", dest="set_", action="append", metavar="KEY=VALUE", default=None,
                   help="change a model config field (repeatable), e.g. --set ch=48 --set g_attn=[16]")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit without training")
    add_threads(p)  # --device is TrainConfig.device (below), with the shared type
    for f in dataclasses.fields(TrainConfig):
        if f.name not in _SKIP and f.name not in SECTIONS:
            _add_field(p, TrainConfig, f, f.name)
    for name, section in SECTIONS.items():  # one flag per setting, named by its flat key; a help group per section
        group = p.add_argument_group(name, (section.__doc__ or "").strip())
        for g in dataclasses.fields(section):
            _add_field(group, section, g, g.metadata.get("key", g.name))
    group = p.add_argument_group("objective", "settings of the model family's training objective (stored in the "
                                 "config's objective section; a setting of another family is an error)")
    seen = set()
    for family in FAMILIES.values():
        for f in dataclasses.fields(family.objective.Config):
            if f.name not in seen:
                seen.add(f.name)
                _add_field(group, family.objective.Config, f, "objective." + f.name)
    p.set_defaults(func=run)


def _config_file(path: str) -> dict:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ValueError(f"--config {path}: cannot read it ({e.strerror or e}); give a JSON file of training config "
                         "keys") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"--config {path}: not a text file ({e.reason} at byte {e.start}); give a JSON file of "
                         "training config keys") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--config {path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from e
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a JSON object of training config keys, e.g. "
                         "{\"lr_g\": 0.0002}, got " + type(data).__name__)
    data.pop("scalegan_version", None)
    if isinstance(data.get("train"), dict):  # a RUN/train_config.json
        data = data["train"]
    for section in ("model_overrides", "objective"):  # merged below, so checked before
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise ValueError(f"--config {path}: {section} must be a JSON object of field names and values, e.g. "
                             f"{json.dumps(_EXAMPLES[section])}, got {json.dumps(data[section])}")
    return data


_EXAMPLES = {"model_overrides": {"resolution": 64}, "objective": {"n_d_steps": 1}}


def resolve(args) -> TrainConfig:
    """TrainConfig from defaults, the preset, ``--config`` and the flags given on the command line. Resuming a run
    without ``--config`` starts from the run's own ``train_config.json`` (so ``--out-dir RUN --resume`` is enough),
    except for precision and memory layout, which are chosen again for this machine unless given."""
    from_file = flatten(upgrade(_config_file(args.config))) if args.config else {}
    run_config = Path(vars(args).get("out_dir", TrainConfig().out_dir)) / "train_config.json"
    if vars(args).get("resume") and not args.config and run_config.is_file():
        from_file = flatten(upgrade(_config_file(str(run_config))))
        for key in ("precision", "channels_last", "resume"):  # resolved for the machine that wrote it
            from_file.pop(key, None)
    names = GENERIC | set(FLAT_KEYS)
    flags = {k: v for k, v in vars(args).items() if k in names}
    objective_flags = {k.split(".", 1)[1]: v for k, v in vars(args).items() if k.startswith("objective.")}
    merged = {**from_file, **flags}
    merged["objective"] = {**dict(from_file.get("objective") or {}), **objective_flags}
    overrides = {**dict(merged.pop("model_overrides", None) or {}), **parse_overrides(args.set_)}
    for key in overrides:  # --set is for model fields; a training setting has its own flag
        if key in names or key in objective_keys():
            raise ValueError(f"--set {key}: {key} is a training setting, not a model config field; use "
                             f"--{key.replace('_', '-')} VALUE (or the key {key!r} in --config)")
    model = merged.pop("model", TrainConfig().model)
    if not isinstance(model, str):
        raise ValueError(f"model must be a preset name, got {model!r}")
    return TrainConfig.from_preset(model, **merged, model_overrides=overrides)


def dry_run(cfg: TrainConfig) -> dict:
    """What a run would use: the generic config and the objective section (both resolved), the hardware, the model
    and the dataset (or why the dataset cannot be opened)."""
    resolved, hardware = cfg.resolve_hardware(cfg.device)
    report = {"train": resolved.to_dict(), "objective": dataclasses.asdict(cfg.objective_config()),
              "family": cfg.family.name, "hardware": hardware}
    try:
        dataset, mcfg = open_training_data(resolved)
        report["model"], report["dataset"] = mcfg.to_dict(), dataset.describe()
    except (ValueError, OSError) as e:  # a dry run reports what a real run would fail on
        report["model"] = model_config(cfg.model, **cfg.model_overrides).to_dict()
        report["dataset_error"] = str(e)
    return report


def run(args) -> int:
    cfg = resolve(args)
    cfg.validate()
    model_config(cfg.model, **cfg.model_overrides)  # --set errors before any data is read
    if args.dry_run:
        print(json.dumps(dry_run(cfg), indent=2, default=str))
        return 0
    if Path(cfg.out_dir).exists() and not Path(cfg.out_dir).is_dir():
        raise ValueError(f"--out-dir {cfg.out_dir} is a file; the run needs a folder (new or a run to --resume)")
    summary = train(cfg)
    if "checkpoint" not in summary:  # ranks other than 0 of a distributed run write nothing
        return 0
    print(f"trained to step {summary['step']} in {summary['wall_seconds']:.0f} s "
          f"({summary['s_per_it']:.2f} s/it); samples: {summary['final_grid']}; weights: {summary['checkpoint']}",
          file=sys.stderr)
    return 0
