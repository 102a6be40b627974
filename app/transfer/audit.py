"""Dataset audit: what in a project's images makes its metrics lie.

Pure: arrays in (per-image sha256, labels, splits, cached backbone features, sizes and a
pixel statistic), findings out; no HTTP, no database. Usable from a notebook::

    report = audit(keys=shas, labels=labels, splits=splits, features=X)
    for f in report.findings: print(f.kind, f.indices, f.explanation)

Kinds of finding (:data:`KINDS`):

``exact_duplicate``
    The same bytes (same sha256) under two or more different labels.
``near_duplicate`` / ``leakage``
    Images whose features are nearly the same (cosine similarity of the centered features
    above ``near_duplicate_similarity``), grouped by connected components of that graph. A
    group with images in the ``test`` split and outside it is ``leakage``: the test images
    were seen in training, so the test metrics are inflated.
``mislabel``
    Confident learning (Northcutt, Jiang & Chuang, "Confident Learning: Estimating
    Uncertainty in Dataset Labels", JAIR 2021) on out-of-fold probabilities of a
    logistic-regression probe; with the suggested label.
``class_balance``
    Classes under ``min_class_count`` images, and the imbalance ratio when it is large.
``outlier``
    Images far from every class centroid in feature space.
``image_quality``
    Tiny, nearly blank, very dark or blurred images.
"""

from __future__ import annotations

import io
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

Kind = Literal[
    "exact_duplicate",
    "near_duplicate",
    "leakage",
    "mislabel",
    "class_balance",
    "outlier",
    "image_quality",
]
KINDS: tuple[str, ...] = get_args(Kind)


@dataclass(frozen=True)
class AuditParams:
    """Thresholds of the audit (defaults measured in ``python -m bench.audit``)."""

    #: cosine similarity of centered, L2-normalised features at or above which two images
    #: are near-duplicates
    near_duplicate_similarity: float = 0.95
    #: folds of the out-of-fold probe (fewer when a class has fewer images)
    folds: int = 5
    #: inverse regularisation of the logistic-regression probe
    probe_c: float = 10.0
    #: a class with fewer labeled images than this is reported
    min_class_count: int = 10
    #: largest / smallest class at or above which the imbalance is reported
    max_imbalance_ratio: float = 5.0
    #: robust z-score of the distance to the nearest class centroid above which an image
    #: is an outlier
    outlier_z: float = 6.0
    #: images whose shorter side is below this many pixels are tiny
    min_side: int = 16
    #: grey-level standard deviation (0-255) under which an image is nearly blank
    blank_std: float = 3.0
    #: mean grey level (0-255) under which an image is very dark
    dark_mean: float = 20.0
    #: an image whose sharpness (:func:`sharpness`) is under this fraction of the median
    #: sharpness of the audited images is blurred (needs ``blur_min_images`` of them);
    #: 1/20 flagged 43-100 % of heavily blurred images and 0-2 % of the originals on six of
    #: the suite's seven data sets, none of the 8x8 scans already blurry by nature
    #: (``python -m bench.blur``)
    blur_ratio: float = 0.05
    blur_min_images: int = 10
    #: most findings of one kind that are listed (the summary still counts them all)
    max_findings_per_kind: int = 500
    seed: int = 0


@dataclass(frozen=True)
class Finding:
    """One thing to look at: ``indices`` are positions in the audited arrays."""

    kind: str
    indices: tuple[int, ...]
    explanation: str
    suggested_label: str | None = None
    score: float | None = None


@dataclass(frozen=True)
class ClassBalance:
    """Labeled images per class (training side, i.e. not ``test``, and ``test``), the
    imbalance ratio largest/smallest (training side) and what validation can say."""

    train_counts: dict[str, int]
    test_counts: dict[str, int]
    imbalance_ratio: float | None
    note: str


