"""Domain adaptation on the suite's shifted pairs: every algorithm, the label-free choice,
and the in-domain ceiling.

    python -m bench.domain_adaptation                   # every pair, seeds 0 and 1
    python -m bench.domain_adaptation --pairs mnist-uci --seeds 1 --detail

Each pair (:data:`PAIRS`) takes two images sets from :mod:`bench.suite_data`: labeled
``--source`` images per class, unlabeled ``--target`` images per class of the shifted
domain (other images than the source's), and ``--test`` labeled target images per class in
the ``test`` split, which only *report* accuracy (selection is reverse validation on the
source). The seed draws which pool images are source and which target, and seeds the
method. Per pair, target test accuracy of: source-only, every algorithm (its configuration
kept by reverse validation, the forward model trained without the source holdout), the
selected algorithm (refit on every source image, as served), and the ceiling: the linear
probe trained on the target images *with* their labels. "gap closed" is
(selected − source-only) / (ceiling − source-only); "picked best" says whether reverse
validation chose the algorithm of highest true target accuracy (ties count). Results are
cached per (pair, sizes, seed) in ``--cache``; the table goes to ``bench/README.md``
between the ``domain-adaptation`` markers. ``--detail`` prints every configuration.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

from app.transfer import get_method
from app.transfer.data import Sample, TrainingData
from app.transfer.domain import ALGORITHMS
from app.transfer.features import extract_features
from app.transfer.methods.base import shared_backbone
from bench._common import machine, write_readme_block
from bench.suite_data import DATASETS, SuiteData
from tests.factories import content_key, encode

Image_ = np.ndarray


def invert(img: Image_, i: int) -> Image_:
    return 255 - img


def recolour(
    ink: tuple[int, int, int], paper: tuple[int, int, int]
) -> Callable[[Image_, int], Image_]:
    """Dark pixels become ``ink``, light ones ``paper`` (linear in the grey level)."""

    def apply(img: Image_, i: int) -> Image_:
        g = img.mean(axis=2, keepdims=True) / 255.0
        return (np.asarray(ink) * (1 - g) + np.asarray(paper) * g).round().astype(np.uint8)

    return apply


def night_camera(img: Image_, i: int) -> Image_:
    """Greyscale, dark (gamma 2.2), low contrast, sensor noise and a slight blur."""
    g = np.asarray(Image.fromarray(img).convert("L").filter(ImageFilter.GaussianBlur(0.8)))
    g = 255 * (g / 255.0) ** 2.2 * 0.7 + 10
    noise = np.random.default_rng(i).normal(0, 6, g.shape)
    g = np.clip(g + noise, 0, 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


@dataclass(frozen=True)
class PairSpec:
    """Source images of ``source`` (a suite data set); target images of ``target`` (the
    same set: other images of its pool, and its test images) passed through ``shift``."""

    name: str
    shift: str
    source: str
    target: str
    transform: Callable[[Image_, int], Image_] | None = None


PAIRS: dict[str, PairSpec] = {p.name: p for p in [
    PairSpec("mnist-uci", "other writers, scanner, 8x8 upscaled", "mnist", "uci-digits"),
    PairSpec("uci-inverted", "black digits on white", "uci-digits", "uci-digits", invert),
    PairSpec("glyphs-recoloured", "yellow ink on dark blue", "glyphs", "glyphs",
             recolour((250, 220, 40), (20, 30, 110))),
    PairSpec("shapes-inverted", "light shapes on black", "shapes", "shapes", invert),
    PairSpec("photos-night", "greyscale, dark, noisy, blurred", "photo-crops", "photo-crops",
             night_camera),
    PairSpec("textures-inverted", "negative", "textures", "textures", invert),
]}  # fmt: skip


@dataclass
class Pair:
    spec: PairSpec
    classes: list[str]
    images: dict[str, list[Image_]]  # "source", "target", "test"
    y: dict[str, np.ndarray]


def _per_class(d: SuiteData, rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([
        rng.permutation(rows[d.y[rows] == c])[:n] for c in range(len(d.classes))
    ])  # fmt: skip


def build(spec: PairSpec, n_source: int, n_target: int, n_test: int, seed: int) -> Pair:
    """The pair's images: ``seed`` draws the source and the target images (disjoint when
    both come from one data set's pool)."""
    rng = np.random.default_rng(seed)
    src = DATASETS[spec.source](n_test)
    tgt = src if spec.target == spec.source else DATASETS[spec.target](n_test)
    source = _per_class(src, src.pool, n_source, rng)
    free = np.setdiff1d(tgt.pool, source) if tgt is src else tgt.pool
    target = _per_class(tgt, free, n_target, rng)
    test = _per_class(tgt, tgt.test, n_test, rng)
    shift = spec.transform or (lambda img, i: img)
    return Pair(
        spec, src.classes,
        {"source": [src.images[i] for i in source],
         "target": [shift(tgt.images[i], i) for i in target],
         "test": [shift(tgt.images[i], i) for i in test]},
        {"source": src.y[source], "target": tgt.y[target], "test": tgt.y[test]},
    )  # fmt: skip


