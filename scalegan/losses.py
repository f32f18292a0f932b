"""GAN losses as pure functions of discriminator logits. Each D loss returns (real term, fake term)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_hinge(real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))``, returned as its two terms."""
    return F.relu(1 - real).mean(), F.relu(1 + fake).mean()


def g_hinge(fake: torch.Tensor) -> torch.Tensor:
    """``-mean(D(G(z)))``."""
    return -fake.mean()


def d_ce(real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the original GAN: ``-log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))``."""
    return F.softplus(-real).mean(), F.softplus(fake).mean()


def g_ce(fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``-log sigmoid(D(G(z)))``."""
    return F.softplus(-fake).mean()


LOSSES = {"hinge": (d_hinge, g_hinge), "ce": (d_ce, g_ce)}
