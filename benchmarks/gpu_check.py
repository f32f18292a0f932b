"""The GPU check: one command that measures and verifies what a GPU machine is for, in at most 8 minutes on one GPU.

    python benchmarks/gpu_check.py [--out FILE] [--only train,serve] [--biggan-deep-weights PATH]
    python benchmarks/gpu_check.py --cpu            # the same checks at tiny sizes (~1 minute on 2 cores; CI runs it)

One JSON line per check, each with ``check``, ``ok`` (true / false; null with ``skipped``: why), its figures, the
``error`` when it failed (a failing check does not stop the others), the ``machine`` and the ``seconds`` it took;
then a ``summary`` line. ``--out FILE`` also writes the lines to FILE. ``--cpu`` is automatic without CUDA.

Checks (GPU sizes; ``--cpu`` runs each at the family's tiny widths, batch 4, a few iterations):

- ``train:MODEL:PRECISION``: `scalegan train` (a subprocess, as users run it) of ``biggan-128`` at batch 64 and
  ``stylegan2-256`` at batch 32 (unconditional, as its preset), each with ``--precision float32`` and ``auto``, on a
  synthetic dataset (random pixels: speed does not depend on them). The first iterations are a warm-up; the timed
  ones give ``img_per_s`` (training images per second: batch x iterations / seconds, one iteration = one G update)
  and ``s_per_kimg`` (seconds per 1,000 of them), also ``d_real_img_per_s`` (real images drawn by D, the loop's own
  figure: lazy R1 steps draw more) and the precision / layout the run resolved (its first log line).
- ``torchrun``: `torchrun --nproc_per_node 1 -m scalegan train` (NCCL on CUDA, gloo on CPU) for N iterations, and
  an all-reduce through a process group of the same backend started by torchrun (one process: scalegan's loop only
  creates a process group for 2 or more, so the collective is checked on its own).
- ``exact_resume``: the same command for K iterations, then ``--resume`` to N; G, D and G_ema must equal the
  uninterrupted N run's bit for bit. On a mismatch a second uninterrupted run tells whether the kernels themselves
  vary from run to run (``repeat_bit_identical``).
- ``sample:biggan-deep-128``: images/s of the reference path (eval-mode ``G(z, y, truncation)``, float32) and of the
  folded fast path (``scalegan.models.biggan_deep_fold``) in float32 and at ``dtype="auto"`` (bf16 where native),
  with each path's max |difference| from the reference. Random weights (statistics made non-trivial) unless
  ``--biggan-deep-weights`` / ``$SCALEGAN_BIGGAN_DEEP_128`` names converted weights (anything ``scalegan.load``
  takes, e.g. ``biggan-deep-128.tfhub`` from the cache after ``scalegan convert --download``).
- ``serve``: `scalegan serve` (a subprocess) of a BigGAN-deep-128 with random weights (tiny in ``--cpu``), a fixed
  number of /v1/generate requests (PNG) from concurrent clients: requests/s, images/s, p50 / p95 latency.
- ``onnx``: ``scalegan.export.export_onnx`` of the same generator, run by onnxruntime (the CUDA provider on a GPU,
  skipped with the reason when ``onnxruntime-gpu`` is missing; the CPU provider in ``--cpu``): max |difference|
  from PyTorch eval on the same device, images/s of both.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import log, machine, timed_round_robin, wait_until_healthy  # noqa: E402
from train_step import synthetic_dataset  # noqa: E402

CHECKS = ("train", "torchrun", "sample", "serve", "onnx")  # --only takes these names


@dataclass
class Sizes:
    """What each check runs in a mode: GPU (the figures to record) or CPU (tiny, for CI)."""

    train: list  # (preset, batch, warm-up iterations, timed iterations, model overrides)
    tiny: bool
    torchrun_model: str
    torchrun_set: dict
    torchrun_batch: int
    torchrun_n: int
    torchrun_k: int
    sample_batch: int
    repeats: int
    serve_requests: int
    serve_clients: int
    serve_n: int
    tolerance_fp32: float  # fold and onnxruntime vs the reference path, float32
    tolerance_bf16: float = 0.1  # the bf16 fold (tests/test_biggan_deep_fold.py's bound)


# On CUDA, cuDNN convolutions run in TF32 by default (torch.backends.cudnn.allow_tf32), in both paths but in another
# order, so float32 paths agree to ~1e-3 rather than the CPU's 1e-5.
GPU = Sizes(train=[("biggan-128", 64, 4, 24, {}), ("stylegan2-256", 32, 4, 32, {})], tiny=False,
            torchrun_model="biggan-32", torchrun_set={}, torchrun_batch=64, torchrun_n=20, torchrun_k=10,
            sample_batch=64, repeats=10, serve_requests=256, serve_clients=32, serve_n=4, tolerance_fp32=2e-2)
# The families' tiny widths at 64 px (at the presets' 128 and 256 px a run took 30-40 s on 2 shared cores).
CPU = Sizes(train=[("biggan-128", 4, 1, 2, {"resolution": 64}), ("stylegan2-256", 4, 1, 2, {"resolution": 64})],
            tiny=True, torchrun_model="biggan-fmnist", torchrun_set=dict(ch=8, d_ch=8, z_dim=16, shared_dim=16),
            torchrun_batch=8, torchrun_n=4, torchrun_k=2, sample_batch=2, repeats=2, serve_requests=12,
            serve_clients=4, serve_n=2, tolerance_fp32=1e-4)
N_CLASSES = {"biggan-128": 1000, "stylegan2-256": 0}  # the presets' own (stylegan2-256 is unconditional)


class CheckFailed(Exception):
    """A check ran but its result is wrong: the line gets ok false, the figures measured so far and this error."""

    def __init__(self, message: str, figures: dict | None = None):
        super().__init__(message)
        self.figures = figures or {}


class Report:
    """Prints the JSON lines (and appends them to ``--out``), keeps them for the summary."""

    def __init__(self, device: str, mode: str, out: Path | None, deadline: float):
        self.common = {"device": device, "mode": mode, "machine": machine(device), "date": date.today().isoformat()}
        self.lines: list[dict] = []
        self.out, self.deadline = out, deadline
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("")

    def emit(self, line: dict) -> None:
        text = json.dumps({**line, **self.common}, default=str)
        print(text, flush=True)
        if self.out is not None:
            with self.out.open("a") as f:
                f.write(text + "\n")
        self.lines.append(json.loads(text))

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, fn, *args) -> None:
        """Run one check; its result, failure or skip becomes one line."""
        start = time.monotonic()
        if self.left() < 10:
            self.emit({"check": name, "ok": None, "skipped": "the time budget (--budget) is spent"})
            return
        log(f"gpu_check: {name} ...")
        try:
            figures = fn(*args)
            line = {"check": name, "ok": None if "skipped" in figures else True, **figures}
        except CheckFailed as e:
            line = {"check": name, "ok": False, **e.figures, "error": str(e)}
        except Exception as e:  # noqa: BLE001 - a check that breaks must not stop the others
            tail = traceback.format_exc().strip().splitlines()[-6:]
            line = {"check": name, "ok": False, "error": f"{type(e).__name__}: {e}", "traceback": tail}
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self.emit({**line, "seconds": round(time.monotonic() - start, 1)})

    def summary(self, started: float) -> dict:
        failed = [x["check"] for x in self.lines if x["ok"] is False]
        skipped = [x["check"] for x in self.lines if x["ok"] is None]
        line = {"check": "summary", "ok": not failed, "checks": len(self.lines),
                "passed": sum(x["ok"] is True for x in self.lines), "failed": failed, "skipped": skipped,
                "seconds": round(time.monotonic() - started, 1)}
        self.emit(line)
        return line


# ------------------------------------------------------------------------------------------------------ helpers
def model_overrides(name: str, tiny: bool, **extra) -> dict:
    """``extra`` and, when ``tiny``, the test-sized widths of the preset so changed (its family's ``tiny`` hook, as
    tests/conftest.py's ``tiny_overrides``)."""
    from scalegan.family import PRESETS, get_family
    from scalegan.registry import model_config

    base = get_family(PRESETS[name]["family"]).tiny(model_config(name, **extra)) if tiny else {}
    return {**base, **extra}


def set_flags(overrides: dict) -> list[str]:
    return [x for k, v in overrides.items() for x in ("--set", f"{k}={json.dumps(v)}")]


def run_command(cmd: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; a non-zero exit or a timeout (the whole group is killed: torchrun's
    workers too) is a CheckFailed with the end of its output."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})
    try:
        out, err = proc.communicate(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise CheckFailed(f"timed out after {timeout:.0f} s: {' '.join(cmd[:8])} ...: {err[-1500:]}") from None
    if proc.returncode != 0:
        raise CheckFailed(f"exit status {proc.returncode}: {' '.join(cmd[:8])} ...: {err[-1500:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def metrics_lines(run: Path) -> tuple[dict, list[dict]]:
    """A run's start record (precision, layout and their reasons) and its loss lines."""
    lines = [json.loads(x) for x in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    start = next((x for x in lines if x.get("event") == "start"), {})
    return start, [x for x in lines if "s_per_it" in x]


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: str):
    """``fn`` followed by a device sync, so that a GPU path's time is its whole forward."""

    def run(*inputs):
        out = fn(*inputs)
        sync(device)
        return out

    return run


def max_diff(a, b) -> float:
    a = a.float().cpu() if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    b = b.float().cpu() if isinstance(b, torch.Tensor) else torch.as_tensor(np.asarray(b))
    return float((a - b).abs().max())


# ------------------------------------------------------------------------------------------------------ training
def check_train(args, sizes: Sizes, preset: str, batch: int, warmup: int, timed_its: int, extra: dict,
                precision: str, folder: Path, report: Report) -> dict:
    """`scalegan train` of ``preset`` for ``warmup + timed_its`` iterations, logging each one."""
    from scalegan.registry import model_config

    classes = N_CLASSES[preset] if not sizes.tiny else (5 if N_CLASSES[preset] else 0)
    overrides = model_overrides(preset, sizes.tiny, n_classes=classes, **extra)
    mcfg = model_config(preset, **overrides)
    data = folder / f"{preset}.npz"
    if not data.is_file():
        synthetic_dataset(data, max(4 * batch, 16), mcfg.resolution, mcfg.img_channels, max(mcfg.n_classes, 1))
    run = folder / f"{preset}-{precision}"
    cmd = [sys.executable, "-m", "scalegan", "train", "--model", preset, "--data", f"npz:{data}", "--out-dir",
           str(run), "--iterations", str(warmup + timed_its), "--batch-size", str(batch), "--num-accumulations", "1",
           "--precision", precision, "--log-every", "1", "--sample-every", "0", "--ckpt-every", "0",
           "--time-budget", "0", "--no-progress", "--no-tensorboard", "--device", args.device,
           *set_flags(overrides)]
    run_command(cmd, min(args.step_timeout, report.left()))
    start, lines = metrics_lines(run)
    hardware = {k: v for k, v in start.items() if k not in ("step", "event", "device")}
    figures = {"model": preset, "batch_size": batch, "precision_requested": precision, **hardware,
               "warmup_iterations": warmup, "timed_iterations": len(lines) - warmup,
               "model_overrides": overrides}
    timed_lines = lines[warmup:]
    if len(timed_lines) != timed_its:
        raise CheckFailed(f"expected {timed_its} timed log lines, got {len(timed_lines)}", figures)
    seconds = sum(x["s_per_it"] for x in timed_lines)
    img_per_s = batch * len(timed_lines) / seconds
    losses = {k: v for x in timed_lines for k, v in x.items() if k.startswith("loss")}
    figures.update(s_per_it=round(statistics.median(x["s_per_it"] for x in timed_lines), 4),
                   img_per_s=round(img_per_s, 2), s_per_kimg=round(1000 / img_per_s, 2),
                   d_real_img_per_s=round(statistics.median(x["img_per_s"] for x in timed_lines), 2),
                   final_losses={k: round(v, 4) for k, v in losses.items()})
    if not all(math.isfinite(v) for x in timed_lines for k, v in x.items() if k.startswith("loss")):
        raise CheckFailed("a loss is not finite", figures)
    return figures


# ------------------------------------------------------------------------------------------------------ torchrun
def torchrun_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", *args]


def collective_probe(device: str) -> None:
    """Run under torchrun: a process group of the backend scalegan uses for ``device`` and one all-reduce."""
    import torch.distributed as dist

    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    x = torch.ones(1024, device=dev)
    dist.all_reduce(x)
    dist.barrier()
    result = {"backend": dist.get_backend(), "world_size": dist.get_world_size(),
              "all_reduce_ok": bool((x == dist.get_world_size()).all())}
    if backend == "nccl":
        result["nccl_version"] = ".".join(str(v) for v in torch.cuda.nccl.version())
    dist.destroy_process_group()
    print(json.dumps(result), flush=True)


def latest_weights(run: Path) -> dict:
    from safetensors.torch import load_file

    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    return {name: load_file(ckpt / f"{name}.safetensors") for name in ("G", "D", "G_ema")}


def compare_weights(a: dict, b: dict) -> tuple[bool, float]:
    """Whether every tensor is equal bit for bit, and the largest |difference| of a float tensor."""
    same, diff = True, 0.0
    for name in a:
        for key, value in a[name].items():
            other = b[name][key]
            same = same and value.dtype == other.dtype and torch.equal(value, other)
            if value.is_floating_point():
                diff = max(diff, float((value.double() - other.double()).abs().max()))
    return same, diff


class TorchrunRuns:
    """The torchrun training runs: N iterations; K, then --resume to N; the N run again on a mismatch."""

    def __init__(self, args, sizes: Sizes, folder: Path, report: Report):
        self.args, self.sizes, self.folder, self.report = args, sizes, folder, report
        # CPU: one thread in every run (bit equality needs the same kernels); torchrun's own default on CUDA
        self.env = {"OMP_NUM_THREADS": "1"} if torch.device(args.device).type == "cpu" else {}

    def train(self, name: str, iterations: int, resume: bool = False) -> Path:
        from scalegan.registry import model_config

        sizes, run, data = self.sizes, self.folder / name, self.folder / "torchrun.npz"
        if not data.is_file():
            mcfg = model_config(sizes.torchrun_model, **sizes.torchrun_set)
            synthetic_dataset(data, 4 * sizes.torchrun_batch, mcfg.resolution, mcfg.img_channels, 10)
        cmd = torchrun_cmd("-m", "scalegan", "train", "--model", sizes.torchrun_model, "--data", f"npz:{data}",
                           "--batch-size", str(sizes.torchrun_batch), "--ema-start", "1", "--log-every", "1",
                           "--sample-every", "0", "--ckpt-every", "0", "--time-budget", "0", "--no-progress",
                           # A decaying schedule spans N in both the straight and the interrupted run.
                           "--lr-horizon", str(sizes.torchrun_n),
                           "--no-tensorboard", "--device", self.args.device, *set_flags(sizes.torchrun_set),
                           "--out-dir", str(run), "--iterations", str(iterations), *(["--resume"] if resume else []))
        run_command(cmd, min(self.args.step_timeout, self.report.left()), self.env)
        return run

    def straight(self) -> dict:
        """The N-iteration run and the collective probe."""
        n = self.sizes.torchrun_n
        probe = run_command(torchrun_cmd(str(Path(__file__).resolve()), "--collective-probe", "--device",
                                         self.args.device), min(120, self.report.left()), self.env)
        collective = json.loads(probe.stdout.strip().splitlines()[-1])
        run = self.train("straight", n)
        summary = json.loads((run / "summary.json").read_text())
        _, lines = metrics_lines(run)
        figures = {"model": self.sizes.torchrun_model, "batch_size": self.sizes.torchrun_batch, "iterations": n,
                   "step": summary["step"], "world_size": summary["world_size"],
                   "s_per_it": round(statistics.median(x["s_per_it"] for x in lines[1:] or lines), 4),
                   "collective": collective,
                   "note": "one process: scalegan's loop starts no process group for WORLD_SIZE 1; "
                           "'collective' is an all-reduce in a torchrun-started group of the same backend"}
        expected = "nccl" if torch.device(self.args.device).type == "cuda" else "gloo"
        if summary["step"] != n:
            raise CheckFailed(f"the run stopped at step {summary['step']}, not {n}", figures)
        if collective["backend"] != expected or not collective["all_reduce_ok"]:
            raise CheckFailed(f"the {expected} all-reduce did not give the expected sum", figures)
        return figures

    def resumed(self) -> dict:
        """K iterations, --resume to N, against the N run (which ``straight`` wrote)."""
        n, k = self.sizes.torchrun_n, self.sizes.torchrun_k
        reference = self.folder / "straight"
        if not (reference / "checkpoints" / "latest").is_file():
            raise CheckFailed("the uninterrupted torchrun run (check 'torchrun') did not finish")
        run = self.train("interrupted", k)
        first = json.loads((run / "summary.json").read_text())["step"]
        self.train("interrupted", n, resume=True)
        step = json.loads((run / "summary.json").read_text())["step"]
        same, diff = compare_weights(latest_weights(reference), latest_weights(run))
        figures = {"model": self.sizes.torchrun_model, "k": k, "n": n, "first_session_steps": first,
                   "final_step": step, "bit_identical": same, "max_abs_diff": diff}
        if step != n or first != k:
            raise CheckFailed(f"the sessions ended at steps {first} and {step}, not {k} and {n}", figures)
        if not same:
            repeat = self.train("straight_again", n)
            figures["repeat_bit_identical"], figures["repeat_max_abs_diff"] = compare_weights(
                latest_weights(reference), latest_weights(repeat))
            cause = ("the kernels are not deterministic: two uninterrupted runs differ too"
                     if not figures["repeat_bit_identical"] else "resume is not exact: uninterrupted runs agree")
            raise CheckFailed(f"resumed weights differ from the uninterrupted run's ({cause})", figures)
        return figures


# ------------------------------------------------------------------------------------------------------ sampling
_BIGGAN_DEEP: dict = {}


def biggan_deep(args, sizes: Sizes):
    """A CPU copy of the BigGAN-deep-128 generator the serve, sampling and ONNX checks use (built once): converted
    weights when given, else random (tiny in --cpu) with non-trivial BN statistics."""
    from onnx_speed import random_model

    import scalegan

    if not _BIGGAN_DEEP:
        if args.biggan_deep_weights:
            G, _ = scalegan.load(args.biggan_deep_weights)
            _BIGGAN_DEEP.update(G=G.eval(), weights=str(args.biggan_deep_weights))
        else:
            overrides = model_overrides("biggan-deep-128", sizes.tiny, **({"n_classes": 5} if sizes.tiny else {}))
            _BIGGAN_DEEP.update(G=random_model("biggan-deep-128", **overrides),
                                weights="random weights" + (" (tiny)" if sizes.tiny else ""))
    return copy.deepcopy(_BIGGAN_DEEP["G"]), _BIGGAN_DEEP["weights"]


def inputs(G, batch: int, truncation: float, device: str):
    from scalegan.family import get_family

    family = get_family(G)
    g = torch.Generator().manual_seed(batch)
    z = family.draw_latents(G.config, batch, truncation, family.truncation_mode(G.config), g)
    y = torch.randint(0, G.config.n_classes, (batch,), generator=g)
    return z.to(device), y.to(device)


def check_sample(args, sizes: Sizes) -> dict:
    from scalegan.hardware import inference_dtype
    from scalegan.models.biggan_deep_fold import fast_generator

    G, weights = biggan_deep(args, sizes)
    G = G.to(args.device)
    t, device = args.truncation, args.device
    z, y = inputs(G, sizes.sample_batch, t, device)
    paths = [("reference float32", timed(lambda a, b: G(a, b, truncation=t), device), (z, y)),
             ("fold float32", timed(fast_generator(G, truncation=t), device), (z, y))]
    auto = inference_dtype("auto", device)
    if auto is not None:
        paths.append((f"fold auto ({str(auto).removeprefix('torch.')})",
                      timed(fast_generator(G, truncation=t, dtype="auto"), device), (z, y)))
    with torch.no_grad():
        results = timed_round_robin(paths, sizes.repeats)
    reference = results[0][1]
    figures = {"model": "biggan-deep-128", "weights": weights, "batch": sizes.sample_batch, "truncation": t,
               "repeats": sizes.repeats, "paths": {}}
    if torch.device(device).type == "cuda":
        figures["tf32"] = {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}
    bad = []
    for (name, _, _), (seconds, out) in zip(paths, results):
        diff = max_diff(out, reference)
        bound = sizes.tolerance_bf16 if "bfloat16" in name else sizes.tolerance_fp32
        figures["paths"][name] = {"img_per_s": round(sizes.sample_batch / seconds, 2),
                                  "s_per_batch": round(seconds, 5), "max_abs_diff_vs_reference": diff,
                                  "tolerance": bound if name != "reference float32" else None}
        if not (diff <= bound and torch.isfinite(out).all()):
            bad.append(f"{name}: max |difference| {diff:.3g} > {bound:g}")
    if bad:
        raise CheckFailed("; ".join(bad), figures)
    return figures


# ------------------------------------------------------------------------------------------------------ serving
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(source: Path, port: int, args, sizes: Sizes, timeout: float, stderr) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "scalegan", "serve", str(source), "--port", str(port), "--device", args.device,
           "--max-batch", "64", "--max-wait-ms", "10", "--queue-size", str(max(64, 4 * sizes.serve_clients)),
           "--timeout", "300"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr)

    def output() -> str:
        stderr.seek(0)
        return stderr.read()[-1500:]

    try:
        wait_until_healthy(server, port, timeout, output)
    except RuntimeError as e:
        raise CheckFailed(str(e)) from None
    return server


async def requests(port: int, model: str, sizes: Sizes, truncation: float) -> tuple[list, dict, float]:
    """``serve_requests`` posts from ``serve_clients`` concurrent clients (after one warm-up request)."""
    import httpx

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    body = {"model": model, "n": sizes.serve_n, "truncation": truncation, "format": "png"}
    queue = list(range(sizes.serve_requests))
    limits = httpx.Limits(max_connections=sizes.serve_clients + 4)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300, limits=limits) as http:
        await http.post("/v1/generate", json={**body, "seed": 10**6})

        async def client():
            while queue:
                seed = queue.pop()
                t0 = time.perf_counter()
                response = await http.post("/v1/generate", json={**body, "seed": seed})
                latencies.append(time.perf_counter() - t0)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(sizes.serve_clients)))
        return latencies, statuses, time.perf_counter() - start


