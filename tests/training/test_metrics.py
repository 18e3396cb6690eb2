"""The quality metrics' maths against closed forms and obvious cases."""

from __future__ import annotations

import numpy as np
import pytest

from training import metrics


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).standard_normal((2000, 32))
    assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_fid_of_two_gaussians_matches_the_closed_form():
    # Diagonal covariances: FID = |mu_a - mu_b|^2 + sum(s_a + s_b - 2 sqrt(s_a s_b)).
    rng = np.random.default_rng(1)
    d, n = 8, 200_000
    mu_a, mu_b = np.zeros(d), np.linspace(-1.0, 1.0, d)
    var_a, var_b = np.linspace(0.5, 2.0, d), np.linspace(3.0, 1.0, d)
    a = mu_a + rng.standard_normal((n, d)) * np.sqrt(var_a)
    b = mu_b + rng.standard_normal((n, d)) * np.sqrt(var_b)
    expected = ((mu_a - mu_b) ** 2).sum() + (var_a + var_b - 2 * np.sqrt(var_a * var_b)).sum()
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=0.02)


def test_fid_with_a_full_covariance_matches_the_closed_form():
    # Same covariance S on both sides: the trace terms cancel and FID is |mu_a - mu_b|^2.
    rng = np.random.default_rng(2)
    cov = np.array([[2.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.5]])
    a = rng.multivariate_normal([0, 0, 0], cov, 200_000)
    b = rng.multivariate_normal([1, 2, 0], cov, 200_000)
    assert metrics.frechet_distance(a, b) == pytest.approx(5.0, rel=0.02)


def test_fid_survives_a_degenerate_set():
    # One point per class, repeated: the covariance is singular (a deterministic label model).
    rng = np.random.default_rng(3)
    real = rng.standard_normal((1000, 16))
    fake = np.repeat(rng.standard_normal((4, 16)), 250, axis=0)
    value = metrics.frechet_distance(real, fake)
    assert np.isfinite(value) and value > 1.0


def test_precision_recall_of_identical_sets_is_one():
    x = np.random.default_rng(4).standard_normal((500, 8))
    assert metrics.precision_recall(x, x, k=3) == (1.0, 1.0)


def test_precision_recall_separate_fidelity_from_diversity():
    rng = np.random.default_rng(5)
    real = rng.standard_normal((1000, 4))
    # Generated samples crowded near the centre of the real data: faithful but not diverse.
    collapsed = rng.standard_normal((1000, 4)) * 0.1
    precision, recall = metrics.precision_recall(real, collapsed, k=3)
    assert precision > 0.8 and recall < 0.1
    # Far away: neither.
    far = rng.standard_normal((1000, 4)) + 20.0
    assert metrics.precision_recall(real, far, k=3) == (0.0, 0.0)


def test_knn_radii_excludes_the_point_itself():
    x = np.array([[0.0], [1.0], [3.0], [6.0]])
    # squared distance to the 1st and 2nd nearest other point
    np.testing.assert_allclose(metrics.knn_radii(x, k=1), [1.0, 1.0, 4.0, 9.0])
    np.testing.assert_allclose(metrics.knn_radii(x, k=2), [9.0, 4.0, 9.0, 25.0])


def test_class_accuracy_and_histogram():
    predicted = np.array([0, 0, 1, 2, 2, 2])
    intended = np.array([0, 1, 1, 2, 2, 0])
    overall, per_class = metrics.class_accuracy(predicted, intended, 3)
    assert overall == pytest.approx(4 / 6)
    assert per_class == pytest.approx([0.5, 0.5, 1.0])
    hist, entropy = metrics.class_histogram(np.array([0, 1, 2, 3]), 4)
    assert hist == [0.25] * 4 and entropy == pytest.approx(2.0)
    assert metrics.class_histogram(np.array([1, 1]), 4)[1] == pytest.approx(0.0)


def test_within_class_spread_is_the_rms_distance_of_pairs():
    rng = np.random.default_rng(4)
    feats = rng.standard_normal((60, 5)) * np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    labels = np.array([0] * 30 + [1] * 29 + [2])
    spread = metrics.within_class_spread(feats, labels, 4)
    for c in (0, 1):
        rows = feats[labels == c]
        pairs = [((a - b) ** 2).sum() for i, a in enumerate(rows) for j, b in enumerate(rows) if i != j]
        assert spread[c] == pytest.approx(np.sqrt(np.mean(pairs)))
    assert np.isnan(spread[2]) and np.isnan(spread[3])  # one row, no rows: no pair to measure
    # one picture drawn over and over has no spread at all
    assert metrics.within_class_spread(np.ones((10, 5)), np.zeros(10, int), 1) == [0.0]


def test_hold_lower_keeps_each_figure_of_the_worse_classifier():
    from training.figures import hold_lower

    a = {"class_accuracy": 0.98, "worst_class_accuracy": 0.90, "worst_class": "1", "recall": 0.6,
         "recall_floor": 0.9, "precision": 0.7, "precision_floor": 0.8, "fid_cls": 4.0, "fid_cls_floor": 1.0,
         "class_accuracy_per_class": {"0": 0.99, "1": 0.90}}
    b = {"class_accuracy": 0.95, "worst_class_accuracy": 0.93, "worst_class": "0", "recall": 0.7,
         "recall_floor": 0.85, "precision": 0.6, "precision_floor": 0.9,
         "fid_cls": 30.0, "fid_cls_floor": 20.0,
         "class_accuracy_per_class": {"0": 0.93, "1": 0.97}}
    held, held_by = hold_lower({"cnn": a, "resnet": b})
    assert held["class_accuracy"] == 0.95 and held_by["class_accuracy"] == "resnet"
    assert (held["worst_class"], held["worst_class_accuracy"]) == ("1", 0.90)
    assert (held["recall"], held["recall_floor"]) == (0.6, 0.9)  # the floor of the same classifier
    assert (held["precision"], held["precision_floor"]) == (0.6, 0.9)
    # fid_cls in two feature spaces: held to the one further above its own floor (4x vs 1.5x)
    assert (held["fid_cls"], held["fid_cls_floor"], held_by["fid_cls"]) == (4.0, 1.0, "cnn")
    assert held["class_accuracy_per_class"] == {"0": 0.93, "1": 0.90}