@dataclass
class AuditReport:
    findings: list[Finding]
    counts: dict[str, int]
    balance: ClassBalance
    truncated: dict[str, int] = field(default_factory=dict)
    #: ``test`` images in a ``leakage`` finding (a near-duplicate of a training image):
    #: test metrics count them as unseen although training saw their twin
    leaking_test_images: int = 0


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian relative to the image's variance,
    ``var(∇²I) / var(I)`` with ``∇²I = I(x−1,y) + I(x+1,y) + I(x,y−1) + I(x,y+1) − 4 I(x,y)``
    on the interior pixels of a grey image ``I``: blur removes the high frequencies the
    Laplacian keeps, and dividing by ``var(I)`` makes it independent of contrast (white
    noise: 20; a sharp photo: ~0.1-3; the same heavily blurred: ~0.001-0.02). 0 for a
    flat image."""
    a = np.asarray(grey, dtype=np.float64)
    if a.shape[0] < 3 or a.shape[1] < 3 or a.var() < 1e-9:
        return 0.0
    lap = a[1:-1, :-2] + a[1:-1, 2:] + a[:-2, 1:-1] + a[2:, 1:-1] - 4.0 * a[1:-1, 1:-1]
    return float(lap.var() / a.var())


def pixel_stats(image: object) -> tuple[float, float, float]:
    """(mean, standard deviation) of the grey levels 0-255 of a PIL image on a 64 px
    thumbnail (cheap, and enough to tell a blank or black frame), and its
    :func:`sharpness` at most 256 px on the long side (blur needs the detail)."""
    from PIL import Image

    assert isinstance(image, Image.Image)
    grey = image.convert("L")
    grey.thumbnail((256, 256))
    thumb = grey.copy()
    thumb.thumbnail((64, 64))
    a = np.asarray(thumb, dtype=np.float32)
    return float(a.mean()), float(a.std()), sharpness(np.asarray(grey))


def pixel_stats_of_bytes(data: bytes) -> tuple[float, float, float]:
    """:func:`pixel_stats` of encoded bytes (JPEG decoded at a reduced DCT scale)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        if img.format == "JPEG":
            img.draft("L", (256, 256))
        return pixel_stats(img)


