"""Inversion and restoration quality: how well ``scalegan.invert`` finds held-out generated images of a demo-size
model (biggan-fmnist, stylegan2-fmnist), and how much inpainting and super-resolution through the generator beat
the degraded input.

    python benchmarks/invert_quality.py --train-seconds 240                  # trains both presets first
    python benchmarks/invert_quality.py --run RUN_DIR [--run RUN_DIR2]       # or takes trained run folders
    python benchmarks/invert_quality.py --run BIGGAN_RUN --train stylegan2-fmnist   # or both

Per model, on ``--n`` images generated with seeds no training or test uses (their classes cycle through the
model's), one JSON line per task:

- ``invert``: PSNR of the reconstruction (mean, min), class recovery (the share of images whose found class is
  the one they were generated with; every class a candidate, narrowed to ``--top-k`` after the first quarter of
  the search, as ``scalegan invert`` does for models of up to 64 classes), seconds per image;
- ``invert-discriminator``: the same with the run discriminator's top ``--top-k`` classes as the candidates;
- ``inpaint`` (a centred square hole of ``--hole`` px): PSNR of the restored image (known pixels from the input)
  against the original, and its margin over the input with the hole filled grey;
- ``superres`` (x``--factor``, the input area-averaged): PSNR of the restored image and its margin over bicubic
  upsampling of the input.

A sheet per model goes to ``--sheet-dir`` (``invert_MODEL.png``): per image, original | reconstruction | inpaint
input | inpainted | superres input (nearest upsampling) | super-resolved. For Fashion-MNIST models it also inverts
``--real`` Fashion-MNIST test images (``real-invert``, ``real-invert-discriminator``: PSNR and recovery of their
labels).
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from common import emit, log, machine

from scalegan import load, sample
from scalegan.family import get_family
from scalegan.hardware import describe_cpu
from scalegan.invert import invert, load_discriminator, psnr
from scalegan.media import make_grid
from scalegan.training import TrainConfig, train

PRESETS = ("biggan-fmnist", "stylegan2-fmnist")


def trained_run(preset: str, args) -> Path:
    out = Path(args.work_dir) / preset
    cfg = TrainConfig.from_preset(preset, out_dir=str(out), iterations=10**9, time_budget=args.train_seconds,
                                  sample_every=0, ckpt_every=0, keep_checkpoints=1, progress=False,
                                  tensorboard=False, seed=0, resume=(out / "checkpoints" / "latest").is_file())
    log(f"training {preset} for {args.train_seconds:g} s into {out}")
    train(cfg)
    return out


def _stats(values: torch.Tensor) -> dict:
    return {"mean": round(float(values.mean()), 2), "min": round(float(values.min()), 2)}


def _task(G, images, y, D, args, task: str) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """(JSON record, degraded input shown at full size, restored images) of one task."""
    cfg = G.config
    kind, task = task, task.replace("-discriminator", "")
    kwargs = dict(D=D if kind != task else None, restarts=args.restarts, steps=args.steps, top_k=args.top_k, seed=0,
                  progress=True)
    mask, shown = None, images
    if task == "inpaint":
        mask = torch.ones(cfg.resolution, cfg.resolution)
        lo = (cfg.resolution - args.hole) // 2
        mask[lo:lo + args.hole, lo:lo + args.hole] = 0
        observed = shown = images * mask  # the hole grey (0 in [-1, 1])
    elif task == "superres":
        observed = F.avg_pool2d(images, args.factor)
        shown = F.interpolate(observed, scale_factor=args.factor, mode="nearest")
    else:
        observed = images
    start = time.perf_counter()
    result = invert(G, observed, task=task, mask=mask, factor=args.factor, **kwargs)
    seconds = (time.perf_counter() - start) / len(images)
    restored = psnr(result.images, images)
    record = {"task": kind, "psnr": _stats(restored), "seconds_per_image": round(seconds, 2),
              "class_source": result.class_source}
    if y is not None:
        record["class_recovery"] = round(float((result.y.cpu() == y.cpu()).float().mean()), 3)
    if task == "inpaint":
        baseline = psnr(shown, images)
        record.update(hole=args.hole, baseline="hole filled grey", baseline_psnr=_stats(baseline))
    if task == "superres":
        upsampled = F.interpolate(observed, scale_factor=args.factor, mode="bicubic", align_corners=False)
        baseline = psnr(upsampled.clamp(-1, 1), images)
        record.update(factor=args.factor, baseline="bicubic upsampling", baseline_psnr=_stats(baseline))
    if task != "invert":
        record["margin_db"] = _stats(restored - baseline)
    return record, shown, result.images


def measure(source: Path, args) -> list[dict]:
    G, info = load(source, device=args.device)
    D = load_discriminator(source, device=args.device)
    cfg = G.config
    y = torch.arange(args.n) % cfg.n_classes if cfg.n_classes else None
    images = sample(G, args.n, y=y, seed=987_654)  # held out: no training grid or test draws this seed
    state = (source / "checkpoints" / (source / "checkpoints" / "latest").read_text().strip() / "state.pt")
    step = torch.load(state, weights_only=True).get("step") if state.is_file() else None
    common = {"bench": "invert_quality", "model": info.family, "source": str(source), "train_step": step,
              "n": args.n, "steps": args.steps, "restarts": args.restarts, "top_k": args.top_k,
              "cpu_kind": describe_cpu(), "machine": machine(args.device),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
              "note": "wall-clock seconds on a CPU shared with other jobs: noisy"}
    columns, records = [images], []
    for task in ("invert", "invert-discriminator", "inpaint", "superres"):
        record, shown, restored = _task(G, images, y, D, args, task)
        record = {**common, **record}
        emit(record)
        records.append(record)
        if task != "invert-discriminator":
            columns += [restored] if task == "invert" else [shown, restored]
    _sheet(columns, Path(args.sheet_dir) / f"invert_{get_family(G).name}.png", args.sheet_rows)
    if args.real and (cfg.n_classes, cfg.img_channels, cfg.resolution) == (10, 1, 32):
        real, labels = _real_images(args.real)
        for task in ("invert", "invert-discriminator"):
            record, _, _ = _task(G, real, labels, D, args, task)
            record = {**common, **record, "n": args.real, "task": "real-" + record["task"],
                      "images": "Fashion-MNIST test images (real; their labels)"}
            emit(record)
            records.append(record)
    return records


def _real_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` Fashion-MNIST test images taken in turn from each class."""
    from scalegan.data import open_dataset

    data = open_dataset("fashion-mnist", split="test")
    labels = torch.tensor([int(data[i][1]) for i in range(len(data))])
    picked = [int((labels == k % 10).nonzero()[k // 10]) for k in range(n)]
    images = torch.stack([data[i][0] for i in picked]).float()
    return images, torch.tensor([int(data[i][1]) for i in picked])


def _sheet(columns: list[torch.Tensor], path: Path, rows: int) -> None:
    """Rows of images, each: original | reconstruction | inpaint input | inpainted | superres input | restored."""
    from PIL import Image

    n = min(rows, len(columns[0]))
    cells = torch.stack([c[:n].cpu().clamp(-1, 1) for c in columns], 1).flatten(0, 1)
    grid = make_grid(cells, nrow=len(columns))
    picture = Image.fromarray(grid.squeeze(-1) if grid.shape[-1] == 1 else grid)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.resize((picture.width * 3, picture.height * 3), Image.Resampling.NEAREST).save(path)
    log(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", type=Path, help="trained run folder (repeatable); default: train "
                        "biggan-fmnist and stylegan2-fmnist for --train-seconds each")
    parser.add_argument("--train", action="append", choices=PRESETS, help="preset to train for --train-seconds "
                        "(repeatable; default: both when no --run is given)")
    parser.add_argument("--train-seconds", type=float, default=240)
    parser.add_argument("--work-dir", default="benchmarks/results/invert", help="where the trained runs go")
    parser.add_argument("--n", type=int, default=8, help="held-out generated images per model")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--restarts", type=int, default=4)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--hole", type=int, default=12, help="inpainting: side of the centred square hole")
    parser.add_argument("--factor", type=int, default=4, help="super-resolution factor")
    parser.add_argument("--real", type=int, default=8, help="also invert this many Fashion-MNIST test images "
                        "(Fashion-MNIST models only; 0 = off)")
    parser.add_argument("--sheet-dir", default="docs")
    parser.add_argument("--sheet-rows", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    presets = args.train or (() if args.run else PRESETS)
    runs = list(args.run or []) + [trained_run(preset, args) for preset in presets]
    for source in runs:
        measure(Path(source), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
