"""Model families: one ``Family`` record per family, in an open table keyed by name, and the family's presets.

A family's model file ends with ``register(Family(...))`` and its ``register_preset(...)`` calls: its config
dataclass, generator, discriminator, training objective, and the hooks that generic code (sampling, latents files,
editing, inversion, serving, export, the training loop, the tests) asks instead of reading a family's config or
module fields by name. Every family config has the fields ``resolution``, ``n_classes`` (0 = unconditional) and
``img_channels``, a class attribute ``family`` and ``to_dict()``; everything else is the family's own.

Required hooks:

- ``latent_shape(config)``: the shape of one z, e.g. ``(128,)``;
- ``draw_latents(config, n, truncation, mode, generator)``: the latent batch fed to ``G(latents, y, truncation)``
  (BigGAN truncates z here; a family that truncates inside G draws plain normals);
- ``tiny(config)``: config overrides that keep a preset's layout but make it small enough for a unit test.

Optional hooks:

- ``w_space``: a ``WSpace`` when G also generates from an intermediate, per-layer latent space (StyleGAN's W / W+):
  interpolation, style mixing, editing directions and inversion work there, and ``G(w, y)`` takes W+ back;
- ``truncation_mode(config)``, ``truncation_modes``: how ``truncation`` shapes the drawn z (see ``sampling.draw``);
- ``truncation_info(config)``: what ``truncation`` means for this model (the server's slider and help text);
- ``fold(G, truncation, dtype)``: an inference-only module with the same ``(z, y)`` function, and
  ``fold_key(config, truncation)``: what a folded module depends on besides G (None: one fold serves every
  truncation; BigGAN-deep's per-truncation statistics: the truncation);
- ``recalibrate(G, n_batches, batch_size, seed, truncation, class_weights)``: "standing statistics";
- ``export(G, truncation)``: an eval-mode, float32 module ``(z, y) -> images`` (``(z)`` unconditional) that
  ``torch.onnx.export`` traces with a dynamic batch; attribute ``truncation_baked``: whether the graph holds
  ``truncation``;
- ``discriminator_blocks(D)``: D's blocks nearest the image first (``--freeze-d K`` freezes the first K);
- ``discriminator_group(config)``: the batch group D's batch statistic spans (minibatch std), 1 for none;
- ``latent_layers(G)``: the layers that first take the latent (z; W with a ``w_space``), as ``(layer, its input
  columns that are the latent, the first latent coordinate they take)``: SeFa's directions factorise them;
- ``pretrained_parts(net)``: names of ``net``'s sub-modules that hold fixed pretrained weights (a projected
  discriminator's feature network): never trained, not in any optimizer, not written to checkpoints (the
  constructor builds them);
- ``upgrade(data)``: a config dict written by an earlier version, with renamed fields brought up to date;
- ``precision_defaults(config, precision)``: model config fields that training in ``precision`` (float32, bf16
  or fp16) sets unless the user did (StyleGAN2 under fp16: ``conv_clamp`` 256, as stylegan2-ada);
- ``tune_groups(G)``: G's parameters in groups from the input (low-resolution) side to the output side: generator
  tuning after inversion unfreezes them in that order, one more per stage (Deep Generative Prior); None (the
  default): pivotal tuning, all of G at once around the fixed latents with a locality regulariser (``scalegan.tune``);
- ``ema_buffers``: how G_ema follows G's buffers: ``"average"`` them like parameters (BigGAN-PyTorch, whose BN
  running statistics are averaged) or ``"copy"`` them (stylegan2-ada, whose tracked W averages are copied).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .utils import dataclass_from_dict, unknown_name


@dataclass(frozen=True)
class WSpace:
    """A family's intermediate latent space: ``shape(config)`` is ``(layers, dim)`` of one W+ (W repeated per layer);
    ``map(G, z, y, truncation)`` gives W+ [N, layers, dim] (truncated, no gradient, on the CPU); ``centre(G, y)``
    the point truncation pulls towards, per class [N, dim] (``y`` None: the global one, [1, dim])."""

    shape: Callable[[Any], tuple[int, int]]
    map: Callable[..., torch.Tensor]
    centre: Callable[..., torch.Tensor]


def z_threshold(config) -> dict:
    """The default ``truncation_info``: truncation is the threshold of the drawn z."""
    return {"meaning": "threshold of z (smaller = more typical, less varied)", "slider": [0.02, 2.0],
            "none_means": None}


@dataclass(frozen=True)
class Family:
    """Everything the frame needs to know about a model family (see the module docstring for each hook)."""

    name: str
    config: type  # frozen dataclass; ``config.family == name``
    generator: Callable[[Any], Any]  # config -> G
    discriminator: Callable[[Any], Any]  # config -> D
    objective: type  # an ``objectives.Objective`` subclass; its ``Config`` is the train config's objective section
    latent_shape: Callable[[Any], tuple[int, ...]]
    draw_latents: Callable[..., Any]
    tiny: Callable[[Any], dict]
    w_space: WSpace | None = None
    truncation_mode: Callable[[Any], str] = lambda config: "resample"
    truncation_modes: tuple[str, ...] = ("resample",)
    truncation_info: Callable[[Any], dict] = z_threshold
    fold: Callable[..., Any] | None = None
    fold_key: Callable[[Any, float | None], Hashable] = lambda config, truncation: None
    recalibrate: Callable[..., None] | None = None
    export: Callable[..., Any] | None = None
    discriminator_blocks: Callable[[Any], list] | None = None
    discriminator_group: Callable[[Any], int] = lambda config: 1
    latent_layers: Callable[[Any], list] | None = None
    pretrained_parts: Callable[[Any], tuple[str, ...]] = lambda net: ()
    upgrade: Callable[[dict], dict] = lambda data: data
    precision_defaults: Callable[[Any, str], dict] = lambda config, precision: {}
    tune_groups: Callable[[Any], list] | None = None
    ema_buffers: str = "average"
    about: str = ""

    def make_config(self, data: dict):
        """The config dataclass from a dict (``config.json``'s model section, a preset, overrides), brought up to
        date by ``upgrade``; unknown fields are an error."""
        return dataclass_from_dict(self.config, self.upgrade(dict(data)), f"{self.name} config")


FAMILIES: dict[str, Family] = {}
PRESETS: dict[str, dict] = {}


def register(family: Family) -> Family:
    """Add ``family`` to the table (a second family of the same name is an error)."""
    if family.name in FAMILIES and FAMILIES[family.name] is not family:
        raise ValueError(f"model family {family.name!r} is registered twice")
    FAMILIES[family.name] = family
    return family


def register_preset(name: str, family: str, model: dict, train: dict | None = None, about: str = "") -> None:
    """Name a model config (``model``: its fields) with the training values its source used (``train``: defaults
    of ``scalegan train --model NAME``); families call this from their own file."""
    if name in PRESETS:
        raise ValueError(f"model preset {name!r} is registered twice")
    PRESETS[name] = dict(family=family, model=dict(model), train=dict(train or {}), about=about)


def get_family(name_or_config) -> Family:
    """The family of a name, a config or a model (anything with ``.config.family`` or ``.family``)."""
    name = getattr(getattr(name_or_config, "config", name_or_config), "family", name_or_config)
    if name not in FAMILIES:
        raise unknown_name("model family", name, sorted(FAMILIES))
    return FAMILIES[name]


def config_from_dict(data: dict):
    """A model config from its ``to_dict()`` form: ``{"family": NAME, ...fields}``."""
    data = dict(data)
    family = data.pop("family", None)
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}: expected one of {sorted(FAMILIES)}")
    return FAMILIES[family].make_config(data)


def require_positive(config, *names: str, allow_zero: tuple[str, ...] = ()) -> None:
    """Raise ValueError naming the first field of ``config`` in ``names`` that is not > 0 (>= 0 for
    ``allow_zero``): config classes call it from ``__post_init__``."""
    for name in (*names, *allow_zero):
        value = getattr(config, name)
        if value < 0 or (value == 0 and name not in allow_zero):
            bound = ">= 0" if name in allow_zero else "> 0"
            raise ValueError(f"{config.family} config field {name} must be {bound}, got {value}")


def rename_fields(data: dict, renames: dict[str, str]) -> dict:
    """``data`` with old field names replaced by new ones (an ``upgrade`` hook's helper); both given is an error."""
    for old, new in renames.items():
        if old in data:
            if new in data:
                raise ValueError(f"both {old!r} (its old name) and {new!r} given: keep {new!r}")
            data[new] = data.pop(old)
    return data


# --------------------------------------------------------------------------------------------- asked of any model
def latent_shape(model_or_config) -> tuple[int, ...]:
    """The shape of one z of a model or config."""
    config = getattr(model_or_config, "config", model_or_config)
    return tuple(get_family(config).latent_shape(config))


def w_shape(model_or_config) -> tuple[int, int] | None:
    """``(layers, dim)`` of one W+ where the family has a W space, else None."""
    config = getattr(model_or_config, "config", model_or_config)
    space = get_family(config).w_space
    return None if space is None else tuple(space.shape(config))


def latent_shapes(model_or_config) -> list[tuple[int, ...]]:
    """The shapes of one latent that ``G(latents, y)`` takes: z, then W+ where the family has one."""
    w = w_shape(model_or_config)
    return [latent_shape(model_or_config), *([w] if w is not None else [])]


def truncation_info(model_or_config) -> dict:
    """What ``truncation`` means for a model: ``meaning``, a ``slider`` range and ``none_means``."""
    config = getattr(model_or_config, "config", model_or_config)
    return dict(get_family(config).truncation_info(config))


def fold_key(model_or_config, truncation: float | None) -> Hashable:
    """What a folded inference module of this model depends on besides its weights (None: nothing)."""
    config = getattr(model_or_config, "config", model_or_config)
    return get_family(config).fold_key(config, truncation)


# --------------------------------------------------------------------------------------------- pretrained parts
def _pretrained_prefixes(net: nn.Module) -> tuple[str, ...]:
    config = getattr(net, "config", None)
    if getattr(config, "family", None) not in FAMILIES:
        return ()
    return tuple(f"{name}." for name in get_family(config).pretrained_parts(net))


def trainable_parameters(net: nn.Module) -> list[nn.Parameter]:
    """``net``'s parameters less those of its family's pretrained parts."""
    prefixes = _pretrained_prefixes(net)
    return [p for name, p in net.named_parameters() if not name.startswith(prefixes)]


def set_trainable(net: nn.Module, flag: bool) -> None:
    """``requires_grad`` of ``net``'s trainable parameters set to ``flag``; its pretrained parts stay frozen."""
    prefixes = _pretrained_prefixes(net)
    for name, p in net.named_parameters():
        p.requires_grad_(flag and not name.startswith(prefixes))


def saved_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of ``net`` that checkpoints and weights files hold: its state dict less its pretrained parts."""
    prefixes = _pretrained_prefixes(net)
    return {k: v for k, v in net.state_dict().items() if not k.startswith(prefixes)}

