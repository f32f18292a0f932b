"""Seconds per training iteration through `scalegan.training.train`, float32 vs the CPU fast path, and the
GFLOP/s each achieves against this machine's measured matmul peak.

    python benchmarks/train_step.py [--model biggan-32] [--batch-size 50] [--n-d-steps 4] [--iterations 4]
                                    [--modes fp32,bf16,bf16-compile]

Default: the BigGAN-PyTorch CIFAR script setting (biggan-32, batch 50, 4 D steps per G step), on a synthetic
CIFAR-shaped dataset (random 32x32 RGB, 10 classes; speed does not depend on the pixels). One iteration = 4 D
steps + 1 G step. The first iteration (two with compile) is a warm-up and is not counted.

Modes: `fp32` (the reference path), `bf16` (bf16 autocast + channels_last: the CPU fast path), `bf16-compile`
(the same plus torch.compile), `fp32-compile`. FLOPs per iteration are counted once with
`torch.utils.flop_counter` over the loop's own `phase_step`, running every phase of a `BigGANObjective` (hinge
loss, no regularisers; convolutions, matmuls, attention; forward and backward). Two peaks are timed in the same
run: a 4096^3 matmul and the model's largest convolution (256 -> 256 channels, 3x3, 32x32). Prints one JSON line
for the peaks and one per mode.

bf16 modes (and bf16 peaks) run only where the device computes bf16 natively (`scalegan.hardware`): on an
AVX2-only CPU oneDNN emulates bf16 ~50x slower than float32, so they are skipped with a JSON line saying why
(`--force` runs them anyway). On such a CPU the default run (fp32 only) takes ~3 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from common import bf16_skipped, emit, log, machine
from common import conv_peak as common_conv_peak
from torch.utils.flop_counter import FlopCounterMode

from scalegan.hardware import bf16_supported, describe_cpu
from scalegan.models import build_discriminator, build_generator
from scalegan.objectives import Context, Nets
from scalegan.objectives.biggan import BigGANObjective, BigGANObjectiveConfig
from scalegan.registry import model_config
from scalegan.training import train
from scalegan.training.config import TrainConfig
from scalegan.training.loop import phase_step


def synthetic_dataset(path: Path, n: int, resolution: int, channels: int, classes: int) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, resolution, resolution, channels), dtype=np.uint8)
    np.savez(path, x=x, y=(np.arange(n) % max(classes, 1)).astype(np.int64))
    return path


def matmul_peak(dtype: torch.dtype, size: int = 4096, reps: int = 5) -> float:
    """GFLOP/s of a square matmul (the best of ``reps``)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def conv_peak(dtype: torch.dtype, reps: int = 5) -> float:
    """GFLOP/s of a 3x3 conv, 256 -> 256 channels at 32x32, batch 50, channels_last (the biggest layer of biggan-32;
    oneDNN, which runs the convolutions, can beat the BLAS behind matmul, e.g. on AMD CPUs)."""
    return common_conv_peak(dtype, 256, 32, 50, reps)


class RandomBatches:
    """The ``Draw`` the loop's phases take (see ``scalegan.training.loop.Batches``), from random tensors: the same
    real images every time, fresh noise and labels at each draw."""

    def __init__(self, mcfg, batch_size: int):
        self.mcfg, self.batch_size = mcfg, batch_size
        self.x = torch.rand(batch_size, mcfg.img_channels, mcfg.resolution, mcfg.resolution) * 2 - 1

    def labels(self):
        return torch.randint(0, self.mcfg.n_classes, (self.batch_size,)) if self.mcfg.n_classes else None

    def real(self):
        return self.x, self.labels()

    def noise(self):
        return torch.randn(self.batch_size, self.mcfg.z_dim), self.labels()


