"""Images/s of an exported ONNX generator in onnxruntime vs the same generator in PyTorch (eval mode).

    python benchmarks/onnx_speed.py [--models biggan-deep-128,stylegan2-fmnist] [--batches 1,8] [--repeats 5]
                                    [--threads N] [--truncation 0.5]

Each preset is built at full size with random weights (BN statistics and attention gains made non-trivial), exported
with ``scalegan.export.export_onnx`` at ``--truncation``, and run on the same z and y by every path: PyTorch's
eval-mode ``G(z, y, truncation)``, the family's folded module where it has one (BigGAN-deep's, in
``scalegan.models.biggan_deep_fold``),
and onnxruntime (CPU provider, the same number of threads). Per setting: one warm-up round, then the median of
``--repeats`` timed forwards, the paths taking turns. One JSON line per (model, batch, path): images/s, speed-up over
PyTorch eval and the max |difference| from its images.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from common import emit, log, machine, timed_round_robin

import scalegan
from scalegan.export import export_onnx, load_onnx
from scalegan.family import get_family


@torch.no_grad()
def random_model(name: str, seed: int = 0, **overrides):
    """An eval-mode generator of preset ``name`` (full size unless ``overrides`` change it) whose buffers matter
    (not their initial values)."""
    torch.manual_seed(seed)
    G = scalegan.create_model(name, **overrides)[0].eval()
    g = torch.Generator().manual_seed(seed + 1)
    for key, value in G.state_dict().items():
        if key.endswith(("running_mean", "w_avg", "w_avg_class")):
            value.copy_(0.3 * torch.randn(value.shape, generator=g))
        elif key.endswith("running_var"):
            value.uniform_(0.5, 2.0, generator=g)
        elif key.endswith("gamma"):
            value.fill_(0.7)
    return G


def bench_model(name: str, batches: list[int], truncation: float | None, repeats: int, threads: int,
                folder: Path) -> None:
    log(f"{name}: building (random weights) and exporting ...")
    G = random_model(name)
    family = get_family(G)
    start = time.perf_counter()
    path = folder / f"{name}.onnx"
    export_onnx(G, path, truncation=truncation, source=name)
    export_s = time.perf_counter() - start
    gen = load_onnx(path, threads=threads)
    folded = family.fold(G, truncation=truncation) if family.fold is not None else None

    def eager(z, y):
        return G(z, y, truncation=truncation).numpy()

    def fast(z, y):
        return folded(z, y).numpy()

    for batch in batches:
        g = torch.Generator().manual_seed(batch)
        z = family.draw_latents(G.config, batch, truncation, family.truncation_mode(G.config), g)
        y = torch.randint(0, G.config.n_classes, (batch,), generator=g) if G.config.n_classes else None
        paths = [("pytorch eval", eager, (z, y))]
        if folded is not None:
            paths.append(("pytorch folded fp32", fast, (z, y)))
        paths.append(("onnxruntime", gen, (z.numpy(), None if y is None else y.numpy())))
        log(f"{name}, batch {batch}: {', '.join(p for p, _, _ in paths)} ...")
        with torch.no_grad():
            results = timed_round_robin(paths, repeats)
        base, reference = results[0]
        for (path_name, _, _), (seconds, out) in zip(paths, results):
            emit({"bench": "onnx_speed", "model": name, "path": path_name, "batch": batch, "truncation": truncation,
                  "img_per_s": round(batch / seconds, 3), "s_per_batch": round(seconds, 4),
                  "speedup_vs_pytorch_eval": round(base / seconds, 2),
                  "max_abs_diff_vs_pytorch_eval": float(np.abs(np.asarray(out) - np.asarray(reference)).max()),
                  "export_s": round(export_s, 1), "onnx_mb": round(path.stat().st_size / 2 ** 20, 1),
                  "threads": threads, "machine": machine(), "date": date.today().isoformat()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="biggan-deep-128,stylegan2-fmnist")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--truncation", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for both (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            bench_model(name, batches, args.truncation, args.repeats, threads, Path(folder))


if __name__ == "__main__":
    main()
