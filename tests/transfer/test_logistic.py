"""The linear probe's fit (``app.transfer.logistic``) on real data: scikit-learn's digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from app.transfer.logistic import fit_logistic_head


def _shots(y: np.ndarray, shots: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), shots, replace=False) for c in range(10)]
    )
    return train, np.setdiff1d(np.arange(len(y)), train)


def _accuracy(head: torch.nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    with torch.inference_mode():
        return float((head(torch.from_numpy(X)).numpy().argmax(1) == y).mean())


def test_global_scale_ignores_features_that_barely_vary_in_the_shots() -> None:
    """Digits' 64 pixels plus 256 features of tiny noise (a backbone's near-dead channels):
    per-feature standardisation lifts the noise to the pixels' weight, one global scale does
    not, so the global probe stays near the clean pixels' accuracy and well above the other."""
    digits = load_digits()
    rng = np.random.default_rng(0)
    pixels = digits.data.astype(np.float32)
    noisy = np.hstack([pixels, rng.normal(0, 1e-3, (len(pixels), 256)).astype(np.float32)])
    accs: dict[str, list[float]] = {"clean": [], "global": [], "per_feature": []}
    for seed in range(3):
        train, test = _shots(digits.target, 5, seed)
        y = digits.target[train]
        accs["clean"].append(
            _accuracy(fit_logistic_head(pixels[train], y, 10), pixels[test], digits.target[test])
        )
        for scaling in ("global", "per_feature"):
            head = fit_logistic_head(
                noisy[train], y, 10, scaling=scaling,  # type: ignore[arg-type]
                Cs=(0.1, 1.0, 10.0, 100.0) if scaling == "global" else (0.001, 0.01, 0.1, 1.0),
            )  # fmt: skip
            accs[scaling].append(_accuracy(head, noisy[test], digits.target[test]))
    clean, glob, per = (float(np.mean(accs[k])) for k in ("clean", "global", "per_feature"))
    assert glob >= clean - 0.03, accs
    assert glob >= per + 0.10, accs


@pytest.mark.parametrize(("scaling", "C"), [("global", 1.0), ("per_feature", 0.01)])
def test_served_head_is_the_regression_on_scaled_features(scaling: str, C: float) -> None:
    """The scaling folded into ``W' = W / s``, ``b' = b - W' mu`` gives the probabilities of the
    regression fit on the scaled features (one ``C`` from each scale's grid, no CV)."""
    digits = load_digits()
    train, test = _shots(digits.target, 20, 1)
    X = digits.data.astype(np.float64)
    X = X[:, X[train].std(axis=0) > 0]  # a pixel blank in every shot: s_j = 1e-6
    mu = X[train].mean(axis=0)
    if scaling == "global":
        s = np.linalg.norm(X[train] - mu, axis=1).mean() + 1e-6
    else:
        s = X[train].std(axis=0) + 1e-6
    reference = LogisticRegression(C=C, max_iter=5000, tol=1e-10)
    reference.fit((X[train] - mu) / s, digits.target[train])
    head = fit_logistic_head(
        X[train].astype(np.float32), digits.target[train], 10, Cs=[C], max_iter=5000,
        scaling=scaling,  # type: ignore[arg-type]
    )  # fmt: skip
    with torch.inference_mode():
        served = head(torch.from_numpy(X[test].astype(np.float32))).numpy()
    expected = reference.predict_proba((X[test] - mu) / s)
    assert np.abs(served - expected).max() < 2e-3
