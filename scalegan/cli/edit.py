"""``scalegan edit``: closed-form editing directions (SeFa) and class morphs of the latents of a latents file (or of
latents drawn from a seed): edited images, sheets of the first directions, walks as GIF or MP4, edited latents."""

from __future__ import annotations

import io
import sys

import numpy as np
import torch

from ..api import load
from ..edit import apply_direction, check_direction, class_morph, directions, latent_space, strengths, sweep
from ..latents import load_latents, save_latents
from ..media import make_grid, save_animation, save_image, sheet_frames
from ..sampling import draw, render, resolve_class
from ..utils import to_hwc, write_bytes
from .options import HelpFormatter, add_device, add_generator_source, add_sampling, any_float, natural_int, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "edit", help="edit latents along closed-form directions (SeFa) or morph their class",
        formatter_class=HelpFormatter,
        description="Move the latents of a latents file (--latents, from `scalegan sample --npz F --save-latents` or "
                    "`scalegan invert`; without it: --n latents drawn from --seed) along editing direction "
                    "--direction by --strength, and write the edited images (--grid), the edited images and latents "
                    "(--npz, --save-latents), a sheet of the first K directions (--sheet K), a class morph towards "
                    "--morph CLASS, or a walk (--walk FILE.gif|FILE.mp4). Directions are SeFa's: eigenvectors of "
                    "A^T A for the weights A that first take the latent (z; W for StyleGAN2).")
    add_generator_source(p)
    p.add_argument("--latents", metavar="FILE", help="latents file to edit (NPZ: latents, y, truncation); default: "
                   "--n latents drawn from --seed")
    p.add_argument("--direction", type=natural_int, default=0, metavar="K",
                   help="editing direction: 0 = the largest eigenvalue")
    p.add_argument("--strength", type=any_float, default=3.0, metavar="S",
                   help="how far to move along the direction (sheets and walks: from -|S| to |S|)")
    p.add_argument("--sheet", type=positive_int, default=None, metavar="K",
                   help="write a sheet of the first K directions instead: rows = directions (one block per latent), "
                   "columns = --steps strengths from -S to S")
    p.add_argument("--morph", metavar="CLASS", help="morph the class of every latent towards CLASS (index or name) "
                   "instead: columns = --steps mixes of the two classes")
    p.add_argument("--walk", metavar="FILE", help="also write a walk along the direction (or the morph) as an "
                   "animated .gif or an .mp4 (MP4 needs the serve extra)")
    p.add_argument("--steps", type=positive_int, default=8, help="columns of a sheet or morph, frames of a walk")
    p.add_argument("--fps", type=positive_int, default=12, help="frames per second of a walk")
    p.add_argument("--grid", metavar="FILE", help="image grid (PNG): the edited images, the sheet or the morph. "
                   "Default edit.png when no other output is given")
    p.add_argument("--npz", metavar="FILE", help="write x (uint8 NHWC) and y (int64) of the edited images")
    p.add_argument("--save-latents", action="store_true", help="also store the edited latents in the NPZ (a latents "
                   "file: StyleGAN2 edits are W)")
    p.add_argument("--class", dest="classes", action="append", metavar="CLASS",
                   help="without --latents: class index or name of the drawn latents (repeatable); default: random")
    add_sampling(p, n_default=None)
    add_device(p)
    p.set_defaults(func=run)


def _inputs(args, G, info) -> tuple[torch.Tensor, torch.Tensor | None, float | None]:
    """The latents to edit, their classes and truncation: from --latents, or drawn from --seed."""
    if args.latents:
        given = [flag for flag, value in (("--n", args.n), ("--class", args.classes)) if value is not None]
        if given:
            raise ValueError(f"{given[0]} draws latents; --latents gives them: leave out {given[0]}")
        latents, y, truncation = load_latents(args.latents, G.config)
        if args.truncation is not None and args.truncation != truncation:
            raise ValueError(f"{args.latents} holds truncation {truncation}: leave out --truncation")
        return latents, y, truncation
    n = args.n or 8
    y = None
    if args.classes:
        if not G.config.n_classes:
            raise ValueError("this generator is unconditional: --class does not apply")
        chosen = [resolve_class(c, info.class_names, G.config.n_classes) for c in args.classes]
        y = torch.tensor([chosen[i % len(chosen)] for i in range(n)])
    latents, y = draw(G, n, y, args.truncation, torch.Generator().manual_seed(args.seed), args.truncation_mode)
    return latents, y, args.truncation


