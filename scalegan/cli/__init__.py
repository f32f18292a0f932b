"""The ``scalegan`` command: ``prepare``, ``train``, ``sample``, ``info``, ``convert``, ``eval``,
``train-classifier``, ``export``, ``serve``, ``invert``, ``edit``, ``verify``.

Shared options (device, generator source, sampling, reference set, outputs) come from ``cli/options.py``, so a
flag name means one thing in every subcommand (README: "Command-line flags"). Bad input is one error line, exit
status 2."""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings

import torch

from ..training.distributed import GroupError
from ..utils import __version__
from . import convert, eval, export, info, sample, serve, train
from . import edit as edit_cmd
from . import invert as invert_cmd
from . import prepare as prepare_cmd
from . import verify as verify_cmd
from .options import parse_overrides


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``scalegan CMD: error: ...`` and a pointer to --help, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="scalegan", description="Class-conditional GANs (BigGAN, BigGAN-deep, StyleGAN2): prepare "
                     "data, train, sample, evaluate, convert, inspect, export, serve, invert, edit, verify.")
    parser.add_argument("--version", action="version", version=f"scalegan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    prepare_cmd.add_parser(sub)
    train.add_parser(sub)
    sample.add_parser(sub)
    info.add_parser(sub)
    convert.add_parser(sub)
    eval.add_eval_parser(sub)
    eval.add_train_classifier_parser(sub)
    export.add_parser(sub)
    serve.add_parser(sub)
    invert_cmd.add_parser(sub)
    edit_cmd.add_parser(sub)
    verify_cmd.add_parser(sub)
    parser.commands = sub.choices  # name -> subcommand parser
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns its exit status (2 for bad input, with one line on stderr)."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # named by the subcommand's parser (`scalegan train: error: ...`), not the top-level one
            parser.commands[args.command].error(
                f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # --help, --version and argument errors
        return int(e.code or 0)

    def one_line(message, category, filename, lineno, file=None, line=None):  # warnings read as messages
        print(f"scalegan {args.command}: warning: {message}", file=sys.stderr)

    warnings.showwarning = one_line
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (ValueError, KeyError, OSError, NotImplementedError) as e:
        # Bad input (a value, a path that cannot be read or written): one clear line instead of a traceback
        # (WeightsError and DatasetError are ValueErrors).
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        if isinstance(e, OSError) and e.filename and e.strerror:
            message = f"{e.filename}: {e.strerror}"
        message = " ".join(str(message).split()) or type(e).__name__  # one line, even from a library's message
        print(f"scalegan {args.command}: error: {message}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a distributed run's group failed: a barrier timed out, or a rank was lost
        rank = os.environ.get("RANK")
        lost = isinstance(e, torch.distributed.DistError) or _LOST.search(str(e))
        if rank is None or not (isinstance(e, GroupError) or lost):
            raise
        message = " ".join(str(e).split())
        if not isinstance(e, GroupError):  # gloo's / NCCL's words, then what they mean here
            message = (f"lost contact with another rank ({message[:160]}): the first rank to fail says why in its "
                       "own error line")
        print(f"scalegan {args.command}: error: rank {rank}: {message}", file=sys.stderr)
        return 1


_LOST = re.compile(r"gloo|NCCL|Connection closed|Connection reset|Broken pipe", re.IGNORECASE)


__all__ = ["build_parser", "main", "parse_overrides"]
