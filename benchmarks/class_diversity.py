"""Within-class diversity of a class-conditional generator against its data, on the project's Fashion-MNIST
classifier's features: for each class, the mean distance of features to the class's mean feature (its spread),
generated (G_ema, no truncation, a fixed seed) over real (the test split); and how much of W's variance z explains
for a model with a W space (the rest is the class). A ratio well below 1 is what "the same garment in every column"
looks like in numbers.

    python benchmarks/class_diversity.py RUN [RUN ...] --classifier-dir benchmarks/results/fmnist_classifier

Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import sys

import torch
from common import emit, machine

import scalegan
from scalegan.data import open_dataset
from scalegan.family import get_family
from scalegan.metrics.features import ClassifierBackbone


def features(backbone, images: torch.Tensor, batch: int = 250) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([backbone(images[i:i + batch])["features"] for i in range(0, len(images), batch)])


def spreads(f: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Per class: the mean distance of the features to their mean."""
    return torch.stack([(f[y == k] - f[y == k].mean(0)).norm(dim=1).mean() for k in range(n_classes)])


@torch.no_grad()
def z_share(G, n: int = 256) -> float | None:
    """Of W's variance over z and classes, the share within a class (from z); None without a W space."""
    family = get_family(G)
    if family.w_space is None or not G.config.n_classes:
        return None
    z = torch.randn(n, *family.latent_shape(G.config), generator=torch.Generator().manual_seed(0))
    ws = torch.stack([family.w_space.map(G, z, torch.full((n,), k), None)[:, 0] for k in range(G.config.n_classes)])
    within, between = ws.var(1).sum(-1).mean(), ws.mean(1).var(0).sum()
    return float(within / (within + between))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--classifier-dir", default="benchmarks/results/fmnist_classifier")
    parser.add_argument("--per-class", type=int, default=200)
    args = parser.parse_args()
    backbone = ClassifierBackbone.from_dir(args.classifier_dir)
    data = open_dataset("fashion-mnist", split="test")
    x, y = data.tensors
    real = spreads(features(backbone, x.float() / 127.5 - 1), y, 10)
    for run in args.runs:
        G, info = scalegan.load(run)
        labels = torch.arange(10).repeat_interleave(args.per_class)
        images = scalegan.sample(G, len(labels), y=labels, seed=0)
        fake = spreads(features(backbone, images), labels, 10)
        ratio = fake / real
        emit({"bench": "class_diversity", "run": run, "family": info.family, "spread_ratio_mean": float(ratio.mean()),
              "spread_ratio_min": float(ratio.min()), "spread_ratio_per_class": [round(float(r), 3) for r in ratio],
              "w_variance_from_z": z_share(G), "machine": machine("cpu")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
