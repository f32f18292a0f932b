"""What the server knows about one served model: its names, classes and truncation range, the module that runs its
forward (the family's folded inference module where one exists), and the inputs of a request (latents drawn from
the request's own seed, exactly as ``scalegan.sample`` draws them)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..api import Pipeline, describe_truncation
from ..family import get_family
from ..latents import load_latents
from ..sampling import draw, resolve_class
from ..sources import display_name
from ..utils import to_uint8
from ..weights import ModelInfo


class RequestError(ValueError):
    """Bad input in a request: ``field`` names it, the message says how to fix it; ``status`` is the HTTP code."""

    def __init__(self, message: str, field: str | None = None, status: int = 422, headers: dict | None = None):
        super().__init__(message)
        self.field, self.status, self.headers = field, status, headers or {}


@dataclass(eq=False)
class ServedModel:
    """A generator the server runs. ``backend``: ``"torch"`` (this class) or ``"onnx"`` (``OnnxServedModel``: an
    exported file with the same requests and images)."""

    name: str
    G: nn.Module
    info: ModelInfo
    backend: str = "torch"
    max_folds: int = 4  # folded modules kept (models with per-truncation statistics need one per truncation)
    pipeline: Pipeline | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.pipeline is None and self.backend == "torch":  # the family's folded modules, float32
            self.pipeline = Pipeline(self.G, self.info, fast=True, max_folds=self.max_folds)

    @property
    def family(self):
        return get_family(self.G)

    @property
    def conditional(self) -> bool:
        return bool(self.info.n_classes)

    @property
    def soft_labels(self) -> bool:
        """Whether ``forward`` takes soft labels [N, n_classes] (class interpolation)."""
        return True

    def describe(self) -> dict:
        """The ``GET /v1/models`` entry."""
        info = self.info
        return {"name": self.name, "family": info.family, "resolution": info.resolution,
                "n_classes": info.n_classes, "classes": list(info.class_names), "class_ids": list(info.class_ids),
                "imagenet": bool(info.class_ids), "truncation": self.truncation_range(), "backend": self.backend,
                "source": str(info.source), "channels": getattr(self.G.config, "img_channels", 3),
                "invert": self.backend == "torch"}

    def truncation_range(self) -> dict:
        """What ``truncation`` means for this model and the range a slider should offer (any value > 0 is taken)."""
        return describe_truncation(self.G)

    # ------------------------------------------------------------------ requests -> inputs
    def check_truncation(self, truncation: float | None) -> float | None:
        if truncation is None:
            return None
        if not (math.isfinite(truncation) and truncation > 0):
            raise RequestError(f"truncation must be a finite number > 0 (e.g. 0.5), or null for none; got "
                               f"{truncation}", "truncation")
        return float(truncation)

    def label(self, value, field_name: str = "class") -> int:
        """A class index from an index, a name or (ImageNet models) a WordNet id; errors suggest close names."""
        if not self.conditional:
            raise RequestError(f"model {self.name!r} is unconditional: leave out {field_name!r}", field_name)
        try:
            return resolve_class(value, self.info.class_names, self.info.n_classes)
        except (KeyError, ValueError) as e:
            raise RequestError(str(e.args[0]) if e.args else str(e), field_name) from None

    def draw(self, n: int, labels, truncation: float | None, seed: int, mode: str | None = None):
        """Latents and labels of ``n`` images, from the request's own generator (``scalegan.sample``'s draw)."""
        try:
            return draw(self.G, n, labels, truncation, torch.Generator().manual_seed(seed), mode)
        except ValueError as e:
            raise RequestError(str(e), "truncation_mode" if "mode" in str(e) else None) from None

    def to_w(self, latents: torch.Tensor, labels, truncation: float | None) -> tuple[torch.Tensor, str]:
        """Latents in the space interpolation works in: W (a family with a W space; kind "w") or z (kind "z")."""
        return self.pipeline.interpolation_space(latents, labels, truncation)

    def read_latents(self, data: bytes) -> tuple[torch.Tensor, torch.Tensor | None, float | None]:
        """``(latents, labels, truncation)`` of a latents file's bytes (``scalegan.latents.load_latents``: shapes,
        classes and values checked against this model); bad input is a 422 on ``latents``."""
        if not data.startswith(b"PK"):
            raise RequestError("the request body is not a latents NPZ (a zip archive): send a latents file (latents, "
                               "y, truncation) as application/octet-stream, or JSON {latents, class} as "
                               "application/json", "latents")
        try:
            return load_latents(_Body(data), self.G.config)
        except (ValueError, KeyError) as e:
            raise RequestError(str(e.args[0]) if e.args else str(e), "latents") from None

    # ------------------------------------------------------------------ forward (worker thread)
    def module(self, truncation: float | None) -> nn.Module:
        """G, or the family's folded inference module for ``truncation`` (kept for the last few truncations)."""
        return self.pipeline.module(truncation)

    @torch.no_grad()
    def forward(self, latents: torch.Tensor, labels: torch.Tensor | None, truncation: float | None) -> torch.Tensor:
        """uint8 images [N, C, H, W] on the CPU (``Pipeline.render``: the one render path). W latents (kind "w") skip
        the mapping, as ``G`` accepts them."""
        return to_uint8(self.pipeline.render(latents, labels, truncation)).cpu()


