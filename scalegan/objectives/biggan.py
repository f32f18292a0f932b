"""The BigGAN objective (both BigGAN and BigGAN-deep): hinge (or cross-entropy) loss, ``n_d_steps`` D steps per G
step, orthogonal regularisation, LeCam, one spectral-norm power iteration per step under gradient accumulation,
cross-replica batch norm under torchrun, and standing statistics for the saved generator."""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ..latents import sample_z
from ..layers import SpectralNorm, batch_norms, set_cross_replica_bn
from ..losses import LOSSES
from ..regularizers import LeCam, class_embeddings, orthogonal_penalty, r1_loss
from ..sampling import draw
from . import Context, Draw, Nets, Objective, Phase, logit_stats


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class BigGANObjectiveConfig:
    """The ``objective`` section of a BigGAN training config (CLI: one flag per field)."""

    loss: str = _f("hinge", "GAN loss: hinge, or ce (cross-entropy of the original GAN, non-saturating G)",
                   choices=tuple(LOSSES))
    n_d_steps: int = _f(2, "D updates per G update")
    g_ortho: float = _f(0.0, "orthogonal regularization strength for G (BigGAN: 1e-4); 0 = off")
    d_ortho: float = _f(0.0, "orthogonal regularization strength for D; 0 = off")
    lecam: float = _f(0.0, "LeCam regularisation weight for D (Tseng et al. 2021; e.g. 0.3); 0 = off")
    lecam_decay: float = _f(0.99, "decay of LeCam's moving anchors of D's real and fake outputs")
    class_loss: float = _f(0.0, "weight of the projection's class cross-entropy (P2GAN's label matching, Han et al. "
                           "2021): D learns to classify real images with its class embedding, G to make images D "
                           "classifies as their class; 0 = off")
    r1_gamma: float = _f(0.0, "R1 regularisation of D (gamma / 2 * |grad D(x)|^2 on reals), a lazy phase every "
                         "--d-reg-interval iterations; 0 = off (BigGAN has none)")
    d_reg_interval: int = _f(16, "with --r1-gamma: R1 every this many iterations")
    standing_stats: int = _f(0, "before saving the sampling generator, recompute its BN statistics over this many "
                             "generated batches; 0 = off")
    sync_bn: bool = _f(True, "under torchrun: cross-replica batch norm in G (statistics of the global batch, as the "
                       "BigGAN paper); --no-sync-bn normalises each rank's slice alone")

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        if self.n_d_steps < 1:
            raise ValueError(f"n_d_steps must be >= 1, got {self.n_d_steps}")
        if self.g_ortho < 0 or self.d_ortho < 0 or self.standing_stats < 0:
            raise ValueError("g_ortho, d_ortho and standing_stats must be >= 0")
        if self.lecam < 0 or not 0 <= self.lecam_decay < 1:
            raise ValueError("lecam must be >= 0 and lecam_decay in [0, 1)")
        if self.class_loss < 0:
            raise ValueError(f"class_loss must be >= 0, got {self.class_loss}")
        if self.r1_gamma < 0 or self.d_reg_interval < 1:
            raise ValueError("r1_gamma must be >= 0 and d_reg_interval >= 1")


class PowerIterationPerStep:
    """One spectral-norm power iteration per optimizer step, however many micro-batches accumulate into it.

    Each training-mode forward advances the stored ``u`` vectors. Before every micro-batch after the first, they
    are put back to their value at the start of the step, so all micro-batches see the same normalised weights
    and the step ends with the ``u`` a single forward of the whole batch would leave: accumulation then
    changes nothing but memory for a network without batch statistics (D)."""

    def __init__(self, *modules: nn.Module, enabled: bool = True):
        self.vectors = [m.u for module in modules for m in module.modules() if isinstance(m, SpectralNorm)]
        self.enabled = enabled  # with one micro-batch per step there is nothing to restore
        self.start: list[torch.Tensor] = []

    def micro_batch(self, index: int) -> None:
        if not self.enabled:
            return
        if index == 0:
            self.start = [u.clone() for u in self.vectors]
        else:
            for u, u0 in zip(self.vectors, self.start):
                u.copy_(u0)


