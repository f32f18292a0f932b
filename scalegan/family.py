"""Model families: one ``Family`` record per family, in an open table keyed by name.

A family's model file ends with ``register(Family(...))``: its config dataclass, generator, discriminator,
training objective, and the hooks that sampling, serving and export use, so that none of them names a family:

- ``draw_latents(config, n, truncation, mode, generator)``: the latent batch fed to ``G(latents, y, truncation)``
  (BigGAN truncates z here; a family that truncates inside G draws plain normals);
- ``truncation_mode(config)``: the default way ``truncation`` is applied when the caller does not say;
- ``fold(G, truncation, dtype)``: an optional inference-only module with the same ``(z, y)`` function;
- ``recalibrate(G, n_batches, batch_size, seed, truncation)``: optional "standing statistics";
- ``map_latents(G, latents, y, truncation)``: optional: the space interpolation and style mixing work in (StyleGAN2:
  W), accepted back by ``G``;
- ``export(G, truncation)``: optional: an eval-mode, float32 module ``(z, y) -> images`` (``(z)`` for an
  unconditional model) that ``torch.onnx.export`` can trace with a dynamic batch: spectral norm folded, no random
  noise, no per-sample grouped convolutions. Its attribute ``truncation_baked`` is True when the graph holds
  ``truncation`` (StyleGAN2's psi in W, BigGAN-deep's truncation-indexed statistics), False when truncation only
  shapes the latents the caller draws;
- ``discriminator_blocks(D)``: optional: D's blocks in the order D applies them (nearest the input image first),
  each one module holding that stage's parameters: ``--freeze-d K`` freezes the first K (FreezeD);
- ``latent_layers(G)``: optional: the layers that first take the latent (z; W for a family with ``map_latents``),
  as ``(layer, its input columns that are the latent, the first latent coordinate they take)``: SeFa's editing
  directions (``scalegan.edit``) factorise their weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .utils import dataclass_from_dict, unknown_name


@dataclass(frozen=True)
class Family:
    """Everything the frame needs to know about a model family."""

    name: str
    config: type  # frozen dataclass; ``config.family == name``
    generator: Callable[[Any], Any]  # config -> G
    discriminator: Callable[[Any], Any]  # config -> D
    objective: type  # an ``objectives.Objective`` subclass; its ``Config`` is the train config's objective section
    draw_latents: Callable[..., Any]
    truncation_mode: Callable[[Any], str] = lambda config: "resample"
    truncation_modes: tuple[str, ...] = ("resample",)
    fold: Callable[..., Any] | None = None
    recalibrate: Callable[..., None] | None = None
    map_latents: Callable[..., Any] | None = None
    export: Callable[..., Any] | None = None
    discriminator_blocks: Callable[[Any], list] | None = None
    latent_layers: Callable[[Any], list] | None = None
    about: str = ""

    def make_config(self, data: dict):
        """The config dataclass from a dict (``config.json``'s model section); unknown fields are an error."""
        return dataclass_from_dict(self.config, data, f"{self.name} config")


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add ``family`` to the table (a second family of the same name is an error)."""
    if family.name in FAMILIES and FAMILIES[family.name] is not family:
        raise ValueError(f"model family {family.name!r} is registered twice")
    FAMILIES[family.name] = family
    return family


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
