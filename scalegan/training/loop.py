"""``train(cfg)``: the one training loop every model family uses.

Setup -> [D phase (n_d_steps x num_accumulations) -> G phase -> EMA -> periodic log / samples / evaluation /
checkpoint] -> final checkpoint and sample grid. Reproducible: initialisation, data order and noise all derive
from ``cfg.seed``; a resumed run continues with the same data order, noise and optimizer state.

Distributed (``torchrun``): G and D are wrapped in DistributedDataParallel; each rank takes its slice of every
global batch of data and noise (so N ranks x B images compute what 1 process x N*B computes); with
``sync_bn`` G's batch norms use the statistics of the whole global batch. Rank 0 alone writes logs, samples,
evaluations and checkpoints; a signal or the time budget on any rank stops every rank at the same iteration.
"""

from __future__ import annotations

import contextlib
import copy
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .. import __version__
from ..augment import diff_augment, parse_policy
from ..data import open_dataset
from ..losses import LOSSES
from ..models import build_discriminator, build_generator, config_from_dict
from ..models.layers import SpectralNorm, set_cross_replica_bn
from ..registry import model_config
from ..regularizers import LeCam, class_embeddings, orthogonal_penalty
from ..sampling import make_grid, sample_z, save_image, standing_stats
from ..utils import read_json, write_json
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import DistInfo, all_sum, any_rank, init_distributed, shutdown
from .ema import ema_beta, ema_update
from .logger import RunLogger
from .stream import BatchStream

# Evaluation results where smaller is better; for every other result (IS, precision, recall, density,
# coverage, class accuracy) larger is better.
LOWER_IS_BETTER = {"fid", "fd", "kid_mean", "intra_fid", "intra_fd"}


def resolve_model_config(cfg: TrainConfig, dataset):
    """The preset's model config, with classes and channels following the dataset unless overridden."""
    overrides = dict(cfg.model_overrides)
    overrides.setdefault("n_classes", dataset.num_classes)
    overrides.setdefault("img_channels", dataset.channels)
    return model_config(cfg.model, **overrides)


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


