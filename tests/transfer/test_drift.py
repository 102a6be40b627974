"""The drift score (MMD²) on synthetic features: alike sets score ~0, shifted sets high."""

from __future__ import annotations

import numpy as np
import pytest

from app.transfer.drift import DriftParams, bandwidth, drift_score, mmd2


def _cloud(n: int, seed: int, shift: float = 0.0, dim: int = 64) -> np.ndarray:
    """Non-negative rows (like post-ReLU features) around a fixed centre."""
    centre = np.abs(np.random.default_rng(123).normal(size=dim)) + 1.0
    rng = np.random.default_rng(seed)
    X = centre + rng.normal(scale=0.5, size=(n, dim))
    X[:, : dim // 4] += shift  # a quarter of the dimensions move
    return np.maximum(X, 0.0)


def test_same_distribution_scores_under_the_threshold_and_a_shift_over_it() -> None:
    reference = _cloud(200, seed=0)
    threshold = DriftParams().threshold
    same = [drift_score(reference, _cloud(30, seed=s)) for s in range(1, 11)]
    shifted = [drift_score(reference, _cloud(30, seed=s, shift=3.0)) for s in range(1, 11)]
    assert max(same) < threshold < min(shifted), (same, shifted)


def test_score_is_zero_or_more_and_at_most_two() -> None:
    reference = _cloud(50, seed=0)
    assert drift_score(reference, reference) >= 0.0  # the unbiased estimate is clipped
    far = np.zeros((20, 64))
    far[:, -1] = 1.0  # one direction no reference row points to
    assert 0.0 < drift_score(reference, far) <= 2.0


def test_scale_of_the_features_does_not_change_the_score() -> None:
    """Rows are L2-normalised and the bandwidth comes from the reference: a backbone with
    features ten times larger gives the same score."""
    reference, recent = _cloud(80, seed=0), _cloud(30, seed=1, shift=1.0)
    assert drift_score(reference, recent) == pytest.approx(
        drift_score(10 * reference, 10 * recent), rel=1e-9
    )
    assert bandwidth(reference) == pytest.approx(bandwidth(10 * reference), rel=1e-9)


def test_mmd2_needs_two_rows_each_side() -> None:
    with pytest.raises(ValueError):
        mmd2(_cloud(1, seed=0), _cloud(5, seed=1), gamma=1.0)
    assert bandwidth(_cloud(1, seed=0)) == 1.0
