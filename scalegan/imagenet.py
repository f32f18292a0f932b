"""The 1,000 ImageNet-1k (ILSVRC 2012) classes: index, WordNet id, display name and WordNet lemmas.

The table ships as package data (``scalegan/data/imagenet_classes.tsv``; class ``i`` is the ``i``-th WordNet id
in sorted order, the order every ImageNet model uses). ``resolve`` turns an index, a WordNet id (``n02099601``)
or any lemma of a class (``"golden retriever"``, case-insensitive) into the class index; no nltk needed.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

N_CLASSES = 1000
_WNID = re.compile(r"n\d{8}")


@dataclass(frozen=True)
class ImageNetClass:
    index: int
    wnid: str  # WordNet id, e.g. "n02099601"
    name: str  # display name: the first lemma, made unique where two classes share it ("crane (bird)")
    lemmas: tuple[str, ...]  # all WordNet lemmas, e.g. ("golden retriever",)


@lru_cache(maxsize=1)
def classes() -> tuple[ImageNetClass, ...]:
    """All 1,000 classes in index order."""
    text = resources.files("scalegan").joinpath("data/imagenet_classes.tsv").read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        index, wnid, name, lemmas = line.split("\t")
        out.append(ImageNetClass(int(index), wnid, name, tuple(lemmas.split(", "))))
    if [c.index for c in out] != list(range(N_CLASSES)):
        raise RuntimeError("scalegan/data/imagenet_classes.tsv is damaged: reinstall scalegan")
    return tuple(out)


def class_names() -> list[str]:
    """The 1,000 display names in index order (what converted ImageNet weights store as ``class_names``)."""
    return [c.name for c in classes()]


def wordnet_ids() -> list[str]:
    """The 1,000 WordNet ids in index order (stored as ``class_ids``)."""
    return [c.wnid for c in classes()]


@lru_cache(maxsize=1)
def _lookup() -> dict[str, list[int]]:
    table: dict[str, list[int]] = {}
    for c in classes():
        for key in {c.name.lower(), c.wnid.lower(), *(lemma.lower() for lemma in c.lemmas)}:
            table.setdefault(key, []).append(c.index)
    return table


def is_imagenet(names) -> bool:
    """Whether ``names`` are the ImageNet display names in index order."""
    return list(names or []) == class_names()


def resolve(name: str | int) -> int:
    """The class index of an index (``207``), a WordNet id (``n02099601``) or a lemma (``golden retriever``).

    Unknown names raise ValueError with close matches; a lemma shared by two classes ("crane") names both.
    """
    text = str(name).strip()
    if text.isdigit():
        index = int(text)
        if index >= N_CLASSES:
            raise ValueError(f"ImageNet class index {index} out of range 0..{N_CLASSES - 1}")
        return index
    key = " ".join(text.replace("_", " ").split()).lower()
    hits = _lookup().get(key) or _lookup().get(text.lower())
    if hits and len(hits) == 1:
        return hits[0]
    table = classes()
    if hits:
        options = ", ".join(f"{table[i].name!r} ({i}, {table[i].wnid})" for i in hits)
        raise ValueError(f"class {name!r} is ambiguous in ImageNet: {options}; pass the index or WordNet id")
    if _WNID.fullmatch(text.lower()):
        raise ValueError(f"{name!r} is not one of the 1,000 ImageNet-1k WordNet ids")
    close = difflib.get_close_matches(key, list(_lookup()), n=5, cutoff=0.6)
    shown = []
    for c in close:
        entry = table[_lookup()[c][0]]
        label = f"{entry.name!r} ({entry.index}, {entry.wnid})"
        if label not in shown:
            shown.append(label)
    hint = f"; did you mean {', '.join(shown)}?" if shown else ""
    raise ValueError(f"unknown ImageNet class {name!r}{hint} (pass a name, a WordNet id like n02099601 or "
                     f"an index 0..{N_CLASSES - 1})")
