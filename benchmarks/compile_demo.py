"""Does torch.compile pay for the demo? (issue 25, item 3). Runs the demo's training (``scalegan train``, preset
``biggan-fmnist``) in fresh processes: eager, then ``--compile`` with an empty inductor cache (a user's first run),
then ``--compile`` again with the cache the first one left (every later run). Each run logs every iteration; from
the training clock (``elapsed_s``: compiling happens inside the first iterations, so it counts against the time
budget exactly as in the demo) it reports the seconds to the end of iteration 1, 2 and 5, the steady seconds per
iteration (the last ``--steady`` iterations), the compile overhead (time of the first iterations beyond steady
ones), and the iterations each mode would train in the demo's 690 s budget.

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python benchmarks/compile_demo.py [--iterations 150] [--precision float32] [--cache-dir DIR]

The cache is inductor's on-disk cache (``TORCHINDUCTOR_CACHE_DIR``; torch's default lives under /tmp), set to
``--cache-dir`` (default: a new temporary folder, deleted at the end). Prints one JSON line per mode.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from common import emit, log, machine

from scalegan.hardware import describe_cpu

BUDGET = 690.0


def run_mode(mode: str, args, cache: Path, work: Path) -> dict:
    out = work / mode
    cmd = [sys.executable, "-m", "scalegan", "train", "--model", args.model, "--out-dir", str(out),
           "--iterations", str(args.iterations), "--time-budget", "0", "--precision", args.precision,
           "--log-every", "1", "--sample-every", "0", "--ckpt-every", "0", "--no-tensorboard", "--no-progress",
           "--seed", "0", *(["--compile"] if mode != "eager" else [])]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), "OMP_NUM_THREADS": str(args.threads)}
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{mode}: scalegan train failed:\n{done.stderr[-2000:]}")
    rows = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    elapsed = {r["step"]: r["elapsed_s"] for r in rows if "elapsed_s" in r}
    last = max(elapsed)
    steady = (elapsed[last] - elapsed[last - args.steady]) / args.steady
    overhead = elapsed[last] - steady * last  # what the run took beyond steady iterations: compiling, warm-up
    return {"bench": "compile_demo", "mode": mode, "precision": args.precision, "threads": args.threads,
            "s_to_iteration_1": round(elapsed[1], 2), "s_to_iteration_2": round(elapsed[2], 2),
            "s_to_iteration_5": round(elapsed[5], 2), "steady_ms_per_iteration": round(steady * 1e3, 1),
            "overhead_s": round(overhead, 1), "iterations_in_690s": int(max(0.0, BUDGET - overhead) / steady),
            "process_wall_s": round(wall, 1), "cpu_kind": describe_cpu(), "machine": machine("cpu"),
            "date": date.today().isoformat()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="biggan-fmnist")
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--steady", type=int, default=50, help="iterations at the end that give the steady speed")
    ap.add_argument("--precision", default="float32", help="float32 (the AVX2 path) or auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", help="inductor cache folder (default: a temporary one)")
    ap.add_argument("--modes", default="eager,compile-cold,compile-warm")
    args = ap.parse_args()
    if args.iterations < args.steady + 5:
        ap.error("--iterations must be at least --steady + 5")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache_dir or Path(tmp) / "inductor")
        for mode in args.modes.split(","):
            if mode == "compile-cold" and cache.exists():
                shutil.rmtree(cache)
            log(f"{mode}: {args.iterations} iterations")
            emit(run_mode(mode, args, cache, Path(tmp)))


if __name__ == "__main__":
    main()
