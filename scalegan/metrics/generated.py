"""The images every generator metric is measured on: one definition for FID and co., ``acc`` and
``class_consistency``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..latents import quota_labels
from ..sampling import sample

SEED_CHUNK = 100  # generated images per seeded draw: fixed, so that no result depends on the batch size


def _chunk_seed(seed: int, chunk: int) -> int:
    return int(np.random.SeedSequence([seed, chunk]).generate_state(1, dtype=np.uint32)[0])


@torch.no_grad()
def generated_batches(
    G: Any,
    n: int,
    *,
    seed: int = 0,
    truncation: float | None = None,
    truncation_mode: str | None = None,
    batch_size: int = SEED_CHUNK,
    class_weights=None,
):
    """The `n` images every generator metric is measured on (FID and co., `acc`, `class_consistency`), as
    batches `(float images in [-1, 1] [k, C, H, W] on the CPU, int64 classes [k] or None)` of `batch_size`.

    Image i has class `i % n_classes` (none for an unconditional G), or with `class_weights` (the training data's
    class counts) the classes in those proportions, fixed and interleaved (`latents.quota_labels`; equal weights
    give `i % n_classes` again). Images are drawn in chunks of 100 (the last
    may be shorter): chunk j is `sample(G, k, y=its classes, truncation=truncation, seed=s_j,
    truncation_mode=truncation_mode)` with G in eval mode and `s_j = SeedSequence([seed, j])`. So the images
    depend on G, n, seed and truncation, not on batch_size."""
    n_classes = int(getattr(G.config, "n_classes", 0) or 0)
    labels = quota_labels(n, class_weights, n_classes) if n_classes else None
    was_training = G.training
    G.eval()
    try:
        pending, done = [], 0  # images drawn but not yet yielded; images yielded
        for j, start in enumerate(range(0, n, SEED_CHUNK)):
            stop = min(start + SEED_CHUNK, n)
            y = labels[start:stop] if labels is not None else None
            images = sample(G, stop - start, y=y, truncation=truncation, truncation_mode=truncation_mode,
                            seed=_chunk_seed(seed, j))
            pending.append(images.cpu())
            while stop - done >= batch_size or (stop == n and done < n):
                images = torch.cat(pending)
                k = min(batch_size, stop - done)
                pending = [images[k:]]
                yield images[:k], labels[done : done + k] if labels is not None else None
                done += k
    finally:
        G.train(was_training)
