"""The training configuration: the run's own fields, one section per concern (``optim``, ``ema``, ``augment``,
``eval``, ``finetune``, ``guard``; each validates itself), and an ``objective`` section that the model's family
defines and validates.

Every setting (and every field of every registered family's objective config) is a ``scalegan train`` flag with its
help text; a section's settings keep flat flag and file keys (``--lr-g``, ``"lr_g"``; the field's ``key`` metadata
where its name in the section differs: ``ema.enabled`` is ``--ema``, ``augment.policy`` is ``--augment``)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ..augment import parse_policy
from ..family import FAMILIES, get_family
from ..hardware import choose_channels_last, choose_precision, parse_device
from ..metrics.registry import parse_metrics
from ..objectives import make_config
from ..precision import SCOPES
from ..registry import get_preset
from ..utils import check_types
from .finetune import FINETUNE_DEFAULTS, check_source, parse_class_map

PRECISIONS = ("auto", "float32", "bf16", "fp16")


def _f(default, help: str, **kw):
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class OptimConfig:
    """Adam for G and D."""

    lr_g: float = _f(2e-4, "G learning rate")
    lr_d: float = _f(2e-4, "D learning rate")
    beta1: float = _f(0.0, "Adam beta1")
    beta2: float = _f(0.999, "Adam beta2")
    adam_eps: float = _f(1e-6, "Adam epsilon")
    schedule: str = _f("constant", "learning-rate schedule: constant, linear or cosine (both decay from the full "
                       "rates to --lr-final times them over the run: its iterations or its time budget, whichever "
                       "ends first, or --lr-horizon iterations)", key="lr_schedule")
    final: float = _f(0.1, "with --lr-schedule linear/cosine: the rates' factor at the end", key="lr_final")
    horizon: int = _f(0, "with --lr-schedule linear/cosine: iterations over which the rates decay; 0 = the run's "
                      "end (--iterations, or --time-budget by training time, whichever comes first)",
                      key="lr_horizon")

    def validate(self) -> None:
        for name in ("lr_g", "lr_d", "adam_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError("beta1 and beta2 must be in [0, 1)")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0 <= self.final <= 1 or self.horizon < 0:
            raise ValueError(f"lr_final must be in [0, 1] and lr_horizon >= 0, got {self.final}, {self.horizon}")

    def factor(self, progress: float) -> float:
        """The learning rates' factor at ``progress`` (0 = start, 1 = end of the schedule)."""
        t = min(max(progress, 0.0), 1.0)
        if self.schedule == "linear":
            return 1 - (1 - self.final) * t
        if self.schedule == "cosine":
            return self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * t))
        return 1.0


SCHEDULES = ("constant", "linear", "cosine")


@dataclass
class EMAConfig:
    """The exponential moving average of G that samples are drawn from."""

    enabled: bool = _f(True, "keep an exponential moving average of G (weights and BN buffers)", key="ema")
    decay: float = _f(0.999, "EMA decay", key="ema_decay")
    start: int = _f(500, "iteration at which EMA averaging starts (before: a plain copy of G)", key="ema_start")
    halflife_kimg: float = _f(0.0, "EMA half-life in thousands of G images, with ramp-up (the stylegan2-ada form; "
                              "replaces ema_decay and ema_start); 0 = off", key="ema_halflife_kimg")
    rampup: float = _f(0.05, "with ema_halflife_kimg: the half-life is at most this fraction of the images seen so "
                       "far, so the average follows G closely early on; 0 = no ramp-up", key="ema_rampup")

    def validate(self) -> None:
        if not 0 <= self.decay < 1:
            raise ValueError("ema_decay must be in [0, 1)")
        if self.halflife_kimg < 0 or self.rampup < 0 or self.start < 0:
            raise ValueError("ema_halflife_kimg, ema_rampup and ema_start must be >= 0")


