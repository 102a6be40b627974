"""Drift: are the images a model sees now like the ones it was trained on?

Pure: two arrays of backbone features in (the reference: the model's training images;
the recent: the images of one monitoring window), one number out. No HTTP, no database::

    score = drift_score(reference, recent)   # >= threshold: drift
    ref = Reference.of(reference)            # many windows, one reference: prepared once
    scores = [ref.score(window) for window in windows]

The score is the squared maximum mean discrepancy (Gretton et al., "A Kernel Two-Sample
Test", JMLR 2012) with a Gaussian kernel on L2-normalised features. With ``x_i``
(i = 1..m) the reference rows, ``y_j`` (j = 1..n) the recent rows, both divided by their
norm, and ``k(a, b) = exp(-γ ‖a - b‖²)``, the unbiased estimate is

.. math::

    \\widehat{\\mathrm{MMD}}^2 = \\frac{1}{m(m-1)} \\sum_{i \\ne i'} k(x_i, x_{i'})
        + \\frac{1}{n(n-1)} \\sum_{j \\ne j'} k(y_j, y_{j'})
        - \\frac{2}{mn} \\sum_{i, j} k(x_i, y_j)

clipped at 0 (the estimate is slightly negative, by chance, when the two sets are alike).
It is 0 for the same distribution and at most 2. ``γ = 1 / median_{i < i'} ‖x_i - x_{i'}‖²``
(the median heuristic) is taken from the reference alone, so every window of one model is
measured with the same kernel, and the scale of the score is about the same whatever the
backbone's feature scale.

Why not the proxy A-distance of :mod:`app.transfer.domain.gap` (a domain classifier's
held-out error)? On windows of 20 images its noise is as large as the signal: on uci-digits
in-distribution windows reached 1.40 while inverted ones started at 1.60 (out of 2), whereas
the MMD² of the same windows stayed well apart (at most 0.013 against at least 0.29;
``python -m bench.drift --pad``; bench/README.md).
The threshold (``DriftParams.threshold``, setting ``DOVECOTE_DRIFT_THRESHOLD``) and the
least images a window needs (``min_images``) are chosen there, on the suite's data sets.

A second score, the same MMD² on :func:`pixel_signature` rows (intensity histogram, colour
means and spreads: a few numbers per image, cheap to compute) with its own bandwidth and
threshold (``pixel_threshold``, ``DOVECOTE_DRIFT_PIXEL_THRESHOLD``), sees what the
backbone is built to ignore: an inverted photo or face crop is still a photo to the
backbone (feature MMD² 0.02-0.07), not to its histogram. A window drifts when either score
reaches its threshold.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class DriftParams:
    """How drift is measured (defaults chosen in ``python -m bench.drift``)."""

    #: MMD² of backbone features at or above which a window is flagged ``drift: true``
    threshold: float = 0.05
    #: MMD² of pixel signatures (:func:`pixel_signature`) at or above which a window is
    #: flagged too: over the seven suite data sets, windows of 20 like the training images
    #: reached 0.106 (natural-photo crops), inverted ones started at 0.075 (faces), 0.165
    #: (photos) (``python -m bench.drift --windows 30``)
    pixel_threshold: float = 0.12
    #: windows with fewer distinct images get no score (too noisy to say)
    min_images: int = 20
    #: at most this many distinct images of a window are compared (a deterministic sample)
    max_images: int = 100
    #: at most this many reference (training) images
    max_reference: int = 500


def _unit(features: np.ndarray) -> np.ndarray:
    X = np.asarray(features, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _sq_distances(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
    return np.maximum(d, 0.0)


def _bandwidth_of_unit(X: np.ndarray) -> float:
    if len(X) < 2:
        return 1.0
    d = _sq_distances(X, X)[np.triu_indices(len(X), k=1)]
    d = d[d > 1e-12]
    return 1.0 / float(np.median(d)) if len(d) else 1.0


def bandwidth(reference: np.ndarray) -> float:
    """The median heuristic ``γ = 1 / median ‖x_i - x_i'‖²`` over distinct pairs of the
    L2-normalised reference rows (1.0 when there are fewer than two distinct rows)."""
    return _bandwidth_of_unit(_unit(reference))


@dataclass(frozen=True)
class Reference:
    """The reference side of the MMD² (module docstring), prepared once for every window
    measured against it: its L2-normalised rows ``x``, the kernel width ``gamma`` and the
    first term ``xx = Σ_{i≠i'} k(x_i, x_i') / m(m-1)``, which no window changes."""

    x: np.ndarray
    gamma: float
    xx: float

    @classmethod
    def of(cls, reference: np.ndarray, *, gamma: float | None = None) -> Reference:
        """``gamma`` defaults to :func:`bandwidth` of the reference; needs m ≥ 2 rows."""
        X = _unit(reference)
        m = len(X)
        if m < 2:
            raise ValueError("mmd2 needs at least 2 rows on each side")
        g = _bandwidth_of_unit(X) if gamma is None else gamma
        Kxx = np.exp(-g * _sq_distances(X, X))
        return cls(X, g, float((Kxx.sum() - np.trace(Kxx)) / (m * (m - 1))))

    def mmd2(self, recent: np.ndarray) -> float:
        """The unbiased MMD² estimate between this reference and ``recent (n, D)``, not
        clipped; needs n ≥ 2."""
        Y = _unit(recent)
        n = len(Y)
        if n < 2:
            raise ValueError("mmd2 needs at least 2 rows on each side")
        Kyy = np.exp(-self.gamma * _sq_distances(Y, Y))
        Kxy = np.exp(-self.gamma * _sq_distances(self.x, Y))
        yy = (Kyy.sum() - np.trace(Kyy)) / (n * (n - 1))
        return float(self.xx + yy - 2.0 * Kxy.mean())

    def score(self, recent: np.ndarray) -> float:
        """:meth:`mmd2` clipped at 0: the drift score of ``recent``."""
        return max(0.0, self.mmd2(recent))


def mmd2(reference: np.ndarray, recent: np.ndarray, *, gamma: float) -> float:
    """The unbiased MMD² estimate (module docstring) between the L2-normalised rows of
    ``reference (m, D)`` and ``recent (n, D)``, not clipped; needs m, n ≥ 2."""
    return Reference.of(reference, gamma=gamma).mmd2(recent)


def drift_score(reference: np.ndarray, recent: np.ndarray, *, gamma: float | None = None) -> float:
    """MMD² of ``recent`` against ``reference``, clipped at 0; ``gamma`` defaults to
    :func:`bandwidth` of the reference. Many windows against one reference: prepare it
    once with :meth:`Reference.of`."""
    return Reference.of(reference, gamma=gamma).score(recent)


#: Grey-level histogram bins of :func:`pixel_signature`.
GREY_BINS = 16
#: Side of the thumbnail :func:`pixel_signature` reads.
SIGNATURE_SIDE = 64
#: Names the signature's definition in feature caches: bump when it changes.
SIGNATURE_KEY = "pixel-signature-v1"


def pixel_signature(image: Image.Image) -> np.ndarray:
    """What a backbone's features barely see of an image: its intensities and colours.
    On a thumbnail of at most :data:`SIGNATURE_SIDE` px, the grey-level histogram
    (:data:`GREY_BINS` bins over 0-255, as fractions) and each RGB channel's mean and
    standard deviation (over 255): ``GREY_BINS + 6`` numbers. An inverted photo mirrors
    the histogram and complements the colours while its backbone features stay those of
    a photo. float32."""
    thumb = image.convert("RGB")
    thumb.thumbnail((SIGNATURE_SIDE, SIGNATURE_SIDE))
    rgb = np.asarray(thumb, dtype=np.float64) / 255.0
    grey = np.asarray(thumb.convert("L"), dtype=np.float64)
    hist, _ = np.histogram(grey, bins=GREY_BINS, range=(0.0, 256.0))
    pixels = rgb.reshape(-1, 3)
    out = np.concatenate([hist / max(hist.sum(), 1), pixels.mean(0), pixels.std(0)])
    return out.astype(np.float32)  # as the feature cache keeps it: fresh or cached alike


def pixel_signature_of_bytes(data: bytes) -> np.ndarray:
    """:func:`pixel_signature` of encoded bytes (JPEG decoded at a reduced DCT scale)."""
    with Image.open(io.BytesIO(data)) as img:
        if img.format == "JPEG":
            img.draft("RGB", (SIGNATURE_SIDE * 2, SIGNATURE_SIDE * 2))
        return pixel_signature(img)
