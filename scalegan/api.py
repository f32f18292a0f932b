"""The public API: ``create_model``, ``load`` (the one loader) and ``Pipeline`` (the one inference object: a
generator, what it is, and its folded inference modules), with ``BigGAN`` as a named shortcut."""

from __future__ import annotations

import os
from collections import OrderedDict

import torch
from torch import nn

from . import imagenet
from .convert import convert
from .family import fold_key, get_family, truncation_info
from .pretrained import resolve
from .registry import model_config
from .sampling import draw, interpolation_space, render, resolve_class, resolve_truncation_mode
from .sources import Source, resolve_source
from .utils import device_of
from .weights import ModelInfo, load_weights


def create_model(name: str, **overrides) -> tuple[nn.Module, nn.Module]:
    """Build preset ``name`` (see ``list_models()``) with config fields replaced by ``overrides``.

    Returns ``(G, D)`` with fresh random weights, in training mode."""
    config = model_config(name, **overrides)
    family = get_family(config)
    return family.generator(config), family.discriminator(config)


def load(source: str | os.PathLike | Source, device: str | torch.device = "cpu",
         weights: str = "model") -> tuple[nn.Module, ModelInfo]:
    """The generator (eval mode) and its ``ModelInfo`` from any source (``scalegan.sources``): a run folder (its
    latest checkpoint), a checkpoint folder, a weights folder, a ``.safetensors`` file, a pretrained name
    (``"biggan-deep-256.tfhub"``, from the local cache, SHA-256 checked) or a foreign checkpoint (converted in memory;
    ``scalegan convert`` writes it once). ``weights``: ``"model"`` (the sampling generator: EMA when trained with
    EMA), ``"G"`` or ``"G_ema"``.
    """
    source = resolve_source(source)
    if source.kind == "weights":
        return load_weights(source.path, device=device, weights=weights)
    if source.kind == "pretrained":
        return load_weights(resolve(source.name), device=device)
    G, info = convert(source.path, format=source.format, weights="G" if weights == "G" else "G_ema")
    return G.to(device).eval(), info


def preset_info(G: nn.Module, source: str) -> ModelInfo:
    """The ``ModelInfo`` of a freshly built model (ImageNet class names for 1,000 classes)."""
    cfg = G.config
    ids = imagenet.wordnet_ids() if cfg.n_classes == imagenet.N_CLASSES else []
    names = imagenet.class_names() if ids else []
    return ModelInfo(cfg.family, cfg.resolution, cfg.n_classes, tuple(names), tuple(ids), source=source)


def describe_truncation(G) -> dict:
    """What ``truncation`` means for a model (the family's ``truncation_info``: meaning, slider range,
    none_means), the range it takes, and, where the family has several, the mode its latents are drawn with."""
    info = {"min_exclusive": 0.0, "max": None, "default": None, **truncation_info(G)}
    if len(get_family(G).truncation_modes) > 1:
        info["mode"] = resolve_truncation_mode(G)
    return info


