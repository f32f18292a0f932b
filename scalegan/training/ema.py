"""Exponential moving average of G, buffers included (BigGAN-PyTorch semantics)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int = 0, start: int = 0) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for every floating parameter and buffer; before ``start``
    (and for integer buffers) a plain copy, so the average starts from a trained G rather than the init."""
    d = decay if step >= start else 0.0
    model_state = model.state_dict()
    for name, e in ema.state_dict().items():
        m = model_state[name]
        if e.is_floating_point() and d > 0:
            e.lerp_(m.to(e.dtype), 1 - d)
        else:
            e.copy_(m)


def ema_beta(images_seen: int, batch_images: int, halflife_kimg: float, rampup: float) -> float:
    """The stylegan2-ada EMA decay for one update of ``batch_images``: the average halves its weight on old
    values every ``halflife_kimg`` thousand images, or every ``rampup * images_seen`` while that is smaller."""
    halflife = halflife_kimg * 1000
    if rampup:
        halflife = min(halflife, images_seen * rampup)
    return 0.5 ** (batch_images / max(halflife, 1e-8))