def check_serve(args, sizes: Sizes, folder: Path, report: Report) -> dict:
    import httpx

    from scalegan.weights import save_generator

    G, weights = biggan_deep(args, sizes)
    source = save_generator(G, folder / "served")
    port = free_port()
    with (folder / "server.log").open("w+") as stderr:
        server = start_server(source, port, args, sizes, min(300, report.left()), stderr)
        try:
            latencies, statuses, wall = asyncio.run(requests(port, "served", sizes, args.truncation))
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
        finally:
            server.terminate()
            server.wait(timeout=30)
    ok = statuses.get(200, 0)
    ms = np.array(latencies) * 1000
    figures = {"model": "biggan-deep-128", "weights": weights, "requests": sum(statuses.values()),
               "clients": sizes.serve_clients, "n": sizes.serve_n, "format": "png", "max_batch": 64,
               "wall_s": round(wall, 2), "requests_per_s": round(ok / wall, 2),
               "images_per_s": round(ok * sizes.serve_n / wall, 2),
               "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
               "statuses": {str(k): v for k, v in sorted(statuses.items())},
               "images_per_forward": round(health["images"] / max(1, health["forwards"]), 2)}
    if ok != sizes.serve_requests:
        raise CheckFailed(f"{sizes.serve_requests - ok} of {sizes.serve_requests} requests failed", figures)
    return figures


