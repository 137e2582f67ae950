"""The Fréchet distance: the closed form for Gaussians, scipy's sqrtm-based formula, streaming sums,
and FVD's behaviour on tiny videos (0 for a set against itself, growing with noise and with
temporal shuffling)."""
from __future__ import annotations

import numpy as np
import pytest

from numeric import assert_close_ulps
from svdcli.eval.frechet import FeatureStats, frechet_distance, frechet_from_stats, trace_sqrt_product


def _spd(rng, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d


def test_closed_form_for_diagonal_gaussians():
    # N(mu1, diag(s1^2)) vs N(mu2, diag(s2^2)): |mu1 - mu2|^2 + sum (s1 - s2)^2
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.5, 2, 6), rng.uniform(0.5, 2, 6)
    expected = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    got = frechet_distance(mu1, np.diag(s1 ** 2), mu2, np.diag(s2 ** 2))
    assert_close_ulps(got, expected, scale=float((s1 ** 2 + s2 ** 2).sum()), ulps=64)


def test_commuting_covariances_closed_form():
    # S1 = a^2 S, S2 = b^2 S share eigenvectors: d = |dmu|^2 + (a - b)^2 tr(S)
    rng = np.random.default_rng(1)
    s = _spd(rng, 8)
    got = frechet_distance(np.zeros(8), 4.0 * s, np.ones(8), 9.0 * s)
    expected = 8.0 + (2.0 - 3.0) ** 2 * np.trace(s)
    assert_close_ulps(got, expected, scale=13 * np.trace(s), ulps=256)


def test_matches_scipy_sqrtm_formula():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    for d in (3, 16, 64):
        s1, s2 = _spd(rng, d), _spd(rng, d)
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        root = scipy_linalg.sqrtm(s1 @ s2)
        expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * np.real(root))
        got = frechet_distance(mu1, s1, mu2, s2)
        # sqrtm is iterative: compare at its accuracy, scaled to the traces involved
        assert abs(got - expected) <= 1e-8 * np.trace(s1 + s2), (d, got, expected)


def test_rank_deficient_covariances_stay_finite_and_nonnegative():
    # 4 samples of 32-d features: singular covariances, where an iterative sqrtm can fail
    rng = np.random.default_rng(3)
    a, b = FeatureStats(), FeatureStats()
    x = rng.normal(size=(4, 32))
    a.add(x)
    b.add(x)
    assert 0.0 <= frechet_from_stats(a, b) <= 1e-9 * np.trace(a.mean_cov()[1])
    c = FeatureStats()
    c.add(rng.normal(size=(4, 32)) + 1.0)
    assert np.isfinite(frechet_from_stats(a, c)) and frechet_from_stats(a, c) > 1.0


def test_trace_sqrt_product_of_identity_multiples():
    assert_close_ulps(trace_sqrt_product(4 * np.eye(5), 9 * np.eye(5)), 30.0, ulps=64)


def test_streaming_sums_equal_one_batch_and_numpy_cov():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 7)) * 3 + 2
    whole, parts = FeatureStats(), FeatureStats()
    whole.add(x)
    for chunk in np.array_split(x, 6):
        parts.add(chunk)
    for unbiased in (False, True):
        mu, cov = parts.mean_cov(unbiased)
        assert_close_ulps(mu, x.mean(0), scale=float(np.abs(x).max()))
        assert_close_ulps(cov, np.cov(x, rowvar=False, bias=not unbiased), scale=float((x ** 2).max()), ulps=256)
        assert_close_ulps(whole.mean_cov(unbiased)[1], cov, scale=float((x ** 2).max()), ulps=256)


def test_statistics_refuse_too_few_features():
    s = FeatureStats()
    s.add(np.ones((1, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        s.mean_cov()
