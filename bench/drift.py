"""Does the monitoring drift score tell shifted images from images like the training ones?

On data sets of :mod:`bench.suite_data` (frozen ``efficientnet_lite0`` features, cached):
the reference is the training pool (40 images per class), as a model's training images
are in ``GET /v1/models/{id}/monitoring``; a "window" is ``n`` images drawn at random from

- ``same``: the data set's fixed test images (never in the pool): no drift;
- ``inverted``: those test images with inverted colours (255 - x);
- ``blurred``: those test images under a Gaussian blur of radius 1/8 of their size;
- ``darker``: those test images at half brightness (a milder shift, for information).

Printed per data set, kind and window size: the drift score (MMD², :mod:`app.transfer.drift`)
over the windows (min / 99th percentile / max), the share flagged at the threshold, and with
``--pad`` the proxy A-distance (:func:`app.transfer.domain.gap.proxy_a_distance`) of the
same windows for comparison; then, over all data sets, the largest ``same`` score and the smallest
``inverted``/``blurred`` score per window size: the threshold goes between them.

    python -m bench.drift [--datasets ...] [--sizes 10 20 50 100] [--windows 50] [--pad]
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
from app.transfer.drift import DriftParams, bandwidth, drift_score
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


def run(
    name: str, sizes: list[int], windows: int, threshold: float, cache: Path, with_pad: bool
) -> dict[tuple[str, int], list[float]]:
    d = DATASETS[name](30)
    t = time.perf_counter()
    R = _features([d.images[i] for i in d.pool], cache)
    test = [d.images[i] for i in d.test]
    sets = {kind: _features([f(a) for a in test], cache) for kind, f in SHIFTS.items()}
    gamma = bandwidth(R)
    print(f"\n{name}: reference {len(R)} images, {len(test)} test images "
          f"(features {time.perf_counter() - t:.0f} s)")  # fmt: skip
    print(f"  {'kind':9s} {'n':>4s}  {'MMD² min':>8s} {'p99':>6s} {'max':>6s} {'flagged':>8s}"
          f"  {'PAD min':>7s} {'max':>5s}")  # fmt: skip
    scores: dict[tuple[str, int], list[float]] = {}
    for kind, S in sets.items():
        for n in sizes:
            if n > len(S):
                continue
            mmd, pads = [], []
            for seed in range(windows):
                idx = np.random.default_rng(seed).choice(len(S), n, replace=False)
                mmd.append(drift_score(R, S[idx], gamma=gamma))
                if with_pad:
                    pads.append(proxy_a_distance(R, S[idx], seed=seed))
            scores[kind, n] = mmd
            flagged = np.mean(np.asarray(mmd) >= threshold)
            pad = f"  {min(pads):7.2f} {max(pads):5.2f}" if pads else ""
            print(f"  {kind:9s} {n:4d}  {min(mmd):8.4f} {np.percentile(mmd, 99):6.3f} "
                  f"{max(mmd):6.3f} {flagged:8.0%}{pad}", flush=True)  # fmt: skip
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 50, 100])
    parser.add_argument("--windows", type=int, default=50, help="random windows per cell")
    parser.add_argument("--threshold", type=float, default=DriftParams().threshold)
    parser.add_argument("--pad", action="store_true", help="also the proxy A-distance (slow)")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "dovecote-suite"
    )
    args = parser.parse_args()
    every: dict[tuple[str, int], list[float]] = {}
    for name in args.datasets:
        for key, values in run(
            name, args.sizes, args.windows, args.threshold, args.cache / "features", args.pad
        ).items():
            every.setdefault(key, []).extend(values)
    print(f"\nall data sets (threshold {args.threshold:g}):")
    for n in args.sizes:
        same = every.get(("same", n), [])
        shifted = every.get(("inverted", n), []) + every.get(("blurred", n), [])
        darker = every.get(("darker", n), [])
        if same and shifted:
            print(f"  n={n:3d}: same max {max(same):.4f} (flagged {np.mean(np.asarray(same) >= args.threshold):.1%})"
                  f", inverted/blurred min {min(shifted):.4f} (flagged {np.mean(np.asarray(shifted) >= args.threshold):.1%})"
                  f", darker flagged {np.mean(np.asarray(darker) >= args.threshold):.0%}")  # fmt: skip


if __name__ == "__main__":
    main()
