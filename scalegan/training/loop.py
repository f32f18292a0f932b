"""``train(cfg)``: the one training loop every model family uses.

Setup -> every iteration: the objective's phases (each: micro-batches, backward, optimizer step), EMA, periodic
work (log, sample grid, evaluation, checkpoint) -> final checkpoint and sample grid. The loop names no family: what
is optimised, and how, is the family's ``Objective`` (``scalegan.objectives``). Reproducible: initialisation,
data order and noise all derive from ``cfg.seed``; a resumed run continues with the same data order, noise,
optimizer and objective state, bit for bit.

Distributed (``torchrun``): G and D are wrapped in DistributedDataParallel; each rank takes its slice of every
global batch of data and noise (so N ranks x B images compute what 1 process x N*B computes). Rank 0 alone writes
logs, samples, evaluations and checkpoints; a signal or the time budget on any rank stops every rank at the same
iteration.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .. import precision
from ..augment import Augmenter, parse_policy
from ..data import Mirrored, open_dataset
from ..family import set_trainable, trainable_parameters
from ..latents import is_uniform
from ..layers import SpectralNorm
from ..media import make_grid, save_image
from ..metrics.eval import as_reference, data_class_weights, evaluate_generator, make_backbone
from ..metrics.registry import lower_is_better, parse_metrics, result_names
from ..objectives import Context, Nets, Phase, lazy_ratio
from ..registry import model_config
from ..sampling import draw, render
from ..utils import __version__, atomic_path, write_json
from ..weights import read_config
from .checkpoint import (
    checkpoints,
    intact_checkpoint,
    latest_checkpoint_name,
    load_checkpoint,
    read_state,
    save_checkpoint,
)
from .config import TrainConfig
from .distributed import DistInfo, all_sum, any_rank, init_distributed, shutdown, wait_for
from .ema import ema_beta, ema_update
from .finetune import frozen_parameters, initialise
from .logger import RunLogger
from .stream import BatchStream

# A time budget's learning-rate decay horizon (Run._fix_horizon): iterations skipped (allocation, first-touch)
# and measured, and the share of the estimated iterations it spans.
HORIZON_WARMUP, HORIZON_SPAN, HORIZON_MARGIN = 10, 100, 0.95


class Diverged(Exception):
    """A phase produced a non-finite loss, gradient or weight; raised before its optimizer step is applied (a
    non-finite weight after a step is raised before anything is checkpointed)."""

    def __init__(self, phase: str, what: str):
        super().__init__(f"non-finite {what} in phase {phase}")
        self.phase, self.what = phase, what


class DivergenceError(ValueError):
    """Training stopped on a non-finite value (``--on-divergence stop``, or rollbacks used up)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the previous one is intact."""


# Evaluation results where smaller is better; for every other result (IS, precision, recall, density,
# coverage, class accuracy) larger is better.


def train(cfg: TrainConfig) -> dict:
    """Train a GAN as ``cfg`` says; returns the run summary (also written to ``RUN/summary.json``).

    Under ``torchrun`` every rank calls this; the process group is created (and left) here."""
    cfg.validate()
    info, device = init_distributed(cfg.device)
    finished = False
    try:
        summary = Run(cfg, info, device).fit()
        finished = True
        return summary
    finally:
        shutdown(info, wait=finished, timeout=cfg.barrier_timeout)


def resolve_model_config(cfg: TrainConfig, dataset):
    """The preset's model config, with classes and channels following the dataset, and the fields the family sets
    for the run's (resolved) precision (StyleGAN2 under fp16: conv_clamp 256), unless overridden."""
    overrides = dict(cfg.model_overrides)
    overrides.setdefault("n_classes", dataset.num_classes)
    overrides.setdefault("img_channels", dataset.channels)
    config = model_config(cfg.model, **overrides)
    defaults = cfg.family.precision_defaults(config, cfg.precision)
    defaults = {k: v for k, v in defaults.items() if k not in cfg.model_overrides}
    return model_config(cfg.model, **overrides, **defaults) if defaults else config


def open_training_data(cfg: TrainConfig):
    """The dataset (at the preset's resolution, with its flipped copy under ``--mirror``) and the model config
    that follows it."""
    preset = model_config(cfg.model, **cfg.model_overrides)
    dataset = open_dataset(cfg.data, resolution=preset.resolution, channels=cfg.model_overrides.get("img_channels"),
                           root=cfg.data_root)
    if cfg.mirror:
        dataset = Mirrored(dataset)
    return dataset, resolve_model_config(cfg, dataset)


@contextlib.contextmanager
def _stop_on_signals(flag: dict):
    """SIGTERM / SIGINT ask the loop to checkpoint and stop instead of dying mid-write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        flag["signal"] = signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _global_batch(state: dict) -> tuple[int, int]:
    """The processes and per-process batch of the run that wrote a checkpoint's ``state``."""
    world = int(state.get("world_size", 1))
    return world, int((state.get("train_config") or {}).get("batch_size") or 0)


