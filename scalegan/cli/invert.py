"""``scalegan invert``: real images into a generator's latent space, and restoration through it (inpainting,
super-resolution); the search is ``scalegan.invert.invert``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..api import load
from ..data.base import to_float
from ..data.folder import decode_image, square
from ..family import get_family
from ..invert import TASKS, invert, load_discriminator
from ..latents import save_latents
from ..media import save_image
from ..sampling import resolve_class
from ..utils import to_hwc, write_json
from .options import HelpFormatter, add_device, add_generator_source, add_out_dir, any_int, positive_int

MAX_CLASSES = 64  # every class is tried up to this many; above, the top --top-k of the discriminator
CONVERSION = ("converted to the model's channels (grayscale or RGB), center-cropped to a square and resized "
              "(bicubic) to the model's resolution (superres: to resolution / --factor)")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "invert", help="find the class and latent of real images; inpaint or super-resolve through a generator",
        formatter_class=HelpFormatter,
        description="Search a generator's latent space (z for BigGAN, W for StyleGAN2) for images that match the "
                    f"inputs. Inputs of any size and mode are {CONVERSION}. Writes DIR/STEM.png (the reconstruction "
                    "or restored image), DIR/STEM.npz (latents, class, psnr: `scalegan sample`-style latents file) and "
                    "DIR/summary.json, and prints the PSNR of every image (through the degradation: inpainting counts "
                    "the known pixels, superres the low-resolution input). Classes to try: --class, else the top "
                    "--top-k of --classifier, else all (up to 64 classes), else the top --top-k of the discriminator "
                    "(a run or checkpoint folder has one). StyleGAN2: the discriminator decides the class when the "
                    "source has one; else every class is screened in z + class, where the class acts.")
    add_generator_source(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="input images (PNG, JPEG, ...)")
    add_out_dir(p, "folder for the reconstructions, latents files and summary.json", required=True)
    p.add_argument("--task", choices=TASKS, default="invert",
                   help="invert: reconstruct the image; inpaint: fill the pixels --mask marks missing; superres: the "
                   "input is a low-resolution image, the output is at the model's resolution")
    p.add_argument("--mask", metavar="FILE", help="inpaint: mask image, white (>= 128) = known pixel, black = missing; "
                   "the input's size (cropped and resized with it) or the model's resolution")
    p.add_argument("--factor", type=positive_int, default=4, help="superres: down-sampling factor of the input "
                   "(area averaging), >= 2, dividing the model's resolution")
    p.add_argument("--class", dest="classes", action="append", metavar="CLASS",
                   help="class index or name to try (repeatable); default: ranked by --classifier, or all "
                   "classes (up to 64), or ranked by the discriminator")
    p.add_argument("--classifier", metavar="DIR", help="a train-classifier folder: ranks the classes (when there is "
                   "no --class) and adds a feature loss")
    p.add_argument("--top-k", type=positive_int, help="classes searched to the end per image (default 3; 1 for a "
                   "model with a W space ranked by its discriminator, which then decides the class)")
    p.add_argument("--restarts", type=positive_int, default=4, help="starting points per class")
    p.add_argument("--search-steps", type=positive_int, default=300, help="Adam steps of the search")
    p.add_argument("--seed", type=any_int, default=0, help="the same seed gives the same restarts")
    add_device(p)
    p.set_defaults(func=run)


def _open_image(path: str, channels: int) -> Image.Image:
    """The image as the training data reads it (upright, 8-bit grey or RGB), or one error line."""
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such image file")
    try:
        image = decode_image(path, channels)
        image.load()
        return image
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable image ({e}); pass a PNG or JPEG file") from None


def _tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image)
    array = array[:, :, None] if array.ndim == 2 else array
    return to_float(torch.from_numpy(array.copy()).permute(2, 0, 1))  # [C, H, W] in [-1, 1]


def _mask(path: str, image_size: tuple[int, int], resolution: int) -> torch.Tensor:
    """The known-pixel mask [1, R, R] of one input (1 = known)."""
    mask = _open_image(path, 1)
    if mask.size == image_size:
        mask = square(mask, resolution, Image.Resampling.NEAREST)
    elif mask.size != (resolution, resolution):
        raise ValueError(f"--mask {path} is {mask.size[0]}x{mask.size[1]}: it must have the input image's size "
                         f"({image_size[0]}x{image_size[1]}) or the model's resolution ({resolution}x{resolution})")
    return torch.from_numpy((np.asarray(mask) >= 128).astype(np.float32))[None]


def _inputs(args, G) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The input images [N, C, S, S] in [-1, 1] and the masks [N, 1, R, R] (inpaint)."""
    cfg = G.config
    if args.task == "superres" and (args.factor < 2 or cfg.resolution % args.factor):
        raise ValueError(f"--factor {args.factor}: must be >= 2 and divide the model's resolution {cfg.resolution}")
    if args.task == "inpaint" and not args.mask:
        raise ValueError("--task inpaint needs --mask MASK.png (white = known pixel, black = missing)")
    size = cfg.resolution // args.factor if args.task == "superres" else cfg.resolution
    stems = [Path(p).stem for p in args.images]
    if len(set(stems)) != len(stems):
        raise ValueError("two input images have the same file name stem: their outputs would collide; rename one")
    images, masks = [], []
    for path in args.images:
        image = _open_image(path, cfg.img_channels)
        images.append(_tensor(square(image, size, Image.Resampling.BICUBIC)))
        if args.task == "inpaint":
            masks.append(_mask(args.mask, image.size, cfg.resolution))
    return torch.stack(images), (torch.stack(masks) if masks else None)


