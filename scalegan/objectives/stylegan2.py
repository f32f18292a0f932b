"""The StyleGAN2 objective (stylegan2-ada semantics, written from the papers): non-saturating logistic loss, R1 on
reals and path-length regularisation, both lazy (their own phases every ``d_reg_interval`` / ``g_reg_interval``
iterations, with the loop's learning-rate and beta correction), style mixing, and optional LeCam on D.

Phases, in stylegan2-ada's order: ``Gmain``, ``Greg`` (only with ``pl_weight`` > 0), ``Dmain``, ``Dreg`` (only with
``r1_gamma`` > 0). The path-length running mean is objective state (saved in ``state.pt``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..regularizers import LeCam, r1_loss
from . import Context, Draw, Nets, Objective, Phase, logit_stats


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class StyleGAN2ObjectiveConfig:
    """The ``objective`` section of a StyleGAN2 training config (CLI: one flag per field)."""

    r1_gamma: float = _f(10.0, "R1 regularisation weight gamma (gamma / 2 * |grad D(x)|^2 on reals); 0 = off")
    pl_weight: float = _f(2.0, "path-length regularisation weight; 0 = off (no Greg phase)")
    pl_decay: float = _f(0.01, "decay of the path-length running mean")
    pl_batch_shrink: int = _f(2, "path-length regularisation on batch / this many images")
    style_mixing: float = _f(0.9, "probability of style mixing (two z, a random cutoff layer) per G batch")
    g_reg_interval: int = _f(4, "G regularisation (path length) every this many iterations")
    d_reg_interval: int = _f(16, "D regularisation (R1) every this many iterations")
    lecam: float = _f(0.0, "LeCam regularisation weight for D (Tseng et al. 2021; e.g. 0.3); 0 = off")
    lecam_decay: float = _f(0.99, "decay of LeCam's moving anchors of D's real and fake outputs")
    blur_sigma: float = _f(0.0, "StyleGAN3-R's D-input blur: a Gaussian of this sigma (pixels) on every image D "
                           "sees, fading linearly to 0 over --blur-fade-kimg; 0 = off (StyleGAN3-R: 10)")
    blur_fade_kimg: float = _f(200.0, "with --blur-sigma: thousands of images over which the blur fades out "
                               "(StyleGAN3: batch * 200 / 32)")

    def __post_init__(self):
        if self.r1_gamma < 0 or self.pl_weight < 0 or not 0 <= self.pl_decay <= 1:
            raise ValueError("r1_gamma and pl_weight must be >= 0 and pl_decay in [0, 1]")
        if self.pl_batch_shrink < 1 or self.g_reg_interval < 1 or self.d_reg_interval < 1:
            raise ValueError("pl_batch_shrink, g_reg_interval and d_reg_interval must be >= 1")
        if self.lecam < 0 or not 0 <= self.lecam_decay < 1:
            raise ValueError("lecam must be >= 0 and lecam_decay in [0, 1)")
        if self.blur_sigma < 0 or self.blur_fade_kimg <= 0:
            raise ValueError("blur_sigma must be >= 0 and blur_fade_kimg > 0")
        if not 0 <= self.style_mixing <= 1:
            raise ValueError(f"style_mixing must be a probability, got {self.style_mixing}")


class StyleGAN2Objective(Objective):
    """stylegan2-ada's loss as phases of the one loop."""

    Config = StyleGAN2ObjectiveConfig

    def __init__(self, config: StyleGAN2ObjectiveConfig, nets: Nets, ctx: Context):
        super().__init__(config, nets, ctx)
        phases = [Phase("Gmain", "G")]
        if config.pl_weight:
            phases.append(Phase("Greg", "G", interval=config.g_reg_interval))
        phases.append(Phase("Dmain", "D"))
        if config.r1_gamma:
            phases.append(Phase("Dreg", "D", interval=config.d_reg_interval))
        self.phases = tuple(phases)
        self.pl_mean = torch.zeros([], device=ctx.device)
        self.lecam = LeCam(config.lecam, config.lecam_decay) if config.lecam else None
        world = torch.distributed.get_world_size(ctx.group) if ctx.group is not None else 1
        self.images_per_step = ctx.batch_size * ctx.accumulation * world
        self.steps = 0  # iterations begun (objective state: the blur follows the images seen)

    # ------------------------------------------------------------------------------------------------ helpers
    def _mix(self, z: torch.Tensor):
        """``(z2, cutoff)`` for style mixing with probability ``style_mixing`` (a random cutoff layer), else None."""
        if not self.config.style_mixing:
            return None
        num_ws = self.nets.G.config.num_ws
        cutoff = int(torch.randint(1, num_ws, ()))
        if float(torch.rand(())) >= self.config.style_mixing:
            cutoff = num_ws
        return torch.randn_like(z), cutoff

    def blur_sigma(self) -> float:
        """The D-input blur's sigma now: ``blur_sigma`` fading linearly to 0 over ``blur_fade_kimg`` thousand images
        seen before this iteration (StyleGAN3's loss)."""
        seen = (self.steps - 1) * self.images_per_step
        return self.config.blur_sigma * max(1 - seen / (self.config.blur_fade_kimg * 1000), 0.0)

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        """What D sees of ``images``: blurred (while the blur lasts), then augmented."""
        sigma = self.blur_sigma() if self.config.blur_sigma else 0.0
        if sigma > 0:
            images = gaussian_blur(images, sigma)
        return self.ctx.augment(images) if self.ctx.augment is not None else images

    def _observe(self, real_logits: torch.Tensor) -> None:
        observe = getattr(self.ctx.augment, "observe", None)
        if observe is not None:
            observe(real_logits)

    # ------------------------------------------------------------------------------------------------ phases
    def loss(self, phase: Phase, micro_batch: int, draw: Draw):
        if phase.name == "Gmain" and micro_batch == 0:  # every iteration starts with it
            self.steps += 1
        return {"Gmain": self._g_main, "Greg": self._g_reg, "Dmain": self._d_main, "Dreg": self._d_reg}[
            phase.name](draw)

    def _g_main(self, draw: Draw):
        z, y = draw.noise()
        with self.ctx.autocast():
            img = self.nets.G_train(z, y, mix=self._mix(z))
            logits = self.nets.D_plain(self._augment(img), y).float()
        loss = F.softplus(-logits).mean()
        return loss, {"loss_g": loss.detach()}

    def _g_reg(self, draw: Draw):
        """Path length: |J^T n| for image-space noise n / sqrt(H W), pulled to its running mean."""
        z, y = draw.noise()
        n = max(len(z) // self.config.pl_batch_shrink, 1)
        z, y = z[:n], (y[:n] if y is not None else None)
        img, ws = self.nets.G_train(z, y, mix=self._mix(z), return_ws=True)
        noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
        grads, = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grads.square().sum(2).mean(1).sqrt()
        # As stylegan2-ada: the batch's mean length enters this step's running mean with its gradient (detaching it
        # changes this phase's gradient by ~1%); only the stored copy is detached.
        pl_mean = self.pl_mean.lerp(lengths.mean(), self.config.pl_decay)
        self.pl_mean.copy_(pl_mean.detach())
        penalty = (lengths - pl_mean).square()
        loss = (img[:, 0, 0, 0] * 0 + penalty * self.config.pl_weight).mean()  # every output takes part (DDP)
        return loss, {"pl_penalty": penalty.mean().detach(), "pl_mean": pl_mean.detach()}

    def _d_main(self, draw: Draw):
        nets = self.nets
        z, y_fake = draw.noise()
        x, y = draw.real()
        with self.ctx.autocast():
            with torch.no_grad():
                fake = nets.G_train(z, y_fake, mix=self._mix(z)).float()
            # Two D passes (minibatch std must not mix real and fake); the first does not reduce gradients.
            first = nets.D_train.no_sync() if hasattr(nets.D_train, "no_sync") else contextlib.nullcontext()
            with first:
                fake_logits = nets.D_train(self._augment(fake), y_fake).float()
            real_logits = nets.D_train(self._augment(x), y).float()
        self._observe(real_logits.detach())
        loss_fake, loss_real = F.softplus(fake_logits).mean(), F.softplus(-real_logits).mean()
        loss = loss_fake + loss_real
        if self.lecam is not None:
            loss = loss + self.lecam(real_logits, fake_logits)
        return loss, {"loss_d_fake": loss_fake.detach(), "loss_d_real": loss_real.detach(),
                                       "d_real_sign": real_logits.detach().sign().mean(),
                                       **logit_stats(real_logits, fake_logits)}

    def _d_reg(self, draw: Draw):
        """R1: gamma / 2 times the squared gradient of D's output with respect to real images."""
        x, y = draw.real()
        loss, penalty = r1_loss(self.nets.D_train, x, y, self.config.r1_gamma, self._augment)
        return loss, {"r1_penalty": penalty}

    def state_dict(self) -> dict:
        return {"pl_mean": self.pl_mean.detach().cpu().clone(), "steps": self.steps,
                **({"lecam": self.lecam.state_dict()} if self.lecam is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int((state or {}).get("steps", 0))
        if state and state.get("pl_mean") is not None:
            self.pl_mean = state["pl_mean"].to(self.ctx.device)
        if self.lecam is not None:
            self.lecam.load_state_dict((state or {}).get("lecam"))


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """StyleGAN3's D-input blur: the separable, normalised kernel 2^-(x / sigma)^2 over integer |x| <= floor(3 sigma),
    zero padding (REFERENCE section 9)."""
    radius = int(math.floor(sigma * 3))
    if radius < 1:
        return images
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    f = (x / sigma).square().neg().exp2()
    f = (f / f.sum()).to(images.dtype)
    c = images.shape[1]
    images = F.conv2d(images, f.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius), groups=c)
    return F.conv2d(images, f.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0), groups=c)
