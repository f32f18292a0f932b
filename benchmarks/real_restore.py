"""Restoration of *real* images through a trained generator, with and without generator tuning, against classical
baselines (issue 23, item 3).

    python benchmarks/colour_fmnist.py data/cfmnist        # the RGB data for colourisation (once)
    python benchmarks/real_restore.py --biggan RUN --stylegan2 RUN --classifier CLS \\
        [--rgb RGB_RUN --rgb-data npz:data/cfmnist/test.npz --rgb-classifier RGB_CLS] --sheet-dir docs

Inputs are the first ``--n`` images of the Fashion-MNIST *test* split (never trained on), at the model's
resolution, degraded on purpose:

- ``invert``: the image itself (reconstruction; no baseline);
- ``inpaint``: a centred ``--hole`` px square missing; baseline: the harmonic fill of the hole (and the hole
  filled grey, the input);
- ``superres``: x``--factor`` area down-sampling; baseline: bicubic up-sampling;
- ``denoise``: additive Gaussian noise of ``--sigma`` (the [0, 1] scale), the result clipped to the pixel range;
  baseline: non-local means with the same sigma (the noise level is given to both);
- ``colorize`` (the RGB model, on colourised Fashion-MNIST): the BT.601 grey of the image; baseline: the grey in
  all three channels.

``scalegan.invert.invert`` restores each with the run's discriminator features as the feature loss (DGP's choice,
the CLI's default), the classes ranked by the domain classifier on the degraded input (``--top-k`` of them
searched), and ``--tune`` steps of generator tuning; the search's result (before tuning) is scored too. Scores
against the clean originals: PSNR (dB, all pixels) and the classifier's feature distance (its penultimate
features; squared distance over the original's mean square, 0 = identical; the feature loss is D's, not this
classifier's, so the score is not what was optimised). One JSON line per model and task; seconds per image are
wall-clock for search + tuning. ``--sheet-dir`` gets ``real_TASK.png`` per task: clean | input | baseline | per
model: search, tuned.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from common import emit, log, machine, pyplot, save_figure
from restore_baselines import bicubic_upsample, grey_to_rgb, harmonic_fill, nl_means

from scalegan import load
from scalegan.data import open_dataset
from scalegan.hardware import describe_cpu
from scalegan.invert import grey, invert, load_discriminator, psnr
from scalegan.metrics.classifier import load_classifier
from scalegan.perceptual import classifier_features, discriminator_features, feature_distance
from scalegan.tune import TuneConfig

GREY_TASKS = ("invert", "inpaint", "superres", "denoise")


def degraded(task: str, clean: torch.Tensor, args) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None,
                                                             str | None]:
    """(the input invert() gets, the mask, the baseline restoration, the baseline's name) of one task."""
    R = clean.shape[-1]
    if task == "inpaint":
        mask = torch.ones(R, R)
        lo = (R - args.hole) // 2
        mask[lo:lo + args.hole, lo:lo + args.hole] = 0
        observed = clean * mask
        return observed, mask, harmonic_fill(observed, mask[None, None]), "harmonic fill"
    if task == "superres":
        observed = F.avg_pool2d(clean, args.factor)
        return observed, None, bicubic_upsample(observed, args.factor), "bicubic"
    if task == "denoise":
        noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(7))
        observed = (clean + 2 * args.sigma * noise).clamp(-1, 1)
        return observed, None, nl_means(observed, args.sigma), "non-local means"
    if task == "colorize":
        observed = grey(clean)
        return observed, None, grey_to_rgb(observed), "grey as RGB"
    return clean, None, None, None


