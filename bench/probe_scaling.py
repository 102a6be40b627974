"""The linear probe's feature scaling on the transfer suite: ``scaling="per_feature"``
(each feature divided by its standard deviation on the shots, the probe before 2026-12-03,
with its ``Cs`` then) against ``"global"`` (one scale, the mean row norm: the default) and
the cosine kNN, per backbone, at 1, 5 and 20 images per class over three seeds; the suite's
data sets, draws and test images (:mod:`bench.transfer_suite`, 30 test images per class).
Features are cached in ``--cache`` (the same layout as the transfer suite's).

    python -m bench.probe_scaling --backbones efficientnet_lite0 mobilenetv2_100
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from app.transfer import get_method
from app.transfer.logistic import DEFAULT_CS, Scaling, fit_logistic_head
from app.transfer.methods.base import shared_backbone
from bench._common import machine, write_readme_block
from bench.backbone_suite import features
from bench.suite_data import DATASETS, SuiteData
from bench.transfer_suite import _blobs, draw_shots, fmt

#: (column, scaling, Cs): the probe before and after; each with the grid it was used with.
VARIANTS: tuple[tuple[str, Scaling, tuple[float, ...]], ...] = (
    ("per-feature (before)", "per_feature", (0.001, 0.01, 0.1, 1.0)),
    ("global (default)", "global", DEFAULT_CS),
)
N_TEST = 30


def accuracies(X: np.ndarray, d: SuiteData, train: np.ndarray) -> dict[str, float]:
    """Test accuracy of each variant and of ``knn`` trained on rows ``train``."""
    n_classes = len(d.classes)
    heads = {
        name: fit_logistic_head(X[train], d.y[train], n_classes, Cs=Cs, scaling=scaling)
        for name, scaling, Cs in VARIANTS
    }
    knn = get_method("knn")
    heads["knn"] = knn.fit_head(X[train], d.y[train], n_classes, knn.Params())  # type: ignore[attr-defined]
    out = {}
    with torch.inference_mode():
        for name, head in heads.items():
            pred = head.eval()(torch.from_numpy(X[d.test])).numpy().argmax(1)
            out[name] = float((pred == d.y[d.test]).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite0"])
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--shots", nargs="*", type=int, default=[1, 5, 20])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/dovecote-probe-scaling"))
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    columns = [name for name, _, _ in VARIANTS] + ["knn"]
    lines = [
        f"{len(args.datasets)} data sets, {N_TEST} test images per class, {args.seeds} seeds, "
        f"accuracy mean ± std over seeds (suite mean: ± over data sets); {machine()}; "
        f"`python -m bench.probe_scaling --backbones {' '.join(args.backbones)}`",
    ]
    for backbone_name in args.backbones:
        backbone = shared_backbone(backbone_name, None, False)
        cells: dict[tuple[str, int], dict[str, list[float]]] = {}
        for name in args.datasets:
            d = DATASETS[name](N_TEST)
            samples, blobs = _blobs(d)
            X = features(d, samples, blobs, backbone, args.cache / backbone_name)
            for shots in args.shots:
                for seed in range(args.seeds):
                    accs = accuracies(X, d, draw_shots(d, shots, seed))
                    for col, acc in accs.items():
                        cells.setdefault((name, shots), {}).setdefault(col, []).append(acc)
        head = f"| data set | shots | {' | '.join(columns)} | global − per-feature |"
        lines += ["", f"{backbone_name}:", "", head, "|" + "---|" * (head.count("|") - 1)]
        for shots in args.shots:
            means: dict[str, list[float]] = {col: [] for col in columns}
            for name in args.datasets:
                cell = cells[(name, shots)]
                for col in columns:
                    means[col].append(float(np.mean(cell[col])))
                gain = np.mean(cell[columns[1]]) - np.mean(cell[columns[0]])
                lines.append(
                    f"| {name} | {shots} | {' | '.join(fmt(cell[c]) for c in columns)} | {gain:+.3f} |"
                )
            gains = np.array(means[columns[1]]) - np.array(means[columns[0]])
            lines.append(
                f"| **suite mean** | {shots} | {' | '.join(fmt(means[c]) for c in columns)} | "
                f"{gains.mean():+.3f} (worst {gains.min():+.3f}) |"
            )
    lines += ["", f"{time.perf_counter() - started:.0f} s (features cached)."]
    print("\n".join(lines))
    if not args.no_readme:
        write_readme_block("probe-scaling", "The linear probe's scaling", lines)


if __name__ == "__main__":
    main()
