"""How long `open_dataset` takes on packed datasets of 1,000 and 100,000 images: it reads the manifest and the
`.npy` headers only, so the two times should be the same order of magnitude.

    python benchmarks/data_open.py [--sizes 1000,100000] [--repeats 5] [--shard-size 1000]

Writes each dataset with `scalegan.data.prepare.prepare` from an NPZ of random 8 x 8 grey images in 10 classes (in a
temporary folder), then prints one JSON line per size: the median of `--repeats` opens, and the time to read one
image (the first read maps its shard).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import emit, log, machine

from scalegan.data import open_dataset
from scalegan.data.prepare import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000", help="comma-separated image counts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shard-size", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            source = Path(tmp) / f"random{n}.npz"
            np.savez(source, x=rng.integers(0, 256, (n, 8, 8), dtype=np.uint8), y=np.arange(n) % 10)
            out = Path(tmp) / f"packed{n}"
            start = time.perf_counter()
            prepare(f"npz:{source}", out, resolution=8, shard_size=args.shard_size, dedup=False, progress=False)
            log(f"{n} images packed in {time.perf_counter() - start:.2f} s")
            opens, reads = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                dataset = open_dataset(str(out))
                opens.append(time.perf_counter() - start)
                start = time.perf_counter()
                dataset[len(dataset) - 1]
                reads.append(time.perf_counter() - start)
            emit({"images": n, "shards": len(dataset.manifest["shards"]), "open_ms": 1000 * statistics.median(opens),
                  "first_read_ms": 1000 * statistics.median(reads), "repeats": args.repeats, "machine": machine()})


if __name__ == "__main__":
    main()