@dataclass
class AugmentConfig:
    """Augmentation of every image D sees: DiffAugment's policies and ADA."""

    policy: str = _f("", "augmentation of real and fake images before D, comma-separated: DiffAugment's "
                      "translation, cutout, color, and/or ada (adaptive augmentation, Karras et al. 2020: the 'bgc' "
                      "pipeline, each transform with probability p; see --ada-*); empty = off", key="augment")
    ada_target: float = _f(0.6, "with --augment ada: the target of r_t = E[sign(D(real))]; p rises while r_t "
                           "is above it (D overfits) and falls while below; 0 = p stays at --ada-p")
    ada_kimg: float = _f(500.0, "with --augment ada: thousands of images over which p can move from 0 to 1")
    ada_interval: int = _f(4, "with --augment ada: iterations between adjustments of p")
    ada_p: float = _f(0.0, "with --augment ada: the initial augmentation probability (the fixed one with "
                      "--ada-target 0)")

    def validate(self) -> None:
        parse_policy(self.policy)
        if not (0 <= self.ada_target < 1 and 0 <= self.ada_p <= 1):
            raise ValueError(f"ada_target must be in [0, 1) and ada_p in [0, 1], got {self.ada_target}, {self.ada_p}")
        if not self.ada_kimg > 0 or self.ada_interval < 1:
            raise ValueError(f"ada_kimg must be > 0 and ada_interval >= 1, got {self.ada_kimg}, {self.ada_interval}")


@dataclass
class EvalConfig:
    """Periodic evaluation of the sampling generator."""

    every: int = _f(0, "iterations between evaluations of the sampling generator (logs/eval.jsonl, "
                    "checkpoints/best); 0 = off", key="eval_every")
    metrics: str = _f("fid", "comma-separated metrics for --eval-every: fid, is, kid, pr, dc, ifid, acc",
                      key="eval_metrics")
    n: int = _f(5000, "generated images per evaluation", key="eval_n")
    ref: str | None = _f(None, "reference dataset spec for evaluation (default: the training data)", key="eval_ref")
    ref_n: int | None = _f(None, "reference images (default: the whole dataset; statistics are cached)",
                           key="eval_ref_n")
    backbone: str = _f("inception", "feature network: inception (TF 2015-12-05 weights, see `scalegan eval --help`) "
                       "or classifier:DIR (a `scalegan train-classifier` output)", key="eval_backbone")
    inception_weights: str | None = _f(None, "Inception weights file (default: $SCALEGAN_INCEPTION_WEIGHTS or "
                                       "the cache)")
    best_metric: str | None = _f(None, "evaluation result that picks checkpoints/best, e.g. fid, fd, is_mean, "
                                 "precision, class_accuracy (default: the first metric's main result)")

    def validate(self) -> None:
        if self.every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.every}")
        if self.n < 2:
            raise ValueError("eval_n must be >= 2")
        if self.every:
            parse_metrics(self.metrics)


@dataclass
class FinetuneConfig:
    """Starting from another model's weights (``--init-from``) and FreezeD."""

    init_from: str | None = _f(None, "fine-tune: start from this source instead of random weights: a run folder "
                               "(its newest checkpoint's G, G_ema and D), a checkpoint folder, a weights folder, a "
                               ".safetensors file or a pretrained name (G only: D starts fresh). Only when the run "
                               "starts; --resume continues from the run's own checkpoint")
    class_map: str | None = _f(None, "with --init-from: NEW:OLD pairs, e.g. 0:3,1:5,2:7 (new class NEW starts from "
                               "the source's class OLD; unlisted new classes start fresh), or reinit (every class "
                               "embedding fresh); default: copied when the class counts agree, else re-initialised")
    d_warmup: int | None = _f(None, "with --init-from: the first N iterations train D only (G frozen); default: "
                              "200 when the source has no discriminator (a fresh D), else 0")
    freeze_d: int = _f(0, "freeze the first K discriminator blocks, nearest the input image (FreezeD, Mo et al. "
                       "2020); 0 = off")

    def validate(self, resume: bool = False) -> None:
        if self.freeze_d < 0 or (self.d_warmup is not None and self.d_warmup < 0):
            raise ValueError(f"freeze_d and d_warmup must be >= 0, got {self.freeze_d}, {self.d_warmup}")
        if self.freeze_d and not self.init_from:
            raise ValueError(f"--freeze-d {self.freeze_d}: without --init-from, D starts from random weights and "
                             "freezing random layers only removes capacity; fine-tune from a source with D "
                             "(--init-from RUN, a checkpoint or a network pickle), or drop --freeze-d")
        if self.class_map is not None or self.d_warmup is not None:
            if self.init_from is None:
                raise ValueError("class_map and d_warmup need init_from: pass --init-from SOURCE")
            parse_class_map(self.class_map)
        if self.init_from and not resume:  # a resumed run needs its own checkpoint only
            check_source(self.init_from)


