"""Generator tuning after inversion: the latent search has found each image's latent; a copy of G is now trained,
one per image, so that its image of that latent meets the input (the search's own loss: pixels, pyramid, and the
feature loss). Which method is the family's ``tune_groups`` hook:

- progressive (Deep Generative Prior, Pan et al. 2020), for families that name G's parts from the input side
  (BigGAN, BigGAN-deep): the steps fall into one stage per group; stage t trains groups 0..t (the linear layer and
  class embedding first, then the blocks from low to high resolution; the output layer stays as it is, as in DGP),
  and z moves with them at a small learning rate under the search's prior. Adam with beta1 0 as DGP.
- pivotal (Roich et al. 2021), for the others (StyleGAN2): all of G's trainable parameters around the fixed pivot
  latent, with a locality regulariser: each step draws a latent near the pivot (PTI: w_r = w_p + alpha (w_z - w_p)
  / |w_z - w_p| with w_z a mapped random z at psi 0.5; here alpha is ``locality_radius`` times the typical distance of
  a mapped latent from the centre) and adds ``locality_weight`` x the squared difference of the tuned and the
  original G's images there, so the rest of the latent space keeps its images (and edits keep working).

G itself is not changed. Each image gets its own tuned copy (the honest model: tuning fits one image); N images
cost N tunings.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm import tqdm

from .family import get_family, latent_shape, trainable_parameters, w_shape

METHODS = ("progressive", "pivotal")


@dataclass(frozen=True)
class TuneConfig:
    """Generator tuning settings. ``lr``: Adam's step on G (default 2e-4 progressive, 3e-4 pivotal, PTI's);
    ``latent_lr``: progressive only, z's step; ``locality_weight`` / ``locality_radius``: pivotal only."""

    steps: int = 200
    lr: float | None = None
    latent_lr: float = 1e-3
    locality_weight: float = 0.1
    locality_radius: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"tuning steps must be >= 1, got {self.steps}")
        for name in ("latent_lr", "locality_weight", "locality_radius"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"tuning {name} must be >= 0, got {getattr(self, name)}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"tuning lr must be > 0, got {self.lr}")


def tune_method(G) -> str:
    """``progressive`` where the family names G's parts input side first, else ``pivotal``."""
    return "progressive" if get_family(G).tune_groups is not None else "pivotal"


def settings(G, config: TuneConfig) -> dict:
    """What ``summary.json`` records of a tuning: method, steps, the learning rates and the method's own knobs."""
    method = tune_method(G)
    out = {"method": method, **asdict(config), "lr": _lr(method, config)}
    if method == "progressive":
        out["stages"] = len(get_family(G).tune_groups(G))
        out.pop("locality_weight"), out.pop("locality_radius")
    else:
        out.pop("latent_lr")
    return out


def _lr(method: str, config: TuneConfig) -> float:
    return config.lr if config.lr is not None else (2e-4 if method == "progressive" else 3e-4)


def stage_of(step: int, steps: int, stages: int) -> int:
    """The stage of step ``step`` (0-based) when ``steps`` are split evenly into ``stages``."""
    return min(step * stages // max(steps, 1), stages - 1)


def tune(G: nn.Module, latent: torch.Tensor, y: torch.Tensor | None, loss_fn: Callable, render: Callable,
         prior: Callable | None, config: TuneConfig, progress: bool = False,
         on_stage: Callable | None = None) -> tuple[nn.Module, torch.Tensor]:
    """A tuned copy of ``G`` (eval mode, no parameter gradients) and the latent [1, ...] it renders the image from.

    ``loss_fn(x) -> [1]``: the image's loss of a generated image; ``render(G, latent, y)``: G's image with
    gradients; ``prior(latent) -> [1]``: the latent prior (progressive: z moves). ``on_stage(stage, G)`` is called
    after each progressive stage (tests look at which parameters moved)."""
    method = tune_method(G)
    tuned = copy.deepcopy(G).eval().requires_grad_(False)
    lr = _lr(method, config)
    latent = latent.detach().clone()
    generator = torch.Generator().manual_seed(config.seed)
    desc = f"tune ({method})"
    if method == "progressive":
        groups = [list(g) for g in get_family(G).tune_groups(tuned)]
        latent.requires_grad_(True)
        opt = torch.optim.Adam([{"params": g, "lr": lr} for g in groups] + [{"params": [latent],
                               "lr": config.latent_lr}], betas=(0.0, 0.999), eps=1e-8)
        stage = -1
        for t in tqdm(range(config.steps), desc=desc, unit="step", disable=not progress, file=sys.stderr):
            now = stage_of(t, config.steps, len(groups))
            if now != stage:
                if stage >= 0 and on_stage is not None:
                    on_stage(stage, tuned)
                stage = now
                for k, g in enumerate(groups):  # groups past the stage get no gradient: Adam leaves them
                    for p in g:
                        p.requires_grad_(k <= stage)
            loss = loss_fn(render(tuned, latent, y)) + (prior(latent) if prior is not None else 0)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
        if on_stage is not None:
            on_stage(stage, tuned)
    else:
        params = trainable_parameters(tuned)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=lr)
        near = _Near(G, latent, y, config, generator) if config.locality_weight > 0 else None
        for _ in tqdm(range(config.steps), desc=desc, unit="step", disable=not progress, file=sys.stderr):
            loss = loss_fn(render(tuned, latent, y)).sum()
            if near is not None:
                w_r = near.draw()
                with torch.no_grad():
                    reference = render(G, w_r, y)
                loss = loss + config.locality_weight * (render(tuned, w_r, y) - reference).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    tuned.requires_grad_(False)
    return tuned.eval(), latent.detach()


class _Near:
    """Latents near the pivot for the locality regulariser: W+ (a family with a W space) or z."""

    def __init__(self, G, pivot: torch.Tensor, y, config: TuneConfig, generator: torch.Generator):
        self.G, self.pivot, self.y, self.generator = G, pivot, y, generator
        self.space = get_family(G).w_space
        with torch.no_grad():
            if self.space is not None:
                z = torch.randn(64, *latent_shape(G), generator=generator)
                yy = None if y is None else y.expand(64)
                w = self.space.map(G, z, yy, None)[:, 0]
                centre = self.space.centre(G, None if y is None else y[:1]).reshape(1, -1).to(w.device)
                typical = (w - centre).norm(dim=1).median()
            else:
                typical = torch.tensor(float(latent_shape(G)[0]) ** 0.5)
        self.alpha = config.locality_radius * float(typical) * (w_shape(G)[0] ** 0.5 if self.space else 1.0)

    @torch.no_grad()
    def draw(self) -> torch.Tensor:
        z = torch.randn(1, *latent_shape(self.G), generator=self.generator)
        if self.space is not None:
            z = self.space.map(self.G, z, self.y, 0.5).to(self.pivot.device)  # PTI: psi 0.5
        z = z.to(self.pivot.device)
        direction = z - self.pivot
        return self.pivot + self.alpha * direction / direction.flatten(1).norm(dim=1).clamp_min(1e-8).reshape(
            -1, *[1] * (direction.dim() - 1))
