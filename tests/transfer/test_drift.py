"""The drift score (MMD²) on synthetic features: alike sets score ~0, shifted sets high; the
pixel signature on real photos: inverted ones are flagged, crops like the reference not."""

from __future__ import annotations

import numpy as np
import pytest

from app.transfer.drift import (
    GREY_BINS,
    DriftParams,
    bandwidth,
    drift_score,
    mmd2,
    pixel_signature_of_bytes,
)
from tests.factories import encode, photo


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


def _crops(n: int, seed: int) -> list[np.ndarray]:
    """``n`` random 48 px crops of three scikit-image photos (one distribution)."""
    photos = [photo(name) for name in ("chelsea", "coffee", "astronaut")]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = photos[i % len(photos)]
        y, x = rng.integers(0, p.shape[0] - 48), rng.integers(0, p.shape[1] - 48)
        out.append(p[y : y + 48, x : x + 48])
    return out


def _signatures(images: list[np.ndarray]) -> np.ndarray:
    return np.stack([pixel_signature_of_bytes(encode(a, "JPEG", quality=90)) for a in images])


def test_pixel_signature_tells_inverted_photos_from_photos_like_the_reference() -> None:
    """An inverted photo mirrors the grey histogram and complements the colours: the pixel
    MMD² passes its threshold where crops of the same photos stay under it."""
    reference = _signatures(_crops(120, seed=0))
    assert reference.shape == (120, GREY_BINS + 6)
    assert np.allclose(reference[:, :GREY_BINS].sum(1), 1.0)
    gamma = bandwidth(reference)
    threshold = DriftParams().pixel_threshold
    same = [drift_score(reference, _signatures(_crops(20, seed=s)), gamma=gamma)
            for s in range(1, 6)]  # fmt: skip
    inverted = [
        drift_score(reference, _signatures([255 - a for a in _crops(20, seed=s)]), gamma=gamma)
        for s in range(1, 6)
    ]
    assert max(same) < threshold <= min(inverted), (same, inverted)
