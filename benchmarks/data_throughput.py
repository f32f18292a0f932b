"""Images/s that reach the training loop from a raw JPEG class folder and from the same images packed by `scalegan
prepare`, against what training asks for: on this CPU, and on published GPU runs (how many loader cores those need).

    python benchmarks/data_throughput.py [--n 2000] [--resolutions 64,128,256] [--workers 0,1,2] [--batch-size 64]
        [--min-seconds 2] [--data-dir DIR] [--presets 64=biggan-64,128=biggan-128,256=stylegan2-256]
        [--demand-batch 16] [--demand-iterations 3] > data_throughput.jsonl
    python benchmarks/data_throughput.py --table data_throughput.jsonl      # the README's markdown table

Data: `--n` synthetic JPEGs in 10 class folders (`synthetic.py`: ~384 x 320 with +-15% jitter, quality 90, ~80 KB
each, near ImageNet's bytes per pixel), made in `--data-dir` (default: a folder under the temp dir) and reused
when present; then packed at each resolution with `scalegan.data.prepare.prepare` (reused too). Sources:
`folder:DIR` (`FolderImageDataset`: decode, centre crop and resize at every read) and `packed:OUT` (memory-mapped
uint8 shards).

Loader rows: batches drawn through `scalegan.training.stream.BatchStream`, exactly as the training loop draws them
(its DataLoader with `num_workers` workers, batch `--batch-size`, shuffled), whole epochs until `--min-seconds`
(2) are timed; the first 1 + workers batches of each epoch (worker start-up, the first prefetch) are not timed.
Torch runs on 1 thread in this process (workers use 1 each), so workers = 0 is one core. `per_worker_images_per_s`
= images/s / max(workers, 1); the table's loader cores use the 1-worker row (decoding plus the hand-over to the
loop's process, as a GPU run's workers pay it).

Demand rows: `scalegan.training.train` of the `--presets` preset at that resolution on in-memory data (an NPZ of
random images: nothing to decode), batch `--demand-batch`, precision `auto`, `--demand-iterations` timed
iterations after one warm-up; `images_per_s` is the loop's own `img_per_s` (real images drawn per second). On the
GPU side there is no measurement here: `GPU_DEMAND` lists real images per second of published runs (s/kimg is
seconds per thousand real images shown to D). Loader cores = demand / per-worker images/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import torch
from common import emit, log, machine
from synthetic import SyntheticFolderError, make_jpeg_folder

from scalegan.data import open_dataset
from scalegan.data.prepare import prepare
from scalegan.hardware import describe_cpu
from scalegan.training.stream import BatchStream

BENCH = "data_throughput"
DEFAULT_PRESETS = "64=biggan-64,128=biggan-128,256=stylegan2-256"

# Real images per second drawn by published GPU training runs (resolution, run, images/s, where it is published).
GPU_DEMAND = [
    (128, "BigGAN, 8 x V100", 150_000 * 2048 / (15 * 86_400),
     "BigGAN-PyTorch README: batch 256 x 8 accumulations, 150k iterations in 15 days on 8 x V100"),
    (128, "StyleGAN2, 1 x A100", 1000 / 6.79, "stylegan3 docs/configs.md, StyleGAN2-ADA default config 128, 1 GPU: "
     "6.79 s/kimg"),
    (128, "StyleGAN2, 4 x A100", 1000 / 2.23, "stylegan3 docs/configs.md, StyleGAN2-ADA default config 128, 4 GPUs: "
     "2.23 s/kimg"),
    (256, "StyleGAN2, 1 x A100", 1000 / 12.53, "stylegan3 docs/configs.md, StyleGAN2-ADA default config 256, 1 GPU: "
     "12.53 s/kimg"),
    (256, "StyleGAN2, 8 x A100", 1000 / 2.38, "stylegan3 docs/configs.md, StyleGAN2-ADA default config 256, 8 GPUs: "
     "2.38 s/kimg"),
    (256, "StyleGAN2, 8 x V100", 1000 / 3.89, "stylegan3 docs/configs.md, StyleGAN2-ADA default config 256, 8 GPUs: "
     "3.89 s/kimg (stylegan2-ada-pytorch README: 4.4-5.5)"),
]

GPU_SOURCES = ("GPU demand as published: BigGAN-PyTorch's README (150k iterations of batch 2048 in 15 days on 8 x "
               "V100); stylegan3's docs/configs.md (StyleGAN2-ADA default configuration, s/kimg on A100 and V100).")


def parse_presets(text: str) -> dict[int, str]:
    """`64=biggan-64,128=biggan-128` -> {64: "biggan-64", ...}; "" or "none" -> {}."""
    if text.strip().lower() in ("", "none"):
        return {}
    presets = {}
    for item in text.split(","):
        resolution, sep, name = item.partition("=")
        if not sep or not resolution.strip().isdigit() or not name.strip():
            raise ValueError(f"--presets item {item!r} is not RESOLUTION=PRESET (e.g. 128=biggan-128)")
        presets[int(resolution)] = name.strip()
    return presets


def sources(data_dir: Path, n: int, resolutions: list[int], classes: int = 10,
            size: tuple[int, int] = (384, 320)) -> tuple[Path, dict[int, Path], dict]:
    """The JPEG folder and a packed copy per resolution (made or reused); the folder's settings."""
    folder = data_dir / "jpeg"
    made = make_jpeg_folder(folder, n, classes=classes, size=size, workers=2 if n >= 500 else 1)
    log(f"{folder}: {n} JPEGs, {made['mean_kb']} KB mean, " + ("reused" if made["reused"] else
                                                                f"made in {made['seconds']} s"))
    packed = {}
    for resolution in resolutions:
        out = data_dir / f"packed{resolution}"
        start = time.perf_counter()
        prepare(str(folder), out, resolution=resolution, progress=False, workers=0)
        log(f"{out}: ready in {time.perf_counter() - start:.1f} s")
        packed[resolution] = out
    return folder, packed, made


