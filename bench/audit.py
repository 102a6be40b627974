"""How well the dataset audit finds planted label errors and train/test leakage.

On data sets of :mod:`bench.suite_data` (frozen ``efficientnet_lite0`` features, cached):
the training pool (40 images per class) plus the fixed test images; ``--near-dups`` pool
images are re-encoded as JPEG (quality 95) and added to the test split under their label
(planted leakage); 5 % and 10 % of the pool get a random wrong label. The audit
(:func:`app.transfer.audit.audit`) then runs as ``GET /v1/projects/{id}/audit`` does.

Printed per data set and noise rate: precision and recall of ``mislabel`` findings
(flagged images that were flipped / flipped images flagged) and of ``leakage`` findings
(findings holding a planted pair / planted pairs inside one finding), and the test
accuracy (original test images, true labels) of a logistic-regression probe trained on the
noisy pool, on the pool less the flagged images, and on the pool with the flagged images
relabeled as suggested; ``clean`` is the probe on the true labels.

    python -m bench.audit [--datasets uci-digits mnist shapes] [--test 10] [--near-dups 10]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer

from app.transfer.audit import audit
from app.transfer.data import TrainingData
from app.transfer.methods.base import frozen_features
from bench.suite_data import DATASETS


def _jpeg(a: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=95)
    return np.asarray(Image.open(buf).convert("RGB"))


def _probe_accuracy(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray) -> float:
    probe = make_pipeline(
        Normalizer(), PCA(min(128, len(X) - 1), random_state=0),
        LogisticRegression(C=10, max_iter=1000),
    )  # fmt: skip
    probe.fit(X, y)
    return float((probe.predict(X_test) == y_test).mean())


def run(name: str, n_test: int, n_dups: int, rates: list[float], cache: Path) -> list[str]:
    d = DATASETS[name](n_test)
    rng = np.random.default_rng(0)
    dup_src = rng.choice(d.pool, n_dups, replace=False)
    images = [d.images[i] for i in d.pool] + [d.images[i] for i in d.test]
    images += [_jpeg(d.images[i]) for i in dup_src]
    y_true = np.concatenate([d.y[d.pool], d.y[d.test], d.y[dup_src]])
    n_pool, n_test_imgs = len(d.pool), len(d.test)
    splits = ["train"] * n_pool + ["test"] * (n_test_imgs + n_dups)
    pool_pos = {int(i): j for j, i in enumerate(d.pool)}
    planted = [(pool_pos[int(i)], n_pool + n_test_imgs + k) for k, i in enumerate(dup_src)]
    data = TrainingData.from_arrays(
        images, [d.classes[c] for c in y_true], splits, feature_cache_dir=cache
    )
    _, X = frozen_features(data, data.samples)
    keys = [s.key for s in data.samples]
    test_rows = np.arange(n_pool, n_pool + n_test_imgs)
    clean = _probe_accuracy(X[:n_pool], y_true[:n_pool], X[test_rows], y_true[test_rows])
    lines = []
    for rate in rates:
        y = y_true.copy()
        flipped = rng.choice(n_pool, round(rate * n_pool), replace=False)
        for i in flipped:
            y[i] = rng.choice([c for c in range(len(d.classes)) if c != y[i]])
        t = time.perf_counter()
        report = audit(keys=keys, labels=[d.classes[c] for c in y], splits=splits, features=X)
        seconds = time.perf_counter() - t
        flagged = {f.indices[0]: f.suggested_label for f in report.findings if f.kind == "mislabel"}
        hit = set(flagged) & {int(i) for i in flipped}
        m_prec = len(hit) / max(1, len(flagged))
        m_rec = len(hit) / max(1, len(flipped))
        leaks = [set(f.indices) for f in report.findings if f.kind == "leakage"]
        found = [p for p in planted if any(set(p) <= g for g in leaks)]
        l_prec = sum(any(set(p) <= g for p in planted) for g in leaks) / max(1, len(leaks))
        l_rec = len(found) / max(1, len(planted))
        train = np.arange(n_pool)
        noisy = _probe_accuracy(X[train], y[train], X[test_rows], y_true[test_rows])
        keep = np.array([i for i in train if i not in flagged])
        removed = _probe_accuracy(X[keep], y[keep], X[test_rows], y_true[test_rows])
        fixed_y = y.copy()
        for i, label in flagged.items():
            if i < n_pool and label is not None:
                fixed_y[i] = d.classes.index(label)
        fixed = _probe_accuracy(X[train], fixed_y[train], X[test_rows], y_true[test_rows])
        lines.append(
            f"| {name} | {rate:.0%} ({len(flipped)}/{n_pool}) | {m_prec:.2f} | {m_rec:.2f} "
            f"| {l_prec:.2f} ({len(leaks)}) | {l_rec:.2f} ({len(found)}/{len(planted)}) "
            f"| {clean:.3f} | {noisy:.3f} | {removed:.3f} | {fixed:.3f} | {seconds:.1f} |"
        )
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["uci-digits", "mnist", "shapes"])
    parser.add_argument("--test", type=int, default=10, help="test images per class")
    parser.add_argument("--near-dups", type=int, default=10)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.05, 0.10])
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "dovecote-suite"
    )
    args = parser.parse_args()
    print(
        "| data set | flipped | mislabel precision | mislabel recall | leakage precision "
        "(findings) | leakage recall (pairs) | probe acc. clean | noisy | flagged removed "
        "| flagged relabeled | audit s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.datasets:
        run(name, args.test, args.near_dups, args.rates, args.cache / "features")


if __name__ == "__main__":
    main()