def _classifier(args, G):
    if not args.classifier:
        return None
    from ..metrics.classifier import load_classifier

    model = load_classifier(args.classifier, device=args.device)
    if model.config.in_channels != G.config.img_channels:
        raise ValueError(f"--classifier {args.classifier} takes {model.config.in_channels}-channel images, the "
                         f"generator makes {G.config.img_channels}")
    if G.config.n_classes and model.config.num_classes != G.config.n_classes:
        raise ValueError(f"--classifier {args.classifier} has {model.config.num_classes} classes, the generator "
                         f"{G.config.n_classes}")
    return model


def run(args) -> int:
    G, info = load(args.source, device=args.device, weights=args.weights)
    classes = None
    if args.classes:
        if not G.config.n_classes:
            raise ValueError("this generator is unconditional: --class does not apply")
        classes = [resolve_class(c, info.class_names, G.config.n_classes) for c in args.classes]
    images, masks = _inputs(args, G)
    classifier = _classifier(args, G)
    # BigGAN: trying every class beats D's top-k where that is affordable (benchmarks/invert_quality.py: D(x, c)
    # ranks the true class of generated and of real Fashion-MNIST images poorly), so D ranks only models with many
    # classes. A model with a W space: D's conditional score decides the class (its top 1 unless --top-k), since the
    # reconstruction alone tells the class less well there (tests/test_invert.py: D's top 1 found 8 of 8 classes of
    # generated images where screening every class in z found 3 to 8).
    many = G.config.n_classes > MAX_CLASSES
    w_space = get_family(G).w_space is not None and G.config.n_classes > 1
    D = load_discriminator(args.source, device=args.device) if (many or w_space) and not (classes or classifier) \
        else None
    top_k = args.top_k or (1 if w_space and D is not None else 3)
    result = invert(G, images, classes=classes, D=D, classifier=classifier, task=args.task, mask=masks,
                    factor=args.factor, restarts=args.restarts, steps=args.search_steps, top_k=top_k,
                    max_classes=MAX_CLASSES, seed=args.seed, progress=True)
    _write(args, info, result)
    return 0


def _name(info, c) -> str | None:
    return info.class_names[c] if c is not None and c < len(info.class_names) else None


def _write(args, info, result) -> None:
    out = Path(args.out_dir)
    pictures = to_hwc(result.images.cpu())
    entries = []
    for i, path in enumerate(args.images):
        stem = Path(path).stem
        c = None if result.y is None else int(result.y[i])
        score = float(result.psnr[i])
        save_image(pictures[i], out / f"{stem}.png")
        save_latents(out / f"{stem}.npz", result.latents[i:i + 1], None if c is None else result.y[i:i + 1],
                     psnr=np.array([score], dtype=np.float32))
        candidates = [{**r, "class_name": _name(info, r["class"])} for r in result.candidates[i]]
        entries.append({"input": str(path), "output": f"{stem}.png", "latents": f"{stem}.npz", "class": c,
                        "class_name": _name(info, c), "psnr": round(score, 3), "candidates": candidates})
        label = "" if c is None else f"class {c}" + (f" ({_name(info, c)})" if _name(info, c) else "") + ", "
        print(f"{path}: {label}PSNR {score:.2f} dB")
    write_json(out / "summary.json", {
        "source": str(args.source), "task": args.task, "factor": args.factor if args.task == "superres" else None,
        "input_conversion": CONVERSION, "psnr_measured": _psnr_note(args.task), "class_source": result.class_source,
        "restarts": args.restarts, "search_steps": args.search_steps, "seed": args.seed, "images": entries})
    print(f"wrote {len(entries)} images, latents and summary.json to {out}", file=sys.stderr)


def _psnr_note(task: str) -> str:
    return {"invert": "reconstruction vs input, all pixels",
            "inpaint": "generated image vs input on the known pixels (the output keeps the known pixels)",
            "superres": "generated image down-sampled by area averaging vs the low-resolution input"}[task]
