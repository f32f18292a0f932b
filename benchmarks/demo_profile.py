"""Where one demo iteration's time goes (issue 25, item 1): the demo's own training loop (``scalegan.training.train``
with the ``biggan-fmnist`` preset on Fashion-MNIST) under ``torch.profiler``, every CPU op's self time given to a
category, and convolution GFLOP/s against a convolution peak measured in the same run.

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python benchmarks/demo_profile.py [--iterations 60] [--warmup 10] [--precision float32] [--threads 2]
    python benchmarks/demo_profile.py --cost-only --label attn --set g_attn=[16] --set d_attn=[16]  # an arm's cost

Categories (each op's self time goes to its nearest labelled ancestor): ``conv forward`` (``aten::convolution``
outside the backward), ``conv backward`` (``ConvolutionBackward``), ``matmul`` (linear layers, forward and
backward), ``spectral norm`` (``sn_weight``: the power iteration and the division, forward; its backward is part of
the backward categories), ``optimizer`` (Adam's step and zero_grad), ``EMA``, ``divergence guard`` (the finite
checks before and after each step), ``augmentation``, ``data`` (drawing real batches and noise), ``periodic``
(logging, grids, checkpoints: ``Run._periodic``), ``backward, other`` and ``forward, other`` (normalisation,
activations, elementwise, losses). The profiled window is ``--iterations`` after ``--warmup`` (labelled by the
loop's iteration, so set-up is not counted). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import functools
import tempfile
import time
from datetime import date

import torch
from common import conv_peak, emit, log, machine
from torch.profiler import ProfilerActivity, profile, record_function

from scalegan.cli import parse_overrides
from scalegan.hardware import bf16_supported, describe_cpu
from scalegan.layers import SpectralNorm
from scalegan.training import loop as loop_module
from scalegan.training import train
from scalegan.training.config import TrainConfig

LABELS = {  # record_function label -> category
    "prof:sn": "spectral norm", "prof:ema": "EMA", "prof:guard": "divergence guard", "prof:augment": "augmentation",
    "prof:data": "data", "prof:periodic": "periodic",
}


def _labelled(fn, label):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with record_function(label):
            return fn(*args, **kwargs)
    return wrapper


@contextlib.contextmanager
def labels(state: dict):
    """Wrap the loop's parts in record_function labels; count iterations (the window opens after the warm-up)."""
    patches = [(SpectralNorm, "sn_weight", "prof:sn"), (loop_module, "ema_update", "prof:ema"),
               (loop_module, "_check_finite", "prof:guard"), (loop_module.Batches, "real", "prof:data"),
               (loop_module.Batches, "noise", "prof:data"), (loop_module.Run, "_periodic", "prof:periodic")]
    from scalegan.augment import Augmenter
    patches.append((Augmenter, "__call__", "prof:augment"))
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    original_finite = loop_module._finite
    phases = loop_module.Run._phases

    def counted_phases(self):
        # One range per iteration, from this iteration's phases to the next one's (so it holds the EMA and the
        # periodic work that follow the phases), opened by hand: record_function's enter and exit.
        if state.get("range") is not None:
            state["range"].__exit__(None, None, None)
        state["iteration"] += 1
        state["starts"].append(time.perf_counter())
        window = state["warmup"] < state["iteration"] <= state["warmup"] + state["n"]
        label = "prof:iteration" if window else "prof:outside"  # the last iteration's range holds the run's end
        state["range"] = record_function(label)
        state["range"].__enter__()
        return phases(self)

    try:
        for owner, name, label in patches:
            setattr(owner, name, _labelled(getattr(owner, name), label))
        loop_module._finite = _labelled(original_finite, "prof:guard")  # the after-step weights check too
        loop_module.Run._phases = counted_phases
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)
        loop_module._finite = original_finite
        loop_module.Run._phases = phases
        if state.get("range") is not None:
            state["range"].__exit__(None, None, None)
            state["range"] = None


def category(event, parents: dict) -> str | None:
    """The category of an op from its own name and its ancestors' (nearest first); None outside the window."""
    names, node = [], event
    while node is not None:
        names.append(node.name)
        node = parents.get(id(node))
    if "prof:iteration" not in names:
        return None
    backward = any(n.startswith("autograd::engine") for n in names)
    for name in names:
        if name in LABELS:
            return LABELS[name]
        if name.startswith("Optimizer."):
            return "optimizer"
        if "ConvolutionBackward" in name or name == "aten::convolution_backward":
            return "conv backward"
        if name == "aten::convolution" and not backward:
            return "conv forward"
        if name in ("aten::addmm", "aten::mm", "aten::bmm", "aten::linear") or "AddmmBackward" in name \
                or "MmBackward" in name:
            return "matmul"
    return "backward, other" if backward else "forward, other"


def conv_flops_per_iteration(cfg: TrainConfig) -> tuple[int, int]:
    """(convolution FLOPs, all FLOPs) of one demo iteration: FlopCounterMode over a 3-iteration run minus a
    1-iteration run, halved (set-up and the final grid and checkpoint cancel)."""
    from torch.utils.flop_counter import FlopCounterMode

    counts = []
    for iterations in (1, 3):
        with tempfile.TemporaryDirectory() as out, FlopCounterMode(display=False) as counter:
            train(dataclasses.replace(cfg, out_dir=out, iterations=iterations))
        by_op = counter.get_flop_counts().get("Global", {})
        counts.append((sum(v for k, v in by_op.items() if "convolution" in str(k)), counter.get_total_flops()))
    return (counts[1][0] - counts[0][0]) // 2, (counts[1][1] - counts[0][1]) // 2