def stream_rate(dataset, batch_size: int, workers: int, min_seconds: float = 2.0, max_epochs: int = 100) -> dict:
    """Images/s of `BatchStream` batches (as the loop draws them), epoch after epoch until `min_seconds` are timed;
    the first 1 + workers batches of each epoch (worker start-up, the first prefetch) are not timed."""
    stream = BatchStream(dataset, batch_size, seed=0, num_workers=workers)
    skip = 1 + workers
    if stream.batches_per_epoch <= skip:
        raise ValueError(f"{len(dataset)} images make {stream.batches_per_epoch} batches of {batch_size}; timing "
                         f"{workers} worker(s) needs more than {skip}: raise --n or lower --batch-size")
    images, seconds, epochs = 0, 0.0, 0
    while epochs == 0 or (seconds < min_seconds and epochs < max_epochs):
        for _ in range(skip):
            next(stream)
        start = time.perf_counter()
        for _ in range(stream.batches_per_epoch - skip):
            x, _ = next(stream)
            images += len(x)
        seconds += time.perf_counter() - start
        epochs += 1
    return {"images": images, "epochs": epochs, "seconds": round(seconds, 3),
            "images_per_s": round(images / seconds, 1),
            "per_worker_images_per_s": round(images / seconds / max(workers, 1), 1)}


