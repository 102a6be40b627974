"""CORAL: align the source features' first and second moments to the target's.

Sun, Feng & Saenko, 2016, "Return of Frustratingly Easy Domain Adaptation". With the
regularised covariances :math:`C_s = \\mathrm{cov}(X_s) + r\\bar\\sigma^2_s I` and
:math:`C_t = \\mathrm{cov}(X_t) + r\\bar\\sigma^2_t I` (:math:`\\bar\\sigma^2` the mean
variance, so ``regularization`` :math:`r` is scale-free), each source feature becomes

.. math:: \\tilde x = (x - \\mu_s)\\, C_s^{-1/2} C_t^{1/2} + \\mu_t,

whitened with the source statistics and re-coloured with the target's (the paper aligns
covariances; the means are moved too). A linear classifier is trained on :math:`\\tilde X_s`
and applied to the target features as they are, so the served head is an ordinary
linear head on frozen features.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from app.transfer.domain.base import Adapted, Task, fit_linear


def _times_power(X: np.ndarray, Z: np.ndarray, regularization: float, power: float) -> np.ndarray:
    """:math:`X C^p` for :math:`C = \\mathrm{cov}(Z) + \\epsilon I`, :math:`\\epsilon = r\\bar\\sigma^2`.

    With the thin SVD :math:`Z - \\bar Z = U S V^\\top` (rank :math:`k \\le n \\ll D`), the
    eigenvalues are :math:`\\lambda = S^2 / (n - 1)` on :math:`V` and :math:`\\epsilon` on its
    complement, so :math:`X C^p = (X V)\\,\\mathrm{diag}((\\lambda + \\epsilon)^p - \\epsilon^p)\\,V^\\top
    + \\epsilon^p X`: :math:`O(n^2 D)`, never a :math:`D \\times D` matrix.
    """
    _, s, vt = np.linalg.svd(Z - Z.mean(axis=0), full_matrices=False)
    lam = s**2 / max(len(Z) - 1, 1)
    eps = max(regularization * float(lam.sum()) / Z.shape[1], 1e-12)
    return ((X @ vt.T) * ((lam + eps) ** power - eps**power)) @ vt + eps**power * X


def coral_transform(Xs: np.ndarray, Xt: np.ndarray, regularization: float) -> np.ndarray:
    """``Xs (n, D)`` re-coloured to the mean and covariance of ``Xt (m, D)``."""
    Xs64, Xt64 = Xs.astype(np.float64), Xt.astype(np.float64)
    white = _times_power(Xs64 - Xs64.mean(axis=0), Xs64, regularization, -0.5)
    return (_times_power(white, Xt64, regularization, 0.5) + Xt64.mean(axis=0)).astype(np.float32)


def coral(task: Task, config: dict[str, Any], seed: int, tick: Callable[[], None]) -> Adapted:
    Xt = task.target_feats
    Xs = coral_transform(task.source_feats, Xt, config["regularization"])
    return Adapted(fit_linear(Xs, task.y, task.n_classes, config["C"]), lambda: (Xs, Xt))
