"""``scalegan invert``: real images into a generator's latent space, and restoration through it (inpainting,
super-resolution, denoising, colourisation); the search is ``scalegan.invert.invert``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..api import load
from ..data.folder import decode_image
from ..family import get_family
from ..invert import TASKS, invert, load_discriminator
from ..latents import save_latents
from ..media import fit_input, known_mask, save_image
from ..perceptual import FEATURE_LOSSES, classifier_features, discriminator_features, inception_features
from ..sampling import resolve_class
from ..tune import TuneConfig
from ..utils import to_hwc, write_json
from ..weights import save_generator
from .options import (
    HelpFormatter,
    add_device,
    add_generator_source,
    add_out_dir,
    any_int,
    natural_float,
    positive_float,
    positive_int,
)

TUNE_STEPS = 200  # --tune without a value: enough on the small CPU presets (README: "Generator tuning")
FEATURE_WEIGHT = 0.1  # invert()'s default: the feature loss's weight against pixels and pyramid
MAX_CLASSES = 64  # every class is tried up to this many; above, the top --top-k of the discriminator
CONVERSION = ("converted to the model's channels (grayscale or RGB), center-cropped to a square and resized "
              "(bicubic) to the model's resolution (superres: to resolution / --factor; colorize: then made grey, "
              "ITU-R BT.601 luma)")


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
    p.add_argument("images", nargs="*", metavar="IMAGE", help="input images (PNG, JPEG, ...); or --data")
    p.add_argument("--data", metavar="SPEC", help="take the inputs from a dataset instead of image files: any data "
                   "spec training takes (packed:DIR from `scalegan prepare`, folder:DIR, npz:FILE, fashion-mnist, "
                   "...), its images at the model's size; outputs are named item_INDEX and summary.json records each "
                   "item's label")
    p.add_argument("--split", default="test", help="--data: the split of a named dataset (default: test)")
    p.add_argument("--indices", default="0-7", metavar="LIST", help="--data: which items, e.g. 0-7 or 3,10,42 "
                   "(default: 0-7)")
    add_out_dir(p, "folder for the reconstructions, latents files and summary.json", required=True)
    p.add_argument("--task", choices=TASKS, default="invert",
                   help="invert: reconstruct the image; inpaint: fill the pixels --mask marks missing; superres: the "
                   "input is a low-resolution image, the output is at the model's resolution; denoise: the input is "
                   "noisy, the search does not fit it closer than the noise level (--noise-sigma); colorize (RGB "
                   "models): the input is made grey (ITU-R BT.601 luma), the output is G's colour image whose grey "
                   "matches it")
    p.add_argument("--mask", metavar="FILE", help="inpaint: mask image, white (>= 128) = known pixel, black = missing; "
                   "the input's size (cropped and resized with it) or the model's resolution")
    p.add_argument("--factor", type=positive_int, default=4, help="superres: down-sampling factor of the input "
                   "(area averaging), >= 2, dividing the model's resolution")
    p.add_argument("--noise-sigma", type=natural_float, metavar="SIGMA", help="denoise: the noise's standard "
                   "deviation on the [0, 1] pixel scale (0.1 = 25.5 of 255); the search stops pulling the image "
                   "towards the input once they differ by this much. Default: estimated per image (median absolute "
                   "finest Haar diagonal coefficient / 0.6745)")
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
    p.add_argument("--tune", type=positive_int, nargs="?", const=TUNE_STEPS, default=None, metavar="STEPS",
                   help=f"after the search, tune a copy of G per image around its latent for STEPS Adam steps "
                   f"(default {TUNE_STEPS}): progressive, input-side blocks first, for BigGAN (Deep Generative "
                   "Prior); pivotal with a locality regulariser for StyleGAN2. Without STEPS put it after the images")
    p.add_argument("--tune-lr", type=positive_float, metavar="LR", help="--tune: Adam's step on G (default 2e-4 "
                   "progressive, 3e-4 pivotal)")
    p.add_argument("--locality-weight", type=natural_float, default=0.1, metavar="W",
                   help="--tune, pivotal: weight of keeping the tuned G's images of random latents near the pivot "
                   "equal to the original G's (0 = off)")
    p.add_argument("--save-tuned", metavar="DIR", help="--tune: write each image's tuned generator as a weights "
                   "folder DIR/STEM (model.safetensors, config.json, manifest): `scalegan edit DIR/STEM --latents "
                   "OUT/STEM.npz` edits the image, `scalegan sample DIR/STEM --latents ...` renders it")
    p.add_argument("--feature-loss", metavar="KIND", help="feature loss of the search and tuning, one of "
                   f"{', '.join(FEATURE_LOSSES)}: d = the discriminator's blocks (a run or checkpoint folder has "
                   "one), inception = the project's Inception (local weights only), classifier:DIR = a "
                   "train-classifier folder's features. Default: the --classifier's when given, else d where the "
                   "source has a discriminator, else none (pixels and an image pyramid)")
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


def _mask(path: str, image_size: tuple[int, int], resolution: int) -> torch.Tensor:
    """The known-pixel mask [1, R, R] of one input (1 = known)."""
    return known_mask(_open_image(path, 1), image_size, resolution, f"--mask {path}")


def _indices(text: str, n: int) -> list[int]:
    """``0-7`` / ``3,10,42`` / a mix -> item indices, each checked against the dataset's ``n`` items."""
    out = []
    try:
        for part in text.split(","):
            first, dash, last = part.strip().partition("-")
            out += list(range(int(first), int(last) + 1)) if dash else [int(first)]
    except ValueError:
        raise ValueError(f"--indices {text!r}: give indices and ranges, e.g. 0-7 or 3,10,42") from None
    bad = [i for i in out if not 0 <= i < n]
    if not out or bad:
        raise ValueError(f"--indices {text!r}: the dataset has {n} items (0-{n - 1})" + (f"; {bad[0]} is not one"
                                                                                       if bad else ""))
    if len(set(out)) != len(out):
        raise ValueError(f"--indices {text!r} names an item twice: their outputs would collide")
    return out