def flops_per_iteration(args, mcfg) -> int:
    """FLOPs of one iteration (n_d_steps D updates + one G update), counted on the loop's own code path: every
    phase of a BigGANObjective (hinge loss, no regularisers, one micro-batch) through ``phase_step``."""
    torch.manual_seed(0)
    G, D = build_generator(mcfg), build_discriminator(mcfg)
    optimizers = {"G": torch.optim.Adam(G.parameters()), "D": torch.optim.Adam(D.parameters())}
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    ctx = Context(torch.device("cpu"), contextlib.nullcontext, None, 1, args.batch_size, 0)
    objective = BigGANObjective(BigGANObjectiveConfig(loss="hinge", n_d_steps=args.n_d_steps),
                                Nets(G, D, G, D, D), ctx)
    batches = RandomBatches(mcfg, args.batch_size)
    with FlopCounterMode(display=False) as counter:
        for phase in objective.phases:  # as the loop's iteration: D (n_d_steps times), then G
            for _ in range(phase.repeat):
                phase_step(objective, phase, optimizers[phase.network], scaler, 1, batches)
    return counter.get_total_flops()


def measure(args, mode: str, data: Path, out: Path, flops: int, peaks: dict) -> dict:
    bf16, compiled = mode.startswith("bf16"), mode.endswith("compile")
    warmup = 2 if compiled else 1
    cfg = TrainConfig.from_preset(
        args.model, data=f"npz:{data}", out_dir=str(out), iterations=args.iterations + warmup,
        batch_size=args.batch_size, n_d_steps=args.n_d_steps, precision="bf16" if bf16 else "float32",
        channels_last=bf16, compile=compiled,
        log_every=1, sample_every=0, ckpt_every=0, tensorboard=False, progress=False, device=args.device,
        time_budget=0.0)
    train(cfg)
    lines = [json.loads(x) for x in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    lines = [x for x in lines if "s_per_it" in x]  # the first line records the start (precision, layout)
    times = [x["s_per_it"] for x in lines[warmup:]]
    s = statistics.median(times)
    key = "bf16" if bf16 else "fp32"
    achieved = flops / s / 1e9
    return {"bench": "train_step", "model": args.model, "mode": mode, "batch_size": args.batch_size,
            "n_d_steps": args.n_d_steps, "s_per_it": round(s, 3), "s_per_it_all": [round(t, 3) for t in times],
            "img_per_s": round(args.batch_size * args.n_d_steps / s, 1),
            "speedup_vs_biggan_pytorch_19s": round(19.0 / s, 2), "gflop_per_it": round(flops / 1e9, 1),
            "gflop_per_s": round(achieved, 1), "matmul_peak_gflop_per_s": round(peaks[key], 1),
            "share_of_matmul_peak": round(achieved / peaks[key], 3),
            "conv_peak_gflop_per_s": round(peaks[f"conv_{key}"], 1),
            "share_of_conv_peak": round(achieved / peaks[f"conv_{key}"], 3), "device": args.device,
            "machine": machine(args.device),
            "date": date.today().isoformat()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="biggan-32")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--n-d-steps", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=4, help="timed iterations (after the warm-up)")
    parser.add_argument("--modes", default="fp32,bf16,bf16-compile",
                        help="comma-separated: fp32, bf16 (+ channels_last), bf16-compile, fp32-compile")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--force", action="store_true", help="run bf16 modes even where bf16 is emulated")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mcfg = model_config(args.model)
    native_bf16 = bf16_supported(args.device) or args.force
    modes = args.modes.split(",")
    for mode in [m for m in modes if m.startswith("bf16") and not native_bf16]:
        bf16_skipped({"bench": "train_step", "model": args.model, "mode": mode}, args.device)
    modes = [m for m in modes if native_bf16 or not m.startswith("bf16")]
    peaks = {"fp32": matmul_peak(torch.float32), "conv_fp32": conv_peak(torch.float32)}
    if native_bf16:
        peaks.update(bf16=matmul_peak(torch.bfloat16), conv_bf16=conv_peak(torch.bfloat16))
    emit({"bench": "peaks", **{f"{k}_gflop_per_s": round(v, 1) for k, v in peaks.items()},
          "cpu_kind": describe_cpu(), "machine": machine(args.device), "date": date.today().isoformat()})
    flops = flops_per_iteration(args, mcfg)
    with tempfile.TemporaryDirectory() as tmp:
        n = args.batch_size * 4
        data = synthetic_dataset(Path(tmp) / "data.npz", n, mcfg.resolution, mcfg.img_channels, mcfg.n_classes)
        for mode in modes:
            log(f"{args.model} {mode}: {args.iterations} timed iterations ...")
            emit(measure(args, mode, data, Path(tmp) / mode, flops, peaks))


if __name__ == "__main__":
    main()
