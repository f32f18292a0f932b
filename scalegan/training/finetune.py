"""Fine-tuning: a run that starts from another model's weights (``--init-from SOURCE``) instead of random ones.

SOURCE is a run folder (its newest checkpoint: G, G_ema and D), a checkpoint folder (the same), a foreign checkpoint
that holds a whole training state (a stylegan2-ada network pickle: G, G_ema and D), a weights folder, a
``.safetensors`` file or a pretrained name (the generator only: D starts fresh and, by default, trains alone for
``DEFAULT_WARMUP`` iterations while G is frozen; ``--freeze-d`` is refused then, since freezing untrained layers
only removes capacity).

A run that starts from a source sets stylegan2-ada's resume settings unless they are given (``FINETUNE_DEFAULTS``,
applied by ``TrainConfig.from_preset``): ADA's p moves at 100 kimg instead of 500, and G_ema has no ramp-up (it
starts from a trained average). The source must be of the model's
family and architecture; only the class count may differ. The tensors whose shape follows ``n_classes`` (found by
building the model at two other class counts, so no family is named here: BigGAN's shared embedding and D's
projection table, StyleGAN2's class-embedding layers) are mapped class by class (``--class-map NEW:OLD,...``) or
start fresh. FreezeD (Mo et al. 2020, "Freeze the Discriminator"): ``--freeze-d K`` keeps the first K blocks of D
(nearest the input image, as the family's ``discriminator_blocks`` lists them) out of D's optimizer.

Initialisation happens once, when the run starts; ``--resume`` continues from the run's own checkpoint and reads
what the start recorded (``train_config.json``'s ``init_from``: source, kind, SHA-256 of the files, class map,
warm-up).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..api import load
from ..convert import CONVERTERS
from ..family import get_family, saved_state
from ..manifest import check_folder, read_manifest
from ..pretrained import PRETRAINED
from ..sources import exists, resolve_source
from ..utils import key_mismatch, read_json, sha256_file
from ..weights import WeightsError, read_config, read_safetensors, resolve_weights_dir

DEFAULT_WARMUP = 200  # D-only iterations when D starts fresh: long enough for its logits to mean something
FINETUNE_DEFAULTS = {"ada_kimg": 100.0, "ema_rampup": 0.0}  # stylegan2-ada's --resume settings
SOURCE_HELP = "pass a run folder, a checkpoint folder, a weights folder, a .safetensors file or a pretrained name"


@dataclass
class Source:
    """A model to start from: its config and the state dicts it has (``G`` always; ``G_ema`` and ``D`` from runs
    and training checkpoints)."""

    spec: str
    kind: str  # run, checkpoint, weights, file, pretrained, foreign
    config: object
    tensors: dict[str, dict[str, torch.Tensor]]
    sha256: dict[str, str | None] = field(default_factory=dict)
    step: int | None = None
    folder: str | None = None  # the checkpoint or weights folder read (a run's newest checkpoint)


def parse_class_map(text: str | None) -> list[tuple[int, int]] | str | None:
    """``"0:3,1:5"`` -> ``[(0, 3), (1, 5)]`` (new class, source class); ``"reinit"`` and None pass through."""
    if text is None or text.strip() == "reinit":
        return None if text is None else "reinit"
    pairs, seen = [], set()
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"class_map {text!r}: expected NEW:OLD pairs such as 0:3,1:5,2:7 (new class NEW starts "
                             "from the source's class OLD) or reinit")
        new, old = int(parts[0]), int(parts[1])
        if new in seen:
            raise ValueError(f"class_map {text!r}: new class {new} is given twice; give each new class once")
        seen.add(new)
        pairs.append((new, old))
    return pairs


def class_rows(text: str | None, n_source: int, n_target: int) -> tuple[list[tuple[int, int]], str]:
    """The (new, source) class pairs whose rows are copied, and a note saying what happens to the classes."""
    parsed = parse_class_map(text)
    if bool(n_source) != bool(n_target):
        raise ValueError(f"--init-from: the source has {n_source} classes and the model {n_target}: both must be "
                         "class-conditional or both unconditional; train on data of the source's kind")
    if not n_target:
        if parsed is not None:
            raise ValueError("--class-map: the source and the model are unconditional; drop --class-map")
        return [], ""
    if parsed == "reinit":
        return [], f"class embeddings re-initialised ({n_target} classes, --class-map reinit)"
    if parsed is None:
        if n_source == n_target:
            return [(c, c) for c in range(n_target)], f"{n_target} class embeddings copied"
        return [], (f"class embeddings re-initialised: the source has {n_source} classes, the model {n_target} "
                    "(--class-map NEW:OLD,... maps source classes onto new ones)")
    for new, old in parsed:
        if new >= n_target:
            raise ValueError(f"--class-map {text}: new class {new} is out of range: the model has {n_target} classes "
                             f"(0..{n_target - 1})")
        if old >= n_source:
            raise ValueError(f"--class-map {text}: source class {old} is out of range: the source has {n_source} "
                             f"classes (0..{n_source - 1})")
    fresh = n_target - len(parsed)
    return parsed, (f"class embeddings mapped: {', '.join(f'{n}<-{o}' for n, o in parsed)}"
                    + (f"; {fresh} new classes start fresh" if fresh else ""))


def check_source(spec: str) -> None:
    """A quick check (the config's, before any data is read) that SOURCE is a path or a pretrained name."""
    if not exists(spec):
        raise FileNotFoundError(f"--init-from {spec}: no such file or folder, and not a pretrained name "
                                f"({', '.join(sorted(PRETRAINED))}); {SOURCE_HELP}")


def open_source(spec: str) -> Source:
    """Read SOURCE: the model config and the state dicts it holds (one clear error when it cannot be used)."""
    check_source(spec)
    resolved = resolve_source(spec)
    networks = CONVERTERS[resolved.format].networks if resolved.kind == "foreign" else None
    if networks is not None:  # a foreign training state: every network it has
        modules = networks(resolved.path)
        digest = sha256_file(resolved.path)
        return Source(spec, resolved.kind, modules["G"].config, {k: saved_state(m) for k, m in modules.items()},
                      {k: digest for k in modules})
    if resolved.kind != "weights":  # pretrained names and other foreign checkpoints load through the one loader
        G, info = load(resolved, weights="G")
        return Source(spec, resolved.kind, G.config, {"G": saved_state(G)}, {"G": info.sha256})
    path = resolved.path
    try:
        directory = resolve_weights_dir(path)
        config, data = read_config(directory)
    except WeightsError as e:
        raise WeightsError(f"--init-from: {e}") from e
    if path.is_file():
        files, kind = {"G": path}, "file"
    elif (directory / "G.safetensors").is_file():
        files = {k: directory / f"{k}.safetensors" for k in ("G", "G_ema", "D")
                 if (directory / f"{k}.safetensors").is_file()}
        kind = "checkpoint" if directory == path else "run"
    else:
        files, kind = {"G": directory / "model.safetensors"}, "weights"
    check_folder(directory, ["config.json", *(f.name for f in files.values() if f.parent == directory)])
    listed = read_manifest(directory) or {}  # the digests just verified; hash only files it does not list
    digests = {k: listed[f.name]["sha256"] if f.parent == directory and f.name in listed else sha256_file(f)
               for k, f in files.items()}
    try:
        tensors = {k: read_safetensors(f) for k, f in files.items()}
    except WeightsError as e:
        raise WeightsError(f"--init-from: {e}") from e
    return Source(spec, kind, config, tensors, digests, data.get("step"), str(directory))


def _shapes(factory, config) -> dict[str, tuple[int, ...]]:
    """State-dict shapes of ``factory(config)``, built on the meta device where the model's init allows it."""
    try:
        with torch.device("meta"):
            module = factory(config)
    except (RuntimeError, NotImplementedError, TypeError):
        module = factory(config)
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def class_dims(factory, config) -> dict[str, int]:
    """The state-dict keys of ``factory(config)`` whose shape follows ``n_classes``, and the dimension that does."""
    n = config.n_classes
    a = _shapes(factory, dataclasses.replace(config, n_classes=n + 3))
    b = _shapes(factory, dataclasses.replace(config, n_classes=n + 5))
    dims = {}
    for key in a.keys() & b.keys():
        differ = [d for d, (x, y) in enumerate(zip(a[key], b[key])) if x != y]
        if len(differ) == 1 and a[key][differ[0]] == n + 3 and b[key][differ[0]] == n + 5:
            dims[key] = differ[0]
    return dims


def _config_difference(source, target) -> str:
    a, b = source.to_dict(), target.to_dict()
    keys = [k for k in b if k != "n_classes" and a.get(k) != b[k]]
    return ", ".join(f"{k}={a.get(k)!r} (model: {b[k]!r})" for k in keys) or "none in the config"


def transfer(module: nn.Module, tensors: dict[str, torch.Tensor], dims: dict[str, int],
             rows: list[tuple[int, int]], what: str, source: Source) -> None:
    """Load ``tensors`` into ``module``: every tensor as it is, except those that follow the class count, whose
    ``rows`` (new, source) are copied along the class dimension (the others keep ``module``'s fresh values)."""
    target = saved_state(module)  # a family's pretrained parts are the constructor's
    plain = {k for k in target if k not in dims}
    problems = key_mismatch({k: tuple(v.shape) for k, v in tensors.items() if k not in dims},
                            {k: tuple(target[k].shape) for k in plain})
    if problems:
        raise ValueError(f"--init-from {source.spec}: its {what} does not fit the model ({problems}); the configs "
                         f"differ in: {_config_difference(source.config, module.config)}. Choose the source's "
                         "--model and --set its fields")
    state = {k: tensors[k] for k in plain}
    for key, dim in dims.items():
        if key not in target:
            continue
        value = target[key].clone()
        if dim >= 0 and key in tensors:
            for new, old in rows:
                value.select(dim, new).copy_(tensors[key].select(dim, old))
        state[key] = value
    with torch.no_grad():
        module.load_state_dict({**module.state_dict(), **state}, strict=True)


def check_fit(source: Source, config) -> None:
    """The family and resolution must be the model's (other differences show as mis-shaped tensors)."""
    if source.config.family != config.family:
        raise ValueError(f"--init-from {source.spec}: a {source.config.family} model cannot start a "
                         f"{config.family} model; choose a --model of the {source.config.family} family")
    if source.config.resolution != config.resolution:
        raise ValueError(f"--init-from {source.spec}: the source makes {source.config.resolution} px images, the "
                         f"model {config.resolution} px; choose a --model of {source.config.resolution} px")
    if getattr(source.config, "img_channels", None) != getattr(config, "img_channels", None):
        raise ValueError(f"--init-from {source.spec}: the source has {source.config.img_channels} image channels, "
                         f"the model {config.img_channels}; train on data with as many channels")


def init_models(cfg, modules: dict[str, nn.Module]) -> dict:
    """Load ``cfg.finetune.init_from`` into ``modules`` (``G``, ``D``, optional ``G_ema``); returns the record that
    ``train_config.json`` keeps (source, kind, SHA-256, step, what each network started from, classes, warm-up)."""
    source = open_source(cfg.finetune.init_from)
    config = modules["G"].config
    check_fit(source, config)
    family = get_family(config)
    rows, note = class_rows(cfg.finetune.class_map, source.config.n_classes, config.n_classes)
    started = {}
    for name, factory in (("G", family.generator), ("D", family.discriminator)):
        if name in source.tensors:
            transfer(modules[name], source.tensors[name], class_dims(factory, config), rows, name, source)
        started[name] = name if name in source.tensors else None
    if "G_ema" in modules:
        ema = "G_ema" if "G_ema" in source.tensors else "G"
        transfer(modules["G_ema"], source.tensors[ema], class_dims(family.generator, config), rows, ema, source)
        started["G_ema"] = ema
    fresh_d = started["D"] is None
    if fresh_d and cfg.finetune.freeze_d:
        raise ValueError(f"--freeze-d {cfg.finetune.freeze_d}: {source.spec} holds no discriminator, so D starts "
                         "from random weights, and freezing random layers only removes capacity; drop --freeze-d, "
                         "or start from a source with D (a run, a checkpoint or a network pickle)")
    warmup = cfg.finetune.d_warmup if cfg.finetune.d_warmup is not None else (DEFAULT_WARMUP if fresh_d else 0)
    return {"source": source.spec, "kind": source.kind, "folder": source.folder, "step": source.step,
            "sha256": source.sha256,
            "started_from": started, "class_map": [list(r) for r in rows], "classes": note, "d_warmup": warmup}


def describe(record: dict) -> str:
    """One line for the log: what the run started from."""
    started = ", ".join(f"{k} <- {v}" if v else f"{k} fresh" for k, v in record["started_from"].items())
    step = f" (step {record['step']})" if record.get("step") is not None else ""
    parts = [f"scalegan train: init from {record['kind']} {record['source']}{step}: {started}"]
    if record["classes"]:
        parts.append(record["classes"])
    if record["d_warmup"]:
        parts.append(f"D warm-up: the first {record['d_warmup']} iterations train D only")
    return "; ".join(parts)


def initialise(cfg, modules: dict[str, nn.Module], run_dir: Path, verbose: bool = True) -> dict | None:
    """What the loop calls after building the models: ``init_models`` when a fine-tuning run starts; when it resumes,
    the record its start wrote (the resumed checkpoint holds the weights); None for a run without ``init_from``."""
    if not cfg.finetune.init_from:
        return None
    if cfg.resume:
        path = Path(run_dir) / "train_config.json"
        record = read_json(path).get("init_from") if path.is_file() else None
        return record or {"source": cfg.finetune.init_from, "d_warmup": cfg.finetune.d_warmup or 0}
    record = init_models(cfg, modules)
    if verbose:
        print(describe(record), file=sys.stderr)
    return record


def frozen_parameters(D: nn.Module, k: int) -> list[nn.Parameter]:
    """The parameters of D's first ``k`` blocks (FreezeD): what D's optimizer leaves out."""
    if not k:
        return []
    family = get_family(D)
    if family.discriminator_blocks is None:
        raise ValueError(f"--freeze-d: the {family.name} family does not list its discriminator blocks; use "
                         "--freeze-d 0")
    blocks = family.discriminator_blocks(D)
    if k > len(blocks):
        raise ValueError(f"--freeze-d {k}: the discriminator has {len(blocks)} blocks; choose 0 to {len(blocks)}")
    return [p for block in blocks[:k] for p in block.parameters()]
