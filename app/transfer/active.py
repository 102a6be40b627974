"""Active learning: which unlabeled images are most worth labeling next.

Inputs, for ``N`` pool images: the model's class probabilities ``P`` (N, C) and the
images' backbone features ``X`` (N, D) (the cached ones: no backbone pass). Optionally the
features of the already labeled images ``L`` (M, D).

Uncertainty (margin sampling, Scheffer et al. 2001), with rejection::

    m_i = p_i(1) - p_i(2)                 best minus second-best probability (C = 1: m_i = 1)
    u_i = (1 - m_i) + r_i                 r_i = 1 when p_i(1) < tau (the model's reject_below),
                                          so "none of the above" answers come first

Diversity: uncertainty-weighted k-center greedy (Sener & Savarese 2018, "coreset") on
L2-normalised features. With ``S`` the chosen set (seeded with the labeled images ``L``
when given)::

    d_i = min_{s in S} ||x_i - x_s||      distance to the nearest chosen (or labeled) image
    pick  argmax_i  u_i * (d_i / max_j d_j + eps)

The first pick (``S`` empty) is the most uncertain image. A near-duplicate of an image
already chosen has ``d_i ~ 0`` and sinks to the end, so twenty copies of one hard photo
take one slot, not twenty. ``eps`` (1e-3) breaks ties by uncertainty once every remaining
image duplicates a chosen one.

Shapes: ``rank(P (N, C), X (N, D), n, tau, L (M, D) | None) -> list[int]`` of at most
``n`` row indices, most worth labeling first.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-3


def margins(probs: np.ndarray) -> np.ndarray:
    """``p(1) - p(2)`` per row (1 where there is a single class)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[1] < 2:
        return np.ones(len(probs))
    top2 = -np.partition(-probs, 1, axis=1)[:, :2]
    return top2[:, 0] - top2[:, 1]


def uncertainty(probs: np.ndarray, reject_below: float | None = None) -> np.ndarray:
    """``u = (1 - margin) + [p(1) < reject_below]``: higher is more worth a label."""
    probs = np.asarray(probs, dtype=np.float64)
    u = 1.0 - margins(probs)
    if reject_below is not None and len(probs):
        u = u + (probs.max(axis=1) < reject_below)
    return u


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def rank(
    probs: np.ndarray,
    feats: np.ndarray,
    n: int,
    *,
    reject_below: float | None = None,
    labeled: np.ndarray | None = None,
) -> list[int]:
    """The ``n`` pool rows most worth labeling, best first (see the module docstring)."""
    return [i for i, _ in rank_scored(probs, feats, n, reject_below=reject_below, labeled=labeled)]


def rank_scored(
    probs: np.ndarray,
    feats: np.ndarray,
    n: int,
    *,
    reject_below: float | None = None,
    labeled: np.ndarray | None = None,
) -> list[tuple[int, float]]:
    """:func:`rank` with each pick's score ``u_i * (d_i / max d + eps)`` when it was picked
    (``u_i`` for a first pick with nothing labeled)."""
    count = len(probs)
    n = min(n, count)
    if n <= 0:
        return []
    u = uncertainty(probs, reject_below)
    x = _normalise(feats)
    if labeled is not None and len(labeled):
        lab = _normalise(labeled)
        # Squared distances via ||a||^2 + ||b||^2 - 2ab (unit vectors: 2 - 2ab).
        dist = np.sqrt(np.maximum(2.0 - 2.0 * (x @ lab.T), 0.0)).min(axis=1)
    else:
        dist = np.full(count, np.inf)
    chosen: list[tuple[int, float]] = []
    free = np.ones(count, dtype=bool)
    for _ in range(n):
        if np.isinf(dist).all():
            score = u.copy()
        else:
            finite = np.where(np.isinf(dist), 2.0, dist)  # 2: the largest unit-vector distance
            top = finite[free].max() if free.any() else 1.0
            score = u * (finite / max(top, 1e-12) + EPS)
        score[~free] = -np.inf
        i = int(np.argmax(score))
        chosen.append((i, float(score[i])))
        free[i] = False
        dist = np.minimum(dist, np.sqrt(np.maximum(2.0 - 2.0 * (x @ x[i]), 0.0)))
    return chosen
