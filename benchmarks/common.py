"""Shared by the benchmark scripts: JSON-line output and a description of the machine."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

import torch


def emit(record: dict) -> None:
    """One JSON object per line on stdout."""
    print(json.dumps(record), flush=True)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine(device: str = "cpu") -> str:
    """CPU model and core count (plus the GPU name when measuring on one)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    threads = torch.get_num_threads()
    text = f"{model}, {os.cpu_count()} cores, torch {torch.__version__} with {threads} threads"
    if torch.device(device).type == "cuda":
        text += f", {torch.cuda.get_device_name(torch.device(device))}"
    return text


def bf16_skipped(record: dict, device: str = "cpu") -> None:
    """Print the JSON line of a bf16 mode skipped because the device only emulates bf16."""
    from datetime import date

    from scalegan.hardware import describe_cpu

    emit({**record, "skipped": f"{describe_cpu()} CPU has no native bf16 (emulated ~50x slower than float32); "
          "--force runs it", "machine": machine(device), "date": date.today().isoformat()})


def timed_round_robin(paths: list, repeats: int) -> list[tuple[float, object]]:
    """Median seconds per path (``(name, fn, inputs)``); the paths take turns in every repeat, so load changes on a
    shared machine hit them alike. The first round is a warm-up and also gives each path's output."""
    outputs = [fn(*inputs) for _, fn, inputs in paths]
    times: list[list[float]] = [[] for _ in paths]
    for _ in range(repeats):
        for k, (_, fn, inputs) in enumerate(paths):
            start = time.perf_counter()
            fn(*inputs)
            times[k].append(time.perf_counter() - start)
    return [(statistics.median(t), out) for t, out in zip(times, outputs)]


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or None (with a note) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install -e .[bench]): no plot written")
        return None
    return plt


def save_figure(fig, png, dpi: int = 110) -> None:
    """Write a matplotlib figure to ``png`` atomically (a temporary file, then rename) and say so on stderr."""
    from pathlib import Path

    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(png.name + ".tmp.png")
    fig.savefig(tmp, dpi=dpi)
    tmp.replace(png)
    log(f"plot: {png}")


def wait_until_healthy(server, port: int, timeout: float, output) -> None:
    """Wait for a `scalegan serve` subprocess to answer /health; a RuntimeError (with ``output()``: the end of its
    stderr) when it exits first, or when ``timeout`` seconds pass (the server is terminated then)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode}): {output()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError(f"the server did not answer /health within {timeout:.0f} s")


def conv_peak(dtype, channels: int, size: int, batch: int, reps: int = 5) -> float:
    """GFLOP/s of a 3x3 convolution, ``channels`` -> ``channels`` at ``size`` px, ``batch`` images, channels_last,
    ``dtype`` (the best of ``reps``): what this CPU's oneDNN reaches on such a layer."""
    import torch.nn.functional as F

    x = torch.randn(batch, channels, size, size, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
    F.conv2d(x, w, padding=1)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        F.conv2d(x, w, padding=1)
        best = min(best, time.perf_counter() - t)
    return 2 * 9 * channels * channels * size * size * batch / best / 1e9
