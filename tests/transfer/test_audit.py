"""The dataset audit on synthetic features (fast) and on real digits (backbone features)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.transfer.audit import AuditParams, audit, image_quality, pixel_stats
from app.transfer.data import TrainingData
from app.transfer.methods.base import frozen_features
from tests.factories import digit_images, photo


def _clusters(per_class: int = 30, classes: int = 3, dim: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * 1.5
    X = np.concatenate([c + rng.normal(size=(per_class, dim)) for c in centers])
    labels = [str(c) for c in range(classes) for _ in range(per_class)]
    keys = [f"{i:064x}" for i in range(len(labels))]
    splits = ["test" if i % 5 == 0 else "train" for i in range(len(labels))]
    return X, labels, keys, splits


def _kinds(report, kind):
    return [f for f in report.findings if f.kind == kind]


def test_clean_clusters_have_no_duplicate_leakage_or_mislabel() -> None:
    X, labels, keys, splits = _clusters()
    r = audit(keys=keys, labels=labels, splits=splits, features=X)
    assert r.counts["leakage"] == r.counts["near_duplicate"] == r.counts["exact_duplicate"] == 0
    assert r.counts["mislabel"] == 0
    assert r.counts["class_balance"] == 0
    assert "test split" in r.balance.note


def test_planted_exact_duplicate_under_two_labels_is_found() -> None:
    X, labels, keys, splits = _clusters()
    keys[7] = keys[40]
    labels[7], labels[40] = "0", "1"
    r = audit(keys=keys, labels=labels, splits=splits, features=X)
    (dup,) = _kinds(r, "exact_duplicate")
    assert set(dup.indices) == {7, 40}


def test_near_duplicate_across_train_and_test_is_leakage() -> None:
    X, labels, keys, splits = _clusters()
    X[1] = X[0] + 0.01  # 0 is test, 1 train
    X[3] = X[2] + 0.01  # both train: a near-duplicate, not leakage
    r = audit(keys=keys, labels=labels, splits=splits, features=X)
    (leak,) = _kinds(r, "leakage")
    assert set(leak.indices) == {0, 1}
    (dup,) = _kinds(r, "near_duplicate")
    assert set(dup.indices) == {2, 3}


def test_flipped_labels_are_found_with_their_true_label() -> None:
    X, labels, keys, splits = _clusters(per_class=40)
    flipped = {5: "1", 50: "2", 100: "0"}
    truth = {i: labels[i] for i in flipped}
    for i, wrong in flipped.items():
        labels[i] = wrong
    r = audit(keys=keys, labels=labels, splits=splits, features=X)
    found = {f.indices[0]: f.suggested_label for f in _kinds(r, "mislabel")}
    assert found == truth


def test_small_class_outlier_and_image_quality() -> None:
    X, labels, keys, splits = _clusters()
    X[10] = 40.0  # far from everything
    labels += ["rare"] * 2
    keys += ["a" * 64, "b" * 64]
    splits += ["train", "train"]
    X = np.concatenate([X, X[:2] + 0.5])
    widths, heights = [64] * len(labels), [64] * len(labels)
    widths[3] = 8
    stats: list[tuple[float, float] | None] = [(120.0, 40.0)] * len(labels)
    stats[4] = (255.0, 0.0)
    stats[6] = (5.0, 4.0)
    r = audit(
        keys=keys, labels=labels, splits=splits, features=X,
        widths=widths, heights=heights, stats=stats,
    )  # fmt: skip
    small = [f for f in _kinds(r, "class_balance") if "'rare'" in f.explanation]
    assert small and set(small[0].indices) == {90, 91}
    assert any(f.indices == (10,) for f in _kinds(r, "outlier"))
    quality = {f.indices[0]: f.explanation for f in _kinds(r, "image_quality")}
    assert set(quality) == {3, 4, 6}
    assert "tiny" in quality[3] and "blank" in quality[4] and "dark" in quality[6]


def test_pixel_stats_tell_blank_and_dark() -> None:
    mean, std, sharp = pixel_stats(Image.new("RGB", (300, 200), (0, 0, 0)))
    assert mean < 1 and std < 1 and sharp == 0.0


def test_a_blurred_photo_among_sharp_ones_is_flagged() -> None:
    """Crops of scikit-image photos; one of them under a heavy Gaussian blur."""
    from PIL import ImageFilter

    crops = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        full = Image.fromarray(photo(name)).convert("RGB")
        for k in range(4):
            crops.append(full.crop((40 * k, 30 * k, 40 * k + 200, 30 * k + 150)))
    crops[5] = crops[5].filter(ImageFilter.GaussianBlur(12))
    stats = [pixel_stats(c) for c in crops]
    report = audit(
        keys=[f"{i:064x}" for i in range(len(crops))], labels=[None] * len(crops),
        splits=["train"] * len(crops), features=np.eye(len(crops)), stats=stats,
    )  # fmt: skip
    (blurred,) = _kinds(report, "image_quality")
    assert blurred.indices == (5,) and "blurred" in blurred.explanation
    assert image_quality(None, None, stats[:5], AuditParams()) == []  # too few to judge


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str], np.ndarray]:
    """Real digits (20 per class, a low-resolution camera's) and efficientnet_lite0 features."""
    items = digit_images(20, smooth=True)
    arrays = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for _, b in items]
    labels = [label for label, _ in items]
    cache: Path = tmp_path_factory.mktemp("features")
    data = TrainingData.from_arrays(arrays, labels, feature_cache_dir=cache)
    _, X = frozen_features(data, data.samples)
    return [s.key for s in data.samples], labels, X


def test_flipped_labels_on_real_digits_are_found(digits) -> None:
    keys, labels, X = digits
    labels = list(labels)
    truth = {i: labels[i] for i in range(0, len(labels), 33)}  # 7 images, 7 classes
    for i in truth:
        labels[i] = str((int(labels[i]) + 3) % 10)
    r = audit(keys=keys, labels=labels, splits=["train"] * len(labels), features=X)
    found = {f.indices[0]: f.suggested_label for f in _kinds(r, "mislabel")}
    hits = [i for i in truth if found.get(i) == truth[i]]
    assert len(hits) >= 4, found  # found, with the right label suggested
    assert len(found) <= len(hits) + 3, found  # few false alarms among 200 images
    assert r.counts["leakage"] == r.counts["near_duplicate"] == 0
