"""Named presets: a model config plus the training hyper-parameters its source used. Each family registers its own
(``family.register_preset`` in its model file); this module looks them up.

``train`` entries are defaults for ``scalegan train --model NAME``; flags given by the user override them.
"""

from __future__ import annotations

from . import models  # noqa: F401  (importing the family files registers their presets)
from .family import PRESETS, get_family
from .utils import unknown_name


def list_models() -> list[str]:
    """Names of the registered presets."""
    return sorted(PRESETS)


def get_preset(name: str) -> dict:
    """The registry entry of ``name``; an unknown name is a KeyError with close matches."""
    if name not in PRESETS:
        raise unknown_name("model preset", name, list_models())
    return PRESETS[name]


def model_config(name: str, **overrides):
    """The config dataclass of preset ``name`` with fields replaced by ``overrides``."""
    preset = get_preset(name)
    family = get_family(preset["family"])
    return family.make_config({**preset["model"], **family.upgrade(dict(overrides))})  # old names in overrides too


def count_parameters(module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["PRESETS", "count_parameters", "get_preset", "list_models", "model_config"]
