"""Images/s of BigGAN-deep sampling: pytorch-pretrained-biggan (eval mode) vs scalegan's exact and fast paths.

    python benchmarks/sample_speed.py [--resolutions 128,256] [--batches 1,8] [--repeats 7] [--threads N]

All paths get the same random weights (a full-size pytorch-pretrained-biggan model, made finite as the tests do,
converted with ``scalegan.convert``), the same z, y and truncation, on the same machine in one run. Per setting:
one warm-up round, then the median of ``--repeats`` timed forwards, the paths taking turns (so that load changes
on a shared machine hit them alike). Prints one JSON line per (resolution, batch, path) with images/s, the
speed-up over the port and the max |difference| from the port's output.

The bf16 fast path runs only where the device computes bf16 natively (`scalegan.hardware`); elsewhere (AVX2-only
CPUs emulate bf16 ~50x slower) it is skipped with a JSON line saying why, unless --force.
"""

from __future__ import annotations

import argparse
import warnings
from datetime import date

import torch
import torch.nn.functional as F
from common import bf16_skipped, emit, log, machine, timed_round_robin

from scalegan.convert.pytorch_pretrained_biggan import convert_state_dict
from scalegan.hardware import bf16_supported
from scalegan.models.biggan_deep_fold import fast_generator

LAYERS_256 = [(False, 16, 16), (True, 16, 16), (False, 16, 16), (True, 16, 8), (False, 8, 8), (True, 8, 8),
              (False, 8, 8), (True, 8, 4), (False, 4, 4), (True, 4, 2), (False, 2, 2), (True, 2, 1)]
LAYERS = {128: [(False, 16, 16), (True, 16, 16), (False, 16, 16), (True, 16, 8), (False, 8, 8), (True, 8, 4),
                (False, 4, 4), (True, 4, 2), (False, 2, 2), (True, 2, 1)],
          256: LAYERS_256, 512: LAYERS_256 + [(False, 1, 1), (True, 1, 1)]}


@torch.no_grad()
def random_port_model(resolution: int, seed: int = 0):
    """A full-size port model with random weights whose eval-mode output is finite (see the parity tests)."""
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    torch.manual_seed(seed)
    config = BigGANConfig(output_dim=resolution, layers=LAYERS[resolution], attention_layer_position=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = BigGAN(config)
    g = torch.Generator().manual_seed(seed + 1)
    for name, buf in model.named_buffers():
        if name.endswith("running_means"):
            buf.copy_(0.3 * torch.randn(buf.shape, generator=g))
        elif name.endswith("running_vars"):
            buf.uniform_(0.5, 2.0, generator=g)
    model.generator.bn.weight.uniform_(0.5, 1.5, generator=g)
    model.generator.bn.bias.normal_(0.0, 0.2, generator=g)
    for name, p in model.named_parameters():
        if name.endswith("gamma"):
            p.fill_(0.7)
    for module in model.modules():
        if hasattr(module, "weight_u"):
            w = module.weight_orig.reshape(module.weight_orig.shape[0], -1)
            u = module.weight_u
            for _ in range(10):
                v = F.normalize(w.t() @ u, dim=0)
                u = F.normalize(w @ v, dim=0)
            module.weight_u.copy_(u)
            module.weight_v.copy_(v)
    return model.eval(), config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", default="128,256")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--truncation", type=float, default=0.4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, all cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--force", action="store_true", help="time the bf16 path even where bf16 is emulated")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, t = torch.device(args.device), args.truncation
    with_bf16 = bf16_supported(device) or args.force
    if not with_bf16:
        bf16_skipped({"bench": "sample_speed", "path": "scalegan fast bf16"}, args.device)
    for resolution in (int(r) for r in args.resolutions.split(",")):
        log(f"building biggan-deep-{resolution} with random weights ...")
        port, config = random_port_model(resolution)
        G = convert_state_dict(port.state_dict(), config.__dict__).to(device)
        port = port.to(device)
        fast32 = fast_generator(G, truncation=t)
        fast16 = fast_generator(G, truncation=t, dtype=torch.bfloat16) if with_bf16 else None
        for batch in (int(b) for b in args.batches.split(",")):
            g = torch.Generator().manual_seed(batch)
            z = (t * torch.randn(batch, 128, generator=g).clamp(-2, 2)).to(device)
            y = torch.randint(0, 1000, (batch,), generator=g).to(device)
            one_hot = F.one_hot(y, 1000).float()
            paths = [("pytorch-pretrained-biggan", port, (z, one_hot, t)), ("scalegan exact", G, (z, y, t)),
                     ("scalegan fast fp32", fast32, (z, y))]
            if with_bf16:
                paths.append(("scalegan fast bf16", fast16, (z, y)))
            log(f"{resolution} px, batch {batch}: {', '.join(name for name, _, _ in paths)} ...")
            with torch.no_grad():
                results = timed_round_robin(paths, args.repeats)
            base, reference = results[0]
            for (name, _, _), (seconds, out) in zip(paths, results):
                emit({"bench": "sample_speed", "model": f"biggan-deep-{resolution}", "path": name, "batch": batch,
                      "truncation": t, "img_per_s": round(batch / seconds, 3), "s_per_batch": round(seconds, 4),
                      "speedup_vs_port": round(base / seconds, 2),
                      "max_abs_diff_vs_port": float((out.float() - reference).abs().max()),
                      "device": args.device, "machine": machine(args.device), "date": date.today().isoformat()})


if __name__ == "__main__":
    main()