def training_data(pair: Pair, cache: Path) -> tuple[TrainingData, dict[str, list[Sample]]]:
    """Labeled source, unlabeled target (labels withheld) and labeled target test."""
    blobs: dict[str, bytes] = {}
    groups: dict[str, list[Sample]] = {}
    for group, domain, split, labeled in (
        ("source", "source", "auto", True), ("target", "target", "auto", False),
        ("test", "target", "test", True),
    ):  # fmt: skip
        groups[group] = []
        for img, c in zip(pair.images[group], pair.y[group], strict=True):
            png = encode(img)
            key = content_key(png)
            blobs[key] = png
            label = pair.classes[c] if labeled else None
            groups[group].append(Sample(key=key, label=label, domain=domain, split=split))
    samples = [s for g in groups.values() for s in g]
    data = TrainingData(
        samples=samples, load_bytes=lambda s: blobs[s.key], feature_cache_dir=cache / "features"
    )
    return data, groups


def ceiling(pair: Pair, data: TrainingData, groups: dict[str, list[Sample]], cache: Path) -> float:
    """The linear probe trained on the target images with their labels, on the test."""
    backbone = shared_backbone("efficientnet_lite0", None, False)

    def feats(group: str) -> np.ndarray:
        return extract_features(
            groups[group], backbone=backbone, load_bytes=data.load_bytes, max_pixels=10**8,
            cache_dir=cache / "features",
        )  # fmt: skip

    probe = get_method("linear_probe")
    head = probe.fit_head(feats("target"), pair.y["target"], len(pair.classes), probe.Params())  # type: ignore[attr-defined]
    with torch.inference_mode():
        pred = head.eval()(torch.from_numpy(feats("test"))).numpy().argmax(1)
    return float((pred == pair.y["test"]).mean())


def run(pair: Pair, seed: int, cache: Path) -> dict[str, Any]:
    data, groups = training_data(pair, cache)
    method = get_method("domain_adaptation")
    started = time.perf_counter()
    m = method.fit(data, method.parse_params({"seed": seed})).metrics
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "source_only": m["source_only"]["accuracy"],
        "selected": m["selected"],
        "selected_accuracy": m["accuracy"],
        "ceiling": ceiling(pair, data, groups, cache),
        "gap": m["domain_gap"],
        "candidates": {
            a: {"target_accuracy": c["target_accuracy"], "reverse_validation": c["reverse_validation"],
                "config": c["config"], "domain_gap_after": c["domain_gap_after"],
                "configs": c["configs"]}
            for a, c in m["candidates"].items()
        },
    }  # fmt: skip


def detail(name: str, seed: int, r: dict[str, Any]) -> list[str]:
    lines = [f"{name}, seed {seed} ({r['seconds']:.0f} s)",
             f"{'algorithm':<20}{'config':<34}{'rev-val':>8}{'tgt acc':>8}{'gap':>6}"]  # fmt: skip
    for a, c in r["candidates"].items():
        for cfg in c["configs"]:
            shown = {k: v for k, v in cfg["config"].items()
                     if k in ("regularization", "tradeoff", "epochs", "threshold", "share")}  # fmt: skip
            mark = "*" if cfg["config"] == c["config"] else " "
            gap = f"{c['domain_gap_after']:>6.2f}" if mark == "*" else ""
            lines.append(f"{a:<20}{mark}{shown!s:<33}{cfg['reverse_validation']:>8.3f}"
                         f"{cfg['target_accuracy']:>8.3f}{gap}")  # fmt: skip
    lines.append(f"selected {r['selected']}: {r['selected_accuracy']:.3f} (refit), source-only "
                 f"{r['source_only']:.3f}, ceiling {r['ceiling']:.3f}; proxy A-distance "
                 f"{r['gap']['before']:.2f} -> {r['gap']['after']:.2f}")  # fmt: skip
    return lines


def picked_best(r: dict[str, Any]) -> bool:
    """Reverse validation chose an algorithm of the highest true target accuracy."""
    accs = {a: c["target_accuracy"] for a, c in r["candidates"].items()}
    return accs[r["selected"]] >= max(accs.values())


