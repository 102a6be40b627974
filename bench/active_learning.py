"""Active learning: labeling the images the suggestions pick vs images picked at random.

On data sets of :mod:`bench.suite_data` (frozen ``efficientnet_lite0`` features, cached):
start from 2 labeled images per class, then 5 rounds of labeling 10 more images chosen
either by :func:`app.transfer.active.rank` (what ``GET .../suggestions`` uses: margin
uncertainty, k-center greedy diversity seeded with the labeled images; no ``reject_below``)
or uniformly at random from the unlabeled pool. Same start and seed for both; the linear
probe (the default method) is refit after each round and scored on the suite's fixed test
images. Prints mean test accuracy over the seeds after each round and writes the table to
``bench/README.md`` (between the ``active-learning`` markers).

    python -m bench.active_learning                       # 4 data sets, 3 seeds
    python -m bench.active_learning --datasets uci-digits --seeds 1 --no-readme
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from app.transfer import get_method
from app.transfer.active import rank
from app.transfer.features import extract_features
from app.transfer.methods.base import shared_backbone
from bench._common import ROOT, machine
from bench.suite_data import DATASETS, SuiteData
from bench.transfer_suite import _blobs, draw_shots

README = ROOT / "bench" / "README.md"
BEGIN, END = "<!-- active-learning:begin -->", "<!-- active-learning:end -->"
START_SHOTS, ROUNDS, PER_ROUND = 2, 5, 10


def probe(X: np.ndarray, y: np.ndarray, n_classes: int) -> torch.nn.Module:
    impl = get_method("linear_probe")
    return impl.fit_head(X, y, n_classes, impl.Params()).eval()  # type: ignore[attr-defined]


def run(d: SuiteData, X: np.ndarray, seed: int, strategy: str, pool: np.ndarray) -> list[float]:
    """Test accuracy after 0..ROUNDS rounds of labeling with ``strategy``."""
    labeled = list(draw_shots(d, START_SHOTS, seed))
    unlabeled = np.setdiff1d(pool, labeled)
    rng = np.random.default_rng(1000 + seed)
    accs = []
    for r in range(ROUNDS + 1):
        head = probe(X[labeled], d.y[labeled], len(d.classes))
        with torch.inference_mode():
            accs.append(
                float((head(torch.from_numpy(X[d.test])).numpy().argmax(1) == d.y[d.test]).mean())
            )
        if r == ROUNDS:
            break
        if strategy == "random":
            picked = rng.choice(unlabeled, size=PER_ROUND, replace=False)
        else:
            with torch.inference_mode():
                probs = head(torch.from_numpy(X[unlabeled])).numpy()
            picked = unlabeled[rank(probs, X[unlabeled], PER_ROUND, labeled=X[labeled])]
        labeled.extend(int(i) for i in picked)
        unlabeled = np.setdiff1d(unlabeled, picked)
    return accs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--datasets", nargs="*", default=["uci-digits", "textures", "shapes", "photo-crops"]
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-pool", type=int, default=400, help="pool images per data set")
    parser.add_argument("--n-test", type=int, default=30, help="test images per class")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "dovecote-suite"
    )
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    backbone = shared_backbone("efficientnet_lite0", None, False)
    started = time.perf_counter()
    rows: list[tuple[str, str, list[float]]] = []
    for name in args.datasets:
        d = DATASETS[name](args.n_test)
        samples, blobs = _blobs(d)
        # A fixed subset of the pool (the same for every seed and both strategies), always
        # holding every seed's starting shots.
        sub = np.random.default_rng(0).permutation(d.pool)[: args.max_pool]
        starts = np.concatenate([draw_shots(d, START_SHOTS, s) for s in range(args.seeds)])
        pool = np.union1d(sub, starts)
        rows_needed = np.concatenate([pool, d.test])
        X = np.zeros((len(samples), backbone.num_features), np.float32)
        X[rows_needed] = extract_features(
            [samples[i] for i in rows_needed], backbone=backbone,
            load_bytes=lambda s, blobs=blobs: blobs[s.key], max_pixels=10**8,
            cache_dir=args.cache / "features",
        )  # fmt: skip
        for strategy in ("suggestions", "random"):
            accs = [run(d, X, seed, strategy, pool) for seed in range(args.seeds)]
            mean = np.mean(accs, axis=0).tolist()
            rows.append((name, strategy, mean))
            print(name, strategy, " ".join(f"{a:.3f}" for a in mean), flush=True)
    lines = render(rows, args, time.perf_counter() - started)
    print("\n".join(lines))
    if not args.no_readme:
        text = README.read_text()
        block = "\n".join([BEGIN, *lines, END])
        if BEGIN in text:
            head, rest = text.split(BEGIN, 1)
            text = head + block + rest.split(END, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        README.write_text(text)


def render(
    rows: list[tuple[str, str, list[float]]], args: argparse.Namespace, seconds: float
) -> list[str]:
    header = " | ".join(f"+{PER_ROUND * r}" for r in range(ROUNDS + 1))
    lines = [
        "## Active learning: suggestions vs random",
        "",
        f"`python -m bench.active_learning --seeds {args.seeds} --max-pool {args.max_pool}` "
        f"({machine()}, {seconds:.0f} s). Test accuracy of the linear probe (mean over "
        f"{args.seeds} seeds) starting from {START_SHOTS} labeled images per class, after "
        f"each round of {PER_ROUND} more labels picked by the suggestion ranking "
        "(`app/transfer/active.py`) or at random from the same pool (at most "
        f"{args.max_pool} images); {args.n_test} test images per class.",
        "",
        f"| data set | picked by | {header} |",
        "| --- | --- | " + " | ".join("---" for _ in range(ROUNDS + 1)) + " |",
    ]
    for name, strategy, mean in rows:
        lines.append(f"| {name} | {strategy} | " + " | ".join(f"{a:.3f}" for a in mean) + " |")
    gains = [s[2][-1] - r[2][-1] for s, r in zip(rows[::2], rows[1::2], strict=True)]
    lines += [
        "",
        f"After {ROUNDS} rounds, suggestions minus random: "
        + ", ".join(f"{s[0]} {g:+.3f}" for s, g in zip(rows[::2], gains, strict=True))
        + ".",
    ]
    return lines


if __name__ == "__main__":
    main()
