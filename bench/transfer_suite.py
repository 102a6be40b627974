"""Transfer suite: every method against the linear probe and the majority class, on seven
public data sets of different kinds (:mod:`bench.suite_data`), at 1, 5 and 20 labeled
images per class, over several seeds; prints mean ± std and writes the table to
``bench/README.md`` (between the ``transfer-suite`` markers).

Frozen-feature methods (``knn``, ``linear_probe``) run their own ``fit_head`` on cached
features; ``finetune`` runs its real ``fit`` with the shots as the ``train`` split and the
suite's test images as the ``test`` split (1 shot is below its two images per class: n/a).
Results are cached per (data set, shots, seed, method, tag) in ``--cache``, so a rerun only
computes what is missing; ``--fresh finetune`` recomputes a method.

    python -m bench.transfer_suite            # full: 7 data sets, 1/5/20 shots, 3 seeds
    python -m bench.transfer_suite --quick    # 1 seed, 5 and 20 shots, fewer test images
    python -m bench.transfer_suite --quick --seeds 3 --compare '' kfold  # finetune variants
                                              # (``--tag``s) against their probe, from the cache
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.transfer import get_method
from app.transfer.data import Sample, TrainingData
from app.transfer.features import extract_features
from app.transfer.methods.base import shared_backbone
from bench._common import machine, write_readme_block
from bench.suite_data import DATASETS, SuiteData
from tests.factories import content_key, encode

FROZEN = ("knn", "linear_probe")


def _blobs(d: SuiteData) -> tuple[list[Sample], dict[str, bytes]]:
    blobs, samples = {}, []
    for img in d.images:
        png = encode(img)
        key = content_key(png)
        blobs[key] = png
        samples.append(Sample(key=key, label=None))
    return samples, blobs


def draw_shots(d: SuiteData, shots: int, seed: int) -> np.ndarray:
    """``shots`` pool rows per class, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([
        rng.choice(d.pool[d.y[d.pool] == c], size=shots, replace=False)
        for c in range(len(d.classes))
    ]))  # fmt: skip


def frozen_accuracy(name: str, X: np.ndarray, d: SuiteData, train: np.ndarray) -> float:
    impl = get_method(name)
    head = impl.fit_head(X[train], d.y[train], len(d.classes), impl.Params()).eval()  # type: ignore[attr-defined]
    with torch.inference_mode():
        pred = head(torch.from_numpy(X[d.test])).numpy().argmax(1)
    return float((pred == d.y[d.test]).mean())


def shots_data(
    d: SuiteData, samples: list[Sample], blobs: dict[str, bytes], train: np.ndarray,
    seed: int, cache: Path,
) -> TrainingData:  # fmt: skip
    """The shots as the ``train`` split and the suite's test images as the ``test`` split,
    features cached under ``cache / "features"``: what a method's real ``fit`` gets."""
    rows = [(i, "train") for i in train.tolist()] + [(i, "test") for i in d.test.tolist()]
    return TrainingData(
        samples=[Sample(key=samples[i].key, label=d.classes[d.y[i]], split=s) for i, s in rows],
        load_bytes=lambda s: blobs[s.key],
        feature_cache_dir=cache / "features",
        seed=seed,
    )


def finetune_run(
    d: SuiteData, samples: list[Sample], blobs: dict[str, bytes], train: np.ndarray,
    params: dict[str, Any], seed: int, cache: Path,
) -> dict[str, Any]:  # fmt: skip
    data = shots_data(d, samples, blobs, train, seed, cache)
    impl = get_method("finetune")
    m = impl.fit(data, impl.parse_params({"seed": seed, **params})).metrics
    keep = ("accuracy", "selected", "wise_alpha", "best_epoch", "selected_epoch")
    return {k: m[k] for k in keep if k in m} | {"probe": m["baseline"]["accuracy"]}


def record(store: Path, key: str, result: dict[str, Any]) -> dict[str, Any]:
    """Add ``key: result`` to the JSON results in ``store`` and return them all: under a lock,
    re-read, merge, write to a temporary file and rename, so several suite processes can share
    one ``--cache`` without dropping each other's results."""
    with open(store.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(store.read_text()) if store.exists() else {}
        results[key] = result
        tmp = store.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, store)
    return results