def render(
    results: dict[str, list[dict[str, Any]]], args: argparse.Namespace, seconds: float
) -> list[str]:
    algorithms = [
        a for a in ALGORITHMS
        if a != "source_only" and any(a in r["candidates"] for rs in results.values() for r in rs)
    ]  # fmt: skip
    short = {"self_training": "self-train", "adabn_coral": "adabn+coral",
             "adabn_self_training": "adabn+self-train"}  # fmt: skip
    head = (f"| pair | shift | source-only | {' | '.join(short.get(a, a) for a in algorithms)} "
            "| selected (refit) | ceiling | gap closed | picked best |")  # fmt: skip
    n_seeds = len(next(iter(results.values())))
    lines = [
        f"Domain adaptation on the suite's pairs, efficientnet_lite0, default params "
        f"(`algorithm: auto`), {args.source} source / {args.target} unlabeled target / "
        f"{args.test} test images per class, target test accuracy, mean over {n_seeds} seed(s); "
        f"{machine()}, {seconds:.0f} s (cached results reused). "
        f"`python -m bench.domain_adaptation --seeds {args.seeds}`",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    per_pair: dict[str, dict[str, float]] = {}
    picks = []
    for name, rs in results.items():
        row = {
            "source-only": mean([r["source_only"] for r in rs]),
            "selected": mean([r["selected_accuracy"] for r in rs]),
            "ceiling": mean([r["ceiling"] for r in rs]),
            **{a: mean([r["candidates"][a]["target_accuracy"] for r in rs]) for a in algorithms},
        }
        per_pair[name] = row
        picks += [picked_best(r) for r in rs]
        chosen = ", ".join(sorted({r["selected"] for r in rs}))
        gap = row["ceiling"] - row["source-only"]
        closed = f"{(row['selected'] - row['source-only']) / gap:+.0%}" if gap > 0 else "n/a"
        lines.append(
            f"| {name} | {PAIRS[name].shift} | {row['source-only']:.3f} | "
            + " | ".join(f"{row[a]:.3f}" for a in algorithms)
            + f" | {row['selected']:.3f} ({chosen}) | {row['ceiling']:.3f} | {closed} | "
            f"{sum(picked_best(r) for r in rs)}/{len(rs)} |"
        )
    suite = {k: mean([row[k] for row in per_pair.values()]) for k in next(iter(per_pair.values()))}
    gap = suite["ceiling"] - suite["source-only"]
    lines.append(
        f"| **suite mean** | | {suite['source-only']:.3f} | "
        + " | ".join(f"{suite[a]:.3f}" for a in algorithms)
        + f" | {suite['selected']:.3f} | {suite['ceiling']:.3f} | "
        f"{(suite['selected'] - suite['source-only']) / gap:+.0%} | {sum(picks)}/{len(picks)} |"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", nargs="*", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--source", type=int, default=20, help="labeled source images per class")
    parser.add_argument("--target", type=int, default=20, help="unlabeled target images per class")
    parser.add_argument("--test", type=int, default=15, help="labeled target test images per class")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--detail", action="store_true", help="every configuration's scores")
    parser.add_argument("--fresh", action="store_true", help="recompute cached results")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "dovecote-bench-da"
    )
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    store = args.cache / "results.json"
    cached: dict[str, Any] = json.loads(store.read_text()) if store.exists() else {}
    started = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {}
    for name in args.pairs:
        for seed in range(args.seeds):
            key = f"{name}/{args.source}-{args.target}-{args.test}/{seed}"
            if key not in cached or args.fresh:
                pair = build(PAIRS[name], args.source, args.target, args.test, seed)
                cached[key] = run(pair, seed, args.cache)
                store.write_text(json.dumps(cached, indent=1))
            r = cached[key]
            results.setdefault(name, []).append(r)
            print(f"{key}: source-only {r['source_only']:.3f}, selected {r['selected']} "
                  f"{r['selected_accuracy']:.3f}, ceiling {r['ceiling']:.3f} "
                  f"({r['seconds']:.0f} s)", flush=True)  # fmt: skip
            if args.detail:
                print("\n".join(detail(name, seed, r)), flush=True)
    lines = render(results, args, time.perf_counter() - started)
    print("\n".join(lines))
    if not args.no_readme and set(args.pairs) == set(PAIRS):
        write_readme_block("domain-adaptation", "Domain adaptation on the suite's pairs", lines)


if __name__ == "__main__":
    main()