class BigGANObjective(Objective):
    """Phases ``D`` (``n_d_steps`` times) then ``G``, every iteration. D sees fake and real images in one pass."""

    Config = BigGANObjectiveConfig

    def __init__(self, config: BigGANObjectiveConfig, nets: Nets, ctx: Context):
        super().__init__(config, nets, ctx)
        self.phases = (Phase("D", "D", repeat=config.n_d_steps), Phase("G", "G"))
        if config.r1_gamma:
            self.phases += (Phase("Dreg", "D", interval=config.d_reg_interval),)
        self.d_loss, self.g_loss = LOSSES[config.loss]
        self.lecam = LeCam(config.lecam, config.lecam_decay) if config.lecam else None
        conditional = getattr(nets.D, "embed", None) is not None
        if config.class_loss and not conditional:  # a preset's default on unlabelled data: nothing to classify
            print(f"scalegan train: class_loss {config.class_loss} is off: the model is unconditional",
                  file=sys.stderr)
        self.classes = config.class_loss > 0 and conditional
        accumulate = ctx.accumulation > 1
        self.power_iteration = {"D": PowerIterationPerStep(nets.D, nets.G, enabled=accumulate),
                                "G": PowerIterationPerStep(nets.G, nets.D, enabled=accumulate)}
        self.no_ortho = class_embeddings(nets.G)  # the shared class embedding is not regularised
        if ctx.group is not None and config.sync_bn:
            set_cross_replica_bn(nets.G, ctx.group)

    def loss(self, phase: Phase, micro_batch: int, draw: Draw):
        self.power_iteration[phase.network].micro_batch(micro_batch)
        if phase.name == "Dreg":  # in float32, as StyleGAN2's R1 phase
            x, y = draw.real()
            loss, penalty = r1_loss(self.nets.D_train, x, y, self.config.r1_gamma, self.ctx.augment)
            return loss, {"r1_penalty": penalty}
        return self._d_loss(draw) if phase.network == "D" else self._g_loss(draw)

    def _d_loss(self, draw: Draw):
        """G runs without gradients (in training mode: batch statistics, as BigGAN does)."""
        nets, augment = self.nets, self.ctx.augment
        x, y = draw.real()
        z, y_fake = draw.noise()
        with self.ctx.autocast():
            with torch.no_grad():
                fake = nets.G_train(z, y_fake).float()
            labels = torch.cat([y_fake, y]) if y_fake is not None else None
            images = torch.cat([fake, x])
            if augment is not None:
                images = augment(images)
            out = nets.D_train(images, labels, classes=True) if self.classes else nets.D_train(images, labels)
        logits = (out[0] if self.classes else out).float()  # one D pass over fake + real
        d_fake, d_real = logits.split([len(fake), len(x)])
        observe = getattr(augment, "observe", None)
        if observe is not None:  # adaptive augmentation (ADA) follows sign(D(real))
            observe(d_real)
        loss_real, loss_fake = self.d_loss(d_real, d_fake)
        loss = loss_real + loss_fake
        if self.lecam is not None:
            loss = loss + self.lecam(d_real, d_fake)
        stats = {"loss_d_real": loss_real.detach(), "loss_d_fake": loss_fake.detach(), **logit_stats(d_real, d_fake)}
        if self.classes:  # D classifies the real images only (classifying fakes too is AC-GAN's diversity loss)
            loss_cls = F.cross_entropy(out[1][len(fake):].float(), y)
            loss = loss + self.config.class_loss * loss_cls
            stats["loss_d_class"] = loss_cls.detach()
        return loss, stats

    def _g_loss(self, draw: Draw):
        """Not exact under accumulation: G's batch norms normalise each micro-batch with its own statistics."""
        nets, augment = self.nets, self.ctx.augment
        z, y_fake = draw.noise()
        with self.ctx.autocast():
            fake = nets.G_train(z, y_fake)
            images = augment(fake) if augment is not None else fake
            out = nets.D_plain(images, y_fake, classes=True) if self.classes else nets.D_plain(images, y_fake)
        loss = self.g_loss((out[0] if self.classes else out).float())
        stats = {"loss_g": loss.detach()}
        if self.classes:
            loss_cls = F.cross_entropy(out[1].float(), y_fake)
            loss = loss + self.config.class_loss * loss_cls
            stats["loss_g_class"] = loss_cls.detach()
        return loss, stats

    def penalty(self, phase: Phase) -> torch.Tensor | None:
        if phase.network == "G" and self.config.g_ortho:
            return orthogonal_penalty(self.nets.G, self.config.g_ortho, self.no_ortho)
        if phase.network == "D" and self.config.d_ortho:
            return orthogonal_penalty(self.nets.D, self.config.d_ortho)
        return None

    def sampler(self, G: nn.Module) -> nn.Module:
        if not self.config.standing_stats:
            return G
        G = copy.deepcopy(G)  # deep copies normalise locally (no cross-replica group)
        standing_stats(G, self.config.standing_stats, self.ctx.batch_size, seed=self.ctx.seed,
                       class_weights=self.ctx.class_weights)
        return G

    def state_dict(self) -> dict:
        return {"lecam": self.lecam.state_dict() if self.lecam is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if self.lecam is not None:
            self.lecam.load_state_dict((state or {}).get("lecam"))


def draw_z(config, n: int, truncation: float | None, mode: str, generator: torch.Generator | None) -> torch.Tensor:
    """BigGAN's latents: z [n, z_dim], truncated by resampling (the paper) or by scaling (the TF-Hub port)."""
    return sample_z(n, config.z_dim, truncation, mode, generator)


@torch.no_grad()
def standing_stats(G: nn.Module, n_batches: int = 16, batch_size: int = 64, seed: int = 0,
                   truncation: float | None = None, class_weights=None) -> None:
    """Recompute every BN's running statistics as the plain average over ``n_batches`` generated batches, their
    classes drawn as in training (``class_weights``: the data's class counts; None: uniform).

    Only the BN layers run in training mode, so spectral-norm vectors are left untouched. G ends in eval mode."""
    bns = batch_norms(G)
    saved = [bn.momentum for bn in bns]
    G.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
        bn.training = True  # this BN only: its SN gain/bias layers stay in eval mode
    generator = torch.Generator().manual_seed(seed)
    device = next(G.parameters()).device
    for _ in range(n_batches):  # latents as scalegan.sample draws them (the model's truncation mode)
        z, y = draw(G, batch_size, None, truncation, generator, class_weights=class_weights)
        G(z.to(device), y.to(device) if y is not None else None)
    for bn, momentum in zip(bns, saved):
        bn.momentum = momentum
    G.eval()
