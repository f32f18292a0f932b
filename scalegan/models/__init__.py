"""Model families. Each family file ends with one ``Family`` record (see ``scalegan.family``); importing this
package registers them all."""

from __future__ import annotations

from ..family import FAMILIES, config_from_dict, get_family
from .biggan import BigGANConfig, Discriminator, Generator
from .biggan_deep import BigGANDeepConfig, DiscriminatorDeep, GeneratorDeep
from .stylegan2 import StyleGAN2Config


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