def _check(args, G) -> None:
    if args.sheet is not None:
        check_direction(G, args.sheet - 1, "--sheet")
    check_direction(G, args.direction, "--direction")
    if args.npz is None and args.save_latents:
        raise ValueError("--save-latents stores the latents in the NPZ: give --npz FILE")
    if args.npz and (args.sheet or args.morph):
        raise ValueError("--npz writes the images of a direction edit: leave out --sheet and --morph")
    if args.morph is not None and args.sheet is not None:
        raise ValueError("give --sheet or --morph, not both")
    if args.walk and not args.walk.lower().endswith((".gif", ".mp4")):
        raise ValueError(f"--walk {args.walk}: write the walk as .gif or .mp4")
    if (args.sheet or args.morph or args.walk) and args.steps < 2:
        raise ValueError("--steps must be >= 2 for a sheet, morph or walk")


def run(args) -> int:
    G, info = load(args.source, device=args.device, weights=args.weights)
    _check(args, G)
    latents, y, truncation = _inputs(args, G, info)
    target = None
    if args.morph is not None:
        if not G.config.n_classes:
            raise ValueError("--morph: this generator is unconditional (it has no classes to morph)")
        target = resolve_class(args.morph, info.class_names, G.config.n_classes)
    if not (args.grid or args.npz or args.walk):
        args.grid = "edit.png"
    k = max(args.sheet or 0, args.direction + 1)
    vectors, eigenvalues = directions(G, k)
    space, _ = latent_space(G)
    print(f"{len(latents)} latents; direction {args.direction} in {space} (eigenvalue {eigenvalues[args.direction]:.4g}"
          f", largest {eigenvalues[0]:.4g})", file=sys.stderr)
    batch = dict(truncation=truncation, batch_size=args.max_batch, progress=True)
    steps = max(args.steps, 2)
    if target is not None:
        grid = class_morph(G, latents, y, target, steps, **batch)  # [n, steps, C, H, W]
        _write_grid(args.grid, grid.flatten(0, 1), steps)
    elif args.sheet:
        grid = sweep(G, latents, y, vectors[:args.sheet], strengths(args.strength, steps), **batch)
        _write_grid(args.grid, grid.flatten(0, 2), steps)
    else:
        edited = apply_direction(G, latents, y, vectors[args.direction], args.strength, truncation)
        images = render(G, edited, y, truncation if edited.dim() == 2 else None, args.max_batch, progress=True,
                        device="cpu")
        _write_grid(args.grid, images, min(len(images), 10))
        if args.npz:
            _write_npz(args.npz, images, y, edited if args.save_latents else None, truncation)
    if args.walk:
        if target is None:
            grid = sweep(G, latents, y, vectors[args.direction:args.direction + 1], strengths(args.strength, steps),
                         **batch)[:, 0]
        save_animation(sheet_frames(grid.flatten(0, 1), len(grid), steps), args.walk, args.fps)
        print(f"wrote {args.walk} ({2 * steps - 2} frames)", file=sys.stderr)
    return 0


def _write_grid(path: str | None, images: torch.Tensor, nrow: int) -> None:
    if path:
        save_image(make_grid(images, nrow=nrow), path)
        print(f"wrote {path}", file=sys.stderr)


def _write_npz(path: str, images: torch.Tensor, y: torch.Tensor | None, latents: torch.Tensor | None,
               truncation: float | None) -> None:
    """``x`` and ``y``; with latents, a latents file (``save_latents``) holding ``x`` too. W carries no truncation:
    it already holds psi."""
    x = to_hwc(images)
    if latents is not None:
        save_latents(path, latents, y, truncation=truncation if latents.dim() == 2 else None, x=x)
    else:
        labels = y if y is not None else torch.full((len(x),), -1)
        buffer = io.BytesIO()
        np.savez(buffer, x=x, y=labels.numpy().astype(np.int64))
        write_bytes(path, buffer.getvalue())
    print(f"wrote {path}", file=sys.stderr)
