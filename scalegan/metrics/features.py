"""Feature backbones and streaming feature statistics.

A backbone turns a batch of images into `{"features": [N, D], "logits": [N, K]}` (float64 on the CPU):

- `InceptionBackbone`: the TF 2015-12-05 Inception (`features` = 2048-d pool3, `logits` = the 1008-way logits
  without the fc bias, for IS). Images are quantised to uint8 first (generated images are evaluated as the
  8-bit pictures a user would save), grayscale is repeated to RGB, then resized to 299 with the chosen
  resizer and scaled with `(x - 128) / 128`.
- `ClassifierBackbone`: the penultimate features and class logits of a trained `SmallClassifier`, for domains
  where Inception is the wrong network (e.g. 28x28 grayscale Fashion-MNIST).

`FeatureStats` accumulates mean and covariance in float64 batch by batch (Chan et al.'s pairwise update, stable
for any batch size) and optionally keeps the raw features for KID and the k-NN metrics.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from ..hardware import inference_dtype
from ..utils import sha256_file, to_uint8
from .classifier import WEIGHTS_NAME, load_classifier
from .inception import INPUT_SIZE, FIDInception, load_inception
from .resize import DEFAULT_RESIZER, RESIZERS, resize

__all__ = ["ClassifierBackbone", "FeatureStats", "InceptionBackbone", "extract"]


class InceptionBackbone:
    """TF-Inception features of images `[N, C, H, W]` (uint8 in [0, 255] or float in [-1, 1]; C = 1 or 3).

    `normalization` is "tf" (`(x - 128) / 128`, the TF graph's and torch-fidelity's) or "unit" (`x / 127.5 - 1`,
    pytorch-fid's `2 * x / 255 - 1`)."""

    name = "inception"

    def __init__(
        self,
        model: FIDInception,
        weights_info: dict[str, Any] | None = None,
        *,
        resizer: str = DEFAULT_RESIZER,
        normalization: str = "tf",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> None:
        if resizer not in RESIZERS:
            raise ValueError(f"unknown resizer {resizer!r}; choose one of {', '.join(RESIZERS)}")
        if normalization not in ("tf", "unit"):
            raise ValueError(f"normalization must be 'tf' or 'unit', got {normalization!r}")

        self.device = torch.device(device)
        # float32 is the reference (FID and IS are defined on it); "auto" takes bf16 where the device has it.
        dtype = inference_dtype(dtype, self.device) or torch.float32
        self.dtype = dtype
        self.model = model.to(device=self.device, dtype=dtype).eval().requires_grad_(False)
        # channels_last: ~1.3x faster on x86 CPUs; the default layout is the reference (a test equates them).
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.weights_info = dict(weights_info or {"path": None, "sha256": None, "known": None})
        self.resizer = resizer
        self.normalization = normalization

    @classmethod
    def from_weights(cls, path: str | None = None, **kwargs: Any) -> InceptionBackbone:
        """Load the weights (see `scalegan.metrics.inception.resolve_weights_path`) and wrap them."""
        model, info = load_inception(path)
        return cls(model, info, **kwargs)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8/[-1, 1] images -> normalised `[N, 3, 299, 299]` in the backbone's dtype."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images [N, 1 or 3, H, W], got {list(images.shape)}")
        x = to_uint8(images).to(self.device)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = resize(x.to(self.dtype), INPUT_SIZE, self.resizer)
        x = (x - 128) / 128 if self.normalization == "tf" else x / 127.5 - 1
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        pool3, logits = self.model(self.preprocess(images))
        return {"features": pool3.to("cpu", torch.float64), "logits": logits.to("cpu", torch.float64)}

    def card(self) -> dict[str, Any]:
        return {
            "backbone": "inception-2015-12-05",
            "feature": "pool3 (2048)",
            "weights_path": self.weights_info.get("path"),
            "weights_sha256": self.weights_info.get("sha256"),
            "weights_known_as": self.weights_info.get("known"),
            "resizer": self.resizer,
            "normalization": self.normalization,
            "input": "uint8 (generated images rounded from [-1, 1])",
            "dtype": str(self.dtype).replace("torch.", ""),
            "channels_last": self.channels_last,
        }


class ClassifierBackbone:
    """Penultimate features and logits of a `SmallClassifier` (images in [-1, 1] at the classifier's size)."""

    name = "classifier"

    def __init__(self, model: Any, directory: str | None = None, weights_sha256: str | None = None) -> None:
        self.model = model.eval()
        self.directory = directory
        self.weights_sha256 = weights_sha256

    @classmethod
    def from_dir(cls, directory: str, device: str | torch.device = "cpu") -> ClassifierBackbone:
        from pathlib import Path


        model = load_classifier(directory, device=device)
        return cls(model, str(directory), sha256_file(Path(directory) / WEIGHTS_NAME))

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        # Generated images are evaluated as 8-bit pictures, like the Inception path does.
        x = to_uint8(images).float() / 127.5 - 1.0
        device = next(self.model.parameters()).device
        features = self.model.features(x.to(device))
        logits = self.model.head(features)
        return {"features": features.to("cpu", torch.float64), "logits": logits.to("cpu", torch.float64)}

    def card(self) -> dict[str, Any]:
        c = self.model.config
        return {
            "backbone": f"classifier:{self.directory}",
            "feature": f"penultimate ({c.feature_dim})",
            "weights_path": self.directory,
            "weights_sha256": self.weights_sha256,
            "resizer": None,
            "input": f"uint8 at {c.resolution}x{c.resolution}x{c.in_channels}",
        }


class FeatureStats:
    """Streaming float64 mean and covariance (N - 1) of feature vectors, plus optionally the vectors themselves
    (`keep` = how many to keep; KID and precision/recall need them) and the logits (for IS)."""

    def __init__(self, keep: int = 0, keep_logits: bool = False) -> None:
        self.n = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None  # sum of outer products of deviations from the mean
        self.keep = keep
        self.keep_logits = keep_logits
        self._features: list[np.ndarray] = []
        self._logits: list[np.ndarray] = []
        self._kept = 0

    def update(self, features: torch.Tensor | np.ndarray, logits: torch.Tensor | np.ndarray | None = None) -> None:
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or len(f) == 0:
            raise ValueError(f"expected features [N, D] with N >= 1, got shape {f.shape}")
        nb = len(f)
        mb = f.mean(axis=0)
        centered = f - mb
        m2b = centered.T @ centered
        if self.n == 0:
            self.mean, self.m2 = mb, m2b
        else:
            total = self.n + nb
            delta = mb - self.mean
            self.mean = self.mean + delta * (nb / total)
            self.m2 = self.m2 + m2b + np.outer(delta, delta) * (self.n * nb / total)
        self.n += nb
        if self._kept < self.keep:
            take = f[: self.keep - self._kept]
            self._features.append(take.astype(np.float32))
            if self.keep_logits and logits is not None:
                self._logits.append(np.asarray(logits, dtype=np.float64)[: len(take)])
            self._kept += len(take)

    @property
    def cov(self) -> np.ndarray:
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.n}")
        return self.m2 / (self.n - 1)

    @property
    def features(self) -> np.ndarray:
        """The kept features `[min(n, keep), D]` (float32, as stored)."""
        if not self._features:
            return np.zeros((0, 0 if self.mean is None else len(self.mean)), dtype=np.float32)
        return np.concatenate(self._features)

    @property
    def logits(self) -> np.ndarray:
        return np.concatenate(self._logits) if self._logits else np.zeros((0, 0))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for an `.npz` cache file."""
        return {"n": np.array(self.n), "mu": self.mean, "m2": self.m2, "features": self.features}

    @classmethod
    def from_arrays(cls, arrays: Any) -> FeatureStats:
        stats = cls(keep=len(arrays["features"]))
        stats.n = int(arrays["n"])
        stats.mean = np.asarray(arrays["mu"], dtype=np.float64)
        stats.m2 = np.asarray(arrays["m2"], dtype=np.float64)
        if len(arrays["features"]):
            stats._features = [np.asarray(arrays["features"], dtype=np.float32)]
            stats._kept = len(arrays["features"])
        return stats


def extract(
    backbone: Any,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]],
    *,
    keep: int = 0,
    keep_logits: bool = False,
    per_class: bool = False,
) -> tuple[FeatureStats, dict[int, FeatureStats]]:
    """Run `backbone` over `(images, labels or None)` batches; return overall statistics (keeping `keep` raw
    features, and the logits with `keep_logits`) and, with `per_class`, statistics per label (intra-class FID)."""
    overall = FeatureStats(keep=keep, keep_logits=keep_logits)
    by_class: dict[int, FeatureStats] = {}
    for images, labels in batches:
        out = backbone(images)
        overall.update(out["features"], out["logits"])
        if per_class and labels is not None:
            labels = torch.as_tensor(labels).cpu()
            for c in labels.unique().tolist():
                mask = (labels == c).numpy()
                by_class.setdefault(int(c), FeatureStats()).update(out["features"].numpy()[mask])
    return overall, by_class
