"""Model families. Each family file ends with one ``Family`` record and its presets (see ``scalegan.family``);
importing this package imports every module in it, so a new family file registers itself with no line here."""

from __future__ import annotations

import importlib
import pkgutil

from ..family import FAMILIES, config_from_dict, get_family
from .biggan import BigGANConfig, Discriminator, Generator
from .biggan_deep import BigGANDeepConfig, DiscriminatorDeep, GeneratorDeep
from .stylegan2 import StyleGAN2Config

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_generator(config):
    """A freshly initialised generator of ``config``'s family."""
    return get_family(config).generator(config)


def build_discriminator(config):
    """A freshly initialised discriminator of ``config``'s family."""
    return get_family(config).discriminator(config)


__all__ = [
    "FAMILIES", "BigGANConfig", "BigGANDeepConfig", "Generator", "Discriminator", "GeneratorDeep",
    "DiscriminatorDeep", "StyleGAN2Config", "config_from_dict", "build_generator", "build_discriminator", "get_family",
]
