"""``scalegan sample``: grids, one PNG per image, NPZ sets and interpolation sheets / GIFs from any generator source,
all drawn through ``scalegan.sample``."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import torch

from ..api import load
from ..edit import render
from ..family import get_family
from ..latents import load_latents, save_latents
from ..sampling import (
    interpolation_sheet,
    make_grid,
    resolve_class,
    sample,
    save_gif,
    save_image,
    sheet_frames,
    style_mixing_sheet,
)
from ..utils import to_hwc, write_bytes
from .options import HelpFormatter, add_device, add_generator_source, add_sampling, natural_int, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sample", help="generate images from a trained generator",
        formatter_class=HelpFormatter,
        description="Generate images from any generator source. Writes a grid image (--grid), one PNG per image "
                    "(--png-dir) and/or an NPZ with x (uint8 N x H x W x C) and y (int64) (--npz). With no "
                    "output flag it writes --grid samples.png.")
    add_generator_source(p)
    p.add_argument("--grid", metavar="FILE", help="grid image (PNG; one row per class with --per-class)")
    p.add_argument("--png-dir", metavar="DIR", help="write every image as DIR/NNNNNN_cCLASS.png")
    p.add_argument("--npz", metavar="FILE", help="write x (uint8 NHWC) and y (int64) to this .npz file")
    p.add_argument("--save-latents", action="store_true", help="also store the latents in the NPZ (latents and z, "
                   "with truncation): a latents file that --latents, `scalegan edit` and the server read back")
    p.add_argument("--latents", metavar="FILE", help="render exactly the latents and classes of this latents file "
                   "(its truncation applies to z; StyleGAN2 W is rendered as it is) instead of drawing them")
    p.add_argument("--per-class", type=positive_int, default=None,
                   help="N samples of every class (or of the --class classes); default 10 when no --n")
    p.add_argument("--class", dest="classes", action="append", metavar="CLASS",
                   help="class index or name (repeatable); default: all classes")
    add_sampling(p, n_default=None)
    p.add_argument("--interp", choices=["z", "class"], default=None,
                   help="write an interpolation sheet instead: in z at a fixed class, or between classes")
    p.add_argument("--steps", type=positive_int, default=8, help="interpolation steps per row")
    p.add_argument("--rows", type=positive_int, default=8, help="interpolation rows")
    p.add_argument("--gif", metavar="FILE", help="with --interp: also write the interpolation as an animated GIF")
    p.add_argument("--mix", type=positive_int, default=None, metavar="N",
                   help="write a style-mixing grid instead (StyleGAN2): N row and N column sources, each cell a row "
                   "source with the styles of --mix-layers from a column source")
    p.add_argument("--mix-layers", type=_layers, default=None, metavar="A-B",
                   help="with --mix: the W layers taken from the column sources, e.g. 0-3 (coarse) or 4-7 (fine); "
                   "default: the first half")
    p.add_argument("--standing-stats", type=natural_int, default=0, metavar="N",
                   help="recompute BN statistics over N generated batches before sampling (families with BN)")
    p.add_argument("--nrow", type=positive_int, default=None, help="images per grid row (default: --per-class, "
                   "else 10)")
    add_device(p)
    p.set_defaults(func=run)


def _layers(text: str) -> range:
    """``--mix-layers``: ``A-B`` (inclusive) or one index."""
    first, _, last = text.partition("-")
    try:
        a, b = int(first), int(last or first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected layers as A-B (e.g. 0-3), got {text!r}") from None
    if a < 0 or b < a:
        raise argparse.ArgumentTypeError(f"expected layers as A-B with 0 <= A <= B, got {text!r}")
    return range(a, b + 1)


def _mix(args, G, classes) -> int:
    num_ws = getattr(G.config, "num_ws", 0)
    if args.mix_layers is not None and args.mix_layers.stop > num_ws:
        raise ValueError(f"--mix-layers {args.mix_layers.start}-{args.mix_layers.stop - 1}: this model has W layers "
                         f"0-{num_ws - 1}")
    y = classes[0] if classes else None
    sheet = style_mixing_sheet(G, args.mix, args.mix_layers, args.seed, args.truncation, y=y)
    args.grid = args.grid or "style_mixing.png"
    save_image(make_grid(sheet, nrow=args.mix + 1), args.grid)
    print(f"wrote {args.grid}", file=sys.stderr)
    return 0


def _classes(args, G, info) -> list[int] | None:
    if not args.classes:
        return None
    if not G.config.n_classes:
        raise ValueError("this generator is unconditional: --class does not apply")
    return [resolve_class(c, info.class_names, G.config.n_classes) for c in args.classes]


def _labels(args, G, classes) -> tuple[torch.Tensor | None, int, int]:
    """The class of every image (None: random or unconditional), the number of images and the grid width."""
    n_classes = G.config.n_classes
    if args.n is not None and args.per_class is not None:
        raise ValueError("give --n or --per-class, not both")
    if args.n is None and n_classes:
        per_class = args.per_class or 10
        chosen = classes if classes is not None else list(range(n_classes))
        y = torch.tensor([c for c in chosen for _ in range(per_class)], dtype=torch.long)
        return y, len(y), args.nrow or per_class
    if args.per_class is not None:
        raise ValueError("--per-class needs a class-conditional generator; use --n")
    n = args.n if args.n is not None else 64
    y = torch.tensor([classes[i % len(classes)] for i in range(n)]) if classes else None
    return y, n, args.nrow or 10


def _interpolate(args, G, classes) -> int:
    if args.gif is None and args.grid is None:
        args.grid = "interpolation.png"
    sheet = interpolation_sheet(G, args.rows, args.steps, args.interp, classes, args.seed, args.truncation,
                                args.truncation_mode)
    if args.grid:
        save_image(make_grid(sheet, nrow=args.steps), args.grid)
        print(f"wrote {args.grid}", file=sys.stderr)
    if args.gif:
        save_gif(sheet_frames(sheet, args.rows, args.steps), args.gif)
        print(f"wrote {args.gif}", file=sys.stderr)
    return 0


def run(args) -> int:
    G, info = load(args.source, device=args.device, weights=args.weights)
    if args.standing_stats:
        recalibrate = get_family(G).recalibrate
        if recalibrate is None:
            raise ValueError(f"--standing-stats: {info.family} models have no batch statistics to recompute")
        recalibrate(G, args.standing_stats, args.max_batch, seed=args.seed, truncation=args.truncation)
    classes = _classes(args, G, info)
    if args.latents:
        return _render_file(args, G, classes)
    if args.mix:
        return _mix(args, G, classes)
    if args.interp:
        return _interpolate(args, G, classes)
    if not (args.grid or args.png_dir or args.npz):
        args.grid = "samples.png"
    y, n, nrow = _labels(args, G, classes)
    images, latents, y = sample(G, n, y=y, truncation=args.truncation, seed=args.seed,
                                truncation_mode=args.truncation_mode, batch_size=args.max_batch,
                                return_latents=True, progress=True)
    _write(args, images, latents, y, nrow, args.truncation)
    return 0


def _render_file(args, G, classes) -> int:
    """``--latents FILE``: the file's latents and classes, rendered as they are."""
    given = [flag for flag, value in (("--n", args.n), ("--per-class", args.per_class), ("--class", classes),
                                      ("--interp", args.interp), ("--mix", args.mix)) if value]
    if given:
        raise ValueError(f"--latents gives the latents and classes: leave out {given[0]}")
    latents, y, truncation = load_latents(args.latents, G.config)
    if args.truncation is not None and args.truncation != truncation:
        raise ValueError(f"{args.latents} holds truncation {truncation}: leave out --truncation (the file's applies)")
    if not (args.grid or args.png_dir or args.npz):
        args.grid = "samples.png"
    images = render(G, latents, y, truncation, args.max_batch, progress=True)
    _write(args, images, latents, y, args.nrow or 10, truncation)
    return 0


