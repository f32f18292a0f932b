"""``train(cfg)``: the one training loop every model family uses.

Setup -> [D phase (n_d_steps x num_accumulations) -> G phase -> EMA -> periodic log / samples / checkpoint]
-> final checkpoint and sample grid. Reproducible: initialisation, data order and noise all derive from
``cfg.seed``; a resumed run continues with the same data order, noise and optimizer state.
"""

from __future__ import annotations

import contextlib
import copy
import signal
import threading
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .. import __version__
from ..data import open_dataset
from ..losses import LOSSES
from ..models import build_discriminator, build_generator, config_from_dict
from ..registry import model_config
from ..regularizers import class_embeddings, orthogonal_penalty
from ..sampling import make_grid, sample_z, save_image, standing_stats
from ..utils import read_json, write_json
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .ema import ema_update
from .logger import RunLogger
from .stream import BatchStream


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


def train(cfg: TrainConfig) -> dict:
    """Train a GAN as ``cfg`` says; returns the run summary (also written to ``RUN/summary.json``)."""
    cfg.validate()
    run = Path(cfg.out_dir)
    ckpt = latest_checkpoint(run)
    if ckpt is not None and not cfg.resume:
        raise FileExistsError(f"{run} already holds a run (checkpoint {ckpt.name}): pass --resume to continue "
                              "it, or choose another --out-dir")
    if cfg.resume and ckpt is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {run}/checkpoints")
    device = torch.device(cfg.device)

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
    torch.manual_seed(cfg.seed)
    G, D = build_generator(mcfg), build_discriminator(mcfg)
    G_ema = copy.deepcopy(G).eval() if cfg.ema else None
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    for m in (G, D, G_ema):
        if m is not None:
            m.to(device=device, memory_format=memory_format)
    opt_G = torch.optim.Adam(G.parameters(), cfg.lr_g, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)
    opt_D = torch.optim.Adam(D.parameters(), cfg.lr_d, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)
    noise = torch.Generator().manual_seed(cfg.seed + 1)
    fixed = torch.Generator().manual_seed(cfg.seed + 2)
    rows = min(mcfg.n_classes, 10) if mcfg.n_classes else 10
    fixed_z = sample_z(rows * 10, mcfg.dim_z, cfg.sample_truncation, generator=fixed).to(device)
    fixed_y = torch.arange(rows).repeat_interleave(10).to(device) if mcfg.n_classes else None

    step, elapsed, stream_state = 0, 0.0, {"epoch": 0, "pos": 0}
    modules = {"G": G, "D": D, **({"G_ema": G_ema} if G_ema is not None else {})}
    if ckpt is not None:
        state = load_checkpoint(ckpt, modules)
        opt_G.load_state_dict(state["opt_G"])
        opt_D.load_state_dict(state["opt_D"])
        noise.set_state(state["noise_rng"])
        step, elapsed, stream_state = state["step"], state["elapsed"], state["stream"]
    stream = BatchStream(dataset, cfg.batch_size, cfg.seed, cfg.num_workers, **stream_state)

    run.mkdir(parents=True, exist_ok=True)
    (run / "samples").mkdir(exist_ok=True)
    write_json(run / "train_config.json", {"scalegan_version": __version__, "train": cfg.to_dict(),
                                           "model": mcfg.to_dict(), "dataset": dataset.describe()})
    logger = RunLogger(run / "logs", cfg.tensorboard)
    d_loss_fn, g_loss_fn = LOSSES[cfg.loss]
    no_ortho = class_embeddings(G)
    bs, acc = cfg.batch_size, cfg.num_accumulations

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)

    def draw_noise():
        z = torch.randn(bs, mcfg.dim_z, generator=noise).to(device)
        y = torch.randint(0, mcfg.n_classes, (bs,), generator=noise).to(device) if mcfg.n_classes else None
        return z, y

    def sampler():
        """The generator to sample from: EMA if enabled, with standing statistics if asked."""
        Gs = G_ema if G_ema is not None else G
        if cfg.standing_stats:
            Gs = copy.deepcopy(Gs)
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

    def checkpoint(Gs=None) -> Path:
        state = {"step": step, "elapsed": elapsed, "stream": stream.state(), "opt_G": opt_G.state_dict(),
                 "opt_D": opt_D.state_dict(), "noise_rng": noise.get_state(), "train_config": cfg.to_dict()}
        return save_checkpoint(run, step, {**modules, "model": Gs or sampler()}, state, mcfg, keep=cfg.keep_checkpoints,
                               class_names=class_names, dataset=dataset.describe())

    # ---------------------------------------------------------------- the loop
    stop: dict = {}
    sums: dict[str, float] = {}
    last = {"time": time.perf_counter(), "step": step}
    start_step = step
    bar = tqdm(total=cfg.iterations, initial=step, disable=not cfg.progress, unit="it", dynamic_ncols=True)
    with _stop_on_signals(stop):
        while step < cfg.iterations and not stop:
            t0 = time.perf_counter()
            G.train()
            D.train()
            # D phase: G runs without gradients (still in train mode: BN batch statistics, SN updates).
            D.requires_grad_(True)
            for _ in range(cfg.n_d_steps):
                opt_D.zero_grad(set_to_none=True)
                for _ in range(acc):
                    x, y = next(stream)
                    x = x.to(device).contiguous(memory_format=memory_format)
                    z, y_fake = draw_noise()
                    with autocast():
                        with torch.no_grad():
                            fake = G(z, y_fake).float()
                        labels = torch.cat([y_fake, y.to(device)]) if mcfg.n_classes else None
                        logits = D(torch.cat([fake, x]), labels).float()  # one D pass over fake + real
                    d_fake, d_real = logits.split([bs, bs])
                    loss_real, loss_fake = d_loss_fn(d_real, d_fake)
                    ((loss_real + loss_fake) / acc).backward()
                if cfg.d_ortho:
                    orthogonal_penalty(D, cfg.d_ortho).backward()
                opt_D.step()
            # G phase.
            D.requires_grad_(False)
            opt_G.zero_grad(set_to_none=True)
            for _ in range(acc):
                z, y_fake = draw_noise()
                with autocast():
                    g_logits = D(G(z, y_fake), y_fake).float()
                g_loss = g_loss_fn(g_logits)
                (g_loss / acc).backward()
            if cfg.g_ortho:
                orthogonal_penalty(G, cfg.g_ortho, no_ortho).backward()
            opt_G.step()
            D.requires_grad_(True)
            step += 1
            if G_ema is not None:
                ema_update(G_ema, G, cfg.ema_decay, step, cfg.ema_start)
            elapsed += time.perf_counter() - t0
            bar.update(1)

            for k, v in (("loss_d_real", loss_real), ("loss_d_fake", loss_fake), ("loss_g", g_loss)):
                sums[k] = sums.get(k, 0.0) + v.item()
            if step % cfg.log_every == 0 or step == cfg.iterations:
                now = time.perf_counter()
                n = step - last["step"]
                values = {k: v / n for k, v in sums.items()}
                values["img_per_s"] = n * bs * acc * cfg.n_d_steps / (now - last["time"])
                values["s_per_it"] = (now - last["time"]) / n
                values["elapsed_s"] = elapsed
                logger.scalars(step, values)
                bar.set_postfix(D=f"{values['loss_d_real'] + values['loss_d_fake']:.3f}", G=f"{values['loss_g']:.3f}",
                                img_s=f"{values['img_per_s']:.0f}")
                sums.clear()
                last.update(time=now, step=step)
            if cfg.sample_every and step % cfg.sample_every == 0:
                write_grid(G_ema if G_ema is not None else G, f"iter_{step:06d}.png")
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.iterations:
                checkpoint()
            if cfg.time_budget and elapsed >= cfg.time_budget:
                stop["time_budget"] = cfg.time_budget
        bar.close()
        Gs = sampler()
        path = checkpoint(Gs)
    write_grid(Gs, "final.png")
    logger.close()
    summary = {"step": step, "iterations_this_session": step - start_step, "wall_seconds": elapsed,
               "s_per_it": elapsed / max(step, 1), "checkpoint": str(path),
               "final_grid": str(run / "samples" / "final.png"), "stopped_by": stop or None,
               "model": mcfg.to_dict(), "dataset": dataset.describe()}
    write_json(run / "summary.json", summary)
    return summary