# ------------------------------------------------------------------------------------------------------ ONNX
def onnx_providers(device: str) -> tuple[list[str] | None, str | None]:
    """The onnxruntime providers for ``device``, or None and why they are missing."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None, "onnxruntime is not installed (pip install 'scalegan[export]', onnxruntime-gpu on a GPU)"
    if torch.device(device).type != "cuda":
        return ["CPUExecutionProvider"], None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None, (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: "
                      f"{ort.get_available_providers()}); install onnxruntime-gpu for this CUDA")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"], None


def check_onnx(args, sizes: Sizes, folder: Path) -> dict:
    from scalegan.export import export_onnx, load_onnx

    providers, why = onnx_providers(args.device)
    if providers is None:
        return {"skipped": why}
    G, weights = biggan_deep(args, sizes)
    t = args.truncation
    path = folder / "biggan-deep-128.onnx"
    start = time.perf_counter()
    export_onnx(G, path, truncation=t, source=weights)
    export_s = time.perf_counter() - start
    gen = load_onnx(path, providers=providers)
    used = gen.session.get_providers()
    G = G.to(args.device)
    z, y = inputs(G, sizes.sample_batch, t, args.device)
    paths = [("pytorch eval", timed(lambda a, b: G(a, b, truncation=t), args.device), (z, y)),
             ("onnxruntime", gen, (z.cpu().numpy(), y.cpu().numpy()))]
    with torch.no_grad():
        (torch_s, reference), (ort_s, out) = timed_round_robin(paths, sizes.repeats)
    diff = max_diff(out, reference)
    figures = {"model": "biggan-deep-128", "weights": weights, "batch": sizes.sample_batch, "truncation": t,
               "providers": used, "export_s": round(export_s, 1), "onnx_mb": round(path.stat().st_size / 2**20, 1),
               "onnxruntime_img_per_s": round(sizes.sample_batch / ort_s, 2),
               "pytorch_img_per_s": round(sizes.sample_batch / torch_s, 2), "max_abs_diff_vs_pytorch": diff,
               "tolerance": sizes.tolerance_fp32}
    if used[0] != providers[0]:
        raise CheckFailed(f"onnxruntime runs on {used[0]}, not {providers[0]}", figures)
    if not diff <= sizes.tolerance_fp32:
        raise CheckFailed(f"max |difference| from PyTorch {diff:.3g} > {sizes.tolerance_fp32:g}", figures)
    return figures


# ------------------------------------------------------------------------------------------------------ main
def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (automatic without CUDA)")
    p.add_argument("--device", default=None, help="torch device (default: cuda, or cpu with --cpu)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON lines to this file")
    p.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    p.add_argument("--biggan-deep-weights", default=os.environ.get("SCALEGAN_BIGGAN_DEEP_128"),
                   help="converted BigGAN-deep-128 weights (anything scalegan.load takes; default: "
                        "$SCALEGAN_BIGGAN_DEEP_128, else random weights)")
    p.add_argument("--truncation", type=float, default=0.4)
    p.add_argument("--budget", type=float, default=480, help="seconds for all checks; later ones are skipped")
    p.add_argument("--step-timeout", type=float, default=240, help="seconds for one training subprocess")
    p.add_argument("--collective-probe", action="store_true", help=argparse.SUPPRESS)  # run by torchrun
    args = p.parse_args()
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    args.cpu = torch.device(args.device).type == "cpu"
    unknown = set(args.only.split(",")) - set(CHECKS)
    if unknown:
        p.error(f"--only: unknown checks {sorted(unknown)}; choose from {','.join(CHECKS)}")
    return args


def main() -> int:
    args = parse_args()
    if args.collective_probe:
        collective_probe(args.device)
        return 0
    started = time.monotonic()
    sizes = CPU if args.cpu else GPU
    if args.cpu:  # one thread here and in every subprocess: 2 threads on 2 shared cores can be 5x slower
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    only = set(args.only.split(","))
    report = Report(args.device, "cpu" if args.cpu else "gpu", args.out, started + args.budget)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        folder = Path(tmp)
        if "train" in only:
            for preset, *setting in sizes.train:
                for precision in ("float32", "auto"):
                    report.run(f"train:{preset}:{precision}", check_train, args, sizes, preset, *setting, precision,
                               folder, report)
        if "torchrun" in only:
            runs = TorchrunRuns(args, sizes, folder, report)
            report.run("torchrun", runs.straight)
            report.run("exact_resume", runs.resumed)
        if "serve" in only:
            report.run("serve", check_serve, args, sizes, folder, report)
        if "sample" in only:
            report.run("sample:biggan-deep-128", check_sample, args, sizes)
        if "onnx" in only:
            report.run("onnx", check_onnx, args, sizes, folder)
    return 0 if report.summary(started)["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