def keep_global_batch(cfg: TrainConfig, state: dict, info: DistInfo) -> tuple[TrainConfig, str | None]:
    """Resuming with another number of processes keeps the run's global batch: the per-process batch becomes the
    checkpoint's global batch over this world size (the data order, the noise and the batch statistics then
    continue as in an uninterrupted run). A per-process batch given explicitly (another ``--batch-size`` than the
    checkpoint's) is kept instead and changes the global batch. Returns the config and a line saying what changed
    (None: nothing did). A global batch this world cannot share equally is an error naming the choices."""
    world, batch = _global_batch(state)
    if not batch or (world, batch) == (info.world_size, cfg.batch_size):
        return cfg, None
    old, ws = batch * world, info.world_size
    was = f"{world} process{'es' if world > 1 else ''} x {batch} images"
    if cfg.batch_size != batch:
        return cfg, (f"resuming a run of {was} with {ws} x {cfg.batch_size} (--batch-size): the global batch "
                     f"changes from {old} to {ws * cfg.batch_size}; the data order continues from the same image of "
                     "the epoch, but batches, noise and the training dynamics differ from an uninterrupted run")
    if old % ws:
        raise ValueError(f"--resume: the run's global batch of {old} ({was}) cannot be shared equally by {ws} "
                         f"processes: resume with a number of processes that divides {old}, or pass --batch-size B "
                         f"to train on with a global batch of {ws} x B")
    cfg = dataclasses.replace(cfg, batch_size=old // ws)
    return cfg, (f"resuming a run of {was} with {ws} x {cfg.batch_size}: the global batch of {old}, the data order "
                 "and the noise continue as before")


def stream_position(state: dict, global_batch: int) -> dict:
    """The data stream's position in a checkpoint's ``state``, in batches of ``global_batch`` images (a changed
    global batch continues from the same image of the epoch)."""
    world, batch = _global_batch(state)
    position = dict(state["stream"])
    if batch and batch * world != global_batch:
        position["pos"] = position["pos"] * batch * world // global_batch
    return position


def trim_logs(log_dir: Path, step: int) -> int:
    """Drop the lines of ``metrics.jsonl`` and ``eval.jsonl`` past ``step``: what a run that died after its
    checkpoint logged, and the resumed run logs again. Each file is rewritten atomically; returns the lines
    dropped."""
    dropped = 0
    for name in ("metrics.jsonl", "eval.jsonl"):
        path = log_dir / name
        if not path.is_file():
            continue
        lines = path.read_text().splitlines(keepends=True)
        kept = []
        for line in lines:
            try:
                later = json.loads(line).get("step", 0) > step
            except (ValueError, AttributeError, TypeError):  # a line cut short by the kill: dropped as well
                later = True
            if not later:
                kept.append(line if line.endswith("\n") else line + "\n")
        if len(kept) != len(lines):
            dropped += len(lines) - len(kept)
            with atomic_path(path) as tmp:
                Path(tmp).write_text("".join(kept))
    return dropped


def singular_values(net: nn.Module, name: str) -> dict[str, float]:
    """The largest and mean of the largest singular values of ``net``'s spectrally normalised layers, as their last
    training-mode power iteration estimated them (BigGAN-PyTorch's collapse diagnostic: they climb sharply before
    training collapses); nothing for a network without spectral norm."""
    values = [float(m.sv) for m in net.modules() if isinstance(m, SpectralNorm)]
    if not values:
        return {}
    return {f"sv_{name}_max": max(values), f"sv_{name}_mean": sum(values) / len(values)}


class Batches:
    """The batches phases draw (the ``objectives.Draw`` protocol): this rank's slice of every global batch of real
    images (from the data stream) and of noise (one seeded stream of global batches)."""

    def __init__(self, stream: BatchStream, noise: torch.Generator, G: nn.Module, batch_size: int, info: DistInfo,
                 device: torch.device, memory_format, class_weights: torch.Tensor | None = None):
        self.stream, self.noise_rng, self.G, self.class_weights = stream, noise, G, class_weights
        self.batch_size, self.info, self.device, self.memory_format = batch_size, info, device, memory_format
        self.real_images = 0  # real images drawn over all ranks, for the images/s figure

    def real(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = next(self.stream)
        self.real_images += len(x) * self.info.world_size
        return x.to(self.device).contiguous(memory_format=self.memory_format), y.to(self.device)

    def noise(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        bs, rank = self.batch_size, self.info.rank
        latents, y = draw(self.G, bs * self.info.world_size, generator=self.noise_rng,
                          class_weights=self.class_weights)
        mine = slice(rank * bs, (rank + 1) * bs)
        return latents[mine].to(self.device), (y[mine].to(self.device) if y is not None else None)


def phase_step(objective, phase: Phase, optimizer: torch.optim.Optimizer, scaler, accumulation: int,
               batches) -> dict[str, torch.Tensor]:
    """One optimizer step of ``phase``: only its network's parameters require gradients; each micro-batch's loss is
    back-propagated (a DDP wrapper all-reduces once, after the last), then the objective's penalty, then the step.
    Returns the micro-batch mean of each value the phase reports."""
    nets = objective.nets
    for name, net in (("G", nets.G), ("D", nets.D)):
        set_trainable(net, name == phase.network)  # a family's pretrained parts stay frozen
    wrapper = nets.G_train if phase.network == "G" else nets.D_train
    optimizer.zero_grad(set_to_none=True)
    logged: dict[str, list[torch.Tensor]] = {}
    losses: list[torch.Tensor] = []
    for j in range(accumulation):
        last = j == accumulation - 1
        with contextlib.nullcontext() if last or not hasattr(wrapper, "no_sync") else wrapper.no_sync():
            loss, values = objective.loss(phase, j, batches)
            if phase.interval > 1:  # lazy regularisation: weighted by how rarely it runs
                loss = loss * phase.interval
            scaler.scale(loss / accumulation).backward()
        for key, value in values.items():
            logged.setdefault(key, []).append(value)
        losses.append(loss.detach().float().reshape(()))
    penalty = objective.penalty(phase)
    if penalty is not None:
        scaler.scale(penalty).backward()
        losses.append(penalty.detach().float().reshape(()))
    weights = [p.detach() for group in optimizer.param_groups for p in group["params"]]  # views: they follow the step
    # The weights before a step are the weights the previous step of this optimizer left and checked (nothing else
    # writes them between steps; a rollback makes new optimizers), so only an optimizer's first step checks them.
    _check_finite(phase, optimizer, scaler, losses, [] if getattr(optimizer, "_weights_finite", False) else weights)
    scaler.step(optimizer)
    scaler.update()
    if any_rank(~_finite(weights)):
        raise Diverged(phase.name, f"weights of {phase.network} (after the step)")
    optimizer._weights_finite = True
    return {key: torch.stack(values).mean() for key, values in logged.items()}


def _finite(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One bool tensor: the L2 norm of every tensor is finite, i.e. no NaN or inf (and no entry beyond ~1e19,
    which overflows the norm: diverged as well). torch's fused multi-tensor norm: well under a millisecond for
    the demo models on a CPU, where an elementwise ``isfinite`` pass is 100x slower."""
    if not tensors:
        return torch.tensor(True)
    return torch.stack(torch._foreach_norm(tensors, 2)).float().isfinite().all()


def _check_finite(phase: Phase, optimizer, scaler, losses: list[torch.Tensor], weights: list[torch.Tensor]) -> None:
    """Raise ``Diverged`` if a loss, a gradient or a weight of the phase's network is not finite, before the step.
    Under fp16 loss scaling, non-finite gradients are the scaler's business (it skips the step and lowers the
    scale); a non-finite loss is still divergence. One fused norm over all of them; which one failed is worked out
    only when something did."""
    if scaler.is_enabled():
        scaler.unscale_(optimizer)
        grads = []
    else:
        grads = [p.grad.detach() for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not any_rank(~_finite(losses + grads + weights)):
        return
    bad = ~torch.stack([_finite(losses), _finite(grads), _finite(weights)])
    names = ("loss", "gradient norm", f"weights of {phase.network}")
    raise Diverged(phase.name, names[int(bad.int().argmax())])


class Run:
    """One training run. The constructor sets it up (data, models, state, wrappers, objective, outputs);
    ``fit()`` trains: phases, EMA, periodic work."""

    def __init__(self, cfg: TrainConfig, info: DistInfo, device: torch.device):
        self.cfg, self.hardware = cfg.resolve_hardware(device)
        self.info, self.device, self.main = info, device, info.is_main
        self.dir = Path(cfg.out_dir)
        ckpt = self._find_checkpoint()
        state = read_state(ckpt) if ckpt is not None else None
        self.cfg = dataclasses.replace(self.cfg, resume=ckpt is not None)  # "auto" resolved: what this start does
        self.resumed = None if state is None else {"from": ckpt.name, "step": state["step"]}
        if state is not None:
            self.cfg, change = keep_global_batch(self.cfg, state, info)
            if change:
                self.resumed["batch"] = change
                if self.main:
                    print(f"scalegan train: {change}", file=sys.stderr)
        self.dataset, self.mcfg = open_training_data(self.cfg)
        if self.main:
            print(f"scalegan train: precision {self.hardware['precision']} ({self.hardware['precision_reason']}); "
                  f"channels_last {self.hardware['channels_last']} ({self.hardware['channels_last_reason']})",
                  file=sys.stderr)
        if ckpt is not None and read_config(ckpt)[0] != self.mcfg:
            raise ValueError(f"--resume: the model config differs from the checkpoint's ({ckpt / 'config.json'}); "
                             "resume with the same --model and --set flags")
        self.class_names = list(self.dataset.class_names) if self.mcfg.n_classes else []
        counts = self.dataset.class_counts() if self.mcfg.n_classes and self.dataset.num_classes else None
        if counts is not None:  # a model with more classes than the data (--set n_classes): none of those
            counts = torch.cat([counts, counts.new_zeros(max(self.mcfg.n_classes - len(counts), 0))])
        self.class_counts = counts.tolist() if counts is not None else []  # saved with every checkpoint
        # Generated images' classes follow the data's label distribution (stylegan2-ada), or are uniform.
        # (A balanced dataset draws as uniform does: no weights, nothing to check per batch.)
        self.class_weights = counts if counts is not None and cfg.fake_labels == "data" and not is_uniform(counts) \
            else None
        self._build_models()
        if ckpt is not None:
            load_checkpoint(ckpt, self.modules, verify=False, state=state)
        self._build_training(state)
        self._open_outputs()

    # ------------------------------------------------------------------------------------------------ setup
    def _find_checkpoint(self) -> Path | None:
        """With --resume the newest intact checkpoint (verified against its manifest; damaged ones are skipped with
        a warning); with --resume auto that, or None when the run has no checkpoint yet (it starts); without, the
        run folder must hold no checkpoint."""
        existing = latest_checkpoint_name(self.dir) or next((p.name for p in checkpoints(self.dir)), None)
        if self.cfg.resume == "auto" and existing is None:
            return None
        if existing is not None and not self.cfg.resume:
            raise FileExistsError(f"{self.dir} already holds a run (checkpoint {existing}): pass --resume to "
                                  "continue it, or choose another --out-dir")
        ckpt = intact_checkpoint(self.dir) if self.cfg.resume else None
        if self.cfg.resume and ckpt is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {self.dir}/checkpoints")
        return ckpt

    def _build_models(self) -> None:
        cfg, family = self.cfg, self.cfg.family
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self.G, self.D = family.generator(self.mcfg), family.discriminator(self.mcfg)
        self.G_ema = copy.deepcopy(self.G).eval() if cfg.ema.enabled else None
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        for m in (self.G, self.D, self.G_ema):
            if m is not None:
                m.to(device=self.device, memory_format=self.memory_format)
                set_trainable(m, True)  # pretrained parts frozen before any wrapper: DDP registers what needs grads
        torch.manual_seed(cfg.seed + self.info.rank)  # other randomness (e.g. data-loader workers) differs per rank
        self.modules = {"G": self.G, "D": self.D, **({"G_ema": self.G_ema} if self.G_ema is not None else {})}
        self.init_record = initialise(cfg, self.modules, self.dir, verbose=self.main)  # --init-from; not on resume
        self.d_warmup = (self.init_record or {}).get("d_warmup", 0)  # iterations in which only D's phases run
        self.frozen = {id(p) for p in frozen_parameters(self.D, cfg.finetune.freeze_d)}  # FreezeD: not in D's optimizer

    def _build_training(self, state: dict | None) -> None:
        """Noise, data stream, wrappers, objective and optimizers, restored from ``state`` when resuming."""
        cfg, info = self.cfg, self.info
        self.noise = torch.Generator().manual_seed(cfg.seed + 1)
        fixed = torch.Generator().manual_seed(cfg.seed + 2)  # the latents of the periodic sample grids
        rows = min(self.mcfg.n_classes, 10) if self.mcfg.n_classes else 10
        y = torch.arange(rows).repeat_interleave(10) if self.mcfg.n_classes else None
        self.fixed = tuple(t.to(self.device) if t is not None else None
                           for t in draw(self.G, rows * 10, y, cfg.sample_truncation, fixed))
        self.step, self.elapsed, stream_state, self.best = 0, 0.0, {"epoch": 0, "pos": 0}, None
        self.guard = {"rollbacks": 0, "lr_scale": 1.0}  # divergence rollbacks so far, the learning rates' factor
        # A time budget's decay horizon (_fix_horizon) and the budget it was fixed for; the speed measurement.
        self.lr_horizon, self.horizon_budget, self.speed_mark = None, None, None
        if state is not None:
            self.step, self.elapsed, stream_state = state["step"], state["elapsed"], state["stream"]
            self.lr_horizon, self.horizon_budget = state.get("lr_horizon"), state.get("lr_horizon_budget")
            self.best = state.get("best")
            self.guard = dict(state.get("guard") or self.guard)
            self.noise.set_state(state["noise_rng"])
            stream_state = stream_position(state, cfg.batch_size * info.world_size)
        self.session_start = self.step  # _fix_horizon measures from here (this process, or since a rollback)
        self.stream = BatchStream(self.dataset, cfg.batch_size, cfg.seed, cfg.num_workers, **stream_state,
                                  rank=info.rank, world_size=info.world_size)
        self.batches = Batches(self.stream, self.noise, self.G, cfg.batch_size, info, self.device,
                               self.memory_format, self.class_weights)
        self.nets = self._wrap()
        self.images_per_iteration = cfg.batch_size * cfg.num_accumulations * info.world_size
        self.augmenter = self._make_augmenter(state)
        self.objective = self._make_objective()
        self.optimizers, self.scalers = self._make_optimizers()
        if state is not None:
            for name in ("G", "D"):
                self.optimizers[name].load_state_dict(state[f"opt_{name}"])
                self.scalers[name].load_state_dict(state.get(f"scaler_{name}") or {})
            legacy = {"lecam": state.get("lecam")} if "objective" not in state else None  # 0.1.0 checkpoints
            self.objective.load_state_dict(state.get("objective") or legacy or {})
        self._set_lr()  # after rollbacks: the lowered rates

    def _set_lr(self) -> None:
        """The optimizers' rates: base rate x rollbacks' factor x the schedule's factor at ``step / horizon``."""
        horizon = self._horizon()
        factor = self.guard["lr_scale"] * self.cfg.optim.factor(self.step / horizon if horizon else 0.0)
        for name, optimizer in self.optimizers.items():
            for group in optimizer.param_groups:
                group["lr"] = self.base_lr[name] * factor

    def _horizon(self) -> int | None:
        """``lr_horizon``; else under a time budget the horizon it fixed (``_fix_horizon``; None, the full rates,
        until then) or the run's iterations, whichever is fewer; else the run's iterations."""
        cfg = self.cfg
        if cfg.optim.horizon:
            return cfg.optim.horizon
        if cfg.time_budget and self.lr_horizon is None:
            return None
        return min(self.lr_horizon or cfg.iterations, cfg.iterations)

    def _fix_horizon(self, bar) -> None:
        """A decaying schedule under a time budget decays over the iterations the budget will hold: measured once,
        from the speed of HORIZON_SPAN iterations after the first HORIZON_WARMUP of this process (the full rates
        until then), then fixed and saved with the run, so the rates follow the step alone (resume and rollbacks
        stay exact); a run resumed with another budget measures again, keeping the old horizon meanwhile. With a
        margin: ending the decay early leaves the last iterations at the final rates; ending the budget early would
        not decay to them. Distributed runs take rank 0's estimate (every rank must use the same rates)."""
        cfg = self.cfg
        if (self.horizon_budget == cfg.time_budget or cfg.optim.schedule == "constant" or cfg.optim.horizon
                or not cfg.time_budget):
            return
        if self.speed_mark is None:
            if self.step - self.session_start >= HORIZON_WARMUP:
                self.speed_mark = (self.step, self.elapsed)
            return
        steps, seconds = self.step - self.speed_mark[0], self.elapsed - self.speed_mark[1]
        if steps < HORIZON_SPAN:
            return
        total = self.step + max(cfg.time_budget - self.elapsed, 0.0) * steps / max(seconds, 1e-9)
        estimate = torch.tensor([max(self.step + 1, int(HORIZON_MARGIN * total)) if self.info.rank == 0 else 0],
                                dtype=torch.int64, device=self.device)
        self.lr_horizon, self.horizon_budget = int(all_sum(estimate, self.info).item()), cfg.time_budget
        if self.main:
            bar.write(f"scalegan train: the {cfg.optim.schedule} learning-rate decay spans {self.lr_horizon} "
                      f"iterations ({seconds / steps * 1e3:.0f} ms each in a {cfg.time_budget:g} s budget)")

    def _wrap(self) -> Nets:
        """DDP and compiled wrappers. Buffers (SN vectors, BN statistics) are synced once, at wrapping, then stay
        per rank; the objective keeps them consistent (e.g. cross-replica BN) and rank 0's are the ones saved."""
        G_train, D_train = self.G, self.D
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            G_train = DDP(self.G, device_ids=ids, forward_sync_buffers=False)
            D_train = DDP(self.D, device_ids=ids, forward_sync_buffers=False)
        D_plain = self.D  # phases that must not all-reduce D's gradients (the G phase) run D without DDP
        if self.cfg.compile:
            G_train, D_train, D_plain = (torch.compile(m) for m in (G_train, D_train, D_plain))
        return Nets(self.G, self.D, G_train, D_train, D_plain)

    def _make_augmenter(self, state: dict | None) -> Augmenter | None:
        """The run's augmentation (None without a policy), its draws seeded from ``cfg.seed``, restored from
        ``state`` when resuming (checkpoints written before ADA saved only the generator, as ``augment_rng``)."""
        cfg = self.cfg
        if not parse_policy(cfg.augment.policy):
            return None
        aug = cfg.augment
        augmenter = Augmenter(aug.policy, torch.Generator().manual_seed(cfg.seed + 3), p=aug.ada_p,
                              target=aug.ada_target, kimg=aug.ada_kimg, interval=aug.ada_interval)
        if state is not None and state.get("augment") is not None:
            augmenter.load_state_dict(state["augment"])
        elif state is not None and state.get("augment_rng") is not None:
            augmenter.generator.set_state(state["augment_rng"])
        return augmenter

    def _make_objective(self):
        cfg = self.cfg
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)

        def autocast():
            return precision.autocast(self.device.type, amp_dtype, cfg.precision_scope)

        group = None
        if self.info.enabled:
            from torch.distributed import group as groups

            group = groups.WORLD
        ctx = Context(self.device, autocast, self.augmenter, cfg.num_accumulations, cfg.batch_size, cfg.seed, group,
                      self.class_weights)
        return cfg.family.objective(cfg.objective_config(), self.nets, ctx)

    def _make_optimizers(self):
        """Adam for G and D (with the lazy-regularisation correction of networks whose phases run lazily); loss
        scaling only for fp16, whose range is too small for GAN gradients."""
        cfg, phases = self.cfg, self.objective.phases
        optimizers, scalers, self.base_lr = {}, {}, {}
        optim = cfg.optim
        for name, net, lr in (("G", self.G, optim.lr_g), ("D", self.D, optim.lr_d)):
            ratio = lazy_ratio(phases, name)
            betas = (optim.beta1, optim.beta2) if ratio == 1 else (optim.beta1 ** ratio, optim.beta2 ** ratio)
            self.base_lr[name] = lr if ratio == 1 else lr * ratio
            params = [p for p in trainable_parameters(net) if id(p) not in self.frozen]
            # fused: one kernel for every tensor's update (CPU and CUDA), ~3x faster than the default per-tensor
            # loop on the demo's networks (benchmarks/demo_profile.py: Adam 1.5 + 1.2 -> 0.5 + 0.4 ms a step)
            optimizers[name] = torch.optim.Adam(params, self.base_lr[name], betas=betas, eps=optim.adam_eps,
                                                fused=self.device.type in ("cpu", "cuda"))
            scalers[name] = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        return optimizers, scalers

    def _open_outputs(self) -> None:
        cfg, main = self.cfg, self.main
        if main:
            (self.dir / "samples").mkdir(parents=True, exist_ok=True)
            write_json(self.dir / "train_config.json",
                       {"scalegan_version": __version__, "train": cfg.to_dict(),
                        "objective": vars(cfg.objective_config()), "hardware": self.hardware,
                        "model": self.mcfg.to_dict(), "dataset": self.dataset.describe(),
                        "world_size": self.info.world_size, "init_from": self.init_record})
        dropped = trim_logs(self.dir / "logs", self.step) if main and self.resumed else 0
        self.logger = RunLogger(self.dir / "logs", cfg.tensorboard) if main else None
        if main:
            resumed = {"resumed": {**self.resumed, "log_lines_dropped": dropped}} if self.resumed else {}
            self.logger.record("metrics.jsonl", {"step": self.step, "event": "start",
                                                 "world_size": self.info.world_size, **resumed, **self.hardware})
        evaluate = main and cfg.eval.every
        self.evaluator = Evaluator(cfg, self.dataset, self.device, self.mcfg) if evaluate else None
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.last = {"time": time.perf_counter(), "step": self.step, "images": 0}

    # ------------------------------------------------------------------------------------------------ training
    def fit(self) -> dict:
        """Train until ``cfg.iterations``, the time budget or a signal; then checkpoint and write the summary."""
        cfg, start_step, stop, stopping = self.cfg, self.step, {}, False
        bar = tqdm(total=cfg.iterations, initial=self.step, disable=not (cfg.progress and self.main), unit="it",
                   dynamic_ncols=True)
        with _stop_on_signals(stop):
            while self.step < cfg.iterations and not stopping:
                t0 = time.perf_counter()
                self.G.train()
                self.D.train()
                # Randomness inside phases (noise inputs, style mixing, regulariser noise) comes from torch's global
                # generator, seeded per iteration and rank: a resumed run continues exactly; ranks differ.
                torch.manual_seed(((cfg.seed * 1_000_003 + self.info.rank) * 1_000_003 + self.step) % (2**63 - 1))
                if cfg.optim.schedule != "constant":
                    self._set_lr()
                try:
                    self._phases()
                except Diverged as e:
                    self._diverged(e, bar)  # stops, or reloads the newest intact checkpoint
                    continue
                if self.augmenter is not None:  # ADA's p follows D's outputs on reals (the same on every rank)
                    self.augmenter.update(self.images_per_iteration, lambda t: all_sum(t, self.info))
                self.step += 1
                self._update_ema()
                self.elapsed += time.perf_counter() - t0
                self._fix_horizon(bar)
                bar.update(1)
                self._periodic(bar)
                if cfg.time_budget and self.elapsed >= cfg.time_budget:
                    stop.setdefault("time_budget", cfg.time_budget)
                # Every rank decides together, from flags set before this point, so all leave at the same step.
                stopping = any_rank(bool(stop), self.info, self.device)
            bar.close()
            for net in (self.G, self.D):
                set_trainable(net, True)
            if self.main:
                Gs = self.sampler()
                path = self.checkpoint(Gs)
        if not self.main:
            return {"step": self.step, "rank": self.info.rank}
        return self._finish(Gs, path, stop, start_step)

    def _phases(self) -> None:
        for phase in self.objective.phases:
            if self.step % phase.interval == 0 and (phase.network != "G" or self.step >= self.d_warmup):
                for _ in range(phase.repeat):
                    self._phase_step(phase)

    def _diverged(self, e: Diverged, bar) -> None:
        """``--on-divergence``: stop (nothing new written), or roll back to the newest intact checkpoint with the
        learning rates multiplied by ``rollback_lr_factor`` (at most ``max_rollbacks`` times)."""
        cfg, step = self.cfg, self.step + 1
        what = f"{e} at step {step}"
        record = {"step": step, "event": "diverged", "phase": e.phase, "non_finite": e.what}
        policy = cfg.guard
        used = self.guard["rollbacks"] >= policy.max_rollbacks
        ckpt = intact_checkpoint(self.dir) if policy.on_divergence == "rollback" and not used else None  # hashes files
        reason = ("--on-divergence stop" if policy.on_divergence == "stop" else
                  f"{policy.max_rollbacks} rollbacks used (--max-rollbacks)" if used else
                  "no checkpoint to roll back to (lower --ckpt-every)" if ckpt is None else None)
        if reason is not None:
            if self.main:
                self.logger.record("metrics.jsonl", {**record, "action": "stop"})
                self.logger.close()
            bar.close()
            kept = latest_checkpoint_name(self.dir)
            raise DivergenceError(f"training diverged: {what}; stopped ({reason}); nothing new was written"
                                  + (f", the last good checkpoint is {kept}" if kept else ""))
        factor = policy.rollback_lr_factor
        guard = {"rollbacks": self.guard["rollbacks"] + 1, "lr_scale": self.guard["lr_scale"] * factor}
        state = load_checkpoint(ckpt, self.modules, verify=False)
        self._build_training({**state, "guard": guard})
        self.sums, self.counts = {}, {}
        bar.n = self.step
        if self.main:
            self.logger.record("metrics.jsonl", {**record, "action": "rollback", "to_step": self.step,
                                                 **guard})
            warnings.warn(f"training diverged: {what}; rolled back to {ckpt.name} with the learning rates x"
                          f"{guard['lr_scale']:g} (rollback {guard['rollbacks']} of {cfg.guard.max_rollbacks})",
                          stacklevel=2)

    def _phase_step(self, phase: Phase) -> None:
        name = phase.network
        values = phase_step(self.objective, phase, self.optimizers[name], self.scalers[name],
                            self.cfg.num_accumulations, self.batches)
        for key, mean in values.items():
            self.sums[key] = self.sums[key] + mean if key in self.sums else mean
            self.counts[key] = self.counts.get(key, 0) + 1

    def _update_ema(self) -> None:
        cfg, images = self.cfg, self.images_per_iteration
        if self.G_ema is not None:
            ema_update(self.G_ema, self.G, ema_beta(self.step, images, decay=cfg.ema.decay, start=cfg.ema.start,
                                                    halflife_kimg=cfg.ema.halflife_kimg, rampup=cfg.ema.rampup),
                       buffers=cfg.family.ema_buffers)

    def _periodic(self, bar) -> None:
        """Log lines (every rank's values), then rank 0's work (sample grid, evaluation, checkpoint) while the other
        ranks wait for it at a barrier (``distributed.wait_for``: its timeout names a rank that does not arrive)."""
        cfg, step = self.cfg, self.step
        if step % cfg.log_every == 0 or step == cfg.iterations:
            self._log(bar)
        work = []
        if cfg.sample_every and step % cfg.sample_every == 0:
            work.append("sample grid")
            if self.main:
                self.write_grid(self.G_ema if self.G_ema is not None else self.G, f"iter_{step:06d}.png")
        if cfg.eval.every and step % cfg.eval.every == 0:
            work.append("evaluation")
            if self.evaluator is not None:
                self.evaluate()
        if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.iterations:
            work.append("checkpoint")
            if self.main:
                self.checkpoint()
        if work:
            wait_for(self.info, f"after rank 0's {' and '.join(work)} of step {step}", cfg.barrier_timeout)

    def _log(self, bar) -> None:
        """Means since the last log line of every value the phases returned, over all ranks (rank 0 writes)."""
        now, keys = time.perf_counter(), sorted(self.sums)
        seconds, iterations = now - self.last["time"], self.step - self.last["step"]
        total = all_sum(torch.stack([self.sums[k] for k in keys]), self.info) if keys else torch.zeros(0)
        if self.main:
            values = {k: v / (self.counts[k] * self.info.world_size) for k, v in zip(keys, total.tolist())}
            values["img_per_s"] = (self.batches.real_images - self.last["images"]) / seconds
            values["s_per_it"] = seconds / max(iterations, 1)
            values["elapsed_s"] = self.elapsed
            if self.augmenter is not None and self.augmenter.ada:
                values["augment_p"] = self.augmenter.p
                leak = self.augmenter.leak_warning()
                if leak is not None:
                    warnings.warn(leak, stacklevel=2)
            values.update(singular_values(self.G, "G") | singular_values(self.D, "D"))
            self.logger.scalars(self.step, values)
            extra = {"p": f"{values['augment_p']:.3f}"} if "augment_p" in values else {}
            losses = [k for k in keys if k.startswith("loss")]
            bar.set_postfix({k: f"{values[k]:.3f}" for k in losses} | {"img_s": f"{values['img_per_s']:.0f}"} | extra)
        self.sums, self.counts = {}, {}
        self.last = {"time": now, "step": self.step, "images": self.batches.real_images}

    # ------------------------------------------------------------------------------------------------ outputs
    def sampler(self) -> nn.Module:
        """The generator to sample from: EMA if enabled, as the objective prepares it (e.g. standing statistics)."""
        return self.objective.sampler(self.G_ema if self.G_ema is not None else self.G).eval()

    def write_grid(self, Gs: nn.Module, name: str) -> None:
        was_training = Gs.training
        Gs.eval()
        images = render(Gs, *self.fixed, truncation=self.cfg.sample_truncation)
        Gs.train(was_training)
        grid = make_grid(images, nrow=10)
        save_image(grid, self.dir / "samples" / name)
        self.logger.image(self.step, "samples", grid)

    def checkpoint(self, Gs: nn.Module | None = None, name: str | None = None) -> Path | None:
        opt, scalers = self.optimizers, self.scalers
        state = {"step": self.step, "elapsed": self.elapsed, "stream": self.stream.state(),
                 "opt_G": opt["G"].state_dict(), "opt_D": opt["D"].state_dict(),
                 "scaler_G": scalers["G"].state_dict(), "scaler_D": scalers["D"].state_dict(),
                 "noise_rng": self.noise.get_state(),
                 "augment": self.augmenter.state_dict() if self.augmenter is not None else None,
                 "objective": self.objective.state_dict(), "best": self.best, "world_size": self.info.world_size,
                 "guard": self.guard, "lr_horizon": self.lr_horizon,
                 "lr_horizon_budget": self.horizon_budget, "train_config": self.cfg.to_dict()}
        extra = {"eval": self.best} if name == "best" else {}
        try:
            return save_checkpoint(self.dir, self.step, {**self.modules, "model": Gs or self.sampler()}, state,
                                   self.mcfg, keep=self.cfg.keep_checkpoints, class_names=self.class_names,
                                   class_counts=self.class_counts, fake_labels=self.cfg.fake_labels,
                                   dataset=self.dataset.describe(), name=name, **extra)
        except OSError as e:  # a full disk, an I/O error: the previous checkpoints and `latest` are untouched
            kept = latest_checkpoint_name(self.dir)
            why = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
            message = (f"the checkpoint of step {self.step} could not be written ({why}); "
                       + (f"the previous one, {kept}, is intact" if kept else "no earlier checkpoint exists"))
            self.logger.record("metrics.jsonl", {"step": self.step, "event": "checkpoint_failed", "error": why})
            if self.cfg.guard.ckpt_failure != "warn":
                raise CheckpointWriteError(f"{message}. Free space (or fix the disk) and continue with --resume; "
                                           "--ckpt-failure warn keeps training instead") from e
            warnings.warn(f"{message}; training continues (--ckpt-failure warn)", stacklevel=2)
            return None

    def evaluate(self) -> None:
        Gs = self.sampler()
        result = self.evaluator(Gs)
        value = result["metrics"][self.evaluator.best_metric]
        self.logger.scalars(self.step, {f"eval/{k}": v for k, v in result["metrics"].items()
                                        if isinstance(v, (int, float))}, file=None)
        self.logger.record("eval.jsonl", {"step": self.step, **result})
        if self.best is None or self.evaluator.better(value, self.best["value"]):
            self.best = {"metric": self.evaluator.best_metric, "value": value, "step": self.step}
            self.checkpoint(Gs, name="best")

    def _finish(self, Gs: nn.Module, path: Path | None, stop: dict, start_step: int) -> dict:
        self.write_grid(Gs, "final.png")
        self.logger.close()
        summary = {"step": self.step, "iterations_this_session": self.step - start_step,
                   "wall_seconds": self.elapsed, "s_per_it": self.elapsed / max(self.step, 1),
                   "checkpoint": str(path) if path is not None else None,
                   "final_grid": str(self.dir / "samples" / "final.png"),
                   "stopped_by": stop or None, "world_size": self.info.world_size, "best": self.best,
                   "rollbacks": self.guard["rollbacks"], "lr_horizon": self._horizon(),
                   "model": self.mcfg.to_dict(), "dataset": self.dataset.describe()}
        write_json(self.dir / "summary.json", summary)
        return summary


class Evaluator:
    """Periodic evaluation of the sampling generator (rank 0): the backbone is loaded, ``best_metric`` checked
    and the reference statistics computed (or read from the cache) once, at the start of training."""

    def __init__(self, cfg: TrainConfig, train_dataset, device: torch.device, mcfg):
        self.cfg = cfg
        self.metrics = parse_metrics(cfg.eval.metrics)
        self.backbone = make_backbone(cfg.eval.backbone, inception_weights=cfg.eval.inception_weights,
                                      device=device)
        available = result_names(self.metrics, self.backbone.name)  # each metric's main number first
        self.best_metric = cfg.eval.best_metric or available[0]
        if self.best_metric not in available:
            raise ValueError(f"best_metric {self.best_metric!r} is not among the evaluation results {available}: "
                             "choose one of those, or add its metric to eval_metrics")
        ref = train_dataset
        if cfg.eval.ref:
            ref = open_dataset(cfg.eval.ref, resolution=mcfg.resolution, channels=mcfg.img_channels,
                               root=cfg.data_root)
        self.reference = as_reference(ref, self.backbone, self.metrics, cfg.eval.ref_n, 100, cache=True)
        self.class_weights = data_class_weights(ref, mcfg.n_classes) if cfg.fake_labels == "data" else None
        self.classifier = self.backbone.model if self.backbone.name == "classifier" else None

    def better(self, value: float, old: float) -> bool:
        return value < old if lower_is_better(self.best_metric) else value > old

    def __call__(self, G) -> dict:
        return evaluate_generator(G, self.reference, self.metrics, self.cfg.eval.n, backbone=self.backbone,
                                  classifier=self.classifier, seed=self.cfg.seed, class_weights=self.class_weights)