@dataclass(eq=False)
class OnnxServedModel(ServedModel):
    """An exported ``.onnx`` file (``scalegan export``) run by onnxruntime on the CPU: ``G`` is ``load_onnx``'s
    ``OnnxGenerator``. Latents are drawn as for the torch model (the family's ``draw_latents``, with the file's
    truncation mode), so a request gives the torch backend's images. A file whose graph holds its truncation serves
    that truncation only; the graph takes class indices (no class interpolation) and z (StyleGAN2 interpolates in z).
    """

    backend: str = "onnx"

    @classmethod
    def from_file(cls, name: str, path: str | Path, threads: int | None = None) -> OnnxServedModel:
        """The served model of an exported file (``scalegan.export.load_onnx``)."""
        from ..export import load_onnx

        gen = load_onnx(path, threads=threads)
        cfg = gen.config
        info = ModelInfo(family=gen.family, resolution=cfg.resolution, n_classes=cfg.n_classes,
                         class_names=tuple(gen.class_names), source=str(path))
        return cls(name, gen, info)

    @property
    def soft_labels(self) -> bool:
        return False

    def truncation_range(self) -> dict:
        mode = self.G.metadata["truncation_mode"]
        if not self.G.truncation_baked:
            return {**super().truncation_range(), "mode": mode}
        t = self.G.truncation
        return {"min_exclusive": 0.0, "max": None, "default": t, "slider": [t, t] if t else [1.0, 1.0],
                "none_means": None, "mode": mode, "fixed": t,
                "meaning": f"baked into the ONNX file: only truncation {t} (export another file for another)"}

    def check_truncation(self, truncation: float | None) -> float | None:
        truncation = super().check_truncation(truncation)
        if self.G.truncation_baked and truncation != self.G.truncation:
            want = "null (none)" if self.G.truncation is None else f"{self.G.truncation:g}"
            raise RequestError(f"model {self.name!r} is an ONNX file made for truncation {want}, which its graph "
                               f"holds: send truncation {want} (got {truncation}), or export a file for "
                               f"{truncation} (scalegan export --truncation)", "truncation")
        return truncation

    def draw(self, n: int, labels, truncation: float | None, seed: int, mode: str | None = None):
        return super().draw(n, labels, truncation, seed, mode or self.G.metadata["truncation_mode"])

    def to_w(self, latents: torch.Tensor, labels, truncation: float | None) -> tuple[torch.Tensor, str]:
        return latents, "z"  # the graph's input is z: no mapping network to call on its own

    def read_latents(self, data: bytes) -> tuple[torch.Tensor, torch.Tensor | None, float | None]:
        latents, labels, truncation = super().read_latents(data)
        if latents.dim() == 3:
            raise RequestError(f"model {self.name!r} is an ONNX file, whose graph takes z: W latents need the torch "
                               "backend (serve the model's weights)", "latents")
        return latents, labels, truncation

    def forward(self, latents: torch.Tensor, labels: torch.Tensor | None, truncation: float | None) -> torch.Tensor:
        """uint8 images [N, C, H, W]; ``truncation`` was checked (baked) or shaped the latents (not baked)."""
        y = labels.numpy() if labels is not None else None
        return to_uint8(torch.from_numpy(self.G(latents.numpy(), y)))


class _Body(io.BytesIO):
    """A request body that error messages name as such (``load_latents`` names its file)."""

    def __str__(self) -> str:
        return "the request body"


def model_names(sources: list[str]) -> list[str]:
    """The name each source is served under (``sources.display_name``: a pretrained name as it is, else the folder's
    basename; a ``.safetensors`` file: its folder's, or its stem when not ``model``); a clash gets ``-2``, ``-3``..."""
    names: list[str] = []
    for source in sources:
        base = display_name(source)
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names
