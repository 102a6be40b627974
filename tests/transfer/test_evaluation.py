from __future__ import annotations

import numpy as np

from app.transfer.evaluation import classification_metrics, evaluate, make_protocol


def test_metrics_match_hand_computed_values() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == 4 / 6
    assert m["per_class"]["b"] == {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    assert m["confusion_matrix"] == {
        "labels": ["a", "b", "c"],
        "matrix": [[1, 1, 0], [0, 2, 0], [1, 0, 1]],
    }
    f1_a, f1_c = 0.5, 2 / 3
    assert np.isclose(m["macro_f1"], (f1_a + 0.8 + f1_c) / 3)


def test_kfold_uses_smallest_class_and_predicts_each_image_once() -> None:
    y = np.array([0] * 10 + [1] * 3)
    protocol = make_protocol(y, np.zeros(13, bool))
    assert protocol.name == "k-fold" and len(protocol.folds) == 3
    assert sorted(protocol.eval_idx.tolist()) == list(range(13))
    for train, ev in protocol.folds:
        assert not set(train) & set(ev)


def test_test_split_is_never_trained_on() -> None:
    y = np.array([0, 1, 0, 1, 0, 1])
    is_test = np.array([False, False, False, False, True, True])
    protocol = make_protocol(y, is_test)
    assert protocol.name == "test-split"
    ((train, ev),) = protocol.folds
    assert set(ev) == {4, 5} and set(train) == {0, 1, 2, 3}


def test_evaluate_reports_majority_baseline_under_same_protocol() -> None:
    rng = np.random.default_rng(0)
    y = np.array([0] * 12 + [1] * 4)
    X = rng.normal(size=(16, 3)) + y[:, None] * 5.0  # separable

    def nearest_mean(X_tr, y_tr, X_ev):  # type: ignore[no-untyped-def]
        means = np.stack([X_tr[y_tr == c].mean(0) for c in (0, 1)])
        d = ((X_ev[:, None, :] - means[None]) ** 2).sum(-1)
        return np.eye(2)[d.argmin(1)]

    m = evaluate(nearest_mean, X, y, np.zeros(16, bool), ["a", "b"])
    assert m["accuracy"] == 1.0 and m["validation"] == "k-fold" and m["folds"] == 4
    assert m["baseline"]["accuracy"] == 0.75 and m["baseline"]["validation"] == "k-fold"
    assert m["baseline"]["per_class"]["b"]["recall"] == 0.0
    assert m["n_train"] == 16 and m["n_validation"] == 16