def training_demand(preset: str, batch_size: int, iterations: int, work: Path) -> dict:
    """Real images/s of `scalegan.training.train` on `preset` with in-memory random data (nothing decoded)."""
    from scalegan.registry import model_config
    from scalegan.training import train
    from scalegan.training.config import TrainConfig

    mcfg = model_config(preset)
    rng = np.random.default_rng(0)
    n = 2 * batch_size
    data = work / f"{preset}.npz"
    np.savez(data, x=rng.integers(0, 256, (n, mcfg.resolution, mcfg.resolution, mcfg.img_channels), np.uint8),
             y=(np.arange(n) % max(mcfg.n_classes, 1)).astype(np.int64))
    out = work / f"run-{preset}"
    cfg = TrainConfig.from_preset(preset, data=f"npz:{data}", out_dir=str(out), iterations=iterations + 1,
                                  batch_size=batch_size, num_accumulations=1, log_every=1, sample_every=0,
                                  ckpt_every=0, tensorboard=False, progress=False, time_budget=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. fewer classes in the random data than the preset has
        train(cfg)
    lines = [json.loads(x) for x in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    start = next((x for x in lines if x.get("event") == "start"), {})
    timed = [x for x in lines if "img_per_s" in x][1:]  # the first iteration is a warm-up
    return {"preset": preset, "resolution": mcfg.resolution, "batch_size": batch_size, "iterations": len(timed),
            "images_per_s": round(statistics.median(x["img_per_s"] for x in timed), 2),
            "s_per_it": round(statistics.median(x["s_per_it"] for x in timed), 3),
            "precision": start.get("precision")}


def gpu_cores(resolution: int, per_worker: float) -> list[dict]:
    """Loader cores each published GPU run at `resolution` needs at `per_worker` images/s per core."""
    return [{"run": run, "images_per_s": round(demand, 1), "loader_cores": round(demand / per_worker, 2),
             "source": source} for r, run, demand, source in GPU_DEMAND if r == resolution]


def measure(args) -> list[dict]:
    """Every demand and loader row (emitted as they are measured)."""
    presets = parse_presets(args.presets)
    data_dir = Path(args.data_dir or Path(tempfile.gettempdir()) / f"scalegan-data-throughput-{args.n}")
    resolutions = [int(r) for r in args.resolutions.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    common = {"bench": BENCH, "cpu_kind": describe_cpu(), "date": date.today().isoformat()}
    rows, demand = [], {}
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        for resolution in resolutions:
            if resolution in presets and args.demand_iterations > 0:
                log(f"training demand: {presets[resolution]}, batch {args.demand_batch}, "
                    f"{args.demand_iterations} timed iterations ...")
                torch.set_num_threads(threads)
                demand[resolution] = training_demand(presets[resolution], args.demand_batch,
                                                     args.demand_iterations, Path(tmp))
                rows.append({**common, "kind": "train_demand", **demand[resolution], "threads": threads,
                             "machine": machine()})
                emit(rows[-1])
    folder, packed, made = sources(data_dir, args.n, resolutions)
    torch.set_num_threads(1)
    for resolution in resolutions:
        for source, spec in (("folder", f"folder:{folder}"), ("packed", f"packed:{packed[resolution]}")):
            start = time.perf_counter()
            dataset = open_dataset(spec, resolution=resolution)
            open_s = time.perf_counter() - start
            for w in workers:
                log(f"{source} {resolution} px, {w} worker(s) ...")
                rate = stream_rate(dataset, args.batch_size, w, args.min_seconds)
                cpu = demand.get(resolution)
                rows.append({**common, "kind": "loader", "source": source, "resolution": resolution, "workers": w,
                             "batch_size": args.batch_size, **rate, "open_s": round(open_s, 3),
                             "source_images": args.n, "jpeg_mean_kb": made["mean_kb"],
                             "cpu_demand_images_per_s": cpu["images_per_s"] if cpu else None,
                             "cpu_demand_preset": cpu["preset"] if cpu else None,
                             "cpu_loader_cores": round(cpu["images_per_s"] / rate["per_worker_images_per_s"], 3)
                             if cpu else None,
                             "gpu": gpu_cores(resolution, rate["per_worker_images_per_s"]),
                             "threads": 1, "machine": machine()})
                emit(rows[-1])
    torch.set_num_threads(threads)
    return rows


def cores(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.0f}"


def table(rows: list[dict]) -> str:
    """Markdown: per resolution and source, images/s per worker count, then loader cores (from the 1-worker row,
    else the 0-worker one) for this CPU's training and for published GPU runs."""
    loaders = [r for r in rows if r.get("kind") == "loader"]
    demand = {r["resolution"]: r for r in rows if r.get("kind") == "train_demand"}
    workers = sorted({r["workers"] for r in loaders})
    head = ["px", "source", *[f"img/s, {w} worker{'s' if w != 1 else ''}" for w in workers],
            "training on this CPU: img/s (loader cores)", "published GPU runs: img/s (loader cores)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for resolution in sorted({r["resolution"] for r in loaders}):
        for source in ("folder", "packed"):
            mine = {r["workers"]: r for r in loaders if r["resolution"] == resolution and r["source"] == source}
            if not mine:
                continue
            base = mine.get(1) or mine.get(0) or next(iter(mine.values()))
            per_worker = base["per_worker_images_per_s"]
            cpu = demand.get(resolution)
            cpu_text = (f"{cpu['preset']}: {cpu['images_per_s']:.1f} ({cores(cpu['images_per_s'] / per_worker)})"
                        if cpu else "-")
            gpu_text = "; ".join(f"{run}: {d:.0f} ({cores(d / per_worker)})"
                                 for r, run, d, _ in GPU_DEMAND if r == resolution) or "none published"
            rates = [f"{mine[w]['images_per_s']:.0f}" if w in mine else "-" for w in workers]
            lines.append("| " + " | ".join([str(resolution), source, *rates, cpu_text, gpu_text]) + " |")
    first = loaders[0] if loaders else {}
    lines.append("")
    lines.append(f"{first.get('source_images', '?')} JPEGs of ~{first.get('jpeg_mean_kb', '?')} KB, batch "
                 f"{first.get('batch_size', '?')}; {first.get('machine', '?')}, {first.get('date', '?')}. "
                 f"{GPU_SOURCES}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="synthetic JPEGs (10 classes)")
    parser.add_argument("--resolutions", default="64,128,256")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated DataLoader worker counts")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--min-seconds", type=float, default=2.0, help="time whole epochs until this many seconds")
    parser.add_argument("--data-dir", help="where the JPEGs and packed copies are made or reused (default: under "
                        "the temp dir)")
    parser.add_argument("--presets", default=DEFAULT_PRESETS, help="RESOLUTION=PRESET,... whose training demand is "
                        "timed on this CPU; 'none' skips it")
    parser.add_argument("--demand-batch", type=int, default=16, help="batch of the demand timing (CPU images/s "
                        "barely depends on it)")
    parser.add_argument("--demand-iterations", type=int, default=3, help="timed iterations after one warm-up")
    parser.add_argument("--table", metavar="JSONL", help="print the markdown table of earlier output and exit")
    args = parser.parse_args(argv)
    if args.table:
        try:
            rows = [json.loads(x) for x in Path(args.table).read_text().splitlines() if x.strip().startswith("{")]
        except (OSError, ValueError) as e:
            parser.error(f"--table {args.table}: {e}")
        print(table(rows))
        return
    if args.n < 1 or args.batch_size < 1:
        parser.error("--n and --batch-size must be positive")
    try:
        parse_presets(args.presets)
        measure(args)
    except (ValueError, SyntheticFolderError) as e:
        print(f"data_throughput: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
