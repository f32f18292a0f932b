"""``scalegan convert``: foreign BigGAN checkpoints -> a scalegan weights folder (or download + convert)."""

from __future__ import annotations

import argparse
import sys


def add_convert_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``convert`` subcommand to an argparse ``subparsers`` object; sets ``func=cmd_convert``."""
    p = subparsers.add_parser(
        "convert", help="convert pytorch-pretrained-biggan / BigGAN-PyTorch weights to scalegan weights",
        description="Convert a foreign BigGAN checkpoint into a scalegan weights folder (model.safetensors + "
                    "config.json). SRC: a pytorch-pretrained-biggan folder (pytorch_model.bin + config.json: "
                    "biggan-deep-128/256/512) or a BigGAN-PyTorch G_ema.pth / G.pth (or the folder holding it). "
                    "With --download NAME: fetch a named pretrained model (needs internet) and convert it into "
                    "the cache (SCALEGAN_CACHE, default ~/.cache/scalegan), where scalegan.load(NAME) finds it.")
    p.add_argument("src", nargs="?", help="foreign checkpoint file or folder")
    p.add_argument("out", nargs="?", help="output weights folder (default: the cache folder of --name, if given)")
    p.add_argument("--format", choices=["auto", "pytorch-pretrained-biggan", "biggan-pytorch"], default="auto",
                   help="source format (default: detected from the files)")
    p.add_argument("--weights", choices=["G_ema", "G"], default="G_ema",
                   help="BigGAN-PyTorch folder: which generator to convert (G_ema falls back to G.pth)")
    p.add_argument("--bn-eps", type=float, default=1e-5, help="BigGAN-PyTorch: BN eps (1e-5 in its scripts)")
    p.add_argument("--sn-eps", type=float, default=1e-6, help="BigGAN-PyTorch: SN eps (1e-6 in its ImageNet scripts)")
    p.add_argument("--name", help="store the result in the cache under this pretrained name (see --list)")
    p.add_argument("--download", metavar="NAME", help="download pretrained NAME and convert it into the cache")
    p.add_argument("--list", action="store_true", help="list the named pretrained models and where they are")
    p.set_defaults(func=cmd_convert)
    return p


def cmd_convert(args) -> int:
    from .. import pretrained
    from . import convert, save_converted

    if args.list:
        for name, entry in pretrained.PRETRAINED.items():
            where = pretrained.cache_dir() / name
            state = "cached" if (where / "model.safetensors").is_file() else "not cached"
            print(f"{name:18s} {state:11s} {where}  {entry.about}")
        return 0
    if args.download:
        out = pretrained.download(args.download)
        print(f"wrote {out}", file=sys.stderr)
        return 0
    if not args.src:
        raise ValueError("give SRC (a foreign checkpoint) and OUT, or --download NAME, or --list")
    out = args.out
    if out is None:
        if not args.name:
            raise ValueError("give OUT (the weights folder to write) or --name NAME (to write into the cache)")
        pretrained.get(args.name)  # an unknown name is an error with suggestions
        out = pretrained.cache_dir() / args.name
    fmt = None if args.format == "auto" else args.format
    options = {}
    if fmt == "biggan-pytorch" or (fmt is None and _is_biggan_pytorch(args.src)):
        options = dict(bn_eps=args.bn_eps, sn_eps=args.sn_eps)
    G = convert(args.src, format=fmt, weights=args.weights, **options)
    save_converted(G, out, source=args.src, format=fmt)
    cfg = G.config
    print(f"wrote {out} ({cfg.family}, {cfg.resolution} px, {cfg.n_classes} classes)", file=sys.stderr)
    return 0


def _is_biggan_pytorch(path) -> bool:
    from . import detect_format

    return detect_format(path) == "biggan-pytorch"
