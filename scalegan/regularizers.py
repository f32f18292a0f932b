"""Regularizers as pure functions of a module's parameters."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def r1_loss(D: nn.Module, x: torch.Tensor, y: torch.Tensor | None, gamma: float,
            augment=None) -> tuple[torch.Tensor, torch.Tensor]:
    """R1 (Mescheder et al. 2018): ``gamma / 2`` times the squared gradient of D's output with respect to real
    images ``x`` (through ``augment`` when given). Returns (the loss, the per-image penalty's mean, detached); the
    loss keeps D's logits in the graph (times 0) so every D parameter is part of the backward."""
    x = x.detach().requires_grad_(True)
    logits = D(augment(x) if augment is not None else x, y).float()
    grads, = torch.autograd.grad(logits.sum(), x, create_graph=True)
    penalty = grads.square().sum(dim=[1, 2, 3])
    return (logits * 0 + penalty * (gamma / 2)).mean(), penalty.mean().detach()


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


class LeCam:
    """LeCam regularisation (Tseng et al., CVPR 2021): keeps D's outputs near moving anchors,
    ``weight * (mean(relu(D(x) - a_fake)^2) + mean(relu(a_real - D(G(z)))^2))``, where ``a_real`` and ``a_fake``
    are exponential moving averages (``decay``) of D's mean output on real and generated images. It bounds how far
    D can separate the two, which helps most when data is scarce. The anchors are training state: ``state_dict``
    / ``load_state_dict`` save and restore them so a resumed run continues exactly."""

    def __init__(self, weight: float, decay: float = 0.99):
        self.weight, self.decay = weight, decay
        self.anchor_real: torch.Tensor | None = None
        self.anchor_fake: torch.Tensor | None = None

    @torch.no_grad()
    def _track(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> None:
        real, fake = d_real.float().mean(), d_fake.float().mean()
        if self.anchor_real is None:
            self.anchor_real, self.anchor_fake = real.clone(), fake.clone()
        else:
            self.anchor_real.lerp_(real, 1 - self.decay)
            self.anchor_fake.lerp_(fake, 1 - self.decay)

    def __call__(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
        """Update the anchors with this batch's logits, then return the weighted penalty (differentiable)."""
        self._track(d_real, d_fake)
        real_term = torch.relu(d_real - self.anchor_fake).pow(2).mean()
        fake_term = torch.relu(self.anchor_real - d_fake).pow(2).mean()
        return self.weight * (real_term + fake_term)

    def state_dict(self) -> dict:
        return {"anchor_real": self.anchor_real, "anchor_fake": self.anchor_fake}

    def load_state_dict(self, state: dict | None) -> None:
        state = state or {}
        self.anchor_real, self.anchor_fake = state.get("anchor_real"), state.get("anchor_fake")
