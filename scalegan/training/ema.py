"""Exponential moving average of G, buffers included (BigGAN-PyTorch semantics)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int, start: int) -> None:
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