@dataclass
class GuardConfig:
    """What happens when training diverges or a checkpoint cannot be written."""

    on_divergence: str = _f("stop", "when a loss, gradient or weight becomes NaN/inf (checked every step, before the "
                            "optimizer applies it): stop (write nothing new, keep the last good checkpoint, exit "
                            "non-zero naming the step) or rollback (reload the newest intact checkpoint, multiply "
                            "the learning rates by --rollback-lr-factor and continue)", choices=("stop", "rollback"))
    rollback_lr_factor: float = _f(0.5, "with --on-divergence rollback: the learning rates' factor per rollback")
    max_rollbacks: int = _f(3, "with --on-divergence rollback: rollbacks allowed in a run before it stops")
    ckpt_failure: str = _f("stop", "when a checkpoint cannot be written (full disk, I/O error; the previous one "
                           "stays intact): stop with the reason, or warn and keep training", choices=("stop", "warn"))

    def validate(self) -> None:
        if self.on_divergence not in ("stop", "rollback") or self.ckpt_failure not in ("stop", "warn"):
            raise ValueError(f"on_divergence must be stop or rollback and ckpt_failure stop or warn, got "
                             f"{self.on_divergence!r}, {self.ckpt_failure!r}")
        if not 0 < self.rollback_lr_factor <= 1 or self.max_rollbacks < 0:
            raise ValueError(f"rollback_lr_factor must be in (0, 1] and max_rollbacks >= 0, got "
                             f"{self.rollback_lr_factor}, {self.max_rollbacks}")


SECTIONS: dict[str, type] = {"optim": OptimConfig, "ema": EMAConfig, "augment": AugmentConfig, "eval": EvalConfig,
                             "finetune": FinetuneConfig, "guard": GuardConfig}


def _keys() -> dict[str, tuple[str, str]]:
    """Each section field's flat key (its flag and config-file key) -> (section, field)."""
    return {f.metadata.get("key", f.name): (section, f.name)
            for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}


FLAT_KEYS = _keys()


