"""Resident memory over a long-ish run: a 2,000-iteration small training run, its RSS recorded every
``--every`` iterations. After warm-up (the first ``--warmup`` iterations: allocator pools, first checkpoint, first
sample grid) the RSS must stay within ``--bound-mib`` of its warm-up value.

    python benchmarks/memory_over_time.py                 # biggan-fmnist, reduced widths, 2,000 iterations
    python benchmarks/memory_over_time.py --model stylegan2-fmnist --set channel_max=64

Prints one JSON line per measurement and a summary line (``growth_mib``: the largest RSS after warm-up minus the RSS
at the end of warm-up; ``flat``: within the bound). ``--plot FILE`` draws RSS against iterations.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, log, machine, pyplot, save_figure  # noqa: E402


def rss_mib() -> float:
    """This process's resident set size, from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="biggan-fmnist")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help="model overrides (default for biggan-fmnist: ch=16, d_ch=16)")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--every", type=int, default=100, help="iterations between RSS readings")
    p.add_argument("--warmup", type=int, default=600, help="iterations before the reference reading (after the "
                   "first sample grids, at 250 and 500, and the first checkpoint, at 500)")
    p.add_argument("--bound-mib", type=float, default=32.0, help="largest allowed growth after warm-up")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--plot", default=None, help="write a PNG of RSS against iterations")
    args = p.parse_args()

    import torch

    from scalegan.cli.options import parse_overrides
    from scalegan.training import TrainConfig
    from scalegan.training import loop as loop_module

    if args.threads:
        torch.set_num_threads(args.threads)
    sets = args.set if args.set is not None else (["ch=16", "d_ch=16"] if args.model.startswith("biggan") else [])
    readings: list[tuple[int, float]] = [(0, rss_mib())]
    periodic = loop_module.Run._periodic

    def measured(self, bar):  # the loop's periodic work, plus an RSS reading
        periodic(self, bar)
        if self.step % args.every == 0:
            readings.append((self.step, rss_mib()))
            emit({"benchmark": "memory_over_time", "step": self.step, "rss_mib": round(readings[-1][1], 1)})

    loop_module.Run._periodic = measured
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig.from_preset(args.model, data=args.data, out_dir=out, iterations=args.iterations,
                                      batch_size=args.batch_size, model_overrides=parse_overrides(sets),
                                      ckpt_every=500, sample_every=250, log_every=50, progress=False,
                                      tensorboard=True)
        log(f"training {args.model} for {args.iterations} iterations ({machine()})")
        summary = loop_module.train(cfg)
    base = next(r for s, r in readings if s >= args.warmup)
    after = [r for s, r in readings if s >= args.warmup]
    growth = max(after) - base
    record = {"benchmark": "memory_over_time", "model": args.model, "overrides": sets,
              "iterations": summary["step"], "batch_size": args.batch_size, "rss_start_mib": round(readings[0][1], 1),
              "rss_after_warmup_mib": round(base, 1), "rss_end_mib": round(readings[-1][1], 1),
              "rss_max_mib": round(max(r for _, r in readings), 1), "growth_mib": round(growth, 1),
              "bound_mib": args.bound_mib, "flat": growth <= args.bound_mib, "s_per_it": round(summary["s_per_it"], 4),
              "machine": machine(), "date": date.today().isoformat()}
    emit(record)
    plt = pyplot() if args.plot else None
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot([s for s, _ in readings], [r for _, r in readings], marker=".")
        ax.axvline(args.warmup, color="grey", ls=":", label="end of warm-up")
        ax.axhspan(base, base + args.bound_mib, color="green", alpha=0.1, label=f"bound (+{args.bound_mib:g} MiB)")
        ax.set_xlabel("iteration")
        ax.set_ylabel("RSS (MiB)")
        ax.set_title(f"{args.model}: resident memory over training")
        ax.legend(loc="lower right")
        fig.tight_layout()
        save_figure(fig, args.plot)
    if not record["flat"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
