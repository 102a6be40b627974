"""Reverse validation: score an adaptation without target labels.

Zhong et al., 2010, "Cross Validation Framework to Choose amongst Models and Datasets for
Transfer Learning". The labeled source is split into :math:`S_{tr}` and a held-out
:math:`S_{va}`. For a candidate (algorithm and hyperparameters) :math:`A`:

1. forward: :math:`f = A(S_{tr} \\to T)`, and the target's pseudo-labels :math:`\\hat y_T = f(T)`;
2. reverse: :math:`g = A(T, \\hat y_T \\to S_{tr})`, the same algorithm with the roles swapped;
3. score: the accuracy of :math:`g` on :math:`S_{va}`.

A candidate that labels the target well gives the reverse model good training labels, so
its score tracks the (unobservable) target accuracy; one that collapses the target onto a
few classes cannot come back to the source. No target label is read.

Choosing (:func:`choose`): the score is an accuracy on :math:`n = |S_{va}|` images, so
scores that differ by less than their sampling noise do not rank candidates (on an easy
source several candidates score 1.0). Among the candidates within ``TIE_STANDARD_ERRORS``
binomial standard errors of the best score :math:`s^*`,

.. math:: s \\ge s^* - k \\sqrt{s^* (1 - s^*) / n}

(only exact ties when :math:`s^* \\in \\{0, 1\\}`), the one whose source and target
features lie closest after adaptation (the smallest proxy A-distance, :mod:`.gap`) is
chosen (equal gaps: the better score): of two classifiers equally good on the source, the
one that sees the domains more alike has the smaller bound on its target error (Ben-David
et al. 2010).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.transfer.domain.base import Adapted, Algorithm, Task, accuracy

#: Scores within this many standard errors of the best tie (chosen on bench/domain_adaptation.py).
TIE_STANDARD_ERRORS = 1.0


@dataclass
class ReverseValidation:
    score: float  # accuracy of the reverse model on the source holdout
    source_accuracy: float  # accuracy of the forward model on the same holdout
    forward: Adapted  # the forward model (trained on the source minus the holdout)
    target_probs: np.ndarray  # the forward model's (N_t, C) on the target: its pseudo-labels


def reverse_validate(
    algorithm: Algorithm,
    task: Task,
    holdout: np.ndarray,
    y_holdout: np.ndarray,
    config: dict[str, Any],
    seed: int,
    tick: Callable[[], None] = lambda: None,
) -> ReverseValidation:
    """Score ``algorithm`` with ``config`` on ``task`` (whose source is :math:`S_{tr}`) by
    its reverse model's accuracy on the source ``holdout`` rows :math:`S_{va}`."""
    forward = algorithm(task, config, seed, tick)
    target_probs = forward.predict(task.pool, task.target)
    pseudo = target_probs.argmax(axis=1)
    swapped = Task(task.pool, task.target, pseudo, task.source, task.n_classes)
    reverse = algorithm(swapped, config, seed, tick)
    return ReverseValidation(
        score=accuracy(reverse, task.pool, holdout, y_holdout),
        source_accuracy=accuracy(forward, task.pool, holdout, y_holdout),
        forward=forward,
        target_probs=target_probs,
    )


def standard_error(accuracy: float, n: int) -> float:
    """The binomial standard error :math:`\\sqrt{s(1-s)/n}` of an accuracy ``s`` on ``n`` images."""
    return math.sqrt(accuracy * (1.0 - accuracy) / max(n, 1))


def tied(scores: Mapping[str, float], n_holdout: int, k: float = TIE_STANDARD_ERRORS) -> list[str]:
    """The candidates whose score is within ``k`` standard errors of the best, in order."""
    best = max(scores.values())
    margin = k * standard_error(best, n_holdout)
    return [name for name, s in scores.items() if s >= best - margin - 1e-9]


def choose(
    scores: Mapping[str, float],
    gaps: Mapping[str, float],
    n_holdout: int,
    k: float = TIE_STANDARD_ERRORS,
) -> str:
    """The candidate of the best score, ties (:func:`tied`) broken by the smallest domain gap
    after adaptation ``gaps``, then by the better score, then by order."""
    return min(tied(scores, n_holdout, k), key=lambda name: (gaps[name], -scores[name]))
