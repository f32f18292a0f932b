"""Training objectives: what a family's networks optimise, as phases the one training loop runs.

An objective names its phases (``Phase(name, network, interval, repeat)``: which network's optimizer steps, every
how many iterations, how many times) and computes each phase's loss from the batches it draws. The loop does the
rest for every family alike: micro-batches and their gradient synchronisation, mixed precision and loss scaling,
optimizer steps, lazy-regularisation corrections, EMA, logging (whatever values the phases return), checkpoints
(``state_dict`` of the objective goes into ``state.pt``) and distribution.

Lazy regularisation (stylegan2-ada): a phase that runs every ``interval`` > 1 iterations has its loss multiplied by
``interval``, and its network's Adam learning rate and betas are corrected by ``ratio = interval / (interval + 1)``
(``lr * ratio``, ``beta ** ratio``), so the network's steps per iteration stay what the plain schedule intends.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..utils import dataclass_from_dict


@dataclass(frozen=True)
class Phase:
    """One step of an iteration: ``network`` ("G" or "D") is updated ``repeat`` times every ``interval`` iterations."""

    name: str
    network: str
    interval: int = 1
    repeat: int = 1

    def __post_init__(self):
        if self.network not in ("G", "D"):
            raise ValueError(f"phase {self.name!r}: network must be 'G' or 'D', got {self.network!r}")
        if self.interval < 1 or self.repeat < 1:
            raise ValueError(f"phase {self.name!r}: interval and repeat must be >= 1")


@dataclass
class Nets:
    """The networks as an objective uses them: the modules, and the wrappers (DDP, compiled) that train them.

    ``D_plain`` runs D without its DDP wrapper, for phases that must not reduce D's gradients (the G phase)."""

    G: nn.Module
    D: nn.Module
    G_train: nn.Module
    D_train: nn.Module
    D_plain: nn.Module


@dataclass
class Context:
    """What the loop tells an objective about the run."""

    device: torch.device
    autocast: Callable[[], Any]  # a context manager factory: the run's mixed precision
    augment: Callable[[torch.Tensor], torch.Tensor] | None  # applied to every image D sees, real and fake
    accumulation: int  # micro-batches per optimizer step
    batch_size: int  # images per micro-batch on this rank
    seed: int
    group: Any = None  # the process group under torchrun, else None
    class_weights: Any = None  # the class counts generated labels follow (None: uniform)


class Draw(typing.Protocol):
    """The batches an objective can ask for (this rank's slice of the global batch, on the device)."""

    def real(self) -> tuple[torch.Tensor, torch.Tensor]: ...  # images [N, C, H, W] in [-1, 1], labels [N]

    def noise(self) -> tuple[torch.Tensor, torch.Tensor | None]: ...  # latents, class labels (None: unconditional)


class Objective:
    """Base class: ``Config`` is the objective's section of the training config; ``phases`` its phases."""

    Config: type = type(None)
    phases: tuple[Phase, ...] = ()

    def __init__(self, config, nets: Nets, ctx: Context):
        self.config, self.nets, self.ctx = config, nets, ctx

    def loss(self, phase: Phase, micro_batch: int, draw: Draw) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one micro-batch of ``phase`` (the loop scales and back-propagates it) and the values to log."""
        raise NotImplementedError

    def penalty(self, phase: Phase) -> torch.Tensor | None:
        """A loss added once per step of ``phase``, after its micro-batches (e.g. a weight regulariser)."""
        return None

    def sampler(self, G: nn.Module) -> nn.Module:
        """The generator to sample and save (e.g. with recomputed statistics); default: ``G`` itself."""
        return G

    def state_dict(self) -> dict:
        """Training state of the objective (running means, anchors) saved in ``state.pt``."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def make_config(config_cls: type, data: dict | None, family: str):
    """An objective config from a dict; unknown keys and invalid values are ValueErrors naming them."""
    return dataclass_from_dict(config_cls, data, f"{family} objective", items="settings")


def lazy_ratio(phases: tuple[Phase, ...], network: str) -> float:
    """The Adam correction of ``network`` for its lazily run phases: ``k / (k + 1)``, or 1 when it has none."""
    intervals = {p.interval for p in phases if p.network == network and p.interval > 1}
    if len(intervals) > 1:
        raise ValueError(f"phases of {network} use several lazy intervals {sorted(intervals)}: use one")
    return (lambda k: k / (k + 1))(intervals.pop()) if intervals else 1.0


def logit_stats(real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
    """D's logits on reals and fakes as the log shows them (mean and spread, detached): a D that separates them
    ever further, or collapses onto one value, shows here before the samples do."""
    real, fake = real.detach().float(), fake.detach().float()
    return {"d_real_mean": real.mean(), "d_real_std": real.std() if real.numel() > 1 else real.new_zeros(()),
            "d_fake_mean": fake.mean(), "d_fake_std": fake.std() if fake.numel() > 1 else fake.new_zeros(())}
