"""Options shared by the subcommands, so that one flag name means one thing everywhere (README: "Flags").

Value types check their input where argparse reads it: a bad value is one error line that names the flag."""

from __future__ import annotations

import argparse
import json

from ..hardware import parse_device
from ..latents import TRUNCATION_MODES


# --------------------------------------------------------------------------------------------- value types
def _number(kind, low: float | None, strict: bool, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value != value or (low is not None and (value <= low if strict else value < low)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = _number(int, 0, True, "an integer >= 1")
natural_int = _number(int, 0, False, "an integer >= 0")
positive_float = _number(float, 0.0, True, "a number > 0")
natural_float = _number(float, 0.0, False, "a number >= 0")
any_int = _number(int, None, False, "an integer")
any_float = _number(float, None, False, "a number")


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


# --------------------------------------------------------------------------------------------- option groups
def add_device(p: argparse.ArgumentParser, default: str = "cpu") -> None:
    """``--device`` (the torch device the command computes on) and ``--threads`` (torch CPU threads)."""
    p.add_argument("--device", type=device, default=default, help="torch device: cpu, cuda, cuda:N")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")


def add_generator_source(p: argparse.ArgumentParser) -> None:
    """The positional generator source (anything ``scalegan.load`` accepts) and ``--weights``."""
    p.add_argument("source", help="run folder, checkpoint folder, weights folder, .safetensors file, pretrained "
                   "name (see `scalegan convert --list`) or foreign checkpoint")
    p.add_argument("--weights", choices=["model", "G", "G_ema"], default="model",
                   help="which generator of a training checkpoint (model = the EMA one when trained with EMA)")


def add_sampling(p: argparse.ArgumentParser, n_default: int | None) -> None:
    """``--n``, ``--seed``, ``--truncation``, ``--truncation-mode`` and ``--max-batch``: how images are drawn
    (through ``scalegan.sample``, the same draws for the same values in every command)."""
    p.add_argument("--n", type=positive_int, default=n_default, help="number of images to generate")
    p.add_argument("--seed", type=any_int, default=0, help="the same seed gives the same images")
    p.add_argument("--truncation", type=positive_float, default=None, help="truncation, e.g. 0.5; default: none")
    p.add_argument("--truncation-mode", choices=TRUNCATION_MODES, default=None,
                   help="resample: redraw |z| entries above the threshold (the paper's trick); scale: truncation * "
                   "truncnorm(-2, 2) (pytorch-pretrained-biggan). Default: the model's own (scale for converted "
                   "BigGAN-deep, whose BN statistics assume it; resample otherwise)")
    add_max_batch(p)


def add_max_batch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-batch", type=positive_int, default=100, help="most images per forward pass")


def add_reference(p: argparse.ArgumentParser) -> None:
    """The reference set of an evaluation: ``--ref`` (a dataset spec, as ``train --data``) and its options."""
    p.add_argument("--ref", metavar="DATASET", help="reference dataset spec (as for train --data)")
    p.add_argument("--ref-split", default="train", choices=["train", "test"], help="reference split")
    p.add_argument("--ref-n", type=positive_int, help="reference images (default: the whole split; a seeded subset "
                   "otherwise)")
    add_data_root(p)


def add_data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="directory of the dataset files when a dataset spec names no location")
