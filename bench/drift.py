"""Does the monitoring drift score tell shifted images from images like the training ones?

On data sets of :mod:`bench.suite_data` (frozen ``efficientnet_lite0`` features, cached):
the reference is the training pool (40 images per class), as a model's training images
are in ``GET /v1/models/{id}/monitoring``; a "window" is ``n`` images drawn at random from

- ``same``: the data set's fixed test images (never in the pool): no drift;
- ``inverted``: those test images with inverted colours (255 - x);
- ``blurred``: those test images under a Gaussian blur of radius 1/8 of their size;
- ``darker``: those test images at half brightness (a milder shift, for information).

Printed per data set, kind and window size: the drift score (MMD², :mod:`app.transfer.drift`)
over the windows (min / 99th percentile / max) and the share flagged at the threshold, for
both signals: backbone features (``feat``) and pixel signatures
(:func:`app.transfer.drift.pixel_signature`, ``pix``), and the share flagged by either (what
the monitoring flags); with ``--pad`` the proxy A-distance
(:func:`app.transfer.domain.gap.proxy_a_distance`) of the same windows for comparison.
Then, over all data sets, per window size and signal, the largest ``same`` score (the
threshold must stay above it) and the false-alarm and detection rates with the features
alone (before the pixel signature) and with either signal.

    python -m bench.drift [--datasets ...] [--sizes 10 20 50 100] [--windows 50] [--pad]
        [--threshold 0.05] [--pixel-threshold 0.05]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from app.transfer.data import TrainingData
from app.transfer.domain.gap import proxy_a_distance
from app.transfer.drift import DriftParams, bandwidth, drift_score, pixel_signature
from app.transfer.methods.base import frozen_features
from bench.suite_data import DATASETS


def _inverted(a: np.ndarray) -> np.ndarray:
    return 255 - a


def _blurred(a: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(max(a.shape[:2]) / 8)))


def _darker(a: np.ndarray) -> np.ndarray:
    return np.asarray(ImageEnhance.Brightness(Image.fromarray(a)).enhance(0.5))


SHIFTS = {"same": lambda a: a, "inverted": _inverted, "blurred": _blurred, "darker": _darker}


def _features(images: list[np.ndarray], cache: Path) -> np.ndarray:
    data = TrainingData.from_arrays(images, [None] * len(images), feature_cache_dir=cache)
    return frozen_features(data, data.samples)[1]


def _signatures(images: list[np.ndarray]) -> np.ndarray:
    return np.stack([pixel_signature(Image.fromarray(a)) for a in images])


#: Per (kind, window size): the windows' scores, ``(feature MMD², pixel MMD²)`` each.
Scores = dict[tuple[str, int], list[tuple[float, float]]]


def run(
    name: str, sizes: list[int], windows: int, thresholds: tuple[float, float], cache: Path,
    with_pad: bool,
) -> Scores:  # fmt: skip
    d = DATASETS[name](30)
    t = time.perf_counter()
    pool = [d.images[i] for i in d.pool]
    R, R_pix = _features(pool, cache), _signatures(pool)
    test = [d.images[i] for i in d.test]
    sets = {}
    for kind, f in SHIFTS.items():
        shifted = [f(a) for a in test]
        sets[kind] = (_features(shifted, cache), _signatures(shifted))
    gammas = (bandwidth(R), bandwidth(R_pix))
    print(f"\n{name}: reference {len(R)} images, {len(test)} test images "
          f"(features {time.perf_counter() - t:.0f} s)")  # fmt: skip
    print(f"  {'kind':9s} {'n':>4s}  {'feat min':>8s} {'p99':>6s} {'max':>6s} {'flag':>5s}"
          f"  {'pix min':>7s} {'p99':>6s} {'max':>6s} {'flag':>5s}  {'either':>6s}"
          f"{'  PAD min   max' if with_pad else ''}")  # fmt: skip
    scores: Scores = {}
    for kind, (S, S_pix) in sets.items():
        for n in sizes:
            if n > len(S):
                continue
            cell, pads = [], []
            for seed in range(windows):
                idx = np.random.default_rng(seed).choice(len(S), n, replace=False)
                cell.append((drift_score(R, S[idx], gamma=gammas[0]),
                             drift_score(R_pix, S_pix[idx], gamma=gammas[1])))  # fmt: skip
                if with_pad:
                    pads.append(proxy_a_distance(R, S[idx], seed=seed))
            scores[kind, n] = cell
            a = np.asarray(cell)
            flags = a >= np.asarray(thresholds)
            pad = f"  {min(pads):7.2f} {max(pads):5.2f}" if pads else ""
            cols = "  ".join(
                f"{a[:, j].min():{8 - j}.4f} {np.percentile(a[:, j], 99):6.3f} "
                f"{a[:, j].max():6.3f} {flags[:, j].mean():5.0%}"
                for j in (0, 1)
            )
            print(f"  {kind:9s} {n:4d}  {cols}  {flags.any(1).mean():6.0%}{pad}", flush=True)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 50, 100])
    parser.add_argument("--windows", type=int, default=50, help="random windows per cell")
    parser.add_argument("--threshold", type=float, default=DriftParams().threshold)
    parser.add_argument("--pixel-threshold", type=float, default=DriftParams().pixel_threshold)
    parser.add_argument("--pad", action="store_true", help="also the proxy A-distance (slow)")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "dovecote-suite"
    )
    args = parser.parse_args()
    thresholds = (args.threshold, args.pixel_threshold)
    every: Scores = {}
    for name in args.datasets:
        for key, values in run(
            name, args.sizes, args.windows, thresholds, args.cache / "features", args.pad
        ).items():
            every.setdefault(key, []).extend(values)
    print(f"\nall data sets (thresholds: features {args.threshold:g}, pixels "
          f"{args.pixel_threshold:g}); flagged before (features alone) -> after (either):")  # fmt: skip
    for n in args.sizes:
        if ("same", n) not in every:
            continue
        same = np.asarray(every["same", n])
        print(f"  n={n:3d}: same max feat {same[:, 0].max():.4f} pix {same[:, 1].max():.4f}; "
              + ", ".join(
                  f"{kind} {np.mean(a[:, 0] >= args.threshold):.1%} -> "
                  f"{np.mean((a >= np.asarray(thresholds)).any(1)):.1%}"
                  for kind in SHIFTS
                  if (a := np.asarray(every.get((kind, n), []))).size
              ))  # fmt: skip


if __name__ == "__main__":
    main()