def _unit(features: np.ndarray) -> np.ndarray:
    """Centered (minus the mean feature) and L2-normalised rows: post-ReLU backbone
    features are all non-negative, so raw cosines crowd near 1; centering spreads them."""
    X = np.asarray(features, dtype=np.float64)
    if not len(X):
        return X
    X = X - X.mean(axis=0, keepdims=True)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def exact_duplicates(keys: Sequence[str], labels: Sequence[str | None]) -> list[Finding]:
    """Same sha256 under two or more different (non-null) labels."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        groups[k].append(i)
    out = []
    for idx in groups.values():
        distinct = sorted({labels[i] for i in idx if labels[i] is not None})  # type: ignore[type-var]
        if len(idx) > 1 and len(distinct) > 1:
            out.append(
                Finding(
                    "exact_duplicate",
                    tuple(idx),
                    f"The same image bytes are labeled {', '.join(map(repr, distinct))}: "
                    "keep one label.",
                )
            )
    return out


def near_duplicate_groups(
    features: np.ndarray, keys: Sequence[str], threshold: float
) -> list[tuple[list[int], float]]:
    """Connected components (size ≥ 2) of the graph with an edge where
    ``cos(x̃_i, x̃_j) ≥ threshold``, x̃ being the centered, normalised features (:func:`_unit`),
    and ``keys`` differ (identical bytes are exact duplicates). Returns (members, the
    group's highest similarity). O(n²) similarities, in blocks of 512 rows."""
    n = len(features)
    if n < 2:
        return []
    U = _unit(features)
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    best: dict[int, float] = {}
    edges: list[tuple[int, int, float]] = []
    for start in range(0, n, 512):
        S = U[start : start + 512] @ U.T
        rows, cols = np.nonzero(threshold <= S)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if c > i and keys[i] != keys[c]:
                edges.append((i, c, float(S[r, c])))
    for i, j, _s in edges:
        a, b = find(i), find(j)
        if a != b:
            parent[a] = b
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        members[find(i)].append(i)
    for i, _j, s in edges:
        root = find(i)
        best[root] = max(best.get(root, -1.0), s)
    return [(m, best[r]) for r, m in members.items() if len(m) > 1]


def near_duplicates(
    features: np.ndarray,
    keys: Sequence[str],
    labels: Sequence[str | None],
    splits: Sequence[str],
    threshold: float,
) -> list[Finding]:
    """:func:`near_duplicate_groups` as findings: ``leakage`` when a group has images in the
    ``test`` split and outside it, else ``near_duplicate``; strongest first."""
    out = []
    for idx, sim in sorted(near_duplicate_groups(features, keys, threshold), key=lambda g: -g[1]):
        in_test = [i for i in idx if splits[i] == "test"]
        distinct = sorted({labels[i] for i in idx if labels[i] is not None})  # type: ignore[type-var]
        conflict = f"; labeled {', '.join(map(repr, distinct))}" if len(distinct) > 1 else ""
        if in_test and len(in_test) < len(idx):
            out.append(
                Finding(
                    "leakage",
                    tuple(idx),
                    f"{len(in_test)} test image(s) nearly identical (similarity {sim:.3f}) to "
                    f"{len(idx) - len(in_test)} training image(s){conflict}: the test metrics "
                    "are inflated; keep them in one split.",
                    score=sim,
                )
            )
        else:
            out.append(
                Finding(
                    "near_duplicate",
                    tuple(idx),
                    f"{len(idx)} nearly identical images (similarity {sim:.3f}){conflict}: "
                    "they count as one example.",
                    score=sim,
                )
            )
    return out


def out_of_fold_probabilities(
    features: np.ndarray, y: np.ndarray, n_classes: int, *, folds: int, c: float, seed: int
) -> np.ndarray:
    """``P[i, j]``: probability of class j for image i from a probe that never saw image i
    (stratified k-fold, ``k = min(folds, smallest class count)``; every class needs 2
    images). The probe: L2-normalised features, PCA to ``min(128, n_train − 1, D)``
    dimensions, multinomial logistic regression with inverse regularisation ``c``. Chosen on
    520 uci-digits images (efficientnet_lite0) with 30 flipped labels: mislabel precision
    0.88 / recall 0.70 in 13 s, against 0.63 / 0.80 for standardised features and 91 s for
    all 1280 dimensions (one run on 2 shared cores; ``python -m bench.audit`` measures it)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    k = int(min(folds, np.bincount(y, minlength=n_classes).min()))
    P = np.zeros((len(y), n_classes))
    for tr, ev in StratifiedKFold(k, shuffle=True, random_state=seed).split(features, y):
        dims = min(128, len(tr) - 1, features.shape[1])
        probe = make_pipeline(
            Normalizer(), PCA(dims, random_state=seed), LogisticRegression(C=c, max_iter=1000)
        )
        probe.fit(features[tr], y[tr])
        P[np.ix_(ev, probe.classes_)] = probe.predict_proba(features[ev])
    return P


def confident_learning(P: np.ndarray, y: np.ndarray) -> list[tuple[int, int, float]]:
    """Likely label errors from out-of-fold probabilities ``P`` (n × K) and given labels
    ``y``, by confident learning (Northcutt et al. 2021):

    - per-class threshold ``t_j = mean_{i: y_i = j} P[i, j]`` (the probe's average
      self-confidence on class j);
    - image i is counted in the confident joint at ``(y_i, k)`` with
      ``k = argmax_{j: P[i, j] ≥ t_j} P[i, j]``;
    - it is flagged when ``k ≠ y_i`` *and* ``argmax_j P[i, j] ≠ y_i`` (cleanlab's
      ``filter_by="both"``), i.e. its given label is below threshold or beaten by a class
      the probe is confident in, and the probe's best guess disagrees too.

    Returns (i, suggested class k, margin ``P[i, k] − P[i, y_i]``), largest margin first.
    """
    K = P.shape[1]
    t = np.array([P[y == j, j].mean() if np.any(y == j) else 1.0 for j in range(K)])
    above = t[None, :] <= P
    masked = np.where(above, P, -1.0)
    k = masked.argmax(axis=1)
    has = above.any(axis=1)
    flagged = has & (k != y) & (P.argmax(axis=1) != y)
    out = [(int(i), int(k[i]), float(P[i, k[i]] - P[i, y[i]])) for i in np.flatnonzero(flagged)]
    return sorted(out, key=lambda r: -r[2])


def mislabels(
    features: np.ndarray, labels: Sequence[str | None], params: AuditParams
) -> list[Finding]:
    """:func:`confident_learning` over the labeled images of classes with ≥ 2 images."""
    counts = Counter(label for label in labels if label is not None)
    classes = sorted(c for c, m in counts.items() if m >= 2)
    if len(classes) < 2:
        return []
    pos = {c: j for j, c in enumerate(classes)}
    idx = np.array([i for i, label in enumerate(labels) if label in pos], dtype=np.int64)
    y = np.array([pos[labels[i]] for i in idx], dtype=np.int64)  # type: ignore[index]
    P = out_of_fold_probabilities(
        np.asarray(features)[idx], y, len(classes),
        folds=params.folds, c=params.probe_c, seed=params.seed,
    )  # fmt: skip
    return [
        Finding(
            "mislabel",
            (int(idx[i]),),
            f"Labeled {classes[y[i]]!r} but looks like {classes[k]!r} "
            f"(out-of-fold probe: {P[i, k]:.2f} vs {P[i, y[i]]:.2f}).",
            suggested_label=classes[k],
            score=margin,
        )
        for i, k, margin in confident_learning(P, y)
    ]


def class_balance(
    labels: Sequence[str | None], splits: Sequence[str], params: AuditParams
) -> tuple[ClassBalance, list[Finding]]:
    """Counts per class; a finding per class under ``min_class_count`` (training side) and
    one for an imbalance ratio ``max_c n_c / min_c n_c ≥ max_imbalance_ratio``.

    The note states the resolution of the validation: accuracy measured on ``m`` images has
    a 95 % margin of about ``1.96 √(p(1−p)/m) ≤ 0.98/√m`` (worst case p = ½), and the recall
    of a class with ``n`` validation images moves in steps of ``1/n``.
    """
    train = Counter(
        label for label, s in zip(labels, splits, strict=True) if label is not None and s != "test"
    )
    test = Counter(
        label for label, s in zip(labels, splits, strict=True) if label is not None and s == "test"
    )
    findings = []
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        if label is not None:
            by_class[label].append(i)
    for c in sorted(by_class):
        if train[c] < params.min_class_count:
            findings.append(
                Finding(
                    "class_balance",
                    tuple(by_class[c]),
                    f"Class {c!r} has {train[c]} training image(s) (< {params.min_class_count}):"
                    f" its recall is measured in steps of {1 / max(1, train[c]):.0%} at best; "
                    "add images.",
                )
            )
    ratio = None
    if train:
        ratio = max(train.values()) / max(1, min(train.values()))
        if len(train) > 1 and ratio >= params.max_imbalance_ratio:
            big, small = max(train, key=train.__getitem__), min(train, key=train.__getitem__)
            findings.append(
                Finding(
                    "class_balance",
                    (),
                    f"Imbalance {ratio:.1f}: {big!r} has {train[big]} images, {small!r} "
                    f"{train[small]}; accuracy mostly measures {big!r}, read per-class recall.",
                    score=ratio,
                )
            )
    m_test = sum(test.values())
    m = m_test or sum(train.values())
    where = "the test split" if m_test else "cross-validation"
    if m:
        smallest = min((test or train).values())
        note = (
            f"Accuracy on {where} ({m} images) is known to about ±{0.98 / math.sqrt(m):.0%} "
            f"(95 %, worst case); the smallest class has {smallest} validation image(s), so "
            f"its recall moves in steps of {1 / smallest:.0%}."
        )
    else:
        note = "No labeled images: nothing can be validated."
    return ClassBalance(dict(train), dict(test), ratio, note), findings


def outliers(
    features: np.ndarray, labels: Sequence[str | None], threshold_z: float
) -> list[Finding]:
    """Images far from every class centroid. With x̃ the centered, normalised features,
    ``μ_c`` the mean x̃ of class c and ``d_ic = ‖x̃_i − μ_c‖``, the robust z-score is
    ``z_ic = (d_ic − median_{k∈c} d_kc) / (1.4826 · MAD_{k∈c} d_kc)``; image i is an
    outlier when ``min_c z_ic > threshold_z`` (labeled or not)."""
    U = _unit(features)
    classes = sorted({label for label in labels if label is not None})
    if not classes:
        return []
    lab = np.array([label if label is not None else "" for label in labels], dtype=object)
    Z = np.full((len(U), len(classes)), np.inf)
    for j, c in enumerate(classes):
        members = lab == c
        if members.sum() < 3:
            continue
        d = np.linalg.norm(U - U[members].mean(axis=0), axis=1)
        med = np.median(d[members])
        mad = 1.4826 * np.median(np.abs(d[members] - med))
        Z[:, j] = (d - med) / max(mad, 1e-6)
    if not np.isfinite(Z).any():
        return []
    zmin = Z.min(axis=1)
    order = np.argsort(-zmin)
    return [
        Finding(
            "outlier",
            (int(i),),
            f"Far from every class in feature space (robust z {zmin[i]:.1f} > {threshold_z:g} "
            "to the nearest class): another kind of image, or a class of its own?",
            score=float(zmin[i]),
        )
        for i in order
        if np.isfinite(zmin[i]) and zmin[i] > threshold_z
    ]


def image_quality(
    widths: Sequence[int] | None,
    heights: Sequence[int] | None,
    stats: Sequence[tuple[float, ...] | None] | None,
    params: AuditParams,
) -> list[Finding]:
    """Tiny (shorter side < ``min_side``), nearly blank (grey std < ``blank_std``), very
    dark (grey mean < ``dark_mean``) or blurred (sharpness < ``blur_ratio`` × the median
    sharpness, with at least ``blur_min_images`` measured) images; ``stats`` are
    :func:`pixel_stats` (mean, std[, sharpness])."""
    n = len(widths) if widths is not None else len(stats or [])
    sharp = [st[2] for st in stats or [] if st is not None and len(st) > 2]
    blur_below = (
        params.blur_ratio * float(np.median(sharp))
        if len(sharp) >= params.blur_min_images
        else None
    )
    out = []
    for i in range(n):
        problems = []
        if widths is not None and heights is not None:
            side = min(widths[i], heights[i])
            if side < params.min_side:
                problems.append(f"tiny ({widths[i]}×{heights[i]} px)")
        st = stats[i] if stats is not None else None
        if st is not None:
            mean, std = st[0], st[1]
            if std < params.blank_std:
                problems.append(f"nearly blank (grey std {std:.1f})")
            elif mean < params.dark_mean:
                problems.append(f"very dark (mean grey {mean:.0f}/255)")
            elif blur_below is not None and len(st) > 2 and st[2] < blur_below:
                problems.append(
                    f"blurred (sharpness {st[2]:.4f}, under {params.blur_ratio:g} × the "
                    f"images' median {blur_below / params.blur_ratio:.3f})"
                )
        if problems:
            out.append(Finding("image_quality", (i,), "Image is " + " and ".join(problems) + "."))
    return out


def audit(
    *,
    keys: Sequence[str],
    labels: Sequence[str | None],
    splits: Sequence[str],
    features: np.ndarray,
    widths: Sequence[int] | None = None,
    heights: Sequence[int] | None = None,
    stats: Sequence[tuple[float, ...] | None] | None = None,
    params: AuditParams | None = None,
) -> AuditReport:
    """Every check over one image set; ``features`` ``(n, D)`` from one backbone, rows
    aligned with ``keys`` (sha256), ``labels`` (None: unlabeled) and ``splits``
    (``"test"`` or anything else: training side)."""
    p = params or AuditParams()
    X = np.asarray(features, dtype=np.float64)
    if len(X) != len(keys) or len(labels) != len(keys) or len(splits) != len(keys):
        raise ValueError("keys, labels, splits and features must have one row per image")
    balance, balance_findings = class_balance(labels, splits, p)
    findings = [
        *exact_duplicates(keys, labels),
        *near_duplicates(X, keys, labels, splits, p.near_duplicate_similarity),
        *mislabels(X, labels, p),
        *balance_findings,
        *outliers(X, labels, p.outlier_z),
        *image_quality(widths, heights, stats, p),
    ]
    counts = Counter(f.kind for f in findings)
    leaking = {i for f in findings if f.kind == "leakage" for i in f.indices if splits[i] == "test"}
    kept, seen, truncated = [], Counter[str](), {}
    for f in findings:
        seen[f.kind] += 1
        if seen[f.kind] <= p.max_findings_per_kind:
            kept.append(f)
        else:
            truncated[f.kind] = counts[f.kind] - p.max_findings_per_kind
    return AuditReport(
        findings=kept,
        counts={k: counts.get(k, 0) for k in KINDS},
        balance=balance,
        truncated=truncated,
        leaking_test_images=len(leaking),
    )
