"""Evaluating generators and image sets: feature passes, cached reference statistics, and the metric card.

- `reference_stats(dataset, backbone, n)`: features of a dataset, computed once and cached under
  `$SCALEGAN_CACHE/stats/` (default `~/.cache/scalegan/stats/`). The cache key covers the data (a hash of
  in-memory arrays, or the paths, sizes and modification times of image files), the split, the number of
  images, and the backbone (weights SHA-256, resizer, normalisation, dtype), so any change recomputes.
- `evaluate_generator(G, ref, metrics, n)`: samples `n` images (classes balanced for a conditional G, seeded
  per chunk), passes them through the backbone once, and computes the requested metrics against `ref` (a
  dataset or a `ReferenceStats`). This is the function a training loop calls for periodic evaluation.
- `evaluate_sets(a, b, metrics)`: the same for two image sets (folders of images or `.npz` files with `x`).

Metric names: `fid` (Frechet distance; "FD" on a classifier backbone), `is`, `kid`, `pr` (precision/recall),
`dc` (density/coverage), `ifid` (intra-class FID, conditional generators), `acc` (class consistency: the share of
generated images that a domain classifier assigns to the requested class). Every result carries a `card` that
says how it was measured.
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

from . import scores
from .features import FeatureStats, to_uint8
from .inception import cache_dir

__all__ = [
    "ALL_METRICS",
    "ReferenceStats",
    "evaluate_generator",
    "evaluate_sets",
    "load_image_set",
    "make_backbone",
    "reference_stats",
]

ALL_METRICS = ("fid", "is", "kid", "pr", "dc", "ifid", "acc")
DEFAULT_METRICS = ("fid", "is", "kid", "pr")
STATS_FORMAT = 1  # bump when the cached arrays change meaning


def _version() -> str:
    from scalegan import __version__

    return __version__


def parse_metrics(metrics: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """`"fid,kid"` or a list -> validated metric names (default: fid, is, kid, pr)."""
    if metrics is None:
        return list(DEFAULT_METRICS)
    names = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics)]
    names = [m for m in names if m]
    unknown = [m for m in names if m not in ALL_METRICS]
    if unknown or not names:
        raise ValueError(f"unknown metric(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(ALL_METRICS)}")
    return list(dict.fromkeys(names))


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
    from .features import ClassifierBackbone, InceptionBackbone

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
    """Images `uint8 [N, C, H, W]` (and labels if any) from an `.npz` (`x`: NHWC or NCHW uint8, optional `y`)
    or a folder of images (searched recursively; all must share one size)."""
    from PIL import Image

    p = Path(path).expanduser()
    if p.suffix == ".npz" and p.is_file():
        with np.load(p) as data:
            if "x" not in data:
                raise KeyError(f"{p} has no array 'x' (found {', '.join(data.files)})")
            x = np.asarray(data["x"])
            y = np.asarray(data["y"]) if "y" in data else None
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise ValueError(f"{p}: 'x' must be [N, H, W, C] or [N, C, H, W], got shape {x.shape}")
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.transpose(0, 3, 1, 2)
        if x.dtype != np.uint8:
            if x.min() < -1.01 or x.max() > 1.01:
                raise ValueError(f"{p}: non-uint8 'x' must hold values in [-1, 1]")
            x = to_uint8(torch.from_numpy(x.astype(np.float32))).numpy()
        return torch.from_numpy(np.ascontiguousarray(x)), None if y is None else torch.from_numpy(y).long()
    if not p.is_dir():
        raise FileNotFoundError(f"image set {p} is neither an .npz file nor a folder")
    files = sorted(f for f in p.rglob("*") if f.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".webp"})
    if not files:
        raise FileNotFoundError(f"no images (.png/.jpg/.jpeg/.bmp/.webp) under {p}")
    arrays = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert("L") if im.mode in ("L", "I;16", "1") else im.convert("RGB")
            arrays.append(np.asarray(im))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images under {p} have different sizes {sorted(shapes)[:4]}; resize them to one size first")
    x = np.stack(arrays)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x)), None


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
        arrays = {f"all_{k}": v for k, v in self.stats.to_arrays().items()}
        for c, s in self.per_class.items():
            arrays.update({f"class{c}_{k}": v for k, v in s.to_arrays().items()})
        arrays["info"] = np.array(json.dumps(self.info))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

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
    stats = FeatureStats(keep=min(keep, n))
    by_class: dict[int, FeatureStats] = {}
    labelled = per_class and getattr(dataset, "num_classes", 0) > 0
    batches = _dataset_batches(dataset, indices, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=-(-n // batch_size), desc="reference features", unit="batch")
    for images, labels in batches:
        out = backbone(images)
        stats.update(out["features"])
        if labelled:
            feats = out["features"].numpy()
            for c in labels.unique().tolist():
                by_class.setdefault(int(c), FeatureStats()).update(feats[(labels == c).numpy()])
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


def _chunk_seed(seed: int, chunk: int) -> int:
    return int(np.random.SeedSequence([seed, chunk]).generate_state(1, dtype=np.uint32)[0])


def _as_reference(ref: Any, backbone: Any, metrics: list[str], ref_n: int | None, batch_size: int, cache: bool):
    if isinstance(ref, ReferenceStats):
        return ref
    return reference_stats(
        ref, backbone, ref_n, per_class="ifid" in metrics, batch_size=batch_size, cache=cache,
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
    is_splits: int = 10,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    k_pr: int = 3,
    k_dc: int = 5,
    fid_method: str = "sqrtm",
    cache: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Metrics of generator `G` against `ref` (a dataset or `ReferenceStats`) from `n` generated images.

    Classes are balanced (`i % n_classes`) for a conditional G; image chunk `i` uses seed
    `SeedSequence([seed, i])`, so results do not depend on the batch size of the backbone. `backbone` defaults
    to the Inception network (`inception_weights`, `resizer`); `classifier` (a `SmallClassifier`) enables
    `acc`. Returns `{"metrics": {...}, "card": {...}}`; both are JSON-able."""
    names = parse_metrics(metrics)
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    backbone = backbone or make_backbone("inception", inception_weights=inception_weights, resizer=resizer)
    n_classes = int(getattr(G.config, "n_classes", 0) or 0)
    if "ifid" in names and not n_classes:
        raise ValueError("intra-class FID needs a class-conditional generator")
    if "acc" in names:
        if not n_classes:
            raise ValueError("class accuracy needs a class-conditional generator")
        if classifier is None and backbone.name == "classifier":
            classifier = backbone.model
        if classifier is None:
            raise ValueError("class accuracy needs a domain classifier: pass --classifier DIR")
    started = time.time()
    reference = _as_reference(ref, backbone, names, ref_n, batch_size, cache)

    fake = FeatureStats(keep=n, keep_logits="is" in names)
    fake_by_class: dict[int, FeatureStats] = {}
    correct = 0
    labels_all = torch.arange(n) % n_classes if n_classes else None
    chunks = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="generated features", unit="batch")
    was_training = G.training
    G.eval()
    for i, start in enumerate(chunks):
        k = min(batch_size, n - start)
        y = labels_all[start : start + k] if labels_all is not None else None
        images = G.sample(k, y=y, truncation=truncation, seed=_chunk_seed(seed, i)).cpu()
        out = backbone(images)
        fake.update(out["features"], out["logits"])
        if y is not None and "ifid" in names:
            feats = out["features"].numpy()
            for c in y.unique().tolist():
                fake_by_class.setdefault(int(c), FeatureStats()).update(feats[(y == c).numpy()])
        if "acc" in names:
            x = to_uint8(images).float() / 127.5 - 1  # the 8-bit picture, as the backbones see it
            device = next(classifier.parameters()).device
            predicted = classifier(x.to(device)).argmax(dim=1).cpu()
            correct += int((predicted == y).sum())
    G.train(was_training)

    values = _compute(
        names, fake, fake_by_class, reference, backbone_name=backbone.name, fid_method=fid_method,
        is_splits=is_splits, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, k_pr=k_pr, k_dc=k_dc,
    )
    if "acc" in names:
        values["class_accuracy"] = correct / n
    card = _card(
        backbone, names, n_generated=n, reference=reference, is_splits=is_splits, kid_subsets=kid_subsets,
        kid_subset_size=min(kid_subset_size, n, len(reference.stats.features)), k_pr=k_pr, k_dc=k_dc,
        fid_method=fid_method, seconds=time.time() - started,
    )
    card.update(
        generator={
            "resolution": getattr(G.config, "resolution", None),
            "n_classes": n_classes,
            "class_balance": "i % n_classes" if n_classes else None,
        },
        truncation=truncation,
        seed=seed,
        seeds="chunk i of batch_size images uses SeedSequence([seed, i])",
        batch_size=batch_size,
    )
    return {"metrics": values, "card": card}


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
    if "acc" in names:
        raise ValueError("class accuracy needs a generator; it is not defined for two image sets")
    backbone = backbone or make_backbone("inception", inception_weights=inception_weights, resizer=resizer)
    started = time.time()

    def features(source: Any, keep_logits: bool) -> tuple[FeatureStats, dict[int, FeatureStats], dict]:
        images, labels = load_image_set(source) if isinstance(source, (str, os.PathLike)) else source
        stats = FeatureStats(keep=len(images), keep_logits=keep_logits)
        by_class: dict[int, FeatureStats] = {}
        for start in range(0, len(images), batch_size):
            out = backbone(images[start : start + batch_size])
            stats.update(out["features"], out["logits"])
            if labels is not None and "ifid" in names:
                y = labels[start : start + batch_size]
                for c in y.unique().tolist():
                    by_class.setdefault(int(c), FeatureStats()).update(out["features"].numpy()[(y == c).numpy()])
        source_name = str(source) if isinstance(source, (str, os.PathLike)) else "in-memory"
        return stats, {c: s for c, s in by_class.items() if s.n >= 2}, {"source": source_name, "n": len(images)}

    fake, fake_by_class, info_a = features(a, "is" in names)
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
        "scalegan_version": _version(),
        "torch_version": torch.__version__,
        "seconds": round(seconds, 2),
    }
    if "cache" in reference.info:
        card["reference_cache"] = reference.info["cache"]
    return {k: v for k, v in card.items() if v is not None}