def _write(args, images: torch.Tensor, latents: torch.Tensor, y: torch.Tensor | None, nrow: int,
           truncation: float | None) -> None:
    """The outputs asked for: --grid, --png-dir, --npz (with --save-latents: a latents file, plus ``z`` as before)."""
    x, n = to_hwc(images), len(images)
    if args.grid:
        save_image(make_grid(images, nrow=nrow), args.grid)
        print(f"wrote {args.grid} ({n} images)", file=sys.stderr)
    if args.png_dir:
        out = Path(args.png_dir)
        for i, image in enumerate(x):
            save_image(image, out / (f"{i:06d}_c{int(y[i])}.png" if y is not None else f"{i:06d}.png"))
        print(f"wrote {n} PNGs to {out}", file=sys.stderr)
    if args.npz:
        if args.save_latents and latents.dim() == 2:
            save_latents(args.npz, latents, y, truncation=truncation, x=x, z=latents.numpy())
        elif args.save_latents:  # W carries no truncation: it already holds psi
            save_latents(args.npz, latents, y, x=x)
        else:
            buffer = io.BytesIO()
            np.savez(buffer, x=x, y=(y if y is not None else torch.full((n,), -1)).numpy().astype(np.int64))
            write_bytes(args.npz, buffer.getvalue())
        print(f"wrote {args.npz} (x {list(x.shape)} uint8, y int64)", file=sys.stderr)
