"""`scalegan prepare` at scale: wall time, images/s and peak memory of packing a folder of N JPEGs, and the open
time of the result.

    python benchmarks/prepare_scale.py [--n 100000] [--resolution 256] [--source-size 256] [--workers 1,2]
                                       [--data-dir DIR] [--keep] > prepare_scale.jsonl

Makes (or reuses) `--n` synthetic JPEGs of `--source-size` squared in 10 class folders (`synthetic.py`, quality 90,
made on 2 processes) in `--data-dir` (default: a folder under the temp dir), then for each `--workers` value runs
`python -m scalegan prepare SRC OUT --resolution R --workers W --no-progress` as a subprocess: wall seconds (Python
start-up included), images/s, the peak of the summed RSS of its process tree (sampled every 0.1 s from /proc:
written shard pages count while they are mapped), and the largest single process's peak RSS (`/usr/bin/time -v`,
when present). Then opens the result with `open_dataset` (`--repeats` times: median, as `data_open.py`) and reads
one image; then deletes it unless `--keep`. Prints one JSON line for the generation and one per run.

Before anything is written, the free space under `--data-dir` must be at least `--free-factor` (default 3) times
what the run writes (the JPEGs still to make, estimated from 8 samples, plus one packed copy, n x 3 x R x R
bytes); otherwise one error line and exit status 2. At the defaults: ~5 GB of JPEGs + 19.7 GB packed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from common import emit, log, machine
from synthetic import MARKER, SyntheticFolderError, estimated_bytes, make_jpeg_folder

from scalegan.data import open_dataset
from scalegan.hardware import describe_cpu

BENCH = "prepare_scale"
ROOT = Path(__file__).resolve().parents[1]


class BenchError(Exception):
    """Bad input or a failed run: one line, exit status 2."""


def free_bytes(path: Path) -> int:
    """Free bytes on the file system that holds `path` (or its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def check_disk(data_dir: Path, source: Path, n: int, size: int, resolution: int, factor: float) -> dict:
    """Refuse (BenchError) when the free space is under `factor` x what this run writes."""
    jpegs = 0 if (source / MARKER).is_file() else estimated_bytes(n, (size, size))
    packed = n * 3 * resolution * resolution
    free = free_bytes(data_dir)
    if free < factor * (jpegs + packed):
        raise BenchError(f"{free / 1e9:.1f} GB free under {data_dir}, under {factor:g} x the "
                         f"{(jpegs + packed) / 1e9:.1f} GB this run writes ({jpegs / 1e9:.1f} GB of JPEGs, "
                         f"{packed / 1e9:.1f} GB packed); pass --data-dir on a larger disk or a smaller --n")
    return {"jpeg_mb": round(jpegs / 1e6, 1), "packed_mb": round(packed / 1e6, 1), "free_gb": round(free / 1e9, 1)}


def tree_rss(pid: int) -> int:
    """Summed resident bytes of `pid` and all its descendants, from /proc (0 where /proc is absent)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    total, todo, page = 0, [pid], os.sysconf("SC_PAGE_SIZE")
    while todo:
        p = todo.pop()
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass  # exited in between
        todo += children.get(p, [])
    return total


def run_prepare(source: Path, out: Path, resolution: int, workers: int) -> dict:
    """Run `scalegan prepare` in a subprocess; its wall time and peak memory."""
    command = [sys.executable, "-m", "scalegan", "prepare", str(source), str(out), "--resolution", str(resolution),
               "--workers", str(workers), "--no-progress"]
    timer = Path("/usr/bin/time").is_file()  # GNU time: the largest process's peak RSS
    report = out.parent / f".time-{out.name}.txt"
    if timer:
        command = ["/usr/bin/time", "-v", "-o", str(report), *command]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    peak = 0
    start = time.perf_counter()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        while process.poll() is None:
            peak = max(peak, tree_rss(process.pid))
            time.sleep(0.1)
        seconds = time.perf_counter() - start
        if process.returncode:
            output.seek(0)
            tail = output.read().decode(errors="replace").strip().splitlines()[-1:]
            raise BenchError(f"scalegan prepare --workers {workers} failed ({process.returncode}): {' '.join(tail)}")
    largest = None
    if timer and report.is_file():
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report.read_text())
        largest = int(found.group(1)) / 1024 if found else None
        report.unlink()
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak / 2**20, 1),
            "max_process_rss_mb": round(largest, 1) if largest is not None else None}


def open_time(out: Path, repeats: int) -> dict:
    """Median open time of the packed dataset and the time of its first read (as `data_open.py`)."""
    opens, reads = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        dataset = open_dataset(f"packed:{out}")
        opens.append(time.perf_counter() - start)
        start = time.perf_counter()
        dataset[len(dataset) - 1]
        reads.append(time.perf_counter() - start)
    return {"open_ms": round(1000 * statistics.median(opens), 2),
            "first_read_ms": round(1000 * statistics.median(reads), 2), "images": len(dataset),
            "shards": len(dataset.manifest["shards"])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="synthetic JPEGs (10 classes)")
    parser.add_argument("--resolution", type=int, default=256, help="prepare --resolution")
    parser.add_argument("--source-size", type=int, default=256, help="side of the square source JPEGs")
    parser.add_argument("--workers", default="1,2", help="comma-separated prepare --workers values")
    parser.add_argument("--data-dir", help="where the JPEGs are made or reused and packed (default: under the temp "
                        "dir)")
    parser.add_argument("--repeats", type=int, default=5, help="opens of the result (median)")
    parser.add_argument("--keep", action="store_true", help="keep the packed folders")
    parser.add_argument("--free-factor", type=float, default=3.0, help="free space needed, x what the run writes")
    args = parser.parse_args(argv)
    try:
        workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        parser.error(f"--workers {args.workers!r} is not a comma-separated list of integers")
    if args.n < 1 or args.resolution < 1 or args.source_size < 1 or min(workers) < 0 or args.repeats < 1:
        parser.error("--n, --resolution, --source-size and --repeats must be positive, --workers >= 0")
    try:
        measure(args, workers)
    except (BenchError, SyntheticFolderError) as e:
        print(f"prepare_scale: error: {e}", file=sys.stderr)
        sys.exit(2)


def measure(args, workers: list[int]) -> None:
    data_dir = Path(args.data_dir or Path(tempfile.gettempdir()) / f"scalegan-prepare-scale-{args.n}-"
                    f"{args.source_size}")
    source = data_dir / "jpeg"
    disk = check_disk(data_dir, source, args.n, args.source_size, args.resolution, args.free_factor)
    common = {"bench": BENCH, "cpu_kind": describe_cpu(), "cores": os.cpu_count(), "date": date.today().isoformat()}
    log(f"{source}: {args.n} JPEGs of {args.source_size} px ...")
    made = make_jpeg_folder(source, args.n, size=(args.source_size, args.source_size), jitter=0.0,
                            workers=2 if args.n >= 500 else 1)
    emit({**common, "step": "generate", "images": args.n, "source_size": args.source_size, "mean_kb": made["mean_kb"],
          "seconds": made["seconds"], "reused": made["reused"], "disk": disk, "machine": machine()})
    for w in workers:
        out = data_dir / f"packed-w{w}"
        if out.exists():
            shutil.rmtree(out)  # our own output of an earlier run: time a fresh prepare
        log(f"scalegan prepare --resolution {args.resolution} --workers {w} ...")
        run = run_prepare(source, out, args.resolution, w)
        opened = open_time(out, args.repeats)
        emit({**common, "step": "prepare", "workers": w, "resolution": args.resolution, **run,
              "images_per_s": round(opened["images"] / run["seconds"], 1), **opened,
              "packed_gb": round(sum(f.stat().st_size for f in out.iterdir()) / 1e9, 3), "machine": machine()})
        if not args.keep:
            shutil.rmtree(out)


if __name__ == "__main__":
    main()
