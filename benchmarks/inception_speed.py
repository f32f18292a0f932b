"""Images per second of Inception feature extraction (resize to 299 + TF 2015-12-05 Inception, no gradients).

    python benchmarks/inception_speed.py [--batch-size 32] [--batches 3] [--resolution 32] [--threads N]
                                         [--dtype float32] [--channels-last] [--device cpu]

Random weights (speed does not depend on them) and random uint8 inputs at --resolution. The first batch is a
warm-up and is not counted. Prints one JSON line per resizer. `--dtype bfloat16` where the device has no native
bf16 (AVX2-only CPUs emulate it ~50x slower) prints a line saying it was skipped, unless --force; `--dtype auto`
takes bf16 where native, float32 elsewhere.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import date

import torch
from common import bf16_skipped, emit, log, machine

from scalegan.hardware import bf16_supported, inference_dtype
from scalegan.metrics.features import InceptionBackbone
from scalegan.metrics.inception import random_inception
from scalegan.metrics.resize import RESIZERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"])
    parser.add_argument("--force", action="store_true", help="time bfloat16 even where it is emulated")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--resizers", default="tf1-bilinear", help=f"comma-separated from {', '.join(RESIZERS)}")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.dtype == "bfloat16" and not (bf16_supported(args.device) or args.force):
        bf16_skipped({"benchmark": "inception_speed", "dtype": "bfloat16"}, args.device)
        return
    dtype = inference_dtype(args.dtype, args.device) or torch.float32
    model = random_inception(0)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch_size, 3, args.resolution, args.resolution), generator=g,
                           dtype=torch.uint8)
    for resizer in args.resizers.split(","):
        backbone = InceptionBackbone(
            model, resizer=resizer, device=args.device, dtype=dtype, channels_last=args.channels_last
        )
        times = []
        for i in range(args.batches + 1):
            start = time.perf_counter()
            backbone(images)
            if torch.device(args.device).type == "cuda":
                torch.cuda.synchronize()
            if i > 0:
                times.append(time.perf_counter() - start)
            log(f"{resizer} batch {i}: {time.perf_counter() - start:.2f} s")
        per_batch = statistics.median(times)
        emit({
            "benchmark": "inception_speed",
            "resizer": resizer,
            "batch_size": args.batch_size,
            "input_resolution": args.resolution,
            "dtype": str(dtype).replace("torch.", ""),
            "channels_last": args.channels_last,
            "images_per_s": round(args.batch_size / per_batch, 2),
            "s_per_batch": round(per_batch, 3),
            "machine": machine(args.device),
            "date": date.today().isoformat(),
        })


if __name__ == "__main__":
    main()
