"""The public API: ``create_model``, ``load`` (the one loader) and ``BigGAN`` (a ready-to-sample wrapper)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from . import imagenet
from .convert import convert, detect_format
from .family import get_family
from .pretrained import PRETRAINED, resolve
from .registry import model_config
from .sampling import resolve_class, sample
from .weights import ModelInfo, load_weights


def create_model(name: str, **overrides) -> tuple[nn.Module, nn.Module]:
    """Build preset ``name`` (see ``list_models()``) with config fields replaced by ``overrides``.

    Returns ``(G, D)`` with fresh random weights, in training mode."""
    config = model_config(name, **overrides)
    family = get_family(config)
    return family.generator(config), family.discriminator(config)


def load(source: str | os.PathLike, device: str | torch.device = "cpu",
         weights: str = "model") -> tuple[nn.Module, ModelInfo]:
    """The generator (eval mode) and its ``ModelInfo`` from any source: a run folder (its latest checkpoint), a
    checkpoint folder, a weights folder, a ``.safetensors`` file, a pretrained name (``"biggan-deep-256"``, from
    the local cache, SHA-256 checked) or a foreign checkpoint (converted in memory; ``scalegan convert`` writes it
    once). ``weights``: ``"model"`` (the sampling generator: EMA when trained with EMA), ``"G"`` or ``"G_ema"``.
    """
    path = Path(source)
    if not path.exists() and str(source) in PRETRAINED:
        path = resolve(str(source))
    if detect_format(path):
        G, info = convert(path, weights="G" if weights == "G" else "G_ema")
        return G.to(device).eval(), info
    return load_weights(path, device=device, weights=weights)


class BigGAN:
    """A generator ready to sample: ``model = scalegan.BigGAN(resolution=128)``; ``model.generate(z, y, truncation)``.

    ``pretrained``: False (random weights of the preset), True (the named pretrained weights from the cache:
    ``biggan-deep-{resolution}``, or ``biggan-{resolution}`` with ``deep=False``), or a pretrained name / a path.
    ``fast=True`` uses the family's folded inference module (spectral norm folded, BN statistics fixed per
    truncation); its ``dtype`` is None (float32, the reference), ``"auto"`` (bf16 where the device computes it
    natively) or a torch dtype (an explicit bf16 on a CPU that emulates it runs with a warning).
    """

    def __init__(self, resolution: int = 128, pretrained: bool | str = False, deep: bool = True,
                 device: str = "cpu", fast: bool = False, dtype=None):
        name = f"biggan-deep-{resolution}" if deep else f"biggan-{resolution}"
        if pretrained:
            self.G, self.info = load(name if pretrained is True else pretrained, device=device)
        else:
            G = create_model(name)[0].to(device).eval()
            ids = imagenet.wordnet_ids() if G.config.n_classes == imagenet.N_CLASSES else []
            names = imagenet.class_names() if ids else []
            self.G = G
            self.info = ModelInfo(G.config.family, G.config.resolution, G.config.n_classes, tuple(names),
                                  tuple(ids), source=name)
        self.name, self.fast, self.dtype = name, fast, dtype
        self._folded: dict = {}

    @property
    def config(self):
        return self.G.config

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    def labels(self, y) -> torch.Tensor:
        """Class indices [N] from indices, names, WordNet ids or a mix (a tensor passes through)."""
        if isinstance(y, torch.Tensor):
            return y
        items = [y] if isinstance(y, (int, str)) else list(y)
        return torch.tensor([resolve_class(v, self.class_names, self.config.n_classes) for v in items])

    def generator(self, truncation: float | None = None) -> nn.Module:
        """The module that computes ``G(z, y)``: G itself, or with ``fast`` its folded copy for ``truncation``."""
        fold = get_family(self.G).fold
        if not self.fast or fold is None:
            return self.G
        key = (truncation if getattr(self.config, "n_stats", 0) else None, self.dtype)
        if key not in self._folded:
            self._folded = {key: fold(self.G, truncation=key[0], dtype=self.dtype)}
        return self._folded[key]

    @torch.no_grad()
    def generate(self, z=None, y=None, truncation: float | None = None, n: int | None = None,
                 seed: int | None = None, truncation_mode: str | None = None) -> torch.Tensor:
        """Images [N, 3, H, W] in [-1, 1]. ``z``: latents [N, dim_z], or None to draw ``n`` (seeded) through
        ``scalegan.sample`` with ``truncation`` (mode: the model's default, see ``scalegan.sample``). ``y``: class
        index / name / WordNet id, or one per image. ``truncation`` also picks the BN statistics of models that
        store them per truncation (the converted BigGAN-deep weights)."""
        labels = None
        if self.config.n_classes:
            if y is None:
                raise ValueError("this generator is class-conditional: pass y (class index, name or WordNet id)")
            labels = self.labels(y)
        G = self.generator(truncation)
        if z is None:
            n = n or (1 if labels is None or labels.numel() == 1 else len(labels))
            return sample(G, n, y=labels, truncation=truncation, seed=seed, truncation_mode=truncation_mode)
        z = torch.as_tensor(z, dtype=torch.float32)
        if labels is not None and labels.numel() == 1 and len(z) > 1:
            labels = labels.expand(len(z))
        device = next(self.G.parameters()).device
        return G(z.to(device), labels.to(device) if labels is not None else None, truncation=truncation).float()

    __call__ = generate
