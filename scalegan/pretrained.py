"""Named pretrained models: where to get them, the local cache, SHA-256 checks, and (opt-in) download.

``scalegan.load("biggan-deep-256")`` looks for ``$SCALEGAN_CACHE/biggan-deep-256/`` (default
``~/.cache/scalegan``), a scalegan weights folder written by ``scalegan convert``, and checks the SHA-256 of its
``model.safetensors`` against the value recorded at conversion (and against the table's, where known). Nothing
here touches the network unless ``download`` is called (``scalegan convert --download NAME``).
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .weights import WeightsError

_PORT = "https://s3.amazonaws.com/models.huggingface.co/biggan"


@dataclass(frozen=True)
class PretrainedModel:
    name: str
    format: str  # the source format, as scalegan.convert names it
    about: str
    files: dict[str, str] = field(default_factory=dict)  # source file name -> URL (empty: manual download)
    source_sha256: dict[str, str] = field(default_factory=dict)  # source file name -> SHA-256, where published
    weights_sha256: str | None = None  # SHA-256 of the converted model.safetensors, where known
    manual: str = ""  # how to get the files when there is no direct URL
    license: str = ""


PRETRAINED: dict[str, PretrainedModel] = {
    f"biggan-deep-{res}": PretrainedModel(
        name=f"biggan-deep-{res}", format="pytorch-pretrained-biggan",
        about=f"DeepMind BigGAN-deep {res}x{res} ImageNet (TF-Hub), as ported by pytorch-pretrained-biggan",
        files={"pytorch_model.bin": f"{_PORT}/biggan-deep-{res}-pytorch_model.bin",
               "config.json": f"{_PORT}/biggan-deep-{res}-config.json"},
        license="Apache-2.0 (TF-Hub module)",
    )
    for res in (128, 256, 512)
}
PRETRAINED["biggan-128"] = PretrainedModel(
    name="biggan-128", format="biggan-pytorch",
    about="BigGAN-PyTorch ImageNet 128x128 (ch 96, its released 138k-iteration G_ema)",
    manual="download the 138k checkpoint linked in the README of github.com/ajbrock/BigGAN-PyTorch and unzip it; "
           "it holds G_ema.pth",
    license="MIT",
)


def cache_dir() -> Path:
    """The cache root: ``$SCALEGAN_CACHE`` or ``~/.cache/scalegan``."""
    return Path(os.environ.get("SCALEGAN_CACHE") or Path.home() / ".cache" / "scalegan").expanduser()


def get(name: str) -> PretrainedModel:
    """The table entry of ``name``; unknown names raise KeyError with suggestions."""
    if name not in PRETRAINED:
        close = difflib.get_close_matches(name, PRETRAINED, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown pretrained model {name!r}{hint} (known: {', '.join(PRETRAINED)})")
    return PRETRAINED[name]


def how_to_get(name: str) -> str:
    """One message: where the files of ``name`` come from and how to convert them into the cache."""
    entry, target = get(name), cache_dir() / name
    if entry.files:
        urls = ", ".join(entry.files.values())
        return (f"pretrained model {name!r} is not in the cache ({target}). With internet: "
                f"`scalegan convert --download {name}`. By hand: download {urls} into a folder (as "
                f"{' and '.join(entry.files)}), then `scalegan convert FOLDER {target}`.")
    return (f"pretrained model {name!r} is not in the cache ({target}): {entry.manual}; then "
            f"`scalegan convert G_ema.pth {target}` (set SCALEGAN_CACHE to use another cache folder).")


def resolve(name: str) -> Path:
    """The cached weights folder of ``name``, SHA-256 checked; a missing one raises WeightsError saying what to do."""
    from .convert import sha256_file

    entry, folder = get(name), cache_dir() / name
    weights, config = folder / "model.safetensors", folder / "config.json"
    if not (weights.is_file() and config.is_file()):
        raise WeightsError(how_to_get(name))
    try:
        recorded = json.loads(config.read_text()).get("weights_sha256")
    except (OSError, json.JSONDecodeError) as e:
        raise WeightsError(f"cannot read {config}: {e}; convert {name!r} again") from e
    digest = sha256_file(weights)
    for expected, what in ((recorded, "the value recorded at conversion"), (entry.weights_sha256, "the table")):
        if expected and digest != expected:
            raise WeightsError(f"{weights} fails its SHA-256 check ({digest[:16]}... vs {what} {expected[:16]}...): "
                               f"the file is damaged or was replaced; delete {folder} and convert {name!r} again "
                               f"(`scalegan convert --download {name}`, or by hand: see `scalegan convert --list`)")
    return folder


def download(name: str, cache: str | os.PathLike | None = None) -> Path:  # pragma: no cover - needs internet
    """Download the source files of ``name``, check their SHA-256 where published, convert into the cache."""
    from .convert import convert, save_converted, sha256_file

    entry = get(name)
    if not entry.files:
        raise WeightsError(how_to_get(name))
    root = Path(cache) if cache is not None else cache_dir()
    source = root / "sources" / name
    source.mkdir(parents=True, exist_ok=True)
    for file, url in entry.files.items():
        target = source / file
        if not target.is_file():
            partial = target.with_suffix(target.suffix + ".part")
            with urllib.request.urlopen(url) as response, open(partial, "wb") as out:
                shutil.copyfileobj(response, out, length=1 << 20)
            partial.replace(target)
        expected = entry.source_sha256.get(file)
        if expected and sha256_file(target) != expected:
            target.unlink()
            raise WeightsError(f"{url} downloaded with a wrong SHA-256; try again")
    G = convert(source, format=entry.format)
    return save_converted(G, root / name, source=source, format=entry.format)


class BigGAN:
    """A generator ready to sample: ``model = scalegan.BigGAN(resolution=128)``; ``model.generate(z, y, truncation)``.

    ``pretrained``: False (random weights of the preset), True (the named pretrained weights from the cache:
    ``biggan-deep-{resolution}``, or ``biggan-{resolution}`` with ``deep=False``), or a pretrained name / a path.
    ``fast=True`` uses ``scalegan.fast`` (spectral norm folded, BN statistics fixed per truncation); its ``dtype``
    is None (float32, the reference), ``"auto"`` (bf16 where the device computes it natively) or a torch dtype
    (an explicit bf16 on a CPU that emulates it runs with a warning).
    """

    def __init__(self, resolution: int = 128, pretrained: bool | str = False, deep: bool = True,
                 device: str = "cpu", fast: bool = False, dtype=None):
        from . import create_model
        from .weights import load

        name = f"biggan-deep-{resolution}" if deep else f"biggan-{resolution}"
        if pretrained:
            self.G = load(name if pretrained is True else pretrained, device=device)
        else:
            self.G = create_model(name)[0].to(device).eval()
            self.G.class_names, self.G.class_ids = [], []
            if self.G.config.n_classes == 1000:
                from .imagenet import class_names, wordnet_ids

                self.G.class_names, self.G.class_ids = class_names(), wordnet_ids()
        self.name, self.fast, self.dtype = name, fast, dtype
        self._fast_cache: dict = {}

    @property
    def config(self):
        return self.G.config

    @property
    def class_names(self) -> list[str]:
        return list(getattr(self.G, "class_names", []) or [])

    def labels(self, y) -> torch.Tensor:
        """Class indices [N] from indices, names, WordNet ids or a mix (a tensor passes through)."""
        from .sampling import resolve_class

        if isinstance(y, torch.Tensor):
            return y
        items = [y] if isinstance(y, (int, str)) else list(y)
        return torch.tensor([resolve_class(v, self.class_names, self.config.n_classes) for v in items])

    @torch.no_grad()
    def generate(self, z=None, y=None, truncation: float | None = None, n: int | None = None,
                 seed: int | None = None, truncation_mode: str = "scale") -> torch.Tensor:
        """Images [N, 3, H, W] in [-1, 1]. ``z``: latents [N, dim_z], or None to draw ``n`` (seeded) with
        ``truncation`` (``"scale"``: truncation * truncnorm(-2, 2), as the BigGAN-deep port; or ``"resample"``).
        ``y``: class index / name / WordNet id, or one per image. ``truncation`` also picks the BN statistics
        of models that store them per truncation (the converted BigGAN-deep weights)."""
        from .sampling import sample_z

        device = next(self.G.parameters()).device
        if z is None:
            n = n or (1 if y is None or isinstance(y, (int, str)) else len(y))
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
            z = sample_z(n, self.config.dim_z, truncation, truncation_mode, generator)
        z = torch.as_tensor(z, dtype=torch.float32)
        labels = None
        if self.config.n_classes:
            if y is None:
                raise ValueError("this generator is class-conditional: pass y (class index, name or WordNet id)")
            labels = self.labels(y)
            if labels.numel() == 1 and len(z) > 1:
                labels = labels.expand(len(z))
        stats = getattr(self.config, "n_stats", 0)
        if self.fast:
            key = (truncation if stats else None, self.dtype)
            if key not in self._fast_cache:
                from .fast import fast_generator

                self._fast_cache = {key: fast_generator(self.G, truncation=key[0], dtype=self.dtype)}
            G = self._fast_cache[key]
            return G(z.to(device), labels.to(device) if labels is not None else None).float()
        if stats:
            self.G.set_truncation(truncation if truncation is not None else 1.0)
        return self.G(z.to(device), labels.to(device) if labels is not None else None)

    __call__ = generate
