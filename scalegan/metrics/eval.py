"""Evaluating generators and image sets: feature passes, cached reference statistics, and the metric card.

- `reference_stats(dataset, backbone, n)`: features of a dataset, computed once and cached under
  `$SCALEGAN_CACHE/stats/` (default `~/.cache/scalegan/stats/`). The cache key covers the data (a hash of
  in-memory arrays, or the paths, sizes and modification times of image files), the split, the number of
  images, and the backbone (weights SHA-256, resizer, normalisation, dtype), so any change recomputes.
- `evaluate_generator(G, ref, metrics, n)`: draws `n` images (`generated_batches`: classes balanced for a
  conditional G, seeded per chunk of 100), passes them through the backbone once, and computes the requested
  metrics against `ref` (a dataset or a `ReferenceStats`). This is the function a training loop calls for
  periodic evaluation.
- `evaluate_sets(a, b, metrics)`: the same for two image sets (folders of images or `.npz` files with `x`),
  decoded by `scalegan.data` exactly as training decodes them (`load_image_set`).

Metric names: `fid` (Frechet distance; "FD" on a classifier backbone), `is`, `kid`, `pr` (precision/recall),
`dc` (density/coverage), `ifid` (intra-class FID, conditional generators), `acc` (class consistency: the share of
generated images that a domain classifier assigns to the requested class; the same number as
`classifier.class_consistency`). Every result carries a `card` that says how it was measured.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import DatasetError, FolderImageDataset
from ..data.folder import decode_image
from ..data.npz import load_npz
from ..latents import is_uniform
from ..sampling import resolve_truncation_mode
from ..utils import __version__, atomic_path, cache_dir
from . import scores
from .classifier import ClassAccuracy, check_classifier
from .features import ClassifierBackbone, FeatureStats, InceptionBackbone, extract
from .generated import SEED_CHUNK, generated_batches
from .registry import needs, parse_metrics

__all__ = [
    "ReferenceStats",
    "evaluate_generator",
    "evaluate_sets",
    "generated_batches",
    "load_image_set",
    "make_backbone",
    "reference_stats",
]

STATS_FORMAT = 1  # bump when the cached arrays change meaning


def make_backbone(
    spec: str = "inception",
    *,
    inception_weights: str | None = None,
    resizer: str = "tf1-bilinear",
    device: str | torch.device = "cpu",
    channels_last: bool = False,
) -> Any:
    """`"inception"` (the TF 2015-12-05 network; weights resolved as in `inception.resolve_weights_path`) or
    `"classifier:DIR"` (a trained `SmallClassifier`)."""

    if spec == "inception":
        return InceptionBackbone.from_weights(
            inception_weights, resizer=resizer, device=device, channels_last=channels_last
        )
    if spec.startswith("classifier:"):
        return ClassifierBackbone.from_dir(spec.split(":", 1)[1], device=device)
    raise ValueError(f"backbone must be 'inception' or 'classifier:DIR', got {spec!r}")


# ----------------------------------------------------------------------------------------------------------
# Image sources


def _dataset_arrays(dataset: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None and len(tensors[0]) == len(dataset) and tensors[0].dtype == torch.uint8:
        return tensors[0], torch.as_tensor(tensors[1])
    return None


def _dataset_batches(dataset: Any, indices: np.ndarray, batch_size: int):
    """`(uint8 or [-1, 1] float images, labels)` batches of `dataset[indices]`."""
    arrays = _dataset_arrays(dataset)
    for start in range(0, len(indices), batch_size):
        idx = indices[start : start + batch_size]
        if arrays is not None:
            yield arrays[0][torch.from_numpy(idx)], arrays[1][torch.from_numpy(idx)]
        else:
            items = [dataset[int(i)] for i in idx]
            yield torch.stack([torch.as_tensor(x) for x, _ in items]), torch.tensor([int(y) for _, y in items])


def _fingerprint(dataset: Any) -> str:
    """A hash that changes when the dataset's pixels or files change."""
    digest = hashlib.sha256()
    arrays = _dataset_arrays(dataset)
    if arrays is not None:
        digest.update(arrays[0].contiguous().numpy().tobytes())
        digest.update(arrays[1].contiguous().numpy().tobytes())
    elif getattr(dataset, "files", None) is not None:
        for path in dataset.files:
            st = os.stat(path)
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
        digest.update(repr(getattr(dataset, "describe", lambda: repr(dataset))()).encode())
        path = getattr(dataset, "path", None)
        if path and os.path.exists(path):
            st = os.stat(path)
            digest.update(f"{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()


def load_image_set(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images `uint8 [N, C, H, W]` and int64 labels (None when unlabelled) of an image set, decoded by
    `scalegan.data` exactly as training decodes the same files.

    An `.npz` file (`npz:` datasets: uint8 `x`, square; optional integer `y`, all -1 = unlabelled) or a folder
    (`folder:` datasets: class subfolders give labels, else the loose images; EXIF orientation applied, 16-bit
    scaled to 8 bits, alpha composited on white). Nothing is resized or cropped: the images of a folder must share
    one size (any aspect ratio), else ValueError. Grey files stay one channel unless the folder also holds colour
    images; then every image is RGB."""

    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix.lower() != ".npz":
            raise ValueError(f"image set {p} is a file but not an .npz; give an .npz with array x or a folder")
        dataset = load_npz(p)
        images, labels = dataset.tensors
        return images, labels if dataset.num_classes else None
    if not p.is_dir():
        raise FileNotFoundError(f"image set {p} is neither an .npz file nor a folder")
    folder = FolderImageDataset(p)
    pictures = []
    for f in folder.files:
        try:
            pictures.append(np.array(decode_image(f)))
        except Exception as e:  # a damaged file that passed the header check; evaluation does not substitute
            raise DatasetError(f"could not decode {f} ({type(e).__name__}: {e}); remove or replace it") from e
    _check_one_size(p, folder.files, pictures)
    if any(a.ndim == 3 for a in pictures):  # grey among colour: repeat, as PIL's L -> RGB does
        pictures = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in pictures]
    x = np.stack(pictures)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x)), folder.labels if folder.num_classes else None


def _check_one_size(root: Path, files: list[Path], pictures: list[np.ndarray]) -> None:
    sizes: dict[tuple[int, int], Path] = {}
    for f, a in zip(files, pictures):
        sizes.setdefault(a.shape[:2], f)
    if len(sizes) > 1:
        shown = ", ".join(f"{h}x{w} (e.g. {f.name})" for (h, w), f in list(sizes.items())[:4])
        raise ValueError(
            f"images under {root} have different sizes (H x W): {shown}; evaluation does not resize or crop, so "
            "bring them to one size first"
        )


# ----------------------------------------------------------------------------------------------------------
# Reference statistics


@dataclass
class ReferenceStats:
    """Features of a reference set: overall statistics (with up to `keep` raw features) and per-class
    statistics for intra-class FID, plus what the card says about them."""

    stats: FeatureStats
    per_class: dict[int, FeatureStats] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """Write the statistics to an `.npz` file, atomically."""
        arrays = {f"all_{k}": v for k, v in self.stats.to_arrays().items()}
        for c, s in self.per_class.items():
            arrays.update({f"class{c}_{k}": v for k, v in s.to_arrays().items()})
        arrays["info"] = np.array(json.dumps(self.info))
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: Path) -> ReferenceStats:
        with np.load(path) as data:
            def part(prefix: str) -> FeatureStats:
                return FeatureStats.from_arrays({k: data[f"{prefix}_{k}"] for k in ("n", "mu", "m2", "features")})

            classes = sorted({int(k[5:].split("_")[0]) for k in data.files if k.startswith("class")})
            return cls(part("all"), {c: part(f"class{c}") for c in classes}, json.loads(str(data["info"])))


def reference_stats(
    dataset: Any,
    backbone: Any,
    n: int | None = None,
    *,
    keep: int = 10_000,
    per_class: bool = True,
    batch_size: int = 100,
    seed: int = 0,
    cache: bool = True,
    progress: bool = False,
) -> ReferenceStats:
    """Statistics of `n` images of `dataset` (all when None; a seeded random subset otherwise), cached on disk.

    `keep` raw features are kept for KID and the k-NN metrics."""
    total = len(dataset)
    n = total if n is None else min(n, total)
    if n < 2:
        raise ValueError(f"reference statistics need at least 2 images, dataset has {total}")
    describe = dataset.describe() if hasattr(dataset, "describe") else {"size": total}
    key_fields = {
        "format": STATS_FORMAT,
        "data": _fingerprint(dataset),
        "dataset": describe,
        "n": n,
        "keep": min(keep, n),
        "per_class": per_class,
        "seed": seed,
        "backbone": {k: v for k, v in backbone.card().items() if k != "weights_path"},
    }
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True, default=str).encode()).hexdigest()[:32]
    path = cache_dir() / "stats" / f"{key}.npz"
    if cache and path.is_file():
        try:
            ref = ReferenceStats.load(path)
            ref.info["cache"] = {"path": str(path), "hit": True}
            return ref
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is recomputed and overwritten

    indices = np.arange(total) if n == total else np.sort(np.random.default_rng(seed).permutation(total)[:n])
    labelled = per_class and getattr(dataset, "num_classes", 0) > 0
    batches = _progress(_dataset_batches(dataset, indices, batch_size), n, batch_size, "reference", progress)
    stats, by_class = extract(backbone, batches, keep=min(keep, n), per_class=labelled)
    info = {
        "dataset": describe,
        "fingerprint": key_fields["data"],
        "n": n,
        "subset_seed": seed if n < total else None,
        "key": key,
    }
    ref = ReferenceStats(stats, {c: s for c, s in by_class.items() if s.n >= 2}, info)
    if cache:
        ref.save(path)
        ref.info["cache"] = {"path": str(path), "hit": False}
    return ref


# ----------------------------------------------------------------------------------------------------------
# Metrics from two feature passes


def _compute(
    metrics: list[str],
    fake: FeatureStats,
    fake_by_class: dict[int, FeatureStats],
    ref: ReferenceStats,
    *,
    backbone_name: str,
    fid_method: str,
    is_splits: int,
    kid_subsets: int,
    kid_subset_size: int,
    k_pr: int,
    k_dc: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    fd_name = "fid" if backbone_name == "inception" else "fd"
    if "fid" in metrics:
        out[fd_name] = scores.fid_from_stats(fake.mean, fake.cov, ref.stats.mean, ref.stats.cov, method=fid_method)
    if "is" in metrics:
        if backbone_name != "inception":
            raise ValueError("IS is defined on the Inception network's logits; use --backbone inception")
        out["is_mean"], out["is_std"] = scores.inception_score(fake.logits, splits=is_splits)
    real_features, fake_features = ref.stats.features, fake.features
    if "kid" in metrics:
        out["kid_mean"], out["kid_std"] = scores.kid(
            fake_features, real_features, subsets=kid_subsets, subset_size=kid_subset_size
        )
    if "pr" in metrics:
        out["precision"], out["recall"] = scores.precision_recall(real_features, fake_features, k=k_pr)
    if "dc" in metrics:
        out["density"], out["coverage"] = scores.density_coverage(real_features, fake_features, k=k_dc)
    if "ifid" in metrics:
        if not fake_by_class or not ref.per_class:
            raise ValueError("intra-class FID needs a class-conditional generator and a labelled reference set")
        result = scores.intra_class_fid(
            {c: (s.mean, s.cov) for c, s in ref.per_class.items()},
            {c: (s.mean, s.cov) for c, s in fake_by_class.items() if s.n >= 2},
            method=fid_method,
        )
        out[f"intra_{fd_name}"] = result["mean"]
        out[f"intra_{fd_name}_per_class"] = {str(c): v for c, v in result["per_class"].items()}
    return out


def _progress(batches, n: int, batch_size: int, what: str, progress: bool):
    if not progress:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, total=-(-n // batch_size), desc=f"{what} features", unit="batch")


# ----------------------------------------------------------------------------------------------------------
# Generated images


def as_reference(ref: Any, backbone: Any, metrics: list[str], ref_n: int | None, batch_size: int, cache: bool):
    """``ref`` as ``ReferenceStats``: passed through, or the (cached) statistics of a dataset."""
    if isinstance(ref, ReferenceStats):
        return ref
    return reference_stats(
        ref, backbone, ref_n, per_class=needs(metrics, "per_class"), batch_size=batch_size, cache=cache,
        keep=10_000 if ref_n is None else ref_n,
    )


@torch.no_grad()
def evaluate_generator(
    G: Any,
    ref: Any,
    metrics: str | list[str] | None = None,
    n: int = 10_000,
    *,
    backbone: Any = None,
    inception_weights: str | None = None,
    resizer: str = "tf1-bilinear",
    classifier: Any = None,
    ref_n: int | None = None,
    batch_size: int = 100,
    seed: int = 0,
    truncation: float | None = None,
    truncation_mode: str | None = None,
    is_splits: int = 10,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    k_pr: int = 3,
    k_dc: int = 5,
    fid_method: str = "sqrtm",
    cache: bool = True,
    progress: bool = False,
    class_weights=None,
) -> dict[str, Any]:
    """Metrics of generator `G` against `ref` (a dataset or `ReferenceStats`) from `n` generated images.

    The images are `generated_batches(G, n, seed=seed, truncation=truncation, truncation_mode=...)`: classes balanced
    (`i % n_classes`) for a conditional G, seeded per chunk of 100 images, so results do not depend on
    `batch_size`. With `class_weights` (the training data's class counts) the classes follow the data's label
    distribution instead, as the metrics compare with the data (not for `ifid`, which stays per class balanced).
    `backbone` defaults to the Inception network (`inception_weights`, `resizer`); `classifier` (a
    `SmallClassifier`, default: the backbone's when it is one) enables `acc`, which equals
    `class_consistency(G, classifier, n // n_classes, seed=seed, truncation=truncation)["accuracy"]` when n is a
    multiple of n_classes. Returns `{"metrics": {...}, "card": {...}}`; both are JSON-able."""
    names = parse_metrics(metrics)
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    backbone = backbone or make_backbone("inception", inception_weights=inception_weights, resizer=resizer)
    classifier = _check_generator_metrics(G, names, backbone, classifier)
    started = time.time()
    reference = as_reference(ref, backbone, names, ref_n, batch_size, cache)
    accuracy = ClassAccuracy(classifier, G.config.n_classes) if classifier is not None else None
    if "ifid" in names or is_uniform(class_weights):
        class_weights = None
    batches = generated_batches(G, n, seed=seed, truncation=truncation, truncation_mode=truncation_mode,
                                batch_size=batch_size, class_weights=class_weights)
    if accuracy is not None:
        batches = accuracy.observe(batches)
    fake, fake_by_class = extract(
        backbone, _progress(batches, n, batch_size, "generated", progress), keep=n, keep_logits=needs(names, "logits"),
        per_class=needs(names, "per_class"),
    )
    values = _compute(
        names, fake, fake_by_class, reference, backbone_name=backbone.name, fid_method=fid_method,
        is_splits=is_splits, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, k_pr=k_pr, k_dc=k_dc,
    )
    if accuracy is not None:
        values["class_accuracy"] = accuracy.accuracy
    card = _card(
        backbone, names, n_generated=n, reference=reference, is_splits=is_splits, kid_subsets=kid_subsets,
        kid_subset_size=min(kid_subset_size, n, len(reference.stats.features)), k_pr=k_pr, k_dc=k_dc,
        fid_method=fid_method, seconds=time.time() - started,
    )
    card.update(_generator_card(G, truncation, truncation_mode, seed, batch_size, class_weights))
    return {"metrics": values, "card": card}


def data_class_weights(dataset: Any, n_classes: int) -> torch.Tensor | None:
    """The class counts generated images should follow to compare with ``dataset``: its own, when it is labelled
    with the generator's ``n_classes`` classes; else None (balanced)."""
    if not n_classes or getattr(dataset, "num_classes", 0) != n_classes:
        return None
    return dataset.class_counts()


def _check_generator_metrics(G: Any, names: list[str], backbone: Any, classifier: Any) -> Any:
    """Reject metrics G cannot have; return the classifier for `acc` (None without `acc`)."""
    n_classes = int(getattr(G.config, "n_classes", 0) or 0)
    if "ifid" in names and not n_classes:
        raise ValueError("intra-class FID needs a class-conditional generator")
    if not needs(names, "classifier"):
        return None
    if not n_classes:
        raise ValueError("class accuracy needs a class-conditional generator")
    if classifier is None and backbone.name == "classifier":
        classifier = backbone.model
    if classifier is None:
        raise ValueError("class accuracy needs a domain classifier: pass --classifier DIR")
    check_classifier(G, classifier)
    return classifier


def _generator_card(
    G: Any, truncation: float | None, truncation_mode: str | None, seed: int, batch_size: int, class_weights=None
) -> dict[str, Any]:
    n_classes = int(getattr(G.config, "n_classes", 0) or 0)
    return {
        "generator": {
            "resolution": getattr(G.config, "resolution", None),
            "n_classes": n_classes,
            "class_balance": (None if not n_classes else "i % n_classes" if class_weights is None else
                              "the training data's label distribution: "
                              f"{[int(c) for c in torch.as_tensor(class_weights).tolist()]}"),
        },
        "truncation": truncation,
        "truncation_mode": resolve_truncation_mode(G, truncation_mode) if truncation is not None else None,
        "seed": seed,
        "seeds": f"images drawn in chunks of {SEED_CHUNK}; chunk j uses SeedSequence([seed, j])",
        "batch_size": batch_size,
    }


@torch.no_grad()
def evaluate_sets(
    a: Any,
    b: Any,
    metrics: str | list[str] | None = None,
    *,
    backbone: Any = None,
    inception_weights: str | None = None,
    resizer: str = "tf1-bilinear",
    batch_size: int = 100,
    is_splits: int = 10,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    k_pr: int = 3,
    k_dc: int = 5,
    fid_method: str = "sqrtm",
) -> dict[str, Any]:
    """Compare image set `a` (treated as the generated side: IS and precision are about it) with reference set
    `b`. Each is a path (folder of images or `.npz`) or a `(uint8 [N, C, H, W], labels or None)` pair."""
    names = parse_metrics(metrics)
    if needs(names, "classifier"):
        raise ValueError("class accuracy needs a generator; it is not defined for two image sets")
    backbone = backbone or make_backbone("inception", inception_weights=inception_weights, resizer=resizer)
    started = time.time()

    def features(source: Any, keep_logits: bool) -> tuple[FeatureStats, dict[int, FeatureStats], dict]:
        images, labels = load_image_set(source) if isinstance(source, (str, os.PathLike)) else source
        batches = (
            (images[i : i + batch_size], labels[i : i + batch_size] if labels is not None else None)
            for i in range(0, len(images), batch_size)
        )
        stats, by_class = extract(
            backbone, batches, keep=len(images), keep_logits=keep_logits, per_class=needs(names, "per_class")
        )
        source_name = str(source) if isinstance(source, (str, os.PathLike)) else "in-memory"
        return stats, {c: s for c, s in by_class.items() if s.n >= 2}, {"source": source_name, "n": len(images)}

    fake, fake_by_class, info_a = features(a, needs(names, "logits"))
    real, real_by_class, info_b = features(b, False)
    reference = ReferenceStats(real, real_by_class, {"dataset": info_b, "n": info_b["n"]})
    values = _compute(
        names, fake, fake_by_class, reference, backbone_name=backbone.name, fid_method=fid_method,
        is_splits=is_splits, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, k_pr=k_pr, k_dc=k_dc,
    )
    card = _card(
        backbone, names, n_generated=info_a["n"], reference=reference, is_splits=is_splits,
        kid_subsets=kid_subsets, kid_subset_size=min(kid_subset_size, info_a["n"], info_b["n"]), k_pr=k_pr,
        k_dc=k_dc, fid_method=fid_method, seconds=time.time() - started,
    )
    card["set_a"] = info_a
    return {"metrics": values, "card": card}


def _card(
    backbone: Any,
    names: list[str],
    *,
    n_generated: int,
    reference: ReferenceStats,
    is_splits: int,
    kid_subsets: int,
    kid_subset_size: int,
    k_pr: int,
    k_dc: int,
    fid_method: str,
    seconds: float,
) -> dict[str, Any]:
    """How a result was measured: everything needed to compare it with another number."""
    card: dict[str, Any] = {
        "metrics": names,
        **backbone.card(),
        "n_generated": n_generated,
        "n_reference": reference.stats.n,
        "reference": {k: v for k, v in reference.info.items() if k != "cache"},
        "fid_method": fid_method if "fid" in names or "ifid" in names else None,
        "is_splits": is_splits if "is" in names else None,
        "is_logits": "unbiased (no fc bias), shuffled with seed 2020" if "is" in names else None,
        "kid": {"subsets": kid_subsets, "subset_size": kid_subset_size, "kernel": "(x.y/d + 1)^3", "seed": 2020}
        if "kid" in names
        else None,
        "k_precision_recall": k_pr if "pr" in names else None,
        "k_density_coverage": k_dc if "dc" in names else None,
        "n_reference_features_for_knn": len(reference.stats.features)
        if {"kid", "pr", "dc"} & set(names)
        else None,
        "scalegan_version": __version__,
        "torch_version": torch.__version__,
        "seconds": round(seconds, 2),
    }
    if "cache" in reference.info:
        card["reference_cache"] = reference.info["cache"]
    return {k: v for k, v in card.items() if v is not None}
