"""Which backbone, chosen how, and is flip TTA worth it: three tables on five of the
transfer suite's data sets (:mod:`bench.suite_data`; ``--datasets``), 5 and 20 shots, 3
seeds, 20 test images per class (the ``transfer_suite --quick`` images).

1. ``probe``: the linear probe on each backbone whose weights are on the machine (its
   ``fit_head`` on cached features), and each backbone's feature-extraction cost.
2. ``auto``: the real ``auto`` ``fit`` (candidates ``linear_probe`` and ``knn``, the shots
   as ``train``, the suite's test images as ``test``) on the default backbone alone
   (``backbones: []``), over every available one (``backbones: "available"``) and with
   each of ``--auto-with`` (``backbones: [name]``), beside the probe on the default
   backbone; and which backbone ``auto`` picked over the available ones.
3. ``flip``: feature-level flip TTA on ``--flip-backbones``: the probe on :math:`f(x)` against
   the probe on :math:`(f(x) + f(\\mathrm{mirror}(x)))/2`, mirrored images embedded as
   images of their own (cached like any other), so the cost is a second extraction.

Results and features are cached in ``--cache``; a rerun computes what is missing (the
extraction times, measured at the end on 32 uncached images per backbone, are not cached).

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 nice -n 10 python -m bench.backbone_suite
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.transfer import get_method
from app.transfer.backbones import DEFAULT_BACKBONE, Backbone
from app.transfer.data import Sample, TrainingData
from app.transfer.features import extract_features
from app.transfer.methods.auto import SUGGESTED, Auto, AutoParams
from app.transfer.methods.base import shared_backbone
from bench._common import machine, write_readme_block
from bench.suite_data import DATASETS, SuiteData
from bench.transfer_suite import _blobs, draw_shots, fmt, frozen_accuracy, shots_data
from tests.factories import content_key, encode

SETS = ["photo-crops", "shapes", "textures", "lfw-faces", "uci-digits"]
AUTO = get_method("auto")
assert isinstance(AUTO, Auto)


def available_backbones() -> list[str]:
    """The default backbone first, then every other registered one with weights here."""
    nothing = TrainingData(samples=[], load_bytes=lambda s: b"")
    return Auto.scored_backbones(nothing, AutoParams(backbones="available"))


def features(
    d: SuiteData, samples: list[Sample], blobs: dict[str, bytes], backbone: Backbone, cache: Path
) -> np.ndarray:
    """Features of the pool and test rows (zeros elsewhere), cached."""
    rows = np.concatenate([d.pool, d.test])
    X = np.zeros((len(samples), backbone.num_features), np.float32)
    X[rows] = extract_features(
        [samples[i] for i in rows], backbone=backbone, load_bytes=lambda s: blobs[s.key],
        max_pixels=10**8, cache_dir=cache / "features",
    )  # fmt: skip
    return X


def extraction_ms(backbone: Backbone, n: int = 32, repeats: int = 2) -> float:
    """Milliseconds per image to embed ``n`` photo crops uncached (best of ``repeats``),
    backbone loaded and prepared: the extraction cost one more backbone (or a flip) adds."""
    d = DATASETS["photo-crops"](20)
    samples, blobs = _blobs(d)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        extract_features(samples[:n], backbone=backbone, load_bytes=lambda s: blobs[s.key],
                         max_pixels=10**8)  # fmt: skip
        best = min(best, (time.perf_counter() - t0) / n)
    return 1000 * best


def mirrored(d: SuiteData) -> tuple[list[Sample], dict[str, bytes]]:
    samples, blobs = [], {}
    for img in d.images:
        png = encode(np.ascontiguousarray(img[:, ::-1]))
        blobs[content_key(png)] = png
        samples.append(Sample(key=content_key(png), label=None))
    return samples, blobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # mnist and glyphs (600 images each) left out: the whole run stays ~30 min here
    parser.add_argument("--datasets", nargs="*", default=SETS)
    parser.add_argument("--shots", nargs="*", type=int, default=[5, 20])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tables", nargs="*", default=["probe", "auto", "flip"])
    parser.add_argument(
        "--flip-backbones", nargs="*", default=[DEFAULT_BACKBONE], help="flip TTA measured on"
    )
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "dovecote-backbones"
    )
    parser.add_argument(
        "--auto-with", nargs="*", default=list(SUGGESTED), help="also auto with backbones: [it]"
    )
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    store = args.cache / "results.json"
    results: dict[str, Any] = json.loads(store.read_text()) if store.exists() else {}
    backbones = available_backbones()
    print("backbones with weights here:", backbones, flush=True)
    started = time.perf_counter()

    def record(key: str, value: dict[str, Any], t0: float) -> None:
        results[key] = value | {"seconds": round(time.perf_counter() - t0, 2)}
        store.write_text(json.dumps(results, indent=1))
        print(f"{key}: {results[key]}", flush=True)

    for name in args.datasets:
        d = DATASETS[name](20)
        samples, blobs = _blobs(d)
        flip_samples, flip_blobs = mirrored(d)
        for backbone in backbones:
            network = shared_backbone(backbone, None, False)
            X = features(d, samples, blobs, network, args.cache)
            flip = "flip" in args.tables and backbone in args.flip_backbones
            if flip:
                Xm = features(d, flip_samples, flip_blobs, network, args.cache)
            store.write_text(json.dumps(results, indent=1))
            for shots in args.shots:
                for seed in range(args.seeds):
                    train = draw_shots(d, shots, seed)
                    cell = f"{name}/{shots}/{seed}"
                    if f"{cell}/probe@{backbone}" not in results:
                        t0 = time.perf_counter()
                        accuracy = frozen_accuracy("linear_probe", X, d, train)
                        record(f"{cell}/probe@{backbone}", {"accuracy": accuracy}, t0)
                    if flip and f"{cell}/probe-flip@{backbone}" not in results:
                        t0 = time.perf_counter()
                        accuracy = frozen_accuracy("linear_probe", (X + Xm) / 2, d, train)
                        record(f"{cell}/probe-flip@{backbone}", {"accuracy": accuracy}, t0)
        for shots in args.shots if "auto" in args.tables else []:
            for seed in range(args.seeds):
                data = shots_data(d, samples, blobs, draw_shots(d, shots, seed), seed, args.cache)
                variants = [("auto-default", []), ("auto-available", "available")]
                variants += [(f"auto+{b}", [b]) for b in args.auto_with]
                for label, chosen in variants:
                    if f"{name}/{shots}/{seed}/{label}" in results:
                        continue
                    t0 = time.perf_counter()
                    params = {"candidates": ["linear_probe", "knn"], "backbones": chosen, "seed": seed}  # fmt: skip
                    m = AUTO.fit(data, AUTO.parse_params(params)).metrics
                    keep = {k: m[k] for k in ("accuracy", "selected", "selected_backbone")}
                    record(f"{name}/{shots}/{seed}/{label}", keep, t0)
    seconds = time.perf_counter() - started
    timing = {b: extraction_ms(shared_backbone(b, None, False)) for b in backbones}
    lines = render(results, args, backbones, seconds, timing)
    print("\n".join(lines))
    if not args.no_readme:
        write_readme_block("backbone-suite", "Backbones, auto's backbone choice, flip TTA", lines)


def render(
    results: dict[str, Any], args: argparse.Namespace, backbones: list[str], seconds: float,
    timing: dict[str, float],
) -> list[str]:  # fmt: skip
    def acc(name: str, shots: int, what: str) -> list[float]:
        keys = [f"{name}/{shots}/{seed}/{what}" for seed in range(args.seeds)]
        return [results[k]["accuracy"] for k in keys if k in results]

    def table(columns: dict[str, str], extra: list[str] | None = None) -> list[str]:
        head = f"| data set | shots | {' | '.join(columns)} |"
        out = [head, "|" + "---|" * (head.count("|") - 1)]
        for name in args.datasets:
            for shots in args.shots:
                out.append(f"| {name} | {shots} | "
                           + " | ".join(fmt(acc(name, shots, w)) for w in columns.values()) + " |")  # fmt: skip
        for shots in args.shots:
            means = [
                [float(np.mean(acc(n, shots, w))) for n in args.datasets if acc(n, shots, w)]
                for w in columns.values()
            ]
            out.append(f"| **suite mean** | {shots} | " + " | ".join(fmt(m) for m in means) + " |")
        return out + (extra or [])

    lines = [
        f"{len(args.datasets)} data sets, {args.shots} shots, {args.seeds} seeds, 20 test images "
        f"per class, accuracy mean ± std over seeds (suite mean: ± over data sets); "
        f"{machine()}, {seconds:.0f} s (cached results reused). "
        "`OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 nice -n 10 python -m bench.backbone_suite`",
    ]
    if "probe" in args.tables:
        lines += ["", "Linear probe per backbone:", ""]
        lines += table({b: f"probe@{b}" for b in backbones})
        lines += ["", "Feature extraction, ms per image (32 photo crops uncached, best of 2, "
                  "after the run): " + ", ".join(f"{b} {ms:.0f}" for b, ms in timing.items())]  # fmt: skip
    if "auto" in args.tables:
        picks: dict[str, int] = {}
        for k, v in results.items():
            if k.endswith("/auto-available") and k.split("/")[0] in args.datasets:
                picks[v["selected_backbone"]] = picks.get(v["selected_backbone"], 0) + 1
        lines += ["", f"`auto` (linear_probe + knn) vs the probe on {DEFAULT_BACKBONE}:", ""]
        lines += table({
            f"probe ({DEFAULT_BACKBONE})": f"probe@{DEFAULT_BACKBONE}",
            "auto, backbones: []": "auto-default",
            'auto, backbones: "available"': "auto-available",
        } | {f"auto, backbones: [{b}]": f"auto+{b}" for b in args.auto_with})  # fmt: skip
        lines += ["", "Backbones `auto` picked over available backbones (runs): "
                  + ", ".join(f"{b} {n}" for b, n in sorted(picks.items()))]  # fmt: skip
    if "flip" in args.tables:
        lines += ["", "Feature-level flip TTA, linear probe:", ""]
        cols: dict[str, str] = {}
        for b in args.flip_backbones:
            cols[b] = f"probe@{b}"
            cols[f"{b} + flip"] = f"probe-flip@{b}"
        gains = []
        for b in args.flip_backbones:
            for shots in args.shots:
                pairs = [(np.mean(acc(n, shots, f"probe-flip@{b}")), np.mean(acc(n, shots, f"probe@{b}")))
                         for n in args.datasets if acc(n, shots, f"probe-flip@{b}")]  # fmt: skip
                if pairs:
                    gains.append(f"{b} {shots} shots {np.mean([f - o for f, o in pairs]):+.3f}")
        lines += table(cols, ["", "Flip − plain, suite mean: " + ", ".join(gains)
                              + "; the flip embeds every image twice: twice the extraction "
                              "time above"])  # fmt: skip
    return lines


if __name__ == "__main__":
    main()