def shown(task: str, observed: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """The degraded input at the clean image's size and channels, for scoring and the sheet."""
    if task == "superres":
        observed = F.interpolate(observed, size=clean.shape[-2:], mode="nearest")
    return observed.expand(-1, clean.shape[1], -1, -1)


def scores(images: torch.Tensor, clean: torch.Tensor, features) -> dict:
    with torch.no_grad():
        fd = feature_distance(features.features(images), features.features(clean))
    return {"psnr": round(float(psnr(images, clean).mean()), 2), "fd": round(float(fd.mean()), 4)}


def measure(name: str, source: str, data: str, classifier_dir: str, tasks, args) -> dict:
    """One JSON line per task for one model; returns {task: {column: images}} for the sheets."""
    G, info = load(source)
    D = load_discriminator(source)
    classifier = load_classifier(classifier_dir)
    metric = classifier_features(classifier)
    for p in classifier.parameters():
        p.requires_grad_(False)
    classifier.eval()
    R, C = G.config.resolution, G.config.img_channels
    ds = open_dataset(data, resolution=R, channels=C, split="test")
    clean = torch.stack([ds[i][0] for i in range(args.n)])
    labels = torch.tensor([int(ds[i][1]) for i in range(args.n)])
    columns = {}
    for task in tasks:
        observed, mask, baseline, baseline_name = degraded(task, clean, args)
        start = time.perf_counter()
        result = invert(G, observed, classifier=classifier, features=discriminator_features(D), task=task,
                        mask=mask, factor=args.factor, restarts=args.restarts, steps=args.steps, top_k=args.top_k,
                        seed=0, tune=TuneConfig(steps=args.tune, seed=0) if args.tune else None,
                        noise_sigma=args.sigma if task == "denoise" else None, progress=args.progress)
        seconds = (time.perf_counter() - start) / args.n
        searched = result.images_search if result.images_search is not None else result.images
        record = {"bench": "real_restore", "model": name, "family": info.family, "source": source, "task": task,
                  "n": args.n, "search": scores(searched, clean, metric),
                  "tuned": scores(result.images, clean, metric) if args.tune else None,
                  "input": scores(shown(task, observed, clean), clean, metric) if task != "invert" else None,
                  "baseline": baseline_name and scores(baseline, clean, metric), "baseline_name": baseline_name,
                  "class_accuracy": round(float((result.y.cpu() == labels).float().mean()), 3),
                  "seconds_per_image": round(seconds, 1), "restarts": args.restarts, "steps": args.steps,
                  "top_k": args.top_k, "tune_steps": args.tune, "hole": args.hole, "factor": args.factor,
                  "sigma": args.sigma, "threads": torch.get_num_threads(), "cpu_kind": describe_cpu(),
                  "machine": machine("cpu"), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
        emit(record)
        columns[task] = {"clean": clean, "input": shown(task, observed, clean) if task != "invert" else None,
                         baseline_name: baseline,
                         f"{name} search": searched, f"{name} tuned": result.images if args.tune else None}
    return columns


def sheet(task: str, columns: dict, path: Path) -> None:
    """Rows: images; columns: clean, input, baseline, then each model's search and tuned results."""
    plt = pyplot()
    cols = [(k, v) for k, v in columns.items() if k and v is not None]
    n = len(cols[0][1])
    fig, axes = plt.subplots(n, len(cols), figsize=(1.2 * len(cols), 1.2 * n + 0.4), squeeze=False)
    for j, (title, images) in enumerate(cols):
        axes[0, j].set_title(title, fontsize=7)
        for i in range(n):
            image = ((images[i].float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
            axes[i, j].imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1,
                              interpolation="nearest")
            axes[i, j].axis("off")
    fig.suptitle(f"{task}: real Fashion-MNIST test images", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--biggan", help="a grey biggan-fmnist run folder")
    ap.add_argument("--stylegan2", help="a grey stylegan2-fmnist run folder")
    ap.add_argument("--classifier", help="grey Fashion-MNIST classifier folder (scalegan train-classifier)")
    ap.add_argument("--data", default="fashion-mnist", help="the grey models' data (test split used)")
    ap.add_argument("--rgb", help="an RGB run folder (colourised Fashion-MNIST) for --task colorize")
    ap.add_argument("--rgb-data", help="its data, e.g. npz:data/cfmnist/test.npz")
    ap.add_argument("--rgb-classifier", help="RGB classifier folder for the RGB model's scores")
    ap.add_argument("--tasks", default=",".join(GREY_TASKS), help="grey tasks, comma-separated")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--tune", type=int, default=200, help="tuning steps (0: search only)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--restarts", type=int, default=4)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--hole", type=int, default=12)
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--sigma", type=float, default=0.1)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--sheet-dir")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = [t for t in args.tasks.split(",") if t]
    sheets: dict[str, dict] = {}
    for name, run in (("BigGAN", args.biggan), ("StyleGAN2", args.stylegan2)):
        if run:
            log(f"{name}: {run}")
            for task, cols in measure(name, run, args.data, args.classifier, tasks, args).items():
                sheets.setdefault(task, {}).update(cols)
    if args.rgb:
        log(f"RGB: {args.rgb}")
        for task, cols in measure("BigGAN RGB", args.rgb, args.rgb_data, args.rgb_classifier, ["colorize"],
                                  args).items():
            sheets.setdefault(task, {}).update(cols)
    if args.sheet_dir:
        Path(args.sheet_dir).mkdir(parents=True, exist_ok=True)
        for task, cols in sheets.items():
            sheet(task, cols, Path(args.sheet_dir) / f"real_{task}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