def _sources(args, G) -> list[tuple[str, str, Image.Image, int | None]]:
    """Each input as (output stem, what it was, the image, its dataset label or None): the image files, or the
    --data items at the model's resolution (the dataset reads them as training does)."""
    cfg = G.config
    if args.data is None:
        if not args.images:
            raise ValueError("give input images, or --data SPEC (a dataset) with --indices")
        stems = [Path(p).stem for p in args.images]
        if len(set(stems)) != len(stems):
            raise ValueError("two input images have the same file name stem: their outputs would collide; rename one")
        return [(stem, str(path), _open_image(path, cfg.img_channels), None)
                for stem, path in zip(stems, args.images)]
    if args.images:
        raise ValueError("give input images or --data, not both")
    from ..data import open_dataset

    dataset = open_dataset(args.data, split=args.split, resolution=cfg.resolution, channels=cfg.img_channels)
    out = []
    for i in _indices(args.indices, len(dataset)):
        x, y = dataset.pixels(i) if dataset.has_pixels else dataset[i]
        if x.dtype != torch.uint8:  # in-memory datasets give float32 in [-1, 1]
            x = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        array = x.permute(1, 2, 0).numpy()
        image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
        out.append((f"item_{i:06d}", f"{args.data}[{i}]", image, int(y) if dataset.num_classes else None))
    return out


def _inputs(args, G) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The input images [N, C, S, S] in [-1, 1] and the masks [N, 1, R, R] (inpaint); ``args.items`` gets each
    input's (stem, name, label)."""
    cfg = G.config
    if args.task == "superres" and (args.factor < 2 or cfg.resolution % args.factor):
        raise ValueError(f"--factor {args.factor}: must be >= 2 and divide the model's resolution {cfg.resolution}")
    if args.task == "inpaint" and not args.mask:
        raise ValueError("--task inpaint needs --mask MASK.png (white = known pixel, black = missing)")
    size = cfg.resolution // args.factor if args.task == "superres" else cfg.resolution
    sources = _sources(args, G)
    args.items = [(stem, name, label) for stem, name, _, label in sources]
    images, masks = [], []
    for _, _, image, _ in sources:
        images.append(fit_input(image, size))
        if args.task == "inpaint":
            masks.append(_mask(args.mask, image.size, cfg.resolution))
    return torch.stack(images), (torch.stack(masks) if masks else None)


