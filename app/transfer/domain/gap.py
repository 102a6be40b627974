"""The domain gap: proxy A-distance from a linear domain classifier's held-out error.

Ben-David et al., 2007/2010: the :math:`\\mathcal H`-divergence between two feature
distributions is approximated by training a classifier to tell source from target and
measuring its error :math:`\\epsilon` on held-out rows,

.. math:: \\hat d_A = 2\\,(1 - 2\\epsilon) \\in [0, 2]

(0: indistinguishable, 2: perfectly separable). For linear classifiers this is the
discrepancy distance that bounds target error by source error plus the gap. Here the
domains are balanced by subsampling, split in halves (stratified), and :math:`\\epsilon` is
the lowest held-out error of a standardised logistic regression over a small grid of
:math:`C` (as Ganin et al. 2016 select the SVM's :math:`C`).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

_CS = (0.001, 0.01, 0.1, 1.0)


def proxy_a_distance(Xs: np.ndarray, Xt: np.ndarray, *, seed: int = 0) -> float:
    """:math:`2(1 - 2\\epsilon)` for source rows ``Xs (n, D)`` and target rows ``Xt (m, D)``;
    needs at least 2 rows of each."""
    rng = np.random.default_rng(seed)
    n = min(len(Xs), len(Xt))
    X = np.concatenate([Xs[rng.permutation(len(Xs))[:n]], Xt[rng.permutation(len(Xt))[:n]]])
    d = np.repeat([1, 0], n)
    X_tr, X_ev, d_tr, d_ev = train_test_split(X, d, test_size=0.5, stratify=d, random_state=seed)
    mu, sigma = X_tr.mean(axis=0), X_tr.std(axis=0) + 1e-6
    errors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for C in _CS:
            clf = LogisticRegression(C=C, max_iter=300).fit((X_tr - mu) / sigma, d_tr)
            errors.append(float((clf.predict((X_ev - mu) / sigma) != d_ev).mean()))
    return float(np.clip(2.0 * (1.0 - 2.0 * min(errors)), 0.0, 2.0))
