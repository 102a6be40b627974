"""Honest evaluation: metrics, the validation protocol, and the majority baseline.

Protocol: when the data has a ``test`` split (labeled with known classes), the model is
trained on the rest and measured there (``"test-split"``). Otherwise every image is
predicted once by a model that never saw it, by stratified k-fold cross-validation with
``k = min(5, smallest class size)`` (``"k-fold"``). The majority-class baseline is measured
under exactly the same protocol, so negative transfer is visible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from sklearn.model_selection import StratifiedKFold, train_test_split

#: ``fit_predict(X_train, y_train, X_eval) -> probabilities (n_eval, n_classes)``
FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _per_label(names: Sequence[str], *prf_support: np.ndarray) -> dict[str, dict[str, float]]:
    precision, recall, f1, support = prf_support
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    }


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class P/R/F1/support and the confusion matrix.

    ``y_true`` and ``y_pred`` are integer class indices into ``classes``.
    """
    labels = np.arange(len(classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(np.mean(f1)),
        "per_class": _per_label(classes, precision, recall, f1, support),
        "confusion_matrix": {
            "labels": list(classes),
            "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        },
    }


def multilabel_metrics(
    Y_true: np.ndarray, Y_pred: np.ndarray, tags: Sequence[str]
) -> dict[str, Any]:
    """Micro- and macro-F1, exact-match (subset) accuracy and per-tag P/R/F1/support.

    ``Y_true`` and ``Y_pred`` are 0/1 indicator matrices ``(N, len(tags))``.
    """
    precision, recall, f1, support = precision_recall_fscore_support(
        Y_true, Y_pred, zero_division=0
    )
    _, _, micro_f1, _ = precision_recall_fscore_support(
        Y_true, Y_pred, average="micro", zero_division=0
    )
    return {
        "micro_f1": float(micro_f1),
        "macro_f1": float(np.mean(f1)),
        "exact_match": float(accuracy_score(Y_true, Y_pred)),
        "per_tag": _per_label(tags, precision, recall, f1, support),
    }


@dataclass(frozen=True)
class Protocol:
    """Which rows train and which rows are predicted, fold by fold."""

    name: str  # "test-split" | "k-fold"
    folds: list[tuple[np.ndarray, np.ndarray]]  # (train_idx, eval_idx) into the labeled rows
    n_train: int  # rows the final model is fit on

    @property
    def eval_idx(self) -> np.ndarray:
        return np.concatenate([e for _, e in self.folds])


def make_protocol(y: np.ndarray, is_test: np.ndarray, *, seed: int = 0) -> Protocol:
    """Pick the protocol for labels ``y`` (int) with the ``is_test`` mask."""
    train_idx = np.flatnonzero(~is_test)
    test_idx = np.flatnonzero(is_test)
    if len(test_idx):
        return Protocol("test-split", [(train_idx, test_idx)], n_train=len(train_idx))
    counts = np.bincount(y[train_idx])
    k = int(min(5, counts[counts > 0].min()))
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = [(train_idx[a], train_idx[b]) for a, b in skf.split(train_idx, y[train_idx])]
    return Protocol("k-fold", folds, n_train=len(train_idx))


def predict_under(
    protocol: Protocol, fit_predict: FitPredict, X: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """Out-of-sample class probabilities for ``protocol.eval_idx``, in that order."""
    return np.concatenate([fit_predict(X[tr], y[tr], X[ev]) for tr, ev in protocol.folds])


def reject_threshold(probs: np.ndarray, y_true: np.ndarray, keep: float = 0.95) -> float | None:
    """The default "none of the above" threshold: the ``1 - keep`` quantile of the top
    score over correctly classified validation images, so that ``keep`` of the right
    answers stay answered (the TPR-95 convention of out-of-distribution detection).
    None when no validation image was classified correctly."""
    top, correct = probs.max(axis=1), probs.argmax(axis=1) == y_true
    return float(np.quantile(top[correct], 1 - keep)) if correct.any() else None


def majority_fit_predict(n_classes: int) -> FitPredict:
    """The baseline: always the most frequent training class."""

    def fit_predict(X_train: np.ndarray, y_train: np.ndarray, X_eval: np.ndarray) -> np.ndarray:
        probs = np.zeros((len(X_eval), n_classes))
        probs[:, np.bincount(y_train, minlength=n_classes).argmax()] = 1.0
        return probs

    return fit_predict


def evaluate(
    fit_predict: FitPredict,
    X: np.ndarray,
    y: np.ndarray,
    is_test: np.ndarray,
    classes: Sequence[str],
    *,
    seed: int = 0,
    protocol: Protocol | None = None,
) -> dict[str, Any]:
    """Metrics of ``fit_predict`` and of the majority baseline under one protocol (by
    default :func:`make_protocol`'s), with the :func:`reject_threshold` as ``reject_below``."""
    protocol = protocol or make_protocol(y, is_test, seed=seed)
    y_eval = y[protocol.eval_idx]

    def measured(fp: FitPredict) -> tuple[dict[str, Any], np.ndarray]:
        probs = predict_under(protocol, fp, X, y)
        m = classification_metrics(y_eval, probs.argmax(axis=1), classes)
        m.update(
            validation=protocol.name,
            n_train=protocol.n_train,
            n_validation=len(y_eval),
        )
        if protocol.name == "k-fold":
            m["folds"] = len(protocol.folds)
        return m, probs

    metrics, probs = measured(fit_predict)
    metrics["reject_below"] = reject_threshold(probs, y_eval)
    baseline, _ = measured(majority_fit_predict(len(classes)))
    metrics["baseline"] = {"name": "majority_class", **baseline}
    return metrics


def stratified_holdout(
    idx: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ``(rest, carved)`` split of ``idx`` (labels ``y[idx]``), ``fraction`` of it
    carved (at least one image per class); carved is empty if a class is too small."""
    counts = np.bincount(y[idx])
    if len(idx) == 0 or counts[counts > 0].min() < 2:
        return idx, idx[:0]
    n_classes = int((counts > 0).sum())
    size = max(n_classes, round(fraction * len(idx)))
    if len(idx) - size < n_classes:
        return idx, idx[:0]
    rest, carved = train_test_split(idx, test_size=size, stratify=y[idx], random_state=seed)
    return np.sort(rest), np.sort(carved)


def stratified_folds(
    idx: np.ndarray, y: np.ndarray, k: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified ``(rest, held)`` folds of ``idx`` (labels ``y[idx]``): every row is held
    out once; ``min(k, smallest class size)`` folds, none if a class has fewer than two."""
    counts = np.bincount(y[idx])
    n_folds = int(min(k, counts[counts > 0].min())) if len(idx) else 0
    if n_folds < 2:
        return []
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(np.sort(idx[a]), np.sort(idx[b])) for a, b in skf.split(idx, y[idx])]