def _classifier(args, G):
    return _load_classifier(args.classifier, args, G) if args.classifier else None


def _load_classifier(directory: str, args, G):
    from ..metrics.classifier import load_classifier

    model = load_classifier(directory, device=args.device)
    if model.config.in_channels != G.config.img_channels:
        raise ValueError(f"--classifier {directory} takes {model.config.in_channels}-channel images, the "
                         f"generator makes {G.config.img_channels}")
    if G.config.n_classes and model.config.num_classes != G.config.n_classes:
        raise ValueError(f"--classifier {directory} has {model.config.num_classes} classes, the generator "
                         f"{G.config.n_classes}")
    return model


def run(args) -> int:
    G, info = load(args.source, device=args.device, weights=args.weights)
    classes = None
    if args.classes:
        if not G.config.n_classes:
            raise ValueError("this generator is unconditional: --class does not apply")
        classes = [resolve_class(c, info.class_names, G.config.n_classes) for c in args.classes]
    if args.task == "colorize" and G.config.img_channels != 3:
        raise ValueError("--task colorize needs an RGB model; this one is grey")
    if args.noise_sigma is not None and args.task != "denoise":
        raise ValueError("--noise-sigma applies to --task denoise only")
    if args.save_tuned and not args.tune:
        raise ValueError("--save-tuned needs --tune: only a tuned generator is written")
    if args.tune is None and (args.tune_lr is not None):
        raise ValueError("--tune-lr needs --tune")
    images, masks = _inputs(args, G)
    classifier = _classifier(args, G)
    # BigGAN: trying every class beats D's top-k where that is affordable (benchmarks/invert_quality.py: D(x, c)
    # ranks the true class of generated and of real Fashion-MNIST images poorly), so D ranks only models with many
    # classes. A model with a W space: D's conditional score decides the class (its top 1 unless --top-k), since the
    # reconstruction alone tells the class less well there (tests/test_invert.py: D's top 1 found 8 of 8 classes of
    # generated images where screening every class in z found 3 to 8).
    many = G.config.n_classes > MAX_CLASSES
    w_space = get_family(G).w_space is not None and G.config.n_classes > 1
    rank = (many or w_space) and not (classes or classifier)
    wanted = rank or args.feature_loss == "d" or (args.feature_loss is None and classifier is None)
    source_D = load_discriminator(args.source, device=args.device) if wanted else None
    D = source_D if rank else None
    features = _features(args, G, source_D, classifier)
    top_k = args.top_k or (1 if w_space and D is not None else 3)
    tune = TuneConfig(steps=args.tune, lr=args.tune_lr, locality_weight=args.locality_weight, seed=args.seed) \
        if args.tune else None
    result = invert(G, images, classes=classes, D=D, classifier=classifier, task=args.task, mask=masks,
                    factor=args.factor, restarts=args.restarts, steps=args.search_steps, top_k=top_k,
                    max_classes=MAX_CLASSES, seed=args.seed, progress=True, features=features,
                    feature_weight=FEATURE_WEIGHT, tune=tune, noise_sigma=args.noise_sigma)
    _write(args, info, result)
    return 0


def _features(args, G, D, classifier):
    """The feature loss's network from --feature-loss (see its help), or False for none."""
    kind = args.feature_loss
    if kind is None:
        return None if classifier is not None else (discriminator_features(D) if D is not None else False)
    if kind == "none":
        return False
    if kind == "d":
        if D is None:
            raise ValueError(f"--feature-loss d: {args.source} has no discriminator (weights folders and pretrained "
                             "names hold G only): pass a run or checkpoint folder, or another --feature-loss")
        return discriminator_features(D)
    if kind == "inception":
        return inception_features(device=args.device)
    if kind.startswith("classifier:"):
        directory = kind.partition(":")[2]
        if not directory:
            raise ValueError("--feature-loss classifier:DIR needs the folder of a `scalegan train-classifier` run")
        if not Path(directory).is_dir():
            raise ValueError(f"--feature-loss classifier:{directory}: no such folder")
        return classifier_features(_load_classifier(directory, args, G), f"classifier:{directory}")
    if kind.startswith("lpips"):
        raise ValueError("--feature-loss lpips is not supported: LPIPS needs an ImageNet backbone whose weights "
                         f"would be downloaded; pick one of {', '.join(FEATURE_LOSSES)}")
    raise ValueError(f"--feature-loss {kind!r}: expected one of {', '.join(FEATURE_LOSSES)}")


