"""Seconds per training iteration through `scalegan.training.train`, float32 vs bf16 autocast + channels_last.

    python benchmarks/train_step.py [--model biggan-32] [--batch-size 50] [--n-d-steps 4] [--iterations 4]

Default: the BigGAN-PyTorch CIFAR script setting (biggan-32, batch 50, 4 D steps per G step), on a synthetic
CIFAR-shaped dataset (random 32x32 RGB, 10 classes; speed does not depend on the pixels). One iteration = 4 D
steps + 1 G step. The first iteration is a warm-up and is not counted. Prints one JSON line per mode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import torch
from common import emit, log, machine

from scalegan.registry import model_config
from scalegan.training import train
from scalegan.training.config import TrainConfig


def synthetic_dataset(path: Path, n: int, resolution: int, channels: int, classes: int) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, resolution, resolution, channels), dtype=np.uint8)
    np.savez(path, x=x, y=(np.arange(n) % max(classes, 1)).astype(np.int64))
    return path


def measure(args, mode: str, data: Path, out: Path) -> dict:
    fast = mode == "bf16"
    cfg = TrainConfig.from_preset(
        args.model, data=f"npz:{data}", out_dir=str(out), iterations=args.iterations + 1,
        batch_size=args.batch_size, n_d_steps=args.n_d_steps, bf16=fast, channels_last=fast, log_every=1,
        sample_every=0, ckpt_every=0, tensorboard=False, progress=False, device=args.device)
    train(cfg)
    lines = [json.loads(x) for x in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    times = [x["s_per_it"] for x in lines[1:]]  # drop the warm-up iteration
    s = statistics.median(times)
    return {"bench": "train_step", "model": args.model, "mode": mode, "batch_size": args.batch_size,
            "n_d_steps": args.n_d_steps, "s_per_it": round(s, 3), "s_per_it_all": [round(t, 3) for t in times],
            "img_per_s": round(args.batch_size * args.n_d_steps / s, 1), "device": args.device,
            "machine": machine(args.device), "date": date.today().isoformat()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="biggan-32")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--n-d-steps", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=4, help="timed iterations (after one warm-up)")
    parser.add_argument("--modes", default="fp32,bf16", help="comma-separated: fp32, bf16 (+ channels_last)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mcfg = model_config(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        n = args.batch_size * 4
        data = synthetic_dataset(Path(tmp) / "data.npz", n, mcfg.resolution, mcfg.img_channels, mcfg.n_classes)
        for mode in args.modes.split(","):
            log(f"{args.model} {mode}: {args.iterations + 1} iterations ...")
            emit(measure(args, mode, data, Path(tmp) / mode))


if __name__ == "__main__":
    main()
