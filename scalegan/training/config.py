"""The training configuration: one dataclass; every field is a ``scalegan train`` flag with its help text."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

PRECISIONS = ("auto", "float32", "bf16", "fp16")


def _f(default, help: str, **kw):
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Everything a run needs. Resolution order: these defaults < the preset's ``train`` values < a config file
    < command-line flags. The resolved config is written to ``RUN/train_config.json``."""

    model: str = _f("biggan-fmnist", "model preset name (see `scalegan info --list`)")
    model_overrides: dict = _f({}, "model config fields to change, e.g. {\"ch\": 48}; CLI: --set ch=48")
    data: str = _f("fashion-mnist", "dataset: fashion-mnist, mnist, cifar10:DIR, cifar100:DIR, folder:DIR, "
                   "npz:FILE, idx:DIR, or a path (auto-detected)")
    data_root: str | None = _f(None, "directory of the dataset files when --data names a dataset")
    out_dir: str = _f("runs/demo", "run folder: checkpoints, samples, logs")
    iterations: int = _f(2000, "number of G updates")
    batch_size: int = _f(64, "images per D/G batch (per accumulation step)")
    n_d_steps: int = _f(2, "D updates per G update")
    num_accumulations: int = _f(1, "gradient accumulation steps per D and G update (effective batch = "
                                "batch_size * num_accumulations)")
    lr_g: float = _f(2e-4, "G learning rate")
    lr_d: float = _f(2e-4, "D learning rate")
    beta1: float = _f(0.0, "Adam beta1")
    beta2: float = _f(0.999, "Adam beta2")
    adam_eps: float = _f(1e-6, "Adam epsilon")
    loss: str = _f("hinge", "GAN loss: hinge, or ce (cross-entropy of the original GAN, non-saturating G)")
    g_ortho: float = _f(0.0, "orthogonal regularization strength for G (BigGAN: 1e-4); 0 = off")
    d_ortho: float = _f(0.0, "orthogonal regularization strength for D; 0 = off")
    ema: bool = _f(True, "keep an exponential moving average of G (weights and BN buffers)")
    ema_decay: float = _f(0.999, "EMA decay")
    ema_start: int = _f(500, "iteration at which EMA averaging starts (before: a plain copy of G)")
    ema_halflife_kimg: float = _f(0.0, "EMA half-life in thousands of G images, with ramp-up (the stylegan2-ada "
                                  "form; replaces ema_decay and ema_start); 0 = off")
    ema_rampup: float = _f(0.05, "with ema_halflife_kimg: the half-life is at most this fraction of the images "
                           "seen so far, so the average follows G closely early on; 0 = no ramp-up")
    augment: str = _f("", "DiffAugment policy applied to real and fake images before D: comma-separated "
                      "translation, cutout, color; empty = off")
    lecam: float = _f(0.0, "LeCam regularisation weight for D (Tseng et al. 2021; e.g. 0.3); 0 = off")
    lecam_decay: float = _f(0.99, "decay of LeCam's moving anchors of D's real and fake outputs")
    standing_stats: int = _f(0, "before saving the sampling generator, recompute its BN statistics over "
                             "this many generated batches; 0 = off")
    seed: int = _f(0, "seed for initialisation, data order and noise")
    precision: str = _f("auto", "auto (bf16 where the device computes it natively: CUDA with bf16, CPUs with "
                        "AVX-512-bf16 or AMX; float32 elsewhere), float32, bf16 (autocast), or fp16 (autocast with "
                        "dynamic loss scaling, for GPUs without bf16). Spectral norm, BN statistics, losses and "
                        "optimizer state stay float32", choices=PRECISIONS)
    channels_last: bool | None = _f(None, "channels_last memory format; default auto: on for CPUs (faster in "
                                    "float32 and bf16) and for CUDA under bf16/fp16")
    compile: bool = _f(False, "torch.compile G and D (inductor); the first iterations are slow while it compiles")
    device: str = _f("cpu", "torch device: cpu, cuda, cuda:1, ... (under torchrun, cuda means each process's "
                     "cuda:LOCAL_RANK)")
    sync_bn: bool = _f(True, "under torchrun: cross-replica batch norm in G (statistics of the global batch, as "
                       "the BigGAN paper); --no-sync-bn normalises each rank's slice alone")
    num_workers: int = _f(0, "data-loader worker processes for image folders (in-memory datasets need none)")
    log_every: int = _f(50, "iterations between log lines (JSONL + TensorBoard)")
    sample_every: int = _f(500, "iterations between sample grids (samples/iter_NNNNNN.png); 0 = off")
    ckpt_every: int = _f(1000, "iterations between checkpoints (and one at the end); 0 = only at the end")
    keep_checkpoints: int = _f(2, "how many checkpoints to keep")
    sample_truncation: float | None = _f(None, "truncation threshold for the periodic sample grids")
    time_budget: float = _f(0.0, "stop (with a checkpoint) after this many seconds of training; 0 = no limit")
    eval_every: int = _f(0, "iterations between evaluations of the sampling generator (logs/eval.jsonl, "
                         "checkpoints/best); 0 = off")
    eval_metrics: str = _f("fid", "comma-separated metrics for --eval-every: fid, is, kid, pr, dc, ifid, acc")
    eval_n: int = _f(5000, "generated images per evaluation")
    eval_ref: str | None = _f(None, "reference dataset spec for evaluation (default: the training data)")
    eval_ref_n: int | None = _f(None, "reference images (default: the whole dataset; statistics are cached)")
    eval_backbone: str = _f("inception", "feature network: inception (TF 2015-12-05 weights, see `scalegan "
                            "eval --help`) or classifier:DIR (a `scalegan train-classifier` output)")
    inception_weights: str | None = _f(None, "Inception weights file (default: $SCALEGAN_INCEPTION_WEIGHTS or "
                                       "the cache)")
    best_metric: str | None = _f(None, "evaluation result that picks checkpoints/best, e.g. fid, fd, is_mean, "
                                 "precision, class_accuracy (default: the first metric's main result)")
    tensorboard: bool = _f(True, "write TensorBoard event files to RUN/logs/")
    progress: bool = _f(True, "show a progress bar")
    resume: bool = _f(False, "continue the run in out_dir from its latest checkpoint")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        if "bf16" in data:  # scalegan 0.1.0 configs: a bool before `precision` existed
            data.setdefault("precision", "bf16" if data.pop("bf16") else "float32")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; see `scalegan train --help`")
        return cls(**data)

    @classmethod
    def from_preset(cls, model: str, **overrides) -> TrainConfig:
        """Defaults, then the preset's training values, then ``overrides``."""
        from ..registry import get_preset

        return cls.from_dict({"model": model, **get_preset(model).get("train", {}), **overrides})

    def resolve_hardware(self, device) -> tuple[TrainConfig, dict]:
        """This config with ``precision`` and ``channels_last`` resolved for ``device``, and a record of the
        choices and their reasons (written to train_config.json, the first log line and ``--dry-run``)."""
        from ..hardware import choose_channels_last, choose_precision

        precision = choose_precision(self.precision, device)
        layout = choose_channels_last(self.channels_last, device, precision.value)
        record = {"device": str(device), "precision": precision.value, "precision_reason": precision.reason,
                  "channels_last": layout.value, "channels_last_reason": layout.reason}
        return dataclasses.replace(self, precision=precision.value, channels_last=layout.value), record

    def validate(self) -> None:
        from ..losses import LOSSES

        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        for name in ("iterations", "batch_size", "n_d_steps", "num_accumulations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr_g", "lr_d"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if not 0 <= self.ema_decay < 1:
            raise ValueError("ema_decay must be in [0, 1)")
        if self.ema_halflife_kimg < 0 or self.ema_rampup < 0:
            raise ValueError("ema_halflife_kimg and ema_rampup must be >= 0")
        if self.lecam < 0 or not 0 <= self.lecam_decay < 1:
            raise ValueError("lecam must be >= 0 and lecam_decay in [0, 1)")
        from ..augment import parse_policy

        parse_policy(self.augment)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.eval_every < 0 or self.eval_n < 2:
            raise ValueError("eval_every must be >= 0 and eval_n >= 2")
        if self.eval_every:
            from ..metrics.eval import parse_metrics

            parse_metrics(self.eval_metrics)
