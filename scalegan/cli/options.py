"""Options shared by the subcommands, so that one flag name means one thing everywhere (README: "Command-line
flags"; tests/test_cli_flags.py checks that a flag name has one type, one set of choices and one action kind in
every subcommand, and that the README's table lists it).

Value types check their input where argparse reads it: a bad value is one error line that names the flag."""

from __future__ import annotations

import argparse
import json
import math

from ..hardware import parse_device
from ..latents import TRUNCATION_MODES

DEFAULT_DATA = "fashion-mnist"  # TrainConfig.data's default too: --data means the same in train and train-classifier


# --------------------------------------------------------------------------------------------- value types
def _number(kind, low: float | None, strict: bool, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        out_of_range = low is not None and (value <= low if strict else value < low)
        if (kind is float and not math.isfinite(value)) or out_of_range:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = _number(int, 0, True, "an integer >= 1")
natural_int = _number(int, 0, False, "an integer >= 0")
positive_float = _number(float, 0.0, True, "a finite number > 0")
natural_float = _number(float, 0.0, False, "a finite number >= 0")
any_int = _number(int, None, False, "an integer")
any_float = _number(float, None, False, "a finite number")


def port(text: str) -> int:
    """``--port``: a TCP port, 1 to 65535 (a larger number would fail only once the server binds)."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port in 1-65535, got {text!r}")
    return value


def device(text: str) -> str:
    """``--device``: checked against this machine (``cuda`` without CUDA is an error, not a crash later)."""
    try:
        parse_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def parse_overrides(items: list[str] | None) -> dict:
    """``--set`` values: ``["ch=48", "g_attn=[16]"]`` -> ``{"ch": 48, "g_attn": (16,)}`` (JSON where it parses,
    else the plain string; the model config then checks types and ranges)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r} (e.g. --set ch=48)")
        try:
            parsed = json.loads(value.strip())
        except json.JSONDecodeError:
            parsed = value.strip()
        out[key.strip()] = tuple(parsed) if isinstance(parsed, list) else parsed
    return out


# Value types of the flags that ``scalegan train`` generates from TrainConfig and that other subcommands share:
# the generated flag takes the shared type, so e.g. --batch-size 0 is the same error in train and train-classifier.
SHARED_TYPES = {
    "device": device,
    "seed": any_int,
    "batch_size": positive_int,
    "standing_stats": natural_int,
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` unless the help text already says what the default is, or there is none."""

    def _get_help_string(self, action):
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


# --------------------------------------------------------------------------------------------- option groups
def add_device(p: argparse.ArgumentParser, default: str = "cpu") -> None:
    """``--device`` (the torch device the command computes on) and ``--threads`` (torch CPU threads)."""
    p.add_argument("--device", type=device, default=default, help="torch device: cpu, cuda, cuda:N")
    add_threads(p)


def add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads`` alone (``scalegan train`` generates its ``--device`` from TrainConfig)."""
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")


WEIGHTS = ("model", "G", "G_ema")


def add_weights(p: argparse.ArgumentParser) -> None:
    """``--weights``: which generator of a checkpoint (``scalegan.load``'s ``weights``)."""
    p.add_argument("--weights", choices=WEIGHTS, default="model",
                   help="which generator of a training checkpoint, BigGAN-PyTorch folder or StyleGAN2-ADA network "
                   "pickle: model = the sampling one (the EMA one when there is one), G = the trained one, G_ema = "
                   "the EMA one (BigGAN-PyTorch: G.pth when there is no G_ema.pth; pickles: G when there is no G_ema)")


def add_generator_source(p: argparse.ArgumentParser) -> None:
    """The positional generator source (anything ``scalegan.load`` accepts) and ``--weights``."""
    p.add_argument("source", help="run folder, checkpoint folder, weights folder, .safetensors file, pretrained "
                   "name (see `scalegan convert --list`) or foreign checkpoint")
    add_weights(p)


def add_sampling(p: argparse.ArgumentParser, n_default: int | None) -> None:
    """``--n``, ``--seed``, ``--truncation``, ``--truncation-mode`` and ``--max-batch``: how images are drawn
    (through ``scalegan.sample``, the same draws for the same values in every command)."""
    p.add_argument("--n", type=positive_int, default=n_default, help="number of images to generate")
    p.add_argument("--seed", type=any_int, default=0, help="the same seed gives the same images")
    add_truncation(p, "truncation, e.g. 0.5; default: none")
    p.add_argument("--truncation-mode", choices=TRUNCATION_MODES, default=None,
                   help="resample: redraw |z| entries above the threshold (the paper's trick); scale: truncation * "
                   "truncnorm(-2, 2) (pytorch-pretrained-biggan). Default: the model's own (scale for converted "
                   "BigGAN-deep, whose BN statistics assume it; resample otherwise)")
    add_max_batch(p)


def add_truncation(p: argparse.ArgumentParser, help: str) -> None:
    """``--truncation``: a number > 0, default none (sampling: how z is drawn; export: what the file is made for)."""
    p.add_argument("--truncation", type=positive_float, default=None, help=help)


def add_max_batch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-batch", type=positive_int, default=100, help="most images per forward pass")


def add_reference(p: argparse.ArgumentParser) -> None:
    """The reference set of an evaluation: ``--ref`` (a dataset spec, as ``train --data``) and its options."""
    p.add_argument("--ref", metavar="DATASET", help="reference dataset spec (as for train --data)")
    p.add_argument("--ref-split", default="train", choices=["train", "test"], help="reference split")
    p.add_argument("--ref-n", type=positive_int, help="reference images (default: the whole split; a seeded subset "
                   "otherwise)")
    add_data_root(p)


def add_data(p: argparse.ArgumentParser) -> None:
    """``--data`` (a dataset spec, as ``scalegan train --data``) and ``--data-root``."""
    p.add_argument("--data", default=DEFAULT_DATA, help="dataset spec: fashion-mnist, mnist, cifar10:DIR, "
                   "cifar100:DIR, folder:DIR, npz:FILE, idx:DIR, or a path (auto-detected)")
    add_data_root(p)


def add_data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="directory of the dataset files when a dataset spec names no location")


def add_out_dir(p: argparse.ArgumentParser, help: str, required: bool = False) -> None:
    """``--out-dir DIR``: the folder the command writes into (``scalegan train`` generates its own from
    TrainConfig.out_dir, with the same meaning)."""
    p.add_argument("--out-dir", metavar="DIR", required=required, help=help)