@dataclass(init=False)
class TrainConfig:
    """Everything a run needs: the run's own fields and one section per concern (``optim``, ``ema``, ``augment``,
    ``eval``, ``finetune``, ``guard``), each validating itself. Resolution order: these defaults < the preset's
    ``train`` values < a config file < command-line flags; the resolved config is written to
    ``RUN/train_config.json`` (sections nested). Section settings are also taken by their flat keys (the flag names:
    ``TrainConfig(lr_g=1e-4)``, ``{"lr_g": 1e-4}`` in a config file or a file written before sections existed)."""

    model: str = _f("biggan-fmnist", "model preset name (see `scalegan info --list`)")
    model_overrides: dict = _f({}, "model config fields to change, e.g. {\"ch\": 48}; CLI: --set ch=48")
    objective: dict = _f({}, "settings of the family's training objective, e.g. {\"n_d_steps\": 1} (BigGAN); CLI: "
                         "one flag each, listed under 'objective'")
    data: str = _f("fashion-mnist", "dataset: fashion-mnist, mnist, cifar10:DIR, cifar100:DIR, folder:DIR, "
                   "npz:FILE, idx:DIR, or a path (auto-detected)")
    data_root: str | None = _f(None, "directory of the dataset files when --data names a dataset")
    mirror: bool = _f(False, "add every image flipped left-right to the data (twice the images, as stylegan2-ada's "
                      "--mirror=1); for data whose mirror image is as plausible as the image")
    out_dir: str = _f("runs/demo", "run folder: checkpoints, samples, logs")
    iterations: int = _f(2000, "number of G updates")
    batch_size: int = _f(64, "images per D/G batch (per accumulation step)")
    num_accumulations: int = _f(1, "gradient accumulation steps per D and G update (effective batch = "
                                "batch_size * num_accumulations)")
    seed: int = _f(0, "seed for initialisation, data order and noise")
    precision: str = _f("auto", "auto (bf16 where the device computes it natively: CUDA with bf16, CPUs with "
                        "AVX-512-bf16 or AMX; float32 elsewhere), float32, bf16 (autocast), or fp16 (autocast with "
                        "dynamic loss scaling, for GPUs without bf16); bf16 and fp16 follow --precision-scope. Losses "
                        "and optimizer state stay float32", choices=PRECISIONS)
    fake_labels: str = _f("data", "classes of generated images in training, standing statistics and evaluation: "
                          "data (drawn from the dataset's label distribution, as stylegan2-ada) or uniform",
                          choices=("data", "uniform"))
    precision_scope: str = _f("family", "under bf16/fp16: family (the family's reference policy: StyleGAN2 reduces "
                              "only its num_fp16_res highest resolutions and keeps the mappings, image sum and D's "
                              "epilogue float32; BigGAN keeps spectral norm and BN statistics float32) or all (every "
                              "layer in the reduced dtype: faster, less exact)", choices=SCOPES)
    channels_last: bool | None = _f(None, "channels_last memory format; default auto: on for CPUs (faster in "
                                    "float32 and bf16) and for CUDA under bf16/fp16")
    compile: bool = _f(False, "torch.compile G and D (inductor); the first iterations are slow while it compiles")
    device: str = _f("cpu", "torch device: cpu, cuda, cuda:1, ... (under torchrun, cuda means each process's "
                     "cuda:LOCAL_RANK)")
    num_workers: int = _f(0, "data-loader worker processes for image folders (in-memory datasets need none)")
    log_every: int = _f(50, "iterations between log lines (JSONL + TensorBoard)")
    sample_every: int = _f(500, "iterations between sample grids (samples/iter_NNNNNN.png); 0 = off")
    ckpt_every: int = _f(1000, "iterations between checkpoints (and one at the end); 0 = only at the end")
    keep_checkpoints: int = _f(2, "how many checkpoints to keep")
    sample_truncation: float | None = _f(None, "truncation threshold for the periodic sample grids")
    time_budget: float = _f(0.0, "stop (with a checkpoint) after this many seconds of training; 0 = no limit")
    tensorboard: bool = _f(True, "write TensorBoard event files to RUN/logs/")
    progress: bool = _f(True, "show a progress bar")
    resume: bool | str = _f(False, "continue the run in out_dir from its newest intact checkpoint; auto: continue "
                            "when the run folder holds a checkpoint, else start (for torchrun --max-restarts and "
                            "requeued jobs)", optional="auto")
    barrier_timeout: float = _f(1800.0, "distributed runs: seconds the other ranks wait for rank 0's checkpoint, "
                                "sample grid or evaluation (and rank 0 for them) before stopping with an error that "
                                "names the rank that did not arrive")
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)

    def __init__(self, **values):
        """Fields by name; sections as section objects or dicts, or their settings by flat key."""
        sections = {name: {} for name in SECTIONS}
        for key, value in values.items():
            if key in SECTIONS and (dataclasses.is_dataclass(value) or isinstance(value, dict)):
                sections[key].update(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else dict(value))
            elif key in FLAT_KEYS:
                section, name = FLAT_KEYS[key]
                sections[section][name] = value
            elif key not in GENERIC:
                raise TypeError(f"TrainConfig got an unknown setting {key!r}")
        for f in dataclasses.fields(self):
            if f.name in SECTIONS:
                setattr(self, f.name, SECTIONS[f.name](**sections[f.name]))
            elif f.name in values:
                setattr(self, f.name, values[f.name])
            else:
                setattr(self, f.name, f.default_factory() if f.default is dataclasses.MISSING else f.default)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """A config from its dict form (sections nested, or their settings by flat key); also reads
        ``train_config.json`` files written before the sections and the objective section existed."""
        data = flatten(upgrade(data))
        unknown = sorted(set(data) - GENERIC - set(FLAT_KEYS))
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; see `scalegan train --help`")
        check_types(cls, {k: v for k, v in data.items() if k in GENERIC}, "training config")
        for section, cls_ in SECTIONS.items():  # by flat key, so that an error names the flag
            keys = {k: name for k, (s, name) in FLAT_KEYS.items() if s == section}
            check_types(cls_, {k: v for k, v in data.items() if k in keys}, "training config", keys)
        if not isinstance(data.get("model_overrides", {}), dict) or not isinstance(data.get("objective", {}), dict):
            raise ValueError("model_overrides and objective must be JSON objects")
        return cls(**data)

    def flat(self) -> dict:
        """Every setting by its flat key (the flag names), sections flattened."""
        return flatten(self.to_dict())

    @classmethod
    def from_preset(cls, model: str, **overrides) -> TrainConfig:
        """Defaults, then the preset's training values, then ``overrides`` (objective sections merge)."""
        preset = dict(get_preset(model).get("train", {}))
        overrides = flatten(upgrade(overrides))
        if overrides.get("init_from"):  # fine-tuning a trained network: stylegan2-ada's resume settings
            overrides = {**FINETUNE_DEFAULTS, **overrides}
        objective = {**preset.pop("objective", {}), **dict(overrides.pop("objective", None) or {})}
        return cls.from_dict({"model": model, **flatten(preset), **overrides, "objective": objective})

    @property
    def family(self):
        """The model's ``Family``."""
        return get_family(get_preset(self.model)["family"])

    def objective_config(self):
        """The objective section as the family's validated config dataclass (defaults filled in)."""
        family = self.family
        return make_config(family.objective.Config, self.objective, family.name)

    def resolve_hardware(self, device) -> tuple[TrainConfig, dict]:
        """This config with ``precision`` and ``channels_last`` resolved for ``device``, and a record of the
        choices and their reasons (written to train_config.json, the first log line and ``--dry-run``)."""
        precision = choose_precision(self.precision, device)
        layout = choose_channels_last(self.channels_last, device, precision.value)
        record = {"device": str(device), "precision": precision.value, "precision_reason": precision.reason,
                  "channels_last": layout.value, "channels_last_reason": layout.reason}
        return dataclasses.replace(self, precision=precision.value, channels_last=layout.value), record

    def validate(self) -> None:
        """Raise ValueError naming the first invalid value: the run's fields, then each section's (objective
        settings are checked by the family)."""
        for name in ("iterations", "batch_size", "num_accumulations", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("sample_every", "ckpt_every", "num_workers", "time_budget"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.barrier_timeout > 0:
            raise ValueError(f"barrier_timeout must be > 0 seconds, got {self.barrier_timeout}")
        if self.resume not in (True, False, "auto"):
            raise ValueError(f"resume must be true, false or \"auto\", got {self.resume!r}")
        if self.sample_truncation is not None and not self.sample_truncation > 0:
            raise ValueError(f"sample_truncation must be > 0, got {self.sample_truncation}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.fake_labels not in ("data", "uniform"):
            raise ValueError(f"fake_labels must be 'data' or 'uniform', got {self.fake_labels!r}")
        if self.precision_scope not in SCOPES:
            raise ValueError(f"precision_scope must be one of {SCOPES}, got {self.precision_scope!r}")
        parse_device(self.device)
        for section in (self.optim, self.ema, self.augment, self.eval, self.guard):
            section.validate()
        self.finetune.validate(resume=bool(self.resume))
        self.objective_config()


GENERIC = {f.name for f in dataclasses.fields(TrainConfig)} - set(SECTIONS)


def flatten(data: dict) -> dict:
    """A config dict with its sections' settings at the top level, by flat key."""
    data = dict(data)
    for section, cls in SECTIONS.items():
        nested = data.get(section)
        if isinstance(nested, dict):  # ("ema" and "augment" are also flat keys: a bool and a string)
            data.pop(section)
            keys = {f.name: f.metadata.get("key", f.name) for f in dataclasses.fields(cls)}
            data.update({keys.get(k, k): v for k, v in nested.items()})
    return data


def upgrade(data: dict) -> dict:
    """A config dict in today's form: files written before the objective section existed kept BigGAN's loss,
    n_d_steps, ... at the top level (and 0.1.0's first files a ``bf16`` bool instead of ``precision``)."""
    data = dict(data)
    if "bf16" in data:
        data.setdefault("precision", "bf16" if data.pop("bf16") else "float32")
    known = GENERIC | set(FLAT_KEYS) | set(SECTIONS)
    legacy = {k for k in data if k not in known and k in objective_keys()}
    if legacy:
        data["objective"] = {**{k: data.pop(k) for k in legacy}, **dict(data.get("objective") or {})}
    return data


def objective_keys() -> set[str]:
    """Every objective setting of every registered family (the flags ``scalegan train`` adds for them)."""
    return {f.name for family in FAMILIES.values() for f in dataclasses.fields(family.objective.Config)}
