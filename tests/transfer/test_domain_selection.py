"""Label-free choosers among adapted candidates (app/transfer/domain/selection.py), on
constructed predictions whose true labels are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.transfer.domain.selection import (
    CHOOSERS,
    Evidence,
    agreement,
    mean_entropy,
    soft_neighborhood_density,
)

C, N = 4, 200


def one_hot(labels: np.ndarray, confidence: float = 0.9) -> np.ndarray:
    p = np.full((len(labels), C), (1 - confidence) / (C - 1))
    p[np.arange(len(labels)), labels] = confidence
    return p


def noisy(y: np.ndarray, wrong: float, seed: int) -> np.ndarray:
    """``y`` with a ``wrong`` share of rows moved to another class."""
    rng = np.random.default_rng(seed)
    out = y.copy()
    flip = rng.random(len(y)) < wrong
    out[flip] = (y[flip] + rng.integers(1, C, flip.sum())) % C
    return out


@pytest.fixture
def candidates() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """True labels, and five candidates: three good ones erring on different rows, one that
    collapses the target onto class 0, one that labels at random."""
    y = np.random.default_rng(0).integers(0, C, N)
    return y, {
        "collapsed": one_hot(np.zeros(N, int)),
        "good_a": one_hot(noisy(y, 0.10, 1)),
        "good_b": one_hot(noisy(y, 0.20, 2)),
        "good_c": one_hot(noisy(y, 0.30, 3)),
        "random": one_hot(np.random.default_rng(4).integers(0, C, N)),
    }


def evidence(probs: dict[str, np.ndarray], *scores: float) -> Evidence:
    """Reverse-validation ``scores`` in the order of ``probs`` on 40 held-out images, equal
    domain gaps."""
    return Evidence(dict(zip(probs, scores, strict=True)), dict.fromkeys(probs, 0.5), 40, probs)


def test_ensemble_agreement_picks_the_candidate_the_majority_agrees_with(
    candidates: tuple[np.ndarray, dict[str, np.ndarray]],
) -> None:
    y, probs = candidates
    # Reverse validation is fooled: the collapsed candidate scores best on the source.
    e = evidence(probs, 1.0, 0.7, 0.9, 0.7, 0.5)
    assert CHOOSERS["reverse_validation"](e) == "collapsed"
    a = agreement(probs)
    assert CHOOSERS["ensemble_agreement"](e) == "good_a" == max(a, key=a.__getitem__)
    assert a["collapsed"] < 0.5 and a["random"] < 0.5 < a["good_c"]
    # agreement_median_reverse_validation: reverse validation among the half not outvoted.
    assert CHOOSERS["agreement_median_reverse_validation"](e) == "good_b"
    # Its accuracy differs from its agreement by at most the role model's error.
    role = np.mean(list(probs.values()), axis=0).argmax(axis=1)
    err = float((role != y).mean())
    for name, p in probs.items():
        assert abs(float((p.argmax(axis=1) == y).mean()) - a[name]) <= err + 1e-12, name


def test_combinations_restrict_one_score_to_the_others_ties(
    candidates: tuple[np.ndarray, dict[str, np.ndarray]],
) -> None:
    # Reverse validation ties good_b and collapsed (40 holdout images, 1 SE = 0.06 at 0.85):
    # among them the higher agreement wins, good_b, though good_a agrees more.
    probs = candidates[1]
    e = evidence(probs, 0.85, 0.6, 0.84, 0.6, 0.6)
    assert CHOOSERS["reverse_validation_agreement"](e) == "good_b"
    # Only good_a agrees within one standard error of the best: reverse validation among it.
    assert CHOOSERS["agreement_reverse_validation"](e) == "good_a"
    same = {"collapsed": probs["good_a"], "good_a": probs["good_a"]}  # equal agreement
    e = evidence(same, 0.5, 0.9)
    assert CHOOSERS["agreement_reverse_validation"](e) == "good_a"
    assert CHOOSERS["ensemble_agreement"](e) == "good_a"  # ties: the better score


def test_soft_neighborhood_density_prefers_clustered_predictions() -> None:
    """Predictions in C tight clusters: each row's neighbourhood spreads evenly over its
    cluster's other N/C - 1 rows (entropy log(N/C - 1)); scattered ones have few close
    neighbours, a peaked neighbourhood, a lower score."""
    y = np.arange(N) % C
    clustered = soft_neighborhood_density(one_hot(y))
    assert clustered == pytest.approx(math.log(N / C - 1), abs=1e-6)
    scattered = np.random.default_rng(0).dirichlet(np.full(C, 0.3), N)
    assert soft_neighborhood_density(scattered) < clustered - 0.25
    e = evidence({"clustered": one_hot(y), "scattered": scattered}, 0.5, 0.9)
    assert CHOOSERS["soft_neighborhood_density"](e) == "clustered"


def test_entropy_prefers_confident_predictions() -> None:
    y = np.arange(N) % C
    assert mean_entropy(np.full((N, C), 1 / C)) == pytest.approx(math.log(C))
    assert mean_entropy(one_hot(y, 1.0)) == pytest.approx(0.0, abs=1e-9)
    e = evidence({"unsure": one_hot(y, 0.5), "sure": one_hot((y + 1) % C, 0.99)}, 0.9, 0.1)
    assert CHOOSERS["entropy"](e) == "sure"  # blind to being wrong


def test_coral_unless_dominated_keeps_coral_unless_both_signals_beat_it_beyond_noise(
    candidates: tuple[np.ndarray, dict[str, np.ndarray]],
) -> None:
    y, probs = candidates
    with_coral = {"coral": one_hot(noisy(y, 0.4, 5)), **probs}  # CORAL errs on 40 % of rows
    a = agreement(with_coral)
    assert a["good_a"] > a["good_b"] > a["coral"] + math.sqrt(a["coral"] * (1 - a["coral"]) / N)
    assert a["collapsed"] < a["coral"]
    # good_a agrees more, but its reverse-validation score is within one SE (0.07 at 0.7).
    e = evidence(with_coral, 0.70, 0.5, 0.75, 0.7, 0.7, 0.4)
    assert CHOOSERS["coral_unless_dominated"](e) == "coral"
    # collapsed scores far better, but the ensemble outvotes it: coral stays.
    e = evidence(with_coral, 0.70, 1.0, 0.72, 0.7, 0.7, 0.4)
    assert CHOOSERS["coral_unless_dominated"](e) == "coral"
    # good_a and good_b beat CORAL on both: reverse validation among them, good_b.
    e = evidence(with_coral, 0.70, 0.5, 0.85, 0.9, 0.7, 0.4)
    assert CHOOSERS["coral_unless_dominated"](e) == "good_b"
    # No CORAL candidate: the default chooser.
    e = evidence(probs, 1.0, 0.7, 0.9, 0.7, 0.5)
    assert CHOOSERS["coral_unless_dominated"](e) == "good_b"
