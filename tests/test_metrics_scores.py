"""Metric formulas on hand-checkable inputs, the fast FID route against the reference, streaming statistics."""

from __future__ import annotations

import numpy as np
import pytest

from scalegan.metrics import scores
from scalegan.metrics.features import FeatureStats


def test_fid_closed_forms():
    # 1-D Gaussians: (m1 - m2)^2 + (s1 - s2)^2.
    assert scores.fid_from_stats([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1)
    # Diagonal covariances: sum over dimensions.
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    expected = 3 + (1 + 0 + 4)
    for method in ("sqrtm", "eig"):
        assert scores.fid_from_stats(np.zeros(3), s1, np.ones(3), s2, method=method) == pytest.approx(expected)
    a = np.random.default_rng(0).normal(size=(200, 8))
    assert abs(scores.fid_from_features(a, a)) < 1e-8
    with pytest.raises(ValueError, match="do not match"):
        scores.fid_from_stats(np.zeros(3), s1, np.zeros(2), s2[:2, :2])


@pytest.mark.parametrize("n,d", [(500, 64), (40, 64)])  # full rank and singular covariances
def test_fid_eig_route_equals_sqrtm(n, d):
    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    b = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 0.5
    reference = scores.fid_from_features(a, b, method="sqrtm")
    assert scores.fid_from_features(a, b, method="eig") == pytest.approx(reference, rel=1e-6)


def test_inception_score_extremes():
    # Confident and evenly spread over K classes: IS = K. Identical predictions: IS = 1.
    k = 10
    confident = np.eye(k)[np.arange(200) % k] * 50
    assert scores.inception_score(confident, splits=2, shuffle=False)[0] == pytest.approx(k, rel=1e-6)
    same = np.tile(np.random.default_rng(0).normal(size=(1, k)), (200, 1))
    mean, std = scores.inception_score(same, splits=10)
    assert mean == pytest.approx(1.0) and std == pytest.approx(0.0, abs=1e-12)


def test_kid_by_hand():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 1
    # With subset_size >= n every subset is the whole (permuted) set: one brute-force unbiased MMD.
    kxx, kyy, kxy = ((a @ b.T / 3 + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    off = lambda k: (k.sum() - np.trace(k)) / 30  # noqa: E731
    expected = off(kxx) + off(kyy) - 2 * kxy.mean()
    mean, std = scores.kid(x, y, subsets=3, subset_size=100)
    assert mean == pytest.approx(expected) and std == pytest.approx(0, abs=1e-12)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    shifted = scores.kid(a, b + 1, subsets=10, subset_size=100)[0]
    assert abs(scores.kid(a, b, subsets=10, subset_size=100)[0]) < 0.05 * shifted


def test_precision_recall_density_coverage_by_hand():
    real = np.array([[0.0], [1.0], [2.0], [3.0], [10.0], [11.0], [12.0], [13.0]])
    # k = 1: every real point's radius is 1. Fakes: one on a real point, one in a gap, one far away.
    fake = np.array([[0.5], [6.5], [100.0], [101.0]])
    precision, recall = scores.precision_recall(real, fake, k=1)
    assert precision == pytest.approx(1 / 4)
    # Fake radii (k = 1): 0.5 -> 6.0, 6.5 -> 6.0, 100 -> 1, 101 -> 1. Reals within: 0..3 of 0.5; 1..3 and 10..12
    # of 6.5 (|x - 6.5| <= 6): all but 13.
    assert recall == pytest.approx(7 / 8)
    density, coverage = scores.density_coverage(real, fake, k=1)
    # 0.5 is strictly inside the balls of 0 and 1 (radius 1): density = 2 / (1 * 4); they are covered: 2 / 8.
    assert density == pytest.approx(2 / 4) and coverage == pytest.approx(2 / 8)
    same = np.random.default_rng(0).normal(size=(300, 4))
    assert scores.precision_recall(same, same, k=3) == (1.0, 1.0)


def test_intra_class_fid_mean():
    stats = {0: (np.zeros(1), np.eye(1)), 1: (np.ones(1), np.eye(1))}
    fake = {0: (np.ones(1), np.eye(1)), 1: (np.ones(1), np.eye(1)), 2: (np.zeros(1), np.eye(1))}
    result = scores.intra_class_fid(stats, fake)
    assert result["per_class"] == {0: pytest.approx(1.0), 1: pytest.approx(0.0)} and result["mean"] == 0.5


def test_streaming_stats_equal_numpy_in_any_batching():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(257, 16)) * 100 + 1e4  # large offset: a naive sum-of-squares update loses digits
    stats = FeatureStats(keep=100)
    for start, size in [(0, 1), (1, 100), (101, 2), (103, 154)]:
        stats.update(f[start : start + size])
    assert stats.n == 257
    np.testing.assert_allclose(stats.mean, f.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(f, rowvar=False), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(stats.features, f[:100].astype(np.float32))  # the first `keep` vectors
    restored = FeatureStats.from_arrays(stats.to_arrays())
    np.testing.assert_array_equal(restored.cov, stats.cov)
    np.testing.assert_array_equal(restored.features, stats.features)
    assert restored.n == 257


def test_knn_metrics_blockwise_equal_brute_force():
    """More rows than one distance block (1024): the blockwise code must equal full distance matrices."""
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(1100, 6)), rng.normal(size=(1050, 6)) * 1.2 + 0.1
    dist = lambda a, b: np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))  # noqa: E731
    d_rr, d_ff, d_fr = dist(real, real), dist(fake, fake), dist(fake, real)
    r_real3, r_fake3 = np.sort(d_rr, axis=1)[:, 3], np.sort(d_ff, axis=1)[:, 3]
    precision = (d_fr <= r_real3[None, :]).any(axis=1).mean()
    recall = (d_fr.T <= r_fake3[None, :]).any(axis=1).mean()
    assert scores.precision_recall(real, fake, k=3) == pytest.approx((precision, recall), abs=1e-12)
    r_real5 = np.sort(d_rr, axis=1)[:, 5]
    density = (d_fr < r_real5[None, :]).sum() / (5 * len(fake))
    coverage = (d_fr.min(axis=0) < r_real5).mean()
    assert scores.density_coverage(real, fake, k=5) == pytest.approx((density, coverage), abs=1e-12)
