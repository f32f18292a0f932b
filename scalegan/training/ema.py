"""Exponential moving average of G and its one schedule. Buffers are averaged like parameters (BigGAN-PyTorch: its
BN running statistics) or copied (stylegan2-ada: the tracked W averages), as the family says."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, beta: float, buffers: str = "average") -> None:
    """``ema = beta * ema + (1 - beta) * model`` for every floating parameter, and for every floating buffer with
    ``buffers="average"``; ``buffers="copy"`` copies buffers. With ``beta == 0`` (and for integer buffers) a plain
    copy."""
    if buffers not in ("average", "copy"):
        raise ValueError(f"buffers must be 'average' or 'copy', got {buffers!r}")
    model_state = model.state_dict()
    copied = {name for name, _ in ema.named_buffers()} if buffers == "copy" else set()
    averaged: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
    for name, e in ema.state_dict().items():
        m = model_state[name]
        if e.is_floating_point() and beta > 0 and name not in copied:
            averaged[0].append(e)
            averaged[1].append(m.to(e.dtype))
        else:
            e.copy_(m)
    if averaged[0]:
        torch._foreach_lerp_(*averaged, 1 - beta)  # one multi-tensor kernel instead of one lerp per tensor


def ema_beta(step: int, batch_images: int, *, decay: float = 0.999, start: int = 0, halflife_kimg: float = 0.0,
             rampup: float = 0.0) -> float:
    """The EMA weight of the old average after update ``step`` (1-based) of ``batch_images`` images each.

    With ``halflife_kimg`` (the stylegan2-ada form): the average halves its weight on old values every
    ``halflife_kimg`` thousand images, or every ``rampup * images_seen`` while that is smaller. Otherwise
    (BigGAN-PyTorch): ``decay`` from update ``start`` on, and 0 (a plain copy, so the average starts from a trained
    G rather than the init) before it."""
    if halflife_kimg:
        halflife = halflife_kimg * 1000
        if rampup:
            halflife = min(halflife, step * batch_images * rampup)
        return 0.5 ** (batch_images / max(halflife, 1e-8))
    return decay if step >= start else 0.0
