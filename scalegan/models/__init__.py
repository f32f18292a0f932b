"""Model families. Each family: a frozen config dataclass, a generator and a discriminator."""

from __future__ import annotations

import dataclasses

from .biggan import BigGANConfig, Discriminator, Generator
from .biggan_deep import BigGANDeepConfig, DiscriminatorDeep, GeneratorDeep

FAMILIES = {
    "biggan": (BigGANConfig, Generator, Discriminator),
    "biggan-deep": (BigGANDeepConfig, GeneratorDeep, DiscriminatorDeep),
}


def config_from_dict(data: dict):
    """A model config from its ``to_dict()`` form (``config.json``); unknown fields are an error."""
    data = dict(data)
    family = data.pop("family", None)
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}: expected one of {sorted(FAMILIES)}")
    cls = FAMILIES[family][0]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {family} config fields {unknown}; known fields: {sorted(known)}")
    return cls(**data)


def build_generator(config):
    return FAMILIES[config.family][1](config)


def build_discriminator(config):
    return FAMILIES[config.family][2](config)


__all__ = [
    "FAMILIES", "BigGANConfig", "BigGANDeepConfig", "Generator", "Discriminator", "GeneratorDeep",
    "DiscriminatorDeep", "config_from_dict", "build_generator", "build_discriminator",
]
