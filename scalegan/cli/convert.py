"""``scalegan convert``: foreign BigGAN / StyleGAN2-ADA checkpoints -> a scalegan weights folder (or download +
convert)."""

from __future__ import annotations

import argparse
import sys

import torch

from .. import pretrained
from ..convert import CONVERTERS, FORMATS, convert, detect_format, save_converted
from ..sampling import sample
from ..sources import resolve_source
from .options import HelpFormatter, add_device, add_weights, positive_float


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert", help="convert BigGAN (pytorch-pretrained-biggan, BigGAN-PyTorch) or StyleGAN2-ADA weights",
        formatter_class=HelpFormatter,
        description="Convert a foreign checkpoint into a scalegan weights folder (model.safetensors + "
                    "config.json). SRC: a pytorch-pretrained-biggan folder (pytorch_model.bin + config.json: "
                    "biggan-deep-128/256/512), a BigGAN-PyTorch G_ema.pth / G.pth (or the folder holding it), or a "
                    "stylegan2-ada-pytorch network pickle (NETWORK.pkl: its G_ema; read without running any code "
                    "from the file). "
                    "With --download NAME: fetch a named pretrained model (needs internet) and convert it into "
                    "the cache (SCALEGAN_CACHE, default ~/.cache/scalegan), where scalegan.load(NAME) finds it.")
    p.add_argument("src", nargs="?", help="foreign checkpoint file or folder")
    p.add_argument("out", nargs="?", help="output weights folder (default: the cache folder of --name, if given)")
    p.add_argument("--source-format", choices=["auto", *FORMATS], default="auto",
                   help="format of SRC (default: detected from the files)")
    add_weights(p)  # as in sample and eval: model and G_ema take G_ema.pth (G.pth when there is none), G G.pth
    for converter in CONVERTERS.values():  # each format's own options
        for flag, kwargs in converter.options:
            p.add_argument(flag, **{**kwargs, "type": positive_float} if kwargs.get("type") is float else kwargs)
    p.add_argument("--name", help="store the result in the cache under this pretrained name (see --list)")
    p.add_argument("--download", metavar="NAME", help="download pretrained NAME and convert it into the cache")
    p.add_argument("--list", action="store_true", help="list the named pretrained models and where they are")
    add_device(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name, entry in pretrained.PRETRAINED.items():
            where = pretrained.cache_dir() / name
            state = "cached" if (where / "model.safetensors").is_file() else "not cached"
            print(f"{name:22s} {state:11s} {where}  {entry.about}")
        return 0
    if args.download:
        print(f"wrote {pretrained.download(args.download)}", file=sys.stderr)
        return 0
    if not args.src:
        raise ValueError("give SRC (a foreign checkpoint) and OUT, or --download NAME, or --list")
    out = args.out
    if out is None:
        if not args.name:
            raise ValueError("give OUT (the weights folder to write) or --name NAME (to write into the cache)")
        out = pretrained.cache_dir() / pretrained.get(args.name).name  # unknown: an error with suggestions
    fmt = None if args.source_format == "auto" else args.source_format
    source = resolve_source(args.src)  # the one resolver: a path (foreign or scalegan's) or a pretrained name
    if source.kind == "pretrained":
        raise ValueError(f"{args.src} is a pretrained name: `scalegan convert --download {source.name}` fetches and "
                         "converts it into the cache (or give the downloaded files as SRC)")
    converter = CONVERTERS.get(fmt or detect_format(args.src))
    names = [flag.lstrip("-").replace("-", "_") for flag, _ in (converter.options if converter else ())]
    options = {name: getattr(args, name) for name in names}
    G, info = convert(args.src, format=fmt, weights="G" if args.weights == "G" else "G_ema", **options)
    _check(G, args.device)
    save_converted(G, info, out, source=args.src, format=fmt)
    cfg = G.config
    print(f"wrote {out} ({cfg.family}, {cfg.resolution} px, {cfg.n_classes} classes; one test image generated "
          f"on {args.device})", file=sys.stderr)
    return 0


def _check(G, device: str) -> None:
    """Generate one image on ``device`` before writing anything: a conversion that gives non-finite pixels is an
    error, not a weights folder."""
    image = sample(G.to(device), 1, seed=0)
    G.to("cpu")
    if not torch.isfinite(image).all():
        raise ValueError("the converted generator produces non-finite pixels: the source checkpoint is damaged")
