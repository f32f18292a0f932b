"""Regularizers as pure functions of a module's parameters."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def orthogonal_penalty(module: nn.Module, beta: float, exclude: Iterable[torch.Tensor] = ()) -> torch.Tensor:
    """BigGAN's orthogonal regularization ``beta * sum_W ||W W^T * (1 - I)||_F^2`` (paper, section 3.1).

    W is every parameter with >= 2 dims, reshaped [out, -1] (raw weights, before spectral norm); biases,
    1-D gains and the tensors in ``exclude`` (the shared class embedding) are skipped. Note: BigGAN-PyTorch
    adds the gradient ``2 beta (W W^T * (1 - I)) W`` directly, which equals this penalty with beta / 2.
    """
    excluded = {id(t) for t in exclude}
    total = None
    for p in module.parameters():
        if p.ndim < 2 or not p.requires_grad or id(p) in excluded:
            continue
        w = p.reshape(p.shape[0], -1).float()
        gram = w @ w.t()
        term = (gram - torch.diag_embed(torch.diagonal(gram))).pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return beta * total


def class_embeddings(G: nn.Module) -> list[torch.Tensor]:
    """The shared class-embedding tables that orthogonal regularization leaves out."""
    tables = []
    for name in ("shared", "embeddings"):
        layer = getattr(G, name, None)
        if layer is not None:
            tables.append(layer.weight)
    return tables