def discriminator_step(D_train: nn.Module, G_forward, batches, loss_fn, opt: torch.optim.Optimizer, scaler,
                       autocast, sn: PowerIterationPerStep, n_classes: int, ortho: float = 0.0,
                       D: nn.Module | None = None, augment=None, lecam: LeCam | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """One D update from micro-batches ``[(x, y, z, y_fake), ...]``; gradients average over them.

    G runs without gradients (in whatever mode it is in: training mode uses batch statistics, as BigGAN does).
    ``augment`` (images -> images) is applied to real and fake alike; ``lecam`` adds its penalty to D's loss.
    ``D_train`` may be a DDP wrapper of ``D``: its gradients are all-reduced once, after the last micro-batch.
    Returns the mean (real, fake) loss terms."""
    acc = len(batches)
    opt.zero_grad(set_to_none=True)
    terms = []
    for j, (x, y, z, y_fake) in enumerate(batches):
        sn.micro_batch(j)
        sync = contextlib.nullcontext() if j == acc - 1 or not hasattr(D_train, "no_sync") else D_train.no_sync()
        with sync:
            with autocast():
                with torch.no_grad():
                    fake = G_forward(z, y_fake).float()
                labels = torch.cat([y_fake, y]) if n_classes else None
                images = torch.cat([fake, x])
                if augment is not None:
                    images = augment(images)
                logits = D_train(images, labels).float()  # one D pass over fake + real
            d_fake, d_real = logits.split([len(fake), len(x)])
            loss_real, loss_fake = loss_fn(d_real, d_fake)
            loss = loss_real + loss_fake
            if lecam is not None:
                loss = loss + lecam(d_real, d_fake)
            scaler.scale(loss / acc).backward()
        terms.append(torch.stack([loss_real.detach(), loss_fake.detach()]))
    if ortho:
        scaler.scale(orthogonal_penalty(D if D is not None else D_train, ortho)).backward()
    scaler.step(opt)
    scaler.update()
    mean = torch.stack(terms).mean(0)
    return mean[0], mean[1]


def generator_step(G_train: nn.Module, D_forward, noises, loss_fn, opt: torch.optim.Optimizer, scaler, autocast,
                   sn: PowerIterationPerStep, ortho: float = 0.0, G: nn.Module | None = None,
                   no_ortho=(), augment=None) -> torch.Tensor:
    """One G update from micro-batches of noise ``[(z, y_fake), ...]``; D's parameters must not require grad.

    Not exact under accumulation: G's batch norms normalise each micro-batch with its own statistics."""
    acc = len(noises)
    opt.zero_grad(set_to_none=True)
    losses = []
    for j, (z, y_fake) in enumerate(noises):
        sn.micro_batch(j)
        sync = contextlib.nullcontext() if j == acc - 1 or not hasattr(G_train, "no_sync") else G_train.no_sync()
        with sync:
            with autocast():
                fake = G_train(z, y_fake)
                logits = D_forward(augment(fake) if augment is not None else fake, y_fake).float()
            loss = loss_fn(logits)
            scaler.scale(loss / acc).backward()
        losses.append(loss.detach())
    if ortho:
        scaler.scale(orthogonal_penalty(G if G is not None else G_train, ortho, no_ortho)).backward()
    scaler.step(opt)
    scaler.update()
    return torch.stack(losses).mean()


def train(cfg: TrainConfig) -> dict:
    """Train a GAN as ``cfg`` says; returns the run summary (also written to ``RUN/summary.json``).

    Under ``torchrun`` every rank calls this; the process group is created (and left) here."""
    cfg.validate()
    info, device = init_distributed(cfg.device)
    finished = False
    try:
        summary = _train(cfg, info, device)
        finished = True
        return summary
    finally:
        shutdown(info, wait=finished)


def _train(cfg: TrainConfig, info: DistInfo, device: torch.device) -> dict:
    run = Path(cfg.out_dir)
    main = info.is_main
    cfg, hardware = cfg.resolve_hardware(device)
    if main:
        print(f"scalegan train: precision {hardware['precision']} ({hardware['precision_reason']}); channels_last "
              f"{hardware['channels_last']} ({hardware['channels_last_reason']})", file=sys.stderr)
    ckpt = latest_checkpoint(run)
    if ckpt is not None and not cfg.resume:
        raise FileExistsError(f"{run} already holds a run (checkpoint {ckpt.name}): pass --resume to continue "
                              "it, or choose another --out-dir")
    if cfg.resume and ckpt is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {run}/checkpoints")

    preset_resolution = model_config(cfg.model, **cfg.model_overrides).resolution
    dataset = open_dataset(cfg.data, resolution=preset_resolution,
                           channels=cfg.model_overrides.get("img_channels"), root=cfg.data_root)
    mcfg = resolve_model_config(cfg, dataset)
    if ckpt is not None:
        if config_from_dict(read_json(ckpt / "config.json")["model"]) != mcfg:
            raise ValueError(f"--resume: the model config differs from the checkpoint's ({ckpt / 'config.json'}); "
                             "resume with the same --model and --set flags")
    class_names = list(dataset.class_names) if mcfg.n_classes else []

    # ---------------------------------------------------------------- models, optimizers, noise
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    G, D = build_generator(mcfg), build_discriminator(mcfg)
    G_ema = copy.deepcopy(G).eval() if cfg.ema else None
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    for m in (G, D, G_ema):
        if m is not None:
            m.to(device=device, memory_format=memory_format)
    torch.manual_seed(cfg.seed + info.rank)  # any other randomness (e.g. data-loader workers) differs per rank
    opt_G = torch.optim.Adam(G.parameters(), cfg.lr_g, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)
    opt_D = torch.optim.Adam(D.parameters(), cfg.lr_d, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)
    # fp16 needs loss scaling (its range is too small for GAN gradients); bf16 and float32 do not.
    scaler_G = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    scaler_D = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    # Noise is one seeded stream of global batches, of which each rank uses its slice (see the module docstring).
    noise = torch.Generator().manual_seed(cfg.seed + 1)
    fixed = torch.Generator().manual_seed(cfg.seed + 2)
    augment_rng = torch.Generator().manual_seed(cfg.seed + 3)  # DiffAugment's draws (CPU, saved in checkpoints)
    policy = parse_policy(cfg.augment)
    augment = (lambda images: diff_augment(images, policy, augment_rng)) if policy else None
    lecam = LeCam(cfg.lecam, cfg.lecam_decay) if cfg.lecam else None
    rows = min(mcfg.n_classes, 10) if mcfg.n_classes else 10
    fixed_z = sample_z(rows * 10, mcfg.dim_z, cfg.sample_truncation, generator=fixed).to(device)
    fixed_y = torch.arange(rows).repeat_interleave(10).to(device) if mcfg.n_classes else None

    step, elapsed, stream_state, best = 0, 0.0, {"epoch": 0, "pos": 0}, None
    modules = {"G": G, "D": D, **({"G_ema": G_ema} if G_ema is not None else {})}
    if ckpt is not None:
        state = load_checkpoint(ckpt, modules)
        opt_G.load_state_dict(state["opt_G"])
        opt_D.load_state_dict(state["opt_D"])
        scaler_G.load_state_dict(state.get("scaler_G") or {})
        scaler_D.load_state_dict(state.get("scaler_D") or {})
        noise.set_state(state["noise_rng"])
        if state.get("augment_rng") is not None:
            augment_rng.set_state(state["augment_rng"])
        if lecam is not None:
            lecam.load_state_dict(state.get("lecam"))
        step, elapsed, stream_state = state["step"], state["elapsed"], state["stream"]
        best = state.get("best")
        saved_world = state.get("world_size", 1)
        if saved_world != info.world_size and info.is_main:
            warnings.warn(f"resuming a run of {saved_world} processes with {info.world_size}: training continues, "
                          "but the data order and batch statistics differ from an uninterrupted run", stacklevel=2)
    stream = BatchStream(dataset, cfg.batch_size, cfg.seed, cfg.num_workers, **stream_state, rank=info.rank,
                         world_size=info.world_size)

    # ---------------------------------------------------------------- distributed and compiled wrappers
    G_train, D_train = G, D
    if info.enabled:
        from torch.distributed import group
        from torch.nn.parallel import DistributedDataParallel as DDP

        if cfg.sync_bn:
            set_cross_replica_bn(G, group.WORLD)
        ids = [device.index] if device.type == "cuda" else None
        # Buffers (SN vectors, BN statistics) are synced once, at wrapping, then stay per rank: with identical
        # weights and cross-replica BN they stay identical anyway, and rank 0's are the ones saved.
        G_train = DDP(G, device_ids=ids, forward_sync_buffers=False)
        D_train = DDP(D, device_ids=ids, forward_sync_buffers=False)
    D_forward = D  # the G phase runs D without its DDP wrapper: D's gradients are not wanted there
    if cfg.compile:
        G_train, D_train, D_forward = (torch.compile(m) for m in (G_train, D_train, D_forward))
    sn_D = PowerIterationPerStep(D, G, enabled=cfg.num_accumulations > 1)
    sn_G = PowerIterationPerStep(G, D, enabled=cfg.num_accumulations > 1)

    if main:
        run.mkdir(parents=True, exist_ok=True)
        (run / "samples").mkdir(exist_ok=True)
        write_json(run / "train_config.json", {"scalegan_version": __version__, "train": cfg.to_dict(),
                                               "hardware": hardware, "model": mcfg.to_dict(),
                                               "dataset": dataset.describe(), "world_size": info.world_size})
    logger = RunLogger(run / "logs", cfg.tensorboard) if main else None
    if main:
        logger.record("metrics.jsonl", {"step": step, "event": "start", "world_size": info.world_size, **hardware})
    evaluator = _Evaluator(cfg, dataset, device, mcfg) if (main and cfg.eval_every) else None
    d_loss_fn, g_loss_fn = LOSSES[cfg.loss]
    no_ortho = class_embeddings(G)
    bs, acc, world = cfg.batch_size, cfg.num_accumulations, info.world_size
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None)

    def draw_noise():
        """This rank's slice of the next global batch of noise."""
        z = torch.randn(bs * world, mcfg.dim_z, generator=noise)
        y = torch.randint(0, mcfg.n_classes, (bs * world,), generator=noise) if mcfg.n_classes else None
        mine = slice(info.rank * bs, (info.rank + 1) * bs)
        return z[mine].to(device), (y[mine].to(device) if y is not None else None)

    def real_batch():
        x, y = next(stream)
        return x.to(device).contiguous(memory_format=memory_format), y.to(device)

    def sampler():
        """The generator to sample from: EMA if enabled, with standing statistics if asked."""
        Gs = G_ema if G_ema is not None else G
        if cfg.standing_stats:
            Gs = copy.deepcopy(Gs)  # deep copies normalise locally (no cross-replica group)
            standing_stats(Gs, cfg.standing_stats, bs, seed=cfg.seed)
        return Gs.eval()

    def write_grid(Gs, name: str) -> None:
        was_training = Gs.training
        Gs.eval()
        with torch.no_grad():
            images = Gs(fixed_z, fixed_y).float()
        Gs.train(was_training)
        grid = make_grid(images, nrow=10)
        save_image(grid, run / "samples" / name)
        logger.image(step, "samples", grid)

    def checkpoint(Gs=None, name: str | None = None) -> Path:
        state = {"step": step, "elapsed": elapsed, "stream": stream.state(), "opt_G": opt_G.state_dict(),
                 "opt_D": opt_D.state_dict(), "scaler_G": scaler_G.state_dict(), "scaler_D": scaler_D.state_dict(),
                 "noise_rng": noise.get_state(), "augment_rng": augment_rng.get_state(),
                 "lecam": lecam.state_dict() if lecam is not None else None, "best": best,
                 "world_size": info.world_size,
                 "train_config": cfg.to_dict()}
        extra = {"eval": best} if name == "best" else {}
        return save_checkpoint(run, step, {**modules, "model": Gs or sampler()}, state, mcfg, keep=cfg.keep_checkpoints,
                               class_names=class_names, dataset=dataset.describe(), name=name, **extra)

    def evaluate() -> None:
        nonlocal best
        Gs = sampler()
        result = evaluator(Gs)
        value = result["metrics"][evaluator.best_metric]
        logger.scalars(step, {f"eval/{k}": v for k, v in result["metrics"].items() if isinstance(v, (int, float))},
                       file=None)
        logger.record("eval.jsonl", {"step": step, **result})
        if best is None or evaluator.better(value, best["value"]):
            best = {"metric": evaluator.best_metric, "value": value, "step": step}
            checkpoint(Gs, name="best")

    # ---------------------------------------------------------------- the loop
    stop: dict = {}
    stopping = False
    sums = torch.zeros(3, device=device)
    last = {"time": time.perf_counter(), "step": step}
    start_step = step
    bar = tqdm(total=cfg.iterations, initial=step, disable=not (cfg.progress and main), unit="it",
               dynamic_ncols=True)
    with _stop_on_signals(stop):
        while step < cfg.iterations and not stopping:
            t0 = time.perf_counter()
            G.train()
            D.train()
            D.requires_grad_(True)
            for _ in range(cfg.n_d_steps):
                batches = [(*real_batch(), *draw_noise()) for _ in range(acc)]
                loss_real, loss_fake = discriminator_step(D_train, G_train, batches, d_loss_fn, opt_D, scaler_D,
                                                          autocast, sn_D, mcfg.n_classes, cfg.d_ortho, D, augment,
                                                          lecam)
            D.requires_grad_(False)
            g_loss = generator_step(G_train, D_forward, [draw_noise() for _ in range(acc)], g_loss_fn, opt_G,
                                    scaler_G, autocast, sn_G, cfg.g_ortho, G, no_ortho, augment)
            D.requires_grad_(True)
            step += 1
            if G_ema is not None and cfg.ema_halflife_kimg:
                images = bs * acc * world
                ema_update(G_ema, G, ema_beta(step * images, images, cfg.ema_halflife_kimg, cfg.ema_rampup))
            elif G_ema is not None:
                ema_update(G_ema, G, cfg.ema_decay, step, cfg.ema_start)
            elapsed += time.perf_counter() - t0
            bar.update(1)

            sums += torch.stack([loss_real, loss_fake, g_loss])
            if step % cfg.log_every == 0 or step == cfg.iterations:
                now = time.perf_counter()
                n = step - last["step"]
                mean = all_sum(sums, info) / (n * world)  # every rank takes part; rank 0 logs
                if main:
                    values = {"loss_d_real": mean[0].item(), "loss_d_fake": mean[1].item(),
                              "loss_g": mean[2].item()}
                    values["img_per_s"] = n * bs * acc * cfg.n_d_steps * world / (now - last["time"])
                    values["s_per_it"] = (now - last["time"]) / n
                    values["elapsed_s"] = elapsed
                    logger.scalars(step, values)
                    bar.set_postfix(D=f"{values['loss_d_real'] + values['loss_d_fake']:.3f}",
                                    G=f"{values['loss_g']:.3f}", img_s=f"{values['img_per_s']:.0f}")
                sums.zero_()
                last.update(time=now, step=step)
            if main and cfg.sample_every and step % cfg.sample_every == 0:
                write_grid(G_ema if G_ema is not None else G, f"iter_{step:06d}.png")
            if evaluator is not None and step % cfg.eval_every == 0:
                evaluate()
            if main and cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.iterations:
                checkpoint()
            if cfg.time_budget and elapsed >= cfg.time_budget:
                stop.setdefault("time_budget", cfg.time_budget)
            # Every rank decides together, from flags set before this point, so all leave at the same step.
            stopping = any_rank(bool(stop), info, device)
        bar.close()
        if main:
            Gs = sampler()
            path = checkpoint(Gs)
    if not main:
        return {"step": step, "rank": info.rank}
    write_grid(Gs, "final.png")
    logger.close()
    summary = {"step": step, "iterations_this_session": step - start_step, "wall_seconds": elapsed,
               "s_per_it": elapsed / max(step, 1), "checkpoint": str(path),
               "final_grid": str(run / "samples" / "final.png"), "stopped_by": stop or None,
               "world_size": world, "best": best, "model": mcfg.to_dict(), "dataset": dataset.describe()}
    write_json(run / "summary.json", summary)
    return summary


