"""Fréchet distance between two Gaussians fitted to feature sets, in float64.

    d^2 = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})        (Heusel et al. 2017, eq. 6;
                                                                    FVD: Unterthiner et al. 2018)

tr((S_1 S_2)^{1/2}) is taken from symmetric matrices only: with A = S_1^{1/2} (eigh, negative
eigenvalues of a rounding-noisy covariance clipped to 0), S_1 S_2 = A^{-1} (A S_2 A) A is similar
to the symmetric PSD A S_2 A, so the trace is the sum of the square roots of A S_2 A's
eigenvalues. No complex parts to drop, no iterative sqrtm that can stall on a singular
covariance (2048 samples of 400-d I3D logits, or 4 tiny test videos, are both rank deficient).

Features are accumulated in float64 as sums (`FeatureStats`), so the statistics do not depend on
the batch size, and a run can stream millions of features. The covariance estimator is the
protocol's: StyleGAN-V divides by N (biased), VideoGPT and TF-GAN by N - 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FeatureStats:
    """Running sums of features (rows) in float64: count, sum, sum of outer products."""

    dim: int | None = None
    count: int = 0
    total: np.ndarray | None = None   # (D,)
    outer: np.ndarray | None = None   # (D, D)

    def add(self, features) -> None:
        """Add a (N, D) batch of features."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {x.shape}")
        if self.dim is None:
            self.dim = x.shape[1]
            self.total = np.zeros(self.dim)
            self.outer = np.zeros((self.dim, self.dim))
        elif x.shape[1] != self.dim:
            raise ValueError(f"feature width {x.shape[1]} differs from the {self.dim} seen before")
        self.count += len(x)
        self.total += x.sum(0)
        self.outer += x.T @ x

    def mean_cov(self, unbiased: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(mu, Sigma); Sigma divides by N (biased, StyleGAN-V) or N - 1 (unbiased)."""
        if self.count < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, have {self.count}")
        mu = self.total / self.count
        cov = (self.outer - self.count * np.outer(mu, mu)) / (self.count - (1 if unbiased else 0))
        return mu, (cov + cov.T) / 2

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"count": np.array(self.count), "total": self.total, "outer": self.outer}

    @classmethod
    def from_arrays(cls, arrays: dict) -> "FeatureStats":
        total = np.asarray(arrays["total"], np.float64)
        return cls(dim=len(total), count=int(arrays["count"]), total=total,
                   outer=np.asarray(arrays["outer"], np.float64))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (eigenvalues below 0 clipped)."""
    w, v = np.linalg.eigh((matrix + matrix.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S_1 S_2)^{1/2}) for symmetric PSD S_1, S_2, through the symmetric A S_2 A, A = S_1^{1/2}."""
    a = _psd_sqrt(np.asarray(sigma1, np.float64))
    m = a @ np.asarray(sigma2, np.float64) @ a
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """d^2 between N(mu1, sigma1) and N(mu2, sigma2) (module docstring), never below 0."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature widths differ: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    d2 = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return float(max(d2, 0.0))


def frechet_from_stats(a: FeatureStats, b: FeatureStats, unbiased: bool = False) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets."""
    return frechet_distance(*a.mean_cov(unbiased), *b.mean_cov(unbiased))
