"""Softmax regression on frozen features: the linear probe's fit, shared by
``linear_probe``, ``finetune`` (its starting point) and domain adaptation (its heads).

Features are centred and scaled, :math:`z = (x - \\mu) / s`, and the inverse
regularisation strength :math:`C` of

.. math:: \\min_{W,b} \\tfrac{1}{2}\\lVert W \\rVert^2 + C \\sum_i -\\log \\mathrm{softmax}(W z_i + b)_{y_i}

is chosen by stratified k-fold cross-validation on the training images. The scale is
``scaling="global"`` (the default): one number for every feature, the mean row norm
:math:`s = \\tfrac1N \\sum_i \\lVert x_i - \\mu \\rVert`, so that rows have unit norm on
average and the penalty keeps the backbone's own geometry; or ``"per_feature"``,
:math:`s_j = \\sigma_j`, the standard deviation of each feature. With a few images per class
:math:`\\sigma_j` is estimated from a handful of rows, and dividing by it lifts the
features that barely vary in the shots to the weight of the informative ones: on the
transfer suite (``bench.probe_scaling``: seven data sets, three seeds) the global scale is
+0.18, +0.08 and +0.02 better at 1, 5 and 20 images per class on efficientnet_lite0 and
lite2, and +0.12, -0.00, -0.00 on mobilenetv2_100. Domain adaptation keeps
``"per_feature"``: its ``C`` and its suite were measured on that scale.

With few images (:math:`N \\ll D`) the L2-regularised optimum lies in the row space of
:math:`Z` (representer theorem), so the fit runs exactly in the :math:`r = \\mathrm{rank}(Z)`
coordinates :math:`Z V_r` of its SVD and maps back as :math:`W = W_r V_r^\\top`: the same
solution, an order of magnitude faster. The scaling is folded into the served head:
:math:`W' = W / s`, :math:`b' = b - W' \\mu`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold

from app.transfer.heads import LinearHead

#: The inverse regularisation strengths cross-validation chooses among by default (for
#: ``scaling="global"``: rows of unit norm on average).
DEFAULT_CS = (0.1, 1.0, 10.0, 100.0)

Scaling = Literal["global", "per_feature"]


def fit_logistic_head(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    Cs: Sequence[float] = DEFAULT_CS,
    max_iter: int = 300,
    scaling: Scaling = "global",
) -> LinearHead:
    """The head of features ``X`` ``(N, D)`` with labels ``y`` in ``[0, n_classes)``; ``C``
    from ``Cs`` by stratified k-fold CV (k = min(5, smallest class); the last ``C`` when
    there is one candidate or k < 2); ``scaling`` as in the module's docstring."""
    mu = X.mean(axis=0)
    centred = X - mu
    spread = np.linalg.norm(centred, axis=1).mean() if scaling == "global" else X.std(axis=0)
    sigma = spread + 1e-6  # a scalar or (D,): both broadcast below and fold into W
    Z = centred / sigma
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
