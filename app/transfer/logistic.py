"""Softmax regression on frozen features: the linear probe's fit, shared by
``linear_probe``, ``finetune`` (its starting point) and domain adaptation (its heads).

Features are standardised, :math:`z = (x - \\mu) / \\sigma`, and the inverse
regularisation strength :math:`C` of

.. math:: \\min_{W,b} \\tfrac{1}{2}\\lVert W \\rVert^2 + C \\sum_i -\\log \\mathrm{softmax}(W z_i + b)_{y_i}

is chosen by stratified k-fold cross-validation on the training images.

With few images (:math:`N \\ll D`) the L2-regularised optimum lies in the row space of
:math:`Z` (representer theorem), so the fit runs exactly in the :math:`r = \\mathrm{rank}(Z)`
coordinates :math:`Z V_r` of its SVD and maps back as :math:`W = W_r V_r^\\top`: the same
solution, an order of magnitude faster. The scaler is folded into the served head:
:math:`W' = W / \\sigma`, :math:`b' = b - W' \\mu`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold

from app.transfer.heads import LinearHead

#: The inverse regularisation strengths cross-validation chooses among by default.
DEFAULT_CS = (0.001, 0.01, 0.1, 1.0)


def fit_logistic_head(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    Cs: Sequence[float] = DEFAULT_CS,
    max_iter: int = 300,
) -> LinearHead:
    """The head of features ``X`` ``(N, D)`` with labels ``y`` in ``[0, n_classes)``; ``C``
    from ``Cs`` by stratified k-fold CV (k = min(5, smallest class); the last ``C`` when
    there is one candidate or k < 2)."""
    mu = X.mean(axis=0)
    sigma = X.std(axis=0) + 1e-6
    Z = (X - mu) / sigma
    _, s, vt = np.linalg.svd(Z, full_matrices=False)
    basis = vt[s > s[0] * 1e-6].T  # (D, r)
    Zr = Z @ basis
    counts = np.bincount(y, minlength=n_classes)
    k = int(min(5, counts.min()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)  # sklearn 1.8 API transition notes
        if k >= 2 and len(Cs) > 1:
            clf: LogisticRegression | LogisticRegressionCV = LogisticRegressionCV(
                Cs=list(Cs),
                cv=StratifiedKFold(n_splits=k, shuffle=True, random_state=0),
                max_iter=max_iter,
                scoring="neg_log_loss",
            )
        else:
            clf = LogisticRegression(C=Cs[-1], max_iter=max_iter)
        clf.fit(Zr, y)
    coef, intercept = clf.coef_ @ basis.T, clf.intercept_
    if coef.shape[0] == 1:  # binary: sigmoid(z) == softmax([-z/2, z/2])[1]
        coef = np.vstack([-coef / 2, coef / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    weight = coef / sigma
    bias = intercept - weight @ mu
    return LinearHead(
        torch.from_numpy(weight.astype(np.float32)), torch.from_numpy(bias.astype(np.float32))
    )
