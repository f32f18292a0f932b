"""CIFAR-10 and CIFAR-100 in their "python version" folders (`cifar-10-batches-py`, `cifar-100-python`).

The files are Python 2 pickles of dicts with byte-string keys. They are read with an unpickler that only
resolves the few numpy names an array needs, so a doctored file cannot run code (pickle's usual hazard).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .base import DatasetError, TensorImageDataset, array_dataset

CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR100_FILES = {"train": ["train"], "test": ["test"]}
HINTS = {
    "cifar10": "download cifar-10-python.tar.gz, extract it, and pass cifar10:DIR with DIR the "
    "cifar-10-batches-py folder",
    "cifar100": "download cifar-100-python.tar.gz, extract it, and pass cifar100:DIR with DIR the "
    "cifar-100-python folder",
}
CIFAR_SIZE = 32

# Everything a pickled numpy array (any protocol, numpy 1 or 2) or a Python 2 byte string refers to.
SAFE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain containers and refuses any other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: CIFAR files hold only arrays")
        return super().find_class(module, name)


def read_cifar_pickle(path: Path) -> dict[str, Any]:
    """Unpickle one CIFAR file into a dict with str keys (the files' keys are Python 2 byte strings)."""
    try:
        with open(path, "rb") as f:
            data = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:  # pickle raises a zoo of types on bad input; they all mean the same here
        raise DatasetError(f"{path} is not a readable CIFAR pickle ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise DatasetError(f"{path} holds a {type(data).__name__}, expected a CIFAR dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in data.items()}


def _field(batch: dict[str, Any], key: str, path: Path) -> Any:
    if key not in batch:
        raise DatasetError(
            f"{path} has no {key!r} entry (keys: {sorted(batch)}); is this the right CIFAR variant?"
        )
    return batch[key]


def _names(values: list[Any]) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def load_cifar(
    directory: str | Path,
    *,
    kind: str = "cifar10",
    split: str = "train",
    resolution: int | None = None,
    channels: int | None = None,
) -> TensorImageDataset:
    """Load CIFAR-10 (`kind="cifar10"`) or CIFAR-100 fine labels (`kind="cifar100"`) from `directory`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"{kind} directory {directory} does not exist; {HINTS[kind]}")
    if kind == "cifar10":
        files, meta_file, label_key, names_key = CIFAR10_FILES[split], "batches.meta", "labels", "label_names"
    else:
        files, meta_file, label_key, names_key = (
            CIFAR100_FILES[split],
            "meta",
            "fine_labels",
            "fine_label_names",
        )
    missing = [name for name in [*files, meta_file] if not (directory / name).is_file()]
    if missing:
        raise DatasetError(f"{directory} lacks {', '.join(missing)}; {HINTS[kind]}")

    images, labels = [], []
    for name in files:
        path = directory / name
        batch = read_cifar_pickle(path)
        data = np.asarray(_field(batch, "data", path))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * CIFAR_SIZE * CIFAR_SIZE:
            raise DatasetError(
                f"{path}: 'data' must be uint8 [N, 3072] (R, G, B planes of 32x32), "
                f"got {data.dtype} {data.shape}"
            )
        batch_labels = np.asarray(_field(batch, label_key, path))
        if len(batch_labels) != len(data):
            raise DatasetError(f"{path}: {len(data)} images but {len(batch_labels)} labels")
        images.append(data.reshape(-1, 3, CIFAR_SIZE, CIFAR_SIZE))  # rows are R, G, B planes: already CHW
        labels.append(batch_labels)
    meta_path = directory / meta_file
    class_names = _names(list(_field(read_cifar_pickle(meta_path), names_key, meta_path)))
    return array_dataset(
        np.concatenate(images),
        np.concatenate(labels),
        class_names,
        kind=kind,
        path=str(directory),
        split=split,
        resolution=resolution,
        channels=channels,
    )
