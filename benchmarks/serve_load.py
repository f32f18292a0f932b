"""Load test of `scalegan serve`: N concurrent clients on loopback for a bounded time, with batching and without.

    python benchmarks/serve_load.py                                  # biggan-deep-128 (random weights), 16 clients
    python benchmarks/serve_load.py --clients 16 --seconds 20 --max-batch 64 1
    python benchmarks/serve_load.py --source runs/demo --n 4

Each setting starts its own server (`python -m scalegan serve` in a subprocess on a free loopback port); every client
posts /v1/generate (PNG, ``--n`` images, its own seeds) again as soon as it has its answer. One JSON line per
``--max-batch`` setting: requests, images/s, p50 / p95 latency, status counts (5xx must be 0), forwards and mean
images per forward (from /health), server RSS before and after; then a line with the throughput of the first setting
over the last (the batching gain; goal >= 3x at 16 clients with batch 1 as the last setting).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, log, machine, wait_until_healthy  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(source: str, port: int, args, max_batch: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "scalegan", "serve", source, "--port", str(port), "--max-batch", str(max_batch),
           "--max-wait-ms", str(args.max_wait_ms), "--queue-size", str(max(64, 4 * args.clients)),
           "--timeout", "600"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_until_healthy(server, port, 300, lambda: server.stderr.read())
    return server


async def client(http: httpx.AsyncClient, body: dict, stop: float, latencies: list, statuses: dict, rng) -> None:
    while time.monotonic() < stop:
        t0 = time.perf_counter()
        response = await http.post("/v1/generate", json={**body, "seed": rng.randrange(2**31)})
        latencies.append(time.perf_counter() - t0)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1


async def load(port: int, args, model: str) -> tuple[list, dict, float]:
    """Run the clients for ``args.seconds``; requests still in flight at the end are cancelled and not counted."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    body = {"model": model, "n": args.n, "truncation": args.truncation, "format": "png"}
    limits = httpx.Limits(max_connections=args.clients + 4)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600, limits=limits) as http:
        await http.post("/v1/generate", json={**body, "seed": 0})  # warm-up: first forward, allocator
        start = time.monotonic()
        stop = start + args.seconds
        tasks = [asyncio.create_task(client(http, body, stop, latencies, statuses, random.Random(k)))
                 for k in range(args.clients)]
        await asyncio.sleep(args.seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return latencies, statuses, time.monotonic() - start


def run_setting(source: str, model: str, args, max_batch: int) -> dict:
    port = free_port()
    server = start_server(source, port, args, max_batch)
    try:
        rss_before = rss_mb(server.pid)
        latencies, statuses, wall = asyncio.run(load(port, args, model))
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
        rss_after = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    ok = statuses.get(200, 0)
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"bench": "serve_load", "source": args.source or args.model, "clients": args.clients, "n": args.n,
            "seconds": round(wall, 1), "max_batch": max_batch, "max_wait_ms": args.max_wait_ms,
            "requests": sum(statuses.values()), "ok": ok, "images_per_s": round(ok * args.n / wall, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "errors_5xx": sum(v for k, v in statuses.items() if k >= 500),
            "forwards": health["forwards"], "images_per_forward": round(health["images"] / max(1, health["forwards"]),
                                                                          2),
            "rss_before_mb": round(rss_before), "rss_after_mb": round(rss_after),
            "machine": machine(), "date": date.today().isoformat()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", help="what to serve (anything scalegan.load takes); default: --model, random weights")
    p.add_argument("--model", default="biggan-deep-128", help="preset served with random weights when no --source")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--n", type=int, default=1, help="images per request")
    p.add_argument("--truncation", type=float, default=0.5)
    p.add_argument("--max-batch", type=int, nargs="+", default=[64, 1], help="one run per value")
    p.add_argument("--max-wait-ms", type=float, default=10)
    p.add_argument("--threads", type=int, default=None, help="server torch threads (default: torch's choice)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = args.source
        if source is None:
            import scalegan
            from scalegan.weights import save_generator

            source = str(save_generator(scalegan.create_model(args.model)[0], Path(tmp) / args.model))
        from scalegan.serve.models import model_names

        model = model_names([source])[0]
        results = []
        for max_batch in args.max_batch:
            log(f"serve_load: --max-batch {max_batch}, {args.clients} clients, {args.seconds:g} s ...")
            results.append(run_setting(source, model, args, max_batch))
            emit(results[-1])
    if len(results) > 1:
        first, last = results[0], results[-1]
        emit({"bench": "serve_load", "gain": f"max_batch {first['max_batch']} over {last['max_batch']}",
              "throughput_ratio": round(first["images_per_s"] / max(last["images_per_s"], 1e-9), 2),
              "clients": args.clients})


if __name__ == "__main__":
    main()