class _Evaluator:
    """Periodic evaluation of the sampling generator (rank 0): the backbone is loaded, ``best_metric`` checked
    and the reference statistics computed (or read from the cache) once, at the start of training."""

    def __init__(self, cfg: TrainConfig, train_dataset, device: torch.device, mcfg):
        from ..metrics.eval import _as_reference, make_backbone, parse_metrics

        self.cfg = cfg
        self.metrics = parse_metrics(cfg.eval_metrics)
        self.backbone = make_backbone(cfg.eval_backbone, inception_weights=cfg.inception_weights, device=device)
        fd = "fid" if self.backbone.name == "inception" else "fd"
        results = {"fid": [fd], "is": ["is_mean", "is_std"], "kid": ["kid_mean", "kid_std"],
                   "pr": ["precision", "recall"], "dc": ["density", "coverage"], "ifid": [f"intra_{fd}"],
                   "acc": ["class_accuracy"]}  # the numbers each metric reports, main one first
        self.best_metric = cfg.best_metric or results[self.metrics[0]][0]
        available = [r for m in self.metrics for r in results[m]]
        if self.best_metric not in available:
            raise ValueError(f"best_metric {self.best_metric!r} is not among the evaluation results {available}: "
                             "choose one of those, or add its metric to eval_metrics")
        ref = train_dataset
        if cfg.eval_ref:
            ref = open_dataset(cfg.eval_ref, resolution=mcfg.resolution, channels=mcfg.img_channels,
                               root=cfg.data_root)
        self.reference = _as_reference(ref, self.backbone, self.metrics, cfg.eval_ref_n, 100, cache=True)
        self.classifier = self.backbone.model if self.backbone.name == "classifier" else None

    def better(self, value: float, old: float) -> bool:
        return value < old if self.best_metric in LOWER_IS_BETTER else value > old

    def __call__(self, G) -> dict:
        from ..metrics.eval import evaluate_generator

        return evaluate_generator(G, self.reference, self.metrics, self.cfg.eval_n, backbone=self.backbone,
                                  classifier=self.classifier, seed=self.cfg.seed)
