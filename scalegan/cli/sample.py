"""``scalegan sample``: grids, one PNG per image, NPZ sets and interpolation sheets / GIFs from any generator source,
all drawn through ``scalegan.sample``."""

from __future__ import annotations

import argparse
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..api import load
from ..family import get_family, w_shape
from ..latents import load_latents, save_latents
from ..media import make_grid, save_gif, save_image, sheet_frames
from ..sampling import interpolation_sheet, render, resolve_class, sample, style_mixing_sheet
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


@dataclass
class Outputs:
    """Where ``scalegan sample`` writes: a grid image, one PNG per image, an NPZ (with the latents: a latents file)."""

    grid: str | None = None
    png_dir: str | None = None
    npz: str | None = None
    save_latents: bool = False

    def any(self) -> bool:
        return bool(self.grid or self.png_dir or self.npz)


def mix(G, n: int, layers: range | None, seed: int, truncation: float | None, classes: list[int] | None,
        path: str) -> None:
    """A style-mixing grid of ``n`` row and ``n`` column sources, written to ``path``."""
    layers_w = (w_shape(G) or (0, 0))[0]
    if layers is not None and layers.stop > layers_w:
        raise ValueError(f"--mix-layers {layers.start}-{layers.stop - 1}: this model has W layers 0-{layers_w - 1}")
    sheet = style_mixing_sheet(G, n, layers, seed, truncation, y=classes[0] if classes else None)
    save_image(make_grid(sheet, nrow=n + 1), path)
    print(f"wrote {path}", file=sys.stderr)


def resolve_classes(G, info, names: list[str] | None) -> list[int] | None:
    """``--class`` values as class indices (None: none given)."""
    if not names:
        return None
    if not G.config.n_classes:
        raise ValueError("this generator is unconditional: --class does not apply")
    return [resolve_class(c, info.class_names, G.config.n_classes) for c in names]


def labels_for(n_classes: int, n: int | None, per_class: int | None, classes: list[int] | None,
               nrow: int | None) -> tuple[torch.Tensor | None, int, int]:
    """The class of every image (None: random or unconditional), the number of images and the grid width."""
    if n is not None and per_class is not None:
        raise ValueError("give --n or --per-class, not both")
    if n is None and n_classes:
        per_class = per_class or 10
        chosen = classes if classes is not None else list(range(n_classes))
        y = torch.tensor([c for c in chosen for _ in range(per_class)], dtype=torch.long)
        return y, len(y), nrow or per_class
    if per_class is not None:
        raise ValueError("--per-class needs a class-conditional generator; use --n")
    n = n if n is not None else 64
    y = torch.tensor([classes[i % len(classes)] for i in range(n)]) if classes else None
    return y, n, nrow or 10


def interpolate(G, rows: int, steps: int, kind: str, classes: list[int] | None, seed: int,
                truncation: float | None, truncation_mode: str | None, grid: str | None, gif: str | None) -> None:
    """An interpolation sheet (``grid``) and/or its animation (``gif``)."""
    sheet = interpolation_sheet(G, rows, steps, kind, classes, seed, truncation, truncation_mode)
    if grid:
        save_image(make_grid(sheet, nrow=steps), grid)
        print(f"wrote {grid}", file=sys.stderr)
    if gif:
        save_gif(sheet_frames(sheet, rows, steps), gif)
        print(f"wrote {gif}", file=sys.stderr)


def run(args) -> int:
    G, info = load(args.source, device=args.device, weights=args.weights)
    if args.standing_stats:
        recalibrate = get_family(G).recalibrate
        if recalibrate is None:
            raise ValueError(f"--standing-stats: {info.family} models have no batch statistics to recompute")
        recalibrate(G, args.standing_stats, args.max_batch, seed=args.seed, truncation=args.truncation,
                    class_weights=torch.tensor(info.class_counts) if info.class_counts else None)
    classes = resolve_classes(G, info, args.classes)
    outputs = Outputs(args.grid, args.png_dir, args.npz, args.save_latents)
    if args.latents:
        given = [flag for flag, value in (("--n", args.n), ("--per-class", args.per_class), ("--class", classes),
                                          ("--interp", args.interp), ("--mix", args.mix)) if value]
        if given:
            raise ValueError(f"--latents gives the latents and classes: leave out {given[0]}")
        render_file(G, args.latents, args.truncation, args.max_batch, args.nrow, outputs)
    elif args.mix:
        mix(G, args.mix, args.mix_layers, args.seed, args.truncation, classes, args.grid or "style_mixing.png")
    elif args.interp:
        grid = args.grid if (args.grid or args.gif) else "interpolation.png"
        interpolate(G, args.rows, args.steps, args.interp, classes, args.seed, args.truncation, args.truncation_mode,
                    grid, args.gif)
    else:
        y, n, nrow = labels_for(G.config.n_classes, args.n, args.per_class, classes, args.nrow)
        images, latents, y = sample(G, n, y=y, truncation=args.truncation, seed=args.seed,
                                    truncation_mode=args.truncation_mode, batch_size=args.max_batch,
                                    return_latents=True, progress=True)
        write_outputs(outputs, images, latents, y, nrow, args.truncation)
    return 0


def render_file(G, path: str, truncation: float | None, max_batch: int | None, nrow: int | None,
                outputs: Outputs) -> None:
    """``--latents FILE``: the file's latents and classes, rendered as they are."""
    latents, y, file_truncation = load_latents(path, G.config)
    if truncation is not None and truncation != file_truncation:
        raise ValueError(f"{path} holds truncation {file_truncation}: leave out --truncation (the file's applies)")
    images = render(G, latents, y, file_truncation, max_batch, progress=True)
    write_outputs(outputs, images, latents, y, nrow or 10, file_truncation)


def write_outputs(outputs: Outputs, images: torch.Tensor, latents: torch.Tensor, y: torch.Tensor | None, nrow: int,
                  truncation: float | None) -> None:
    """The outputs asked for (a grid ``samples.png`` when none): grid, PNGs, NPZ (with ``save_latents``: a latents
    file, plus ``z`` as before)."""
    grid = outputs.grid if outputs.any() else "samples.png"
    x, n = to_hwc(images), len(images)
    if grid:
        save_image(make_grid(images, nrow=nrow), grid)
        print(f"wrote {grid} ({n} images)", file=sys.stderr)
    if outputs.png_dir:
        out = Path(outputs.png_dir)
        for i, image in enumerate(x):
            save_image(image, out / (f"{i:06d}_c{int(y[i])}.png" if y is not None else f"{i:06d}.png"))
        print(f"wrote {n} PNGs to {out}", file=sys.stderr)
    if outputs.npz:
        if outputs.save_latents and latents.dim() == 2:
            save_latents(outputs.npz, latents, y, truncation=truncation, x=x, z=latents.numpy())
        elif outputs.save_latents:  # W carries no truncation: it already holds psi
            save_latents(outputs.npz, latents, y, x=x)
        else:
            buffer = io.BytesIO()
            np.savez(buffer, x=x, y=(y if y is not None else torch.full((n,), -1)).numpy().astype(np.int64))
            write_bytes(outputs.npz, buffer.getvalue())
        print(f"wrote {outputs.npz} (x {list(x.shape)} uint8, y int64)", file=sys.stderr)
