"""The maths of the quality metrics (docs/design.md, "Quality metrics"): numpy + scipy only.

- `frechet_distance`: FID's formula, here on a reference classifier's penultimate features
  (`fid_cls`), since no Inception weights can be had.
- `precision_recall`: k-nearest-neighbour manifolds (Kynkaanniemi et al. 2019, "Improved
  Precision and Recall Metric for Assessing Generative Models"): precision is the share of
  generated samples inside the real manifold, recall the share of real samples inside the
  generated one; a manifold is the union of balls around each sample reaching its k-th neighbour.
- `within_class_spread`: per class, the root mean squared distance between two images of the
  class, sqrt(2 tr Cov) (exact, no pairs enumerated); a generator that draws few pictures per
  class has a small spread next to the real images' (within-class diversity).
- `class_accuracy`, `class_histogram`: what the classifier says about generated images.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
from scipy import linalg

# Rows of one block of the pairwise-distance matrix: 1,000 x 10,000 float64 is 80 MB.
CHUNK = 1000


def _stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"features must be (N >= 2, D), got {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, eps: float = 1e-6) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of Gaussians fitted to two sets."""
    mu_a, cov_a = _stats(feats_a)
    mu_b, cov_b = _stats(feats_b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature sizes differ: {mu_a.shape} vs {mu_b.shape}")
    covmean = _sqrtm_product(cov_a, cov_b, eps)
    diff = mu_a - mu_b
    value = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))
    # Rounding can leave a distance of identical sets a hair below zero.
    return max(value, 0.0)


def _sqrtm_product(cov_a: np.ndarray, cov_b: np.ndarray, eps: float) -> np.ndarray:
    """(S_a S_b)^(1/2), real part. Singular covariances (e.g. a generator that gives one image
    per class) make sqrtm unstable: then both are nudged by eps*I, as pytorch-fid does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # singular: handled just below
        covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(cov_a)) * eps
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(covmean):
        # Tiny imaginary parts are numerical noise of sqrtm on a PSD product; large ones mean
        # the product is badly conditioned, and the real part is still the best estimate.
        imag = np.abs(np.diagonal(covmean).imag).max()
        scale = max(np.abs(np.diagonal(covmean).real).max(), 1.0)
        if imag > 1e-3 * scale:
            warnings.warn(f"sqrtm: imaginary component {imag:.3g} (scale {scale:.3g}) dropped", stacklevel=3)
        covmean = covmean.real
    return covmean


def _sq_dists(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances of the rows of a to the rows of b (clamped at 0)."""
    d = (a * a).sum(axis=1)[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def _chunks(n: int, size: int = CHUNK) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def knn_radii(feats: np.ndarray, k: int = 3) -> np.ndarray:
    """Squared distance from each row to its k-th nearest other row (itself excluded)."""
    x = np.asarray(feats, dtype=np.float64)
    if len(x) <= k:
        raise ValueError(f"need more than k={k} samples for k-NN radii, got {len(x)}")
    x_sq = (x * x).sum(axis=1)
    radii = np.empty(len(x))
    for s in _chunks(len(x)):
        d = _sq_dists(x[s], x, x_sq)
        d[np.arange(s.stop - s.start), np.arange(s.start, s.stop)] = -1.0  # self sorts first
        radii[s] = np.partition(d, k, axis=1)[:, k]
    return radii


def coverage_by(manifold: np.ndarray, radii: np.ndarray, queries: np.ndarray) -> float:
    """Share of query rows that fall inside at least one ball (manifold row, its radius)."""
    m = np.asarray(manifold, dtype=np.float64)
    q = np.asarray(queries, dtype=np.float64)
    m_sq = (m * m).sum(axis=1)
    inside = np.zeros(len(q), dtype=bool)
    for s in _chunks(len(q)):
        inside[s] = (_sq_dists(q[s], m, m_sq) <= radii[None, :]).any(axis=1)
    return float(inside.mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of generated features `fake` against real features `real`."""
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    precision = coverage_by(real, knn_radii(real, k), fake)
    recall = coverage_by(fake, knn_radii(fake, k), real)
    return precision, recall


def within_class_spread(feats: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
    """sqrt(E||x - y||^2) over pairs of rows of one class = sqrt(2 tr Cov); nan for a class with
    fewer than two rows."""
    x, labels = np.asarray(feats, dtype=np.float64), np.asarray(labels)
    spreads = []
    for c in range(num_classes):
        rows = x[labels == c]
        spread = np.sqrt(2.0 * rows.var(axis=0, ddof=1).sum()) if len(rows) >= 2 else np.nan
        spreads.append(float(spread))
    return spreads


def class_accuracy(
    predicted: np.ndarray, intended: np.ndarray, num_classes: int
) -> tuple[float, list[float]]:
    """Overall share of images classified as their intended class, and that share per class."""
    predicted, intended = np.asarray(predicted), np.asarray(intended)
    per_class = [
        float((predicted[intended == c] == c).mean()) if (intended == c).any() else float("nan")
        for c in range(num_classes)
    ]
    return float((predicted == intended).mean()), per_class


def class_histogram(predicted: np.ndarray, num_classes: int) -> tuple[list[float], float]:
    """Share of images per predicted class and the entropy of that histogram in bits
    (log2(num_classes) when an unconditional generator covers all classes evenly)."""
    counts = np.bincount(np.asarray(predicted), minlength=num_classes).astype(np.float64)
    p = counts / counts.sum()
    nonzero = p[p > 0]
    return p.tolist(), abs(float(-(nonzero * np.log2(nonzero)).sum()))  # abs: no "-0.0"
