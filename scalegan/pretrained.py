"""Named pretrained models: where to get them, the local cache, SHA-256 checks, and (opt-in) download.

Names are ``ARCH.TAG`` (``biggan-deep-256.tfhub``: DeepMind's TF-Hub weights; ``biggan-128.bgp``: BigGAN-PyTorch's
release), so that they cannot be mistaken for the presets (``biggan-128`` builds random weights). The names before
0.2 (``biggan-deep-256``, ``biggan-128``) are still read, with a one-line note.

``scalegan.load("biggan-deep-256.tfhub")`` looks for ``$SCALEGAN_CACHE/biggan-deep-256.tfhub/`` (default
``~/.cache/scalegan``; a cache folder under the old name is used too), a scalegan weights folder written by
``scalegan convert``, and checks the SHA-256 of its ``model.safetensors`` against the value recorded at conversion
(and against the table's, where known). Nothing here touches the network unless ``download`` is called
(``scalegan convert --download NAME``).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .convert import convert, save_converted
from .utils import cache_dir, sha256_file, unknown_name
from .utils import download as download_file
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
    f"biggan-deep-{res}.tfhub": PretrainedModel(
        name=f"biggan-deep-{res}.tfhub", format="pytorch-pretrained-biggan",
        about=f"DeepMind BigGAN-deep {res}x{res} ImageNet (TF-Hub), as ported by pytorch-pretrained-biggan",
        files={"pytorch_model.bin": f"{_PORT}/biggan-deep-{res}-pytorch_model.bin",
               "config.json": f"{_PORT}/biggan-deep-{res}-config.json"},
        license="Apache-2.0 (TF-Hub module)",
    )
    for res in (128, 256, 512)
}
PRETRAINED["biggan-128.bgp"] = PretrainedModel(
    name="biggan-128.bgp", format="biggan-pytorch",
    about="BigGAN-PyTorch ImageNet 128x128 (ch 96, its released 138k-iteration G_ema)",
    manual="download the 138k checkpoint linked in the README of github.com/ajbrock/BigGAN-PyTorch and unzip it; "
           "it holds G_ema.pth",
    license="MIT",
)


# The names before 0.2, which are also preset names.
OLD_NAMES = {name.rsplit(".", 1)[0]: name for name in PRETRAINED}


def canonical(name: str) -> str | None:
    """The pretrained name ``name`` means (an old name with a one-line note), or None when it names none."""
    if name in PRETRAINED:
        return name
    if name in OLD_NAMES:
        warnings.warn(f"pretrained name {name!r} is now {OLD_NAMES[name]!r} ({name!r} alone names the preset, "
                      "random weights); reading it as the pretrained weights", stacklevel=3)
        return OLD_NAMES[name]
    return None


def get(name: str) -> PretrainedModel:
    """The table entry of ``name`` (old names accepted); unknown names raise KeyError with suggestions."""
    key = canonical(name)
    if key is None:
        raise unknown_name("pretrained model", name, PRETRAINED)
    return PRETRAINED[key]


def _cache_folder(name: str) -> Path:
    """The cache folder of canonical ``name``: NAME, or the folder a version before 0.2 wrote (the old name)."""
    folder = cache_dir() / name
    old = cache_dir() / name.rsplit(".", 1)[0]
    return old if not folder.exists() and (old / "model.safetensors").is_file() else folder


def how_to_get(name: str) -> str:
    """One message: where the files of ``name`` come from and how to convert them into the cache."""
    entry = get(name)
    name, target = entry.name, cache_dir() / entry.name
    if entry.files:
        urls = ", ".join(entry.files.values())
        return (f"pretrained model {name!r} is not in the cache ({target}). With internet: "
                f"`scalegan convert --download {name}`. By hand: download {urls} into a folder (as "
                f"{' and '.join(entry.files)}), then `scalegan convert FOLDER {target}`.")
    return (f"pretrained model {name!r} is not in the cache ({target}): {entry.manual}; then "
            f"`scalegan convert G_ema.pth {target}` (set SCALEGAN_CACHE to use another cache folder).")


def resolve(name: str) -> Path:
    """The cached weights folder of ``name``, SHA-256 checked; a missing one raises WeightsError saying what to do."""
    entry = get(name)
    name, folder = entry.name, _cache_folder(entry.name)
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
    entry = get(name)
    name = entry.name
    if not entry.files:
        raise WeightsError(how_to_get(name))
    root = Path(cache) if cache is not None else cache_dir()
    source = root / "sources" / name
    for file, url in entry.files.items():
        download_file(url, source / file, entry.source_sha256.get(file))
    G, info = convert(source, format=entry.format)
    return save_converted(G, info, root / name, source=source, format=entry.format)