def fmt(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 5/20 shots, 20 test/class")
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--shots", nargs="*", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--methods", nargs="*", default=["majority", *FROZEN, "finetune"])
    parser.add_argument("--finetune-params", type=json.loads, default={})
    parser.add_argument("--tag", default="", help="names a finetune variant in the cache")
    parser.add_argument("--fresh", nargs="*", default=[], help="methods to recompute")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "dovecote-suite"
    )
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument(
        "--compare", nargs="*", metavar="TAG", default=None,
        help="only print finetune - probe of these finetune tags ('' untagged) from the cache",
    )  # fmt: skip
    args = parser.parse_args()
    shots_list = args.shots or ([5, 20] if args.quick else [1, 5, 20])
    n_seeds = args.seeds or (1 if args.quick else 3)
    n_test = 20 if args.quick else 30
    args.cache.mkdir(parents=True, exist_ok=True)
    store = args.cache / f"results-test{n_test}.json"
    results: dict[str, Any] = json.loads(store.read_text()) if store.exists() else {}
    if args.compare is not None:
        print("\n".join(compare(results, args.compare, args.datasets, shots_list, n_seeds)))
        return
    backbone = shared_backbone("efficientnet_lite0", None, False)
    started = time.perf_counter()
    table: dict[tuple[str, int], dict[str, list[float]]] = {}
    for name in args.datasets:
        d = DATASETS[name](n_test)
        samples, blobs = _blobs(d)
        X = np.zeros((len(samples), 0), np.float32)
        for shots in shots_list:
            cell = table.setdefault((name, shots), {})
            for seed in range(n_seeds):
                train = draw_shots(d, shots, seed)
                for method in args.methods:
                    tag = args.tag if method == "finetune" else ""
                    key = f"{name}/{shots}/{seed}/{method}{'@' + tag if tag else ''}"
                    if key not in results or method in args.fresh:
                        t0 = time.perf_counter()
                        if method == "majority":
                            r: dict[str, Any] = {"accuracy": 1 / len(d.classes)}  # balanced test
                        elif method in FROZEN:
                            if X.shape[1] == 0:
                                rows = np.concatenate([d.pool, d.test])
                                X = np.zeros((len(samples), backbone.num_features), np.float32)
                                X[rows] = extract_features(
                                    [samples[i] for i in rows], backbone=backbone,
                                    load_bytes=lambda s, blobs=blobs: blobs[s.key], max_pixels=10**8,
                                    cache_dir=args.cache / "features",
                                )  # fmt: skip
                            r = {"accuracy": frozen_accuracy(method, X, d, train)}
                        elif shots < 2:
                            r = {}  # finetune needs two images per class
                        else:
                            r = finetune_run(d, samples, blobs, train, args.finetune_params,
                                             seed, args.cache)  # fmt: skip
                        r["seconds"] = round(time.perf_counter() - t0, 2)
                        results = record(store, key, r)
                        print(f"{key}: {r}", flush=True)
                    if "accuracy" in results[key]:
                        cell.setdefault(method, []).append(results[key]["accuracy"])
    seconds = time.perf_counter() - started
    lines = render(table, args, shots_list, n_seeds, n_test, seconds)
    print("\n".join(lines))
    if not args.no_readme:
        write_readme_block("transfer-suite", "Transfer suite", lines)


def render(
    table: dict[tuple[str, int], dict[str, list[float]]], args: argparse.Namespace,
    shots_list: list[int], n_seeds: int, n_test: int, seconds: float,
) -> list[str]:  # fmt: skip
    methods = args.methods
    tag = f" (`{args.tag}`: {json.dumps(args.finetune_params)})" if args.tag else ""
    head = f"| data set | shots | {' | '.join(methods)} | finetune − probe |"
    lines = [
        f"Transfer suite, efficientnet_lite0, {n_seeds} seed(s), {n_test} test images per "
        f"class, accuracy mean ± std over seeds{tag}; {machine()}, {seconds:.0f} s "
        f"(cached results reused). `python -m bench.transfer_suite{' --quick' if args.quick else ''}`",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]

    def row(label: str, shots: int, cells: dict[str, list[float]]) -> str:
        gap = (
            f"{np.mean(np.subtract(cells['finetune'], cells['linear_probe'])):+.3f}"
            if cells.get("finetune") and "linear_probe" in cells
            else "n/a"
        )
        vals = " | ".join(fmt(cells.get(m, [])) for m in methods)
        return f"| {label} | {shots} | {vals} | {gap} |"

    for (name, shots), cells in table.items():
        lines.append(row(name, shots, cells))
    for shots in shots_list:
        per_set = [c for (n, s), c in table.items() if s == shots]
        means = {
            m: [float(np.mean(c[m])) for c in per_set if c.get(m)]
            for m in methods
            if all(c.get(m) for c in per_set)
        }
        lines.append(row("**suite mean**", shots, means))
    return lines


def compare(
    results: dict[str, Any], tags: list[str], datasets: list[str], shots_list: list[int],
    n_seeds: int,
) -> list[str]:  # fmt: skip
    """Per data set and shots, each finetune variant's accuracy minus its own baseline probe
    (same shots, same test images), mean over the cached seeds, and how many of those runs
    selected a finetuned candidate; then the suite mean (and worst) over the data sets every
    variant ran on."""
    names = [f"`{t or 'default'}` − probe" for t in tags]
    head = f"| data set | shots | probe | {' | '.join(names)} |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    means: dict[tuple[int, str], list[float]] = {}
    for shots in shots_list:
        for name in datasets:
            runs = {
                t: [results.get(f"{name}/{shots}/{s}/finetune{'@' + t if t else ''}")
                    for s in range(n_seeds)]
                for t in tags
            }  # fmt: skip
            done = {t: [r for r in rs if r and "accuracy" in r] for t, rs in runs.items()}
            # one probe per seed (every variant of a seed has the same one), so variants that
            # ran on fewer seeds do not weigh their seeds twice
            probes = {
                s: r["probe"]
                for rs in runs.values()
                for s, r in enumerate(rs)
                if r and "probe" in r
            }
            if not probes:
                continue
            cells = []
            for t in tags:
                gaps = [r["accuracy"] - r["probe"] for r in done[t]]
                if all(done.values()):  # the suite mean: rows where every variant ran
                    means.setdefault((shots, t), []).append(float(np.mean(gaps)))
                tuned = sum(r.get("selected") == "finetuned" for r in done[t])
                cells.append(f"{np.mean(gaps):+.3f} ({tuned}/{len(gaps)} ft)" if gaps else "n/a")
            lines.append(
                f"| {name} | {shots} | {np.mean(list(probes.values())):.3f} | {' | '.join(cells)} |"
            )
    for shots in (s for s in shots_list if (s, tags[0]) in means):
        cells = [f"{np.mean(means[shots, t]):+.3f} (min {min(means[shots, t]):+.3f})" for t in tags]
        lines.append(f"| **suite mean** | {shots} | | {' | '.join(cells)} |")
    return lines


if __name__ == "__main__":
    main()
