"""Images/s of StyleGAN3 sampling on this machine: the -T and -R generators of a preset (random weights), the
fast filtered leaky ReLU (the default) against its literal reference, float32 and (where the CPU computes it
natively) bf16, beside StyleGAN2 at the same resolution.

    python benchmarks/stylegan3_speed.py [--resolution 256] [--batches 1,4] [--repeats 3] [--threads N] [--force]

Per setting: one warm-up round, then the median of ``--repeats`` timed eval-mode forwards (z -> images, psi 0.7),
the paths taking turns. Prints one JSON line per (model, batch, path) with images/s and, for the reference and
bf16 paths, the max |difference| from the fast float32 output.
"""

from __future__ import annotations

import argparse
import contextlib
from datetime import date

import torch
from common import bf16_skipped, emit, machine, timed_round_robin

import scalegan
from scalegan.hardware import bf16_supported
from scalegan.models import stylegan3


@contextlib.contextmanager
def reference_ops():
    """Every filtered leaky ReLU of the StyleGAN3 model on its literal reference path."""
    fast = stylegan3.filtered_lrelu
    stylegan3.filtered_lrelu = lambda *args, **kw: fast(*args, **{**kw, "impl": "ref"})
    try:
        yield
    finally:
        stylegan3.filtered_lrelu = fast


def forward(G, z, ref=False, bf16=False):
    with torch.no_grad(), (reference_ops() if ref else contextlib.nullcontext()), \
            torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        return G(z, None, truncation=0.7).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--force", action="store_true", help="time bf16 even where the CPU emulates it")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    native_bf16 = bf16_supported("cpu") or args.force
    for name in (f"stylegan3-t-{args.resolution}", f"stylegan3-r-{args.resolution}", "stylegan2-256"):
        if name == "stylegan2-256" and args.resolution != 256:
            continue
        torch.manual_seed(0)
        G = scalegan.create_model(name)[0].eval()
        for batch in map(int, args.batches.split(",")):
            z = torch.randn(batch, G.config.z_dim, generator=torch.Generator().manual_seed(1))
            paths = [("fast float32", forward, (G, z))]
            if name.startswith("stylegan3"):
                paths.append(("reference float32", lambda G, z: forward(G, z, ref=True), (G, z)))
            if native_bf16:
                paths.append(("fast bf16", lambda G, z: forward(G, z, bf16=True), (G, z)))
            results = timed_round_robin(paths, args.repeats)
            base = results[0][1]
            for (path, _, _), (seconds, out) in zip(paths, results):
                emit({"bench": "stylegan3_speed", "model": name, "batch": batch, "path": path,
                      "images_per_s": round(batch / seconds, 3), "seconds": round(seconds, 3),
                      "max_abs_diff": float((out - base).abs().max()), "machine": machine("cpu"),
                      "date": date.today().isoformat()})
            if not native_bf16:
                bf16_skipped({"bench": "stylegan3_speed", "model": name, "batch": batch})


if __name__ == "__main__":
    main()
