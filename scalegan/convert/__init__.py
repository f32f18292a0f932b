"""Converters from foreign GAN checkpoints to scalegan weights (``model.safetensors`` + ``config.json``).

One file per format:

- ``pytorch_pretrained_biggan``: the folders of huggingface's ``pytorch-pretrained-biggan`` port of DeepMind's
  BigGAN-deep TF-Hub modules (``pytorch_model.bin`` + ``config.json``; biggan-deep-128/256/512).
- ``biggan_pytorch``: ajbrock/BigGAN-PyTorch generator state dicts (``G_ema.pth`` / ``G.pth``), ImageNet layout.
- ``stylegan2_pkl``: NVlabs stylegan2-ada-pytorch network pickles (``*.pkl``: ``G_ema``, ``G``, ``D``).
- ``stylegan3_pkl``: NVlabs stylegan3 network pickles (``*.pkl`` whose G is StyleGAN3's), with the same reader.
- ``styleganxl_pkl``: autonomousvision/stylegan_xl network pickles (written with dill), with that reader extended
  by inert records for the classes they name by reference.

Foreign files are read with ``torch.load(weights_only=True)`` or, for network pickles, a restricted unpickler that
rebuilds only tensors and plain containers: no pickled code runs. Unknown, missing or mis-shaped keys are errors
that name them. ``scalegan.load`` converts on the fly; ``scalegan convert`` writes
a weights folder once.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from .. import imagenet
from ..weights import ModelInfo, save_generator
from . import (  # noqa: F401  (each registers its format)
    biggan_pytorch,
    pytorch_pretrained_biggan,
    stylegan2_pkl,
    stylegan3_pkl,
    styleganxl_pkl,
)
from .common import CONVERTERS, Converter, ConvertError, check_keys, read_torch_file, register_converter

__all__ = ["CONVERTERS", "FORMATS", "Converter", "ConvertError", "check_keys", "convert", "detect_format",
           "read_torch_file", "register_converter", "save_converted"]

FORMATS = tuple(CONVERTERS)


def detect_format(path: str | os.PathLike) -> str | None:
    """The foreign format of a file or folder, or None when it is not one (e.g. a scalegan weights folder)."""
    p = Path(path)
    if not p.exists():
        return None
    return next((name for name, c in CONVERTERS.items() if c.detect(p)), None)


def convert(path: str | os.PathLike, format: str | None = None, weights: str = "G_ema",
            **options) -> tuple[nn.Module, ModelInfo]:
    """A scalegan generator (eval mode) and its ``ModelInfo`` (ImageNet class names and WordNet ids for 1,000-class
    models) from a foreign checkpoint.

    ``format``: one of ``FORMATS`` or None to detect it. ``weights``: for BigGAN-PyTorch folders and StyleGAN2-ADA
    network pickles, ``"G_ema"`` (default; falls back to ``G.pth`` / the pickle's ``G`` when absent) or ``"G"``.
    ``options`` go to the format's converter (network pickles: ``class_centers``, see ``stylegan2_pkl``).
    """
    if not Path(path).exists():
        raise ConvertError(f"{path} does not exist")
    format = format or detect_format(path)
    if format is None:
        reads = ", ".join(c.reads for c in CONVERTERS.values())
        raise ConvertError(f"{path}: not a known foreign checkpoint (expected {reads})")
    if format not in CONVERTERS:
        raise ConvertError(f"unknown format {format!r}: use one of {', '.join(CONVERTERS)}")
    G = CONVERTERS[format].convert(path, weights=weights, **options)
    imagenet_model = G.config.n_classes == imagenet.N_CLASSES
    info = ModelInfo(family=G.config.family, resolution=G.config.resolution, n_classes=G.config.n_classes,
                     class_names=tuple(imagenet.class_names()) if imagenet_model else (),
                     class_ids=tuple(imagenet.wordnet_ids()) if imagenet_model else (),
                     source=f"{format}:{path}")
    return G, info


def save_converted(G: nn.Module, info: ModelInfo, out: str | os.PathLike, source: str | os.PathLike | None = None,
                   format: str | None = None) -> Path:
    """Write ``G`` as a scalegan weights folder; config.json records the source and the weights' SHA-256."""
    extra = {}
    if source is not None:
        extra["converted_from"] = {"format": format or detect_format(source), "path": str(source)}
    save_generator(G, out, class_names=info.class_names, class_ids=info.class_ids, **extra)
    return Path(out)