def unprofiled_seconds(cfg: TrainConfig, out: str, args) -> float:
    """Seconds per iteration of the loop without the profiler (its labels only count iterations)."""
    timed = {"iteration": 0, "warmup": args.warmup, "n": args.iterations, "starts": []}
    with labels(timed):
        train(dataclasses.replace(cfg, out_dir=out + "/plain"))
    starts = timed["starts"][args.warmup:args.warmup + args.iterations + 1]
    return (starts[-1] - starts[0]) / (len(starts) - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--precision", default="float32", help="float32 (the AVX2 path) or auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="biggan-fmnist", help="preset (default: the demo's)")
    ap.add_argument("--train", action="append", metavar="KEY=VALUE", help="training config value (repeatable)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="model config value (repeatable)")
    ap.add_argument("--cost-only", action="store_true",
                    help="only the unprofiled seconds per iteration and FLOPs (the cost of an A/B arm)")
    ap.add_argument("--label", default="", help="a name for this configuration in the JSON line")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig.from_preset(
            args.model, **{**parse_overrides(args.train), "out_dir": out, "progress": False, "tensorboard": False,
                           "iterations": args.warmup + args.iterations + 1, "time_budget": 0.0, "sample_every": 0,
                           "ckpt_every": 0, "precision": args.precision, "seed": 0},
            model_overrides=parse_overrides(args.set))
        if args.cost_only:
            try:
                conv_flops, flops = (round(f / 1e9, 3) for f in conv_flops_per_iteration(cfg))
            except RuntimeError as err:  # FlopCounterMode cannot follow autograd.grad (R1, StyleGAN2's phases)
                log(f"FLOPs not counted: {str(err).splitlines()[0]}")
                conv_flops = flops = None
            plain = unprofiled_seconds(cfg, out, args)
            emit({"bench": "demo_cost", "label": args.label, "model": args.model, "train": args.train or [],
                  "set": args.set or [], "precision": args.precision, "threads": args.threads,
                  "ms_per_iteration": round(plain * 1e3, 1), "gflop_per_iteration": flops,
                  "conv_gflop_per_iteration": conv_flops, "cpu_kind": describe_cpu(),
                  "machine": machine("cpu"), "date": date.today().isoformat()})
            return
        conv_flops, flops = conv_flops_per_iteration(cfg)
        # The demo's largest convolution shape at a larger batch: 3x3, 128 -> 128 channels, 16 px, batch 64.
        peak = conv_peak(torch.float32, 128, 16, 64)
        bf16 = bf16_supported("cpu") and args.precision != "float32"
        peak_bf16 = conv_peak(torch.bfloat16, 128, 16, 64) if bf16 else None
        plain = unprofiled_seconds(cfg, out, args)
        state = {"iteration": 0, "warmup": args.warmup, "n": args.iterations, "starts": []}
        log(f"profiling {args.iterations} iterations after {args.warmup} warm-up ({args.precision})")
        with profile(activities=[ProfilerActivity.CPU]) as prof, labels(state):
            train(dataclasses.replace(cfg, out_dir=out + "/profiled"))
    events = prof.events()
    parents = {id(e): e.cpu_parent for e in events}
    totals: dict[str, float] = collections.defaultdict(float)
    for e in events:
        c = category(e, parents)
        if c is not None:
            totals[c] += e.self_cpu_time_total / 1e6
    window = sum(e.cpu_time_total for e in events if e.name == "prof:iteration") / 1e6
    per_it = {k: round(v / args.iterations * 1e3, 2) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
    conv_s = (totals["conv forward"] + totals["conv backward"]) / args.iterations
    emit({"bench": "demo_profile", "precision": args.precision, "bf16_native": bf16_supported("cpu"),
          "iterations": args.iterations, "ms_per_iteration_unprofiled": round(plain * 1e3, 1),
          "ms_per_iteration_profiled": round(window / args.iterations * 1e3, 1), "ms_per_category": per_it,
          "share": {k: round(v / max(window, 1e-9) * args.iterations / 1e3, 3) for k, v in per_it.items()},
          "gflop_per_iteration": round(flops / 1e9, 3), "conv_gflop_per_iteration": round(conv_flops / 1e9, 3),
          "conv_gflops_achieved": round(conv_flops / 1e9 / max(conv_s, 1e-9), 1), "conv_peak_gflops": round(peak, 1),
          "conv_peak_gflops_bf16": peak_bf16 and round(peak_bf16, 1),
          "overall_gflops_unprofiled": round(flops / 1e9 / plain, 1), "threads": args.threads,
          "cpu_kind": describe_cpu(), "machine": machine("cpu"), "date": date.today().isoformat(),
          "note": "the profiler adds overhead per op: compare categories, not absolute speed with the unprofiled loop"})


if __name__ == "__main__":
    main()