def _name(info, c) -> str | None:
    return info.class_names[c] if c is not None and c < len(info.class_names) else None


def _write(args, info, result) -> None:
    out = Path(args.out_dir)
    pictures = to_hwc(result.images.cpu())
    entries = []
    for i, (stem, path, truth) in enumerate(args.items):
        c = None if result.y is None else int(result.y[i])
        score = float(result.psnr[i])
        save_image(pictures[i], out / f"{stem}.png")
        save_latents(out / f"{stem}.npz", result.latents[i:i + 1], None if c is None else result.y[i:i + 1],
                     psnr=np.array([score], dtype=np.float32))
        candidates = [{**r, "class_name": _name(info, r["class"])} for r in result.candidates[i]]
        entry = {"input": str(path), "output": f"{stem}.png", "latents": f"{stem}.npz", "class": c,
                 "class_name": _name(info, c), "psnr": round(score, 3), "candidates": candidates,
                 **({"label": truth, "label_found": c == truth} if truth is not None else {})}
        if result.noise_sigma is not None:
            entry["noise_sigma"] = round(float(result.noise_sigma[i]), 5)
        label = "" if c is None else f"class {c}" + (f" ({_name(info, c)})" if _name(info, c) else "") + ", "
        tuned = ""
        if result.generators is not None:
            entry["psnr_search"] = round(float(result.psnr_search[i]), 3)
            tuned = f" (search {entry['psnr_search']:.2f} dB, then tuned)"
            if args.save_tuned:
                folder = Path(args.save_tuned) / stem
                extra = {"class_counts": list(info.class_counts)} if info.class_counts else {}
                save_generator(result.generators[i], folder, info.class_names, info.class_ids,
                               tuned_from=str(args.source), tuning=result.tuning, latents=str(out / f"{stem}.npz"),
                               **extra)
                entry["tuned_generator"] = str(folder)
        entries.append(entry)
        print(f"{path}: {label}PSNR {score:.2f} dB{tuned}")
    labelled = [e for e in entries if "label" in e]
    write_json(out / "summary.json", {
        "source": str(args.source), "data": args.data, "task": args.task,
        "labels_found": f"{sum(e['label_found'] for e in labelled)} of {len(labelled)}" if labelled else None,
        "factor": args.factor if args.task == "superres" else None,
        "noise_sigma": args.noise_sigma, "noise_sigma_source": result.noise_sigma_source,
        "noise_sigma_note": "per image in images[].noise_sigma, on the [0, 1] pixel scale; estimated: median "
                            "absolute finest Haar diagonal coefficient / 0.6745" if args.task == "denoise" else None,
        "input_conversion": CONVERSION, "psnr_measured": _psnr_note(args.task), "class_source": result.class_source,
        "restarts": args.restarts, "search_steps": args.search_steps, "seed": args.seed,
        "feature_loss": result.feature_loss,
        "feature_weight": FEATURE_WEIGHT if result.feature_loss != "none" else None, "tuning": result.tuning,
        "psnr_search_note": "psnr_search: after the latent search, before tuning" if result.tuning else None,
        "images": entries})
    print(f"wrote {len(entries)} images, latents and summary.json to {out}", file=sys.stderr)


def _psnr_note(task: str) -> str:
    return {"invert": "reconstruction vs input, all pixels",
            "inpaint": "generated image vs input on the known pixels (the output keeps the known pixels)",
            "superres": "generated image down-sampled by area averaging vs the low-resolution input",
            "denoise": "generated image vs the noisy input, all pixels (about the noise's PSNR when the noise is not "
                       "fitted)",
            "colorize": "grey (ITU-R BT.601 luma) of the generated colour image vs the grey input"}[task]
