"""Metric formulas on features: FID, IS, KID, precision/recall, density/coverage, intra-class FID.

All take numpy arrays (or anything `np.asarray` accepts) and compute in float64.

- FID (Heusel et al. 2017): `|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))`. `method="sqrtm"` is the reference
  (scipy's `sqrtm`, retried with 1e-6 added to the diagonals when the result is not finite, real part kept),
  as in pytorch-fid; `method="eig"` uses `Tr sqrtm(S1 S2) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1)))` with symmetric
  eigendecompositions, several times faster and tested equal to the reference.
- IS (Salimans et al. 2016): `exp(E_x KL(p(y|x) || p(y)))` over `splits` splits of the (shuffled) logits,
  torch-fidelity's convention (logits without the fc bias, shuffle seed 2020).
- KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel `(x.y / d + 1)^3`, averaged over `subsets`
  random subsets of `min(subset_size, n1, n2)` features from each side (torch-fidelity's sampling order).
- Precision/recall (Kynkaanniemi et al. 2019) with k = 3: a sample is inside a set's manifold when it lies
  within the k-th nearest-neighbour distance of some member of the set (ties count as inside).
- Density/coverage (Naeem et al. 2020) with k = 5 (strict inequalities, as the authors' code).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch

__all__ = [
    "density_coverage",
    "fid_from_features",
    "fid_from_stats",
    "inception_score",
    "intra_class_fid",
    "kid",
    "precision_recall",
]


def _check_stats(mu1, sigma1, mu2, sigma2):
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(
            f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    return mu1, sigma1, mu2, sigma2


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    # scipy warns about singular products; we check the result ourselves and retry as pytorch-fid does.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(np.asarray(covmean)).all():
        warnings.warn(f"FID: sqrtm(S1 S2) is singular; adding {eps} to the covariance diagonals", stacklevel=3)
        offset = np.eye(len(sigma1)) * eps
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        # Small imaginary parts come from numerical error; large ones mean the statistics are broken.
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: sqrtm has a large imaginary component {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(np.trace(covmean))


def _trace_sqrt_product_eig(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    # S1 S2 is similar to sqrt(S1) S2 sqrt(S1), which is symmetric PSD: its eigenvalues are real and >= 0.
    # torch's float64 LAPACK runs on the caller's torch thread setting, which keeps it fast on a busy machine.
    s1, s2 = torch.from_numpy(sigma1), torch.from_numpy(sigma2)
    w, v = torch.linalg.eigh(s1)
    root1 = (v * w.clamp(min=0).sqrt()) @ v.T
    m = root1 @ s2 @ root1
    eig = torch.linalg.eigvalsh((m + m.T) / 2)
    return float(eig.clamp(min=0).sqrt().sum())


def fid_from_stats(mu1, sigma1, mu2, sigma2, method: str = "sqrtm") -> float:
    """Frechet distance between Gaussians `(mu1, sigma1)` and `(mu2, sigma2)`; `method` "sqrtm" or "eig"."""
    mu1, sigma1, mu2, sigma2 = _check_stats(mu1, sigma1, mu2, sigma2)
    if method == "sqrtm":
        tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2)
    elif method == "eig":
        tr_covmean = _trace_sqrt_product_eig(sigma1, sigma2)
    else:
        raise ValueError(f"FID method must be 'sqrtm' or 'eig', got {method!r}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid_from_features(features1, features2, method: str = "sqrtm") -> float:
    """FID between two feature sets `[N, D]` (covariances with N - 1)."""
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    return fid_from_stats(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False), method)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def inception_score(logits, splits: int = 10, shuffle: bool = True, seed: int = 2020) -> tuple[float, float]:
    """`(mean, std)` of the Inception Score over `splits` splits of `logits` `[N, K]`."""
    logits = np.asarray(logits, np.float64)
    n = len(logits)
    if logits.ndim != 2 or n < splits:
        raise ValueError(f"IS needs logits [N, K] with N >= splits ({splits}), got shape {logits.shape}")
    if shuffle:
        logits = logits[np.random.RandomState(seed).permutation(n)]
    log_p = _log_softmax(logits)
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        part = slice(i * n // splits, (i + 1) * n // splits)
        log_marginal = np.log(p[part].mean(axis=0))
        kl = (p[part] * (log_p[part] - log_marginal)).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    m = len(x)
    off_xx = k_xx.sum() - np.trace(k_xx)
    off_yy = k_yy.sum() - np.trace(k_yy)
    return float((off_xx + off_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def kid(features1, features2, subsets: int = 100, subset_size: int = 1000, seed: int = 2020) -> tuple[float, float]:
    """`(mean, std)` of KID over `subsets` random subsets of `min(subset_size, n1, n2)` features per side."""
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError(f"KID needs at least 2 features per set, got {len(f1)} and {len(f2)}")
    rng = np.random.RandomState(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        a = f1[rng.choice(len(f1), m, replace=False)]
        b = f2[rng.choice(len(f2), m, replace=False)]
        values[i] = _mmd2_unbiased(a, b)
    return float(values.mean()), float(values.std())


def _pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances `[len(a), len(b)]` in float64."""
    sq = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(sq, 0, None))


def _blocks(n: int, size: int = 1024):
    """Row slices, so that distance matrices stay `size x N` (10k x 10k float64 would be 800 MB)."""
    return (slice(start, start + size) for start in range(0, n, size))


def _kth_neighbour_radius(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row of `x` to its k-th nearest other row (the row itself is the 0th)."""
    if len(x) <= k:
        raise ValueError(f"k-NN radii with k = {k} need more than {k} samples, got {len(x)}")
    radius = np.empty(len(x))
    for rows in _blocks(len(x)):
        radius[rows] = np.partition(_pairwise_distances(x[rows], x), k, axis=1)[:, k]
    return radius


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """Improved precision (share of `fake` inside the real manifold) and recall (share of `real` inside the fake
    manifold), with k-NN balls of radius the k-th neighbour distance."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    radius_real = _kth_neighbour_radius(real, k)
    radius_fake = _kth_neighbour_radius(fake, k)
    inside_real = sum(
        int((_pairwise_distances(fake[r], real) <= radius_real).any(axis=1).sum()) for r in _blocks(len(fake))
    )
    inside_fake = sum(
        int((_pairwise_distances(real[r], fake) <= radius_fake).any(axis=1).sum()) for r in _blocks(len(real))
    )
    return inside_real / len(fake), inside_fake / len(real)


def density_coverage(real, fake, k: int = 5) -> tuple[float, float]:
    """Density (expected number of real k-NN balls a fake sample falls in, divided by k) and coverage (share of
    real balls that contain at least one fake sample)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    radius = _kth_neighbour_radius(real, k)
    hits = sum(int((_pairwise_distances(fake[r], real) < radius).sum()) for r in _blocks(len(fake)))
    covered = sum(int((_pairwise_distances(real[r], fake).min(axis=1) < radius[r]).sum()) for r in _blocks(len(real)))
    return hits / (k * len(fake)), covered / len(real)


def intra_class_fid(real_stats: dict[int, tuple], fake_stats: dict[int, tuple], method: str = "sqrtm") -> dict:
    """Mean FID over classes present in both `{class: (mu, sigma)}` mappings, and the per-class values."""
    classes = sorted(set(real_stats) & set(fake_stats))
    if not classes:
        raise ValueError("intra-class FID: no class has statistics on both sides")
    per_class = {c: fid_from_stats(*real_stats[c], *fake_stats[c], method=method) for c in classes}
    return {"mean": float(np.mean(list(per_class.values()))), "per_class": per_class}