class Pipeline:
    """A generator ready to use, whatever its family: ``scalegan.Pipeline.from_source("runs/demo")``.

    It holds G (in eval mode: ``load`` and ``from_preset`` put it there), its ``info`` and, with ``fast=True``, the
    family's folded inference modules (spectral norm folded, statistics fixed), kept for the last ``max_folds``
    values of what a fold depends on (the family's ``fold_key``). ``dtype`` of the folded modules: None (float32,
    the reference), ``"auto"`` (bf16 where the device computes it natively) or a torch dtype. The Python API, the
    server and export go through it."""

    def __init__(self, G: nn.Module, info: ModelInfo, fast: bool = False, dtype=None, max_folds: int = 4):
        self.G, self.info = G, info
        self.fast, self.dtype, self.max_folds = fast, dtype, max_folds
        self._folded: OrderedDict = OrderedDict()

    @classmethod
    def from_source(cls, source: str | os.PathLike | Source, device: str | torch.device = "cpu",
                    weights: str = "model", **kwargs) -> Pipeline:
        """The pipeline of any source ``load`` reads."""
        G, info = load(source, device=device, weights=weights)
        return cls(G, info, **kwargs)

    @classmethod
    def from_preset(cls, name: str, device: str | torch.device = "cpu", overrides: dict | None = None,
                    **kwargs) -> Pipeline:
        """A preset with random weights (``create_model``)."""
        G = create_model(name, **(overrides or {}))[0].to(device).eval()
        return cls(G, preset_info(G, name), **kwargs)

    # ------------------------------------------------------------------ what it is
    @property
    def config(self):
        return self.G.config

    @property
    def family(self):
        return get_family(self.G)

    @property
    def device(self) -> torch.device:
        return device_of(self.G)

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    @property
    def conditional(self) -> bool:
        return bool(self.config.n_classes)

    def truncation_info(self) -> dict:
        """What ``truncation`` means for this model (``describe_truncation``)."""
        return describe_truncation(self.G)

    def labels(self, y) -> torch.Tensor:
        """Class indices [N] from indices, names, WordNet ids or a mix (a tensor passes through)."""
        if isinstance(y, torch.Tensor):
            return y
        items = [y] if isinstance(y, (int, str)) else list(y)
        return torch.tensor([resolve_class(v, self.class_names, self.config.n_classes) for v in items])

    # ------------------------------------------------------------------ generation
    def module(self, truncation: float | None = None) -> nn.Module:
        """The module that computes ``G(latents, y)``: G itself, or with ``fast`` its folded copy for ``truncation``."""
        fold = self.family.fold
        if not self.fast or fold is None:
            return self.G
        key = (fold_key(self.G, truncation), self.dtype)
        if key not in self._folded:
            self._folded[key] = fold(self.G, truncation=key[0], dtype=self.dtype)
            while len(self._folded) > self.max_folds:
                self._folded.popitem(last=False)
        self._folded.move_to_end(key)
        return self._folded[key]

    def draw(self, n: int, y=None, truncation: float | None = None, seed: int | None = None,
             truncation_mode: str | None = None, generator: torch.Generator | None = None):
        """Latents and labels of ``n`` images, as ``scalegan.sample`` draws them (CPU)."""
        if generator is None:
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return draw(self.G, n, y, truncation, generator, truncation_mode)

    def render(self, latents: torch.Tensor, y: torch.Tensor | None = None, truncation: float | None = None,
               batch_size: int | None = None, progress: bool = False) -> torch.Tensor:
        """Images in [-1, 1] of given latents (z, or W+ for a family with a W space) and classes."""
        return render(self.module(truncation), latents, y, truncation, batch_size, progress)

    def interpolation_space(self, latents: torch.Tensor, y, truncation: float | None = None):
        """``(latents in the space interpolation works in, "z" or "w")`` (``sampling.interpolation_space``)."""
        return interpolation_space(self.G, latents, y, truncation)

    @torch.no_grad()
    def generate(self, z=None, y=None, truncation: float | None = None, n: int | None = None,
                 seed: int | None = None, truncation_mode: str | None = None) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1]. ``z``: latents, or None to draw ``n`` (seeded) as ``scalegan.sample`` does
        with ``truncation`` (mode: the model's default). ``y``: class index / name / WordNet id, or one per image.
        ``truncation`` also picks the BN statistics of models that store them per truncation."""
        labels = None
        if self.conditional:
            if y is None:
                raise ValueError("this generator is class-conditional: pass y (class index, name or WordNet id)")
            labels = self.labels(y)
        if z is None:
            n = n or (1 if labels is None or labels.numel() == 1 else len(labels))
            z, labels = self.draw(n, labels, truncation, seed, truncation_mode)
        z = torch.as_tensor(z, dtype=torch.float32)
        if labels is not None and labels.numel() == 1 and len(z) > 1:
            labels = labels.expand(len(z))
        return self.render(z, labels, truncation)

    __call__ = generate

    def export_onnx(self, path: str | os.PathLike, truncation: float | None = None, **kwargs) -> dict[str, str]:
        """Write the generator as an ONNX file (``scalegan.export.export_onnx``; class names and source recorded)."""
        from .export import export_onnx

        kwargs.setdefault("source", self.info.source)
        kwargs.setdefault("class_names", self.class_names)
        return export_onnx(self.G, path, truncation, **kwargs)


class BigGAN(Pipeline):
    """A BigGAN(-deep) pipeline by resolution: ``scalegan.BigGAN(resolution=128)``; ``model.generate(z, y, t)``.

    ``pretrained``: False (random weights of the preset), True (the named pretrained weights from the cache:
    ``biggan-deep-{resolution}.tfhub``, or ``biggan-{resolution}.bgp`` with ``deep=False``), or a pretrained name /
    a path. ``fast`` and ``dtype``: see ``Pipeline``.
    """

    def __init__(self, resolution: int = 128, pretrained: bool | str = False, deep: bool = True,
                 device: str = "cpu", fast: bool = False, dtype=None):
        name = f"biggan-deep-{resolution}" if deep else f"biggan-{resolution}"
        if pretrained:
            G, info = load(f"{name}.tfhub" if deep else f"{name}.bgp") if pretrained is True else load(pretrained)
            G = G.to(device)
        else:
            G = create_model(name)[0].to(device).eval()
            info = preset_info(G, name)
        super().__init__(G, info, fast=fast, dtype=dtype)
        self.name = name
