"""``linear_probe``: frozen pretrained features + multinomial logistic regression.

The "try first" method (Kornblith et al., 2019, "Do Better ImageNet Models Transfer
Better?"). Features are standardised, :math:`z = (x - \\mu) / \\sigma`, and the inverse
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
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold

from app.transfer.heads import Head, LinearHead
from app.transfer.methods import register_method
from app.transfer.methods.base import MAX_GRID, FeatureMethod, MethodParams


class LinearProbeParams(MethodParams):
    Cs: list[Annotated[float, Field(gt=0, le=1e6)]] = Field(
        default_factory=lambda: [0.001, 0.01, 0.1, 1.0],
        min_length=1,
        max_length=MAX_GRID,
        description="Candidate inverse regularisation strengths, chosen by inner CV.",
    )
    max_iter: int = Field(300, ge=10, le=10_000)


@register_method
class LinearProbe(FeatureMethod):
    name = "linear_probe"
    summary = "Frozen pretrained features + logistic regression (the default: try first)."
    Params = LinearProbeParams
    example_params: ClassVar[dict[str, Any]] = {"max_iter": 300}

    def fit_head(
        self, X: np.ndarray, y: np.ndarray, n_classes: int, params: LinearProbeParams
    ) -> Head:  # type: ignore[override]
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
            if k >= 2 and len(params.Cs) > 1:
                clf: LogisticRegression | LogisticRegressionCV = LogisticRegressionCV(
                    Cs=params.Cs,
                    cv=StratifiedKFold(n_splits=k, shuffle=True, random_state=0),
                    max_iter=params.max_iter,
                    scoring="neg_log_loss",
                )
            else:
                clf = LogisticRegression(C=params.Cs[-1], max_iter=params.max_iter)
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
