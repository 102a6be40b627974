"""Domain adaptation on the suite's shifted pairs: every algorithm, the label-free choice,
and the in-domain ceiling.

    python -m bench.domain_adaptation                   # every pair, seeds 0, 1 and 2
    python -m bench.domain_adaptation --pairs mnist-uci --seeds 1 --detail

Each pair (:data:`PAIRS`) takes two images sets from :mod:`bench.suite_data`: labeled
``--source`` images per class, unlabeled ``--target`` images per class of the shifted
domain (other images than the source's), and ``--test`` labeled target images per class in
the ``test`` split, which only *report* accuracy (selection reads no target label). The
seed draws which pool images are source and which target, and seeds the method. Per pair,
target test accuracy of: source-only, every algorithm (its configuration kept by reverse
validation, refit on every source image as the method refits the one it serves), the pick
of the method's default chooser, and the ceiling: the linear probe trained on the target
images *with* their labels. Each result caches what every label-free chooser of
:mod:`app.transfer.domain.selection` reads (each candidate's reverse-validation score,
domain gap after adaptation and its forward model's probabilities on the unlabeled target)
and each refit candidate's test probabilities, so every chooser is recomputed from one run.
"gap closed" is (selected − source-only) / (ceiling − source-only); "picked best" says
whether the choice is an algorithm of highest true target accuracy (ties count). Results are
cached one file per (pair, sizes, seed) under ``--cache``/results (runs over different pairs
may go in parallel); the table goes to ``bench/README.md`` between the ``domain-adaptation``
markers. ``--detail`` prints every configuration (scores of the forward models, trained
without the source holdout).
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
from unittest import mock

import numpy as np
import torch
from PIL import Image, ImageFilter

from app.transfer import get_method
from app.transfer.data import Sample, TrainingData, no_progress
from app.transfer.domain import ALGORITHMS
from app.transfer.domain.selection import CHOOSERS, Evidence
from app.transfer.features import extract_features
from app.transfer.methods import domain_adaptation as da_method
from app.transfer.methods.base import shared_backbone
from app.transfer.methods.domain_adaptation import DomainAdaptationParams, problem, public_config
from bench._common import machine, write_readme_block
from bench.suite_data import DATASETS, SuiteData
from tests.factories import content_key, encode

#: The method's default chooser.
DEFAULT = DomainAdaptationParams.model_fields["selection"].default

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
    # Held out: added after every chooser and default above was chosen, to check them.
    PairSpec("faces-night", "greyscale, dark, noisy, blurred", "lfw-faces", "lfw-faces",
             night_camera),
    PairSpec("shapes-recoloured", "yellow ink on dark blue", "shapes", "shapes",
             recolour((250, 220, 40), (20, 30, 110))),
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


def refit(
    data: TrainingData, params: DomainAdaptationParams, candidates: dict[str, Any]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Target test probabilities ``(n_test, C)`` of every algorithm's kept configuration
    refit on every source image, as the method refits the one it selects (what any
    chooser's pick would serve), and the test labels in the method's class order."""
    backbone = shared_backbone(data.backbone, data.weights_dir, data.allow_hub)
    pb = problem(data, backbone, no_progress)  # features and AdaBN statistics: from the cache
    out = {}
    for a, c in candidates.items():
        config = next(cfg for cfg in params.grid(a) if public_config(cfg) == c["config"])
        model = ALGORITHMS[a](pb.task, config, params.seed, lambda: None)
        out[a] = model.predict(pb.task.pool, pb.test)
    return out, pb.y_test


def _rounded(probs: np.ndarray) -> list[list[float]]:
    return np.round(probs.astype(np.float64), 5).tolist()


def run(pair: Pair, seed: int, cache: Path) -> dict[str, Any]:
    data, groups = training_data(pair, cache)
    select = da_method._select
    method = get_method("domain_adaptation")
    params = method.parse_params({"seed": seed})
    assert isinstance(params, DomainAdaptationParams)
    seen: list[Any] = []  # the selection's evidence: each candidate's target probabilities

    def spy(*args: Any) -> Any:
        seen.append(select(*args))
        return seen[-1]

    started = time.perf_counter()
    with mock.patch.object(da_method, "_select", spy):
        m = method.fit(data, params).metrics
    seconds = round(time.perf_counter() - started, 1)
    refits, y_test = refit(data, params, m["candidates"])
    return {
        "seconds": seconds,
        "source_only": m["source_only"]["accuracy"],
        "selected": m["selected"],
        "selected_accuracy": m["accuracy"],
        "ceiling": ceiling(pair, data, groups, cache),
        "y_test": y_test.tolist(),
        "gap": m["domain_gap"],
        "n_source_holdout": m["reverse_validation"]["n_source_holdout"],
        "candidates": {
            a: {"target_accuracy": c["target_accuracy"],
                "refit_accuracy": float((refits[a].argmax(1) == y_test).mean()),
                "reverse_validation": c["reverse_validation"], "config": c["config"],
                "domain_gap_after": c["domain_gap_after"], "configs": c["configs"],
                "target_probs": _rounded(seen[0].best[a].rv.target_probs),
                "test_probs": _rounded(refits[a])}
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


def evidence(r: dict[str, Any]) -> Evidence:
    """What the method's choosers saw, from a cached result."""
    cs = r["candidates"]
    return Evidence(
        scores={a: c["reverse_validation"] for a, c in cs.items()},
        gaps={a: c["domain_gap_after"] for a, c in cs.items()},
        n_holdout=r["n_source_holdout"],
        target_probs={a: np.asarray(c["target_probs"]) for a, c in cs.items()},
    )


def served(r: dict[str, Any]) -> tuple[dict[str, str], dict[str, float]]:
    """Each chooser's pick, and the target test accuracy (refit) each row would serve:
    every chooser's pick, every algorithm always, the mean of every candidate's
    probabilities (an ensemble the method does not serve) and the best candidate (chosen
    with the test labels)."""
    accs = {a: c["refit_accuracy"] for a, c in r["candidates"].items()}
    e = evidence(r)
    picks = {name: choose_with(e) for name, choose_with in CHOOSERS.items()}
    mean = np.mean([c["test_probs"] for c in r["candidates"].values()], axis=0)
    return picks, {
        **{name: accs[a] for name, a in picks.items()},
        **{f"always {a}": acc for a, acc in accs.items()},
        ENSEMBLE: float((mean.argmax(axis=1) == np.asarray(r["y_test"])).mean()),
        ORACLE: max(accs.values()),
    }


ENSEMBLE, ORACLE = "ensemble of all (not served)", "best candidate (test labels)"


def outcome(rs: list[dict[str, Any]], row: str) -> dict[str, np.ndarray]:
    """Per seed: target accuracy of source-only, every algorithm, ``row``'s and the ceiling."""
    return {
        "source-only": np.array([r["candidates"]["source_only"]["refit_accuracy"] for r in rs]),
        **{a: np.array([r["candidates"][a]["refit_accuracy"] for r in rs])
           for a in rs[0]["candidates"] if a != "source_only"},
        "selected": np.array([r["served"][row] for r in rs]),
        "ceiling": np.array([r["ceiling"] for r in rs]),
    }  # fmt: skip


def closed(o: dict[str, np.ndarray]) -> np.ndarray:
    """Share of the source-only -> ceiling gap the choice closes (NaN: no gap), per seed."""
    gap = o["ceiling"] - o["source-only"]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(gap > 0, (o["selected"] - o["source-only"]) / gap, np.nan)


def closed_on_means(o: dict[str, np.ndarray]) -> str:
    """:func:`closed` of the means over seeds (one pair's seeds are too few for a ratio's ±)."""
    ratio = closed({c: np.mean(v, keepdims=True) for c, v in o.items()})[0]
    return "n/a" if np.isnan(ratio) else f"{ratio:+.0%}"


def suite(results: dict[str, list[dict[str, Any]]], seeds: set[int], row: str) -> dict[str, Any]:
    """``row``'s per-seed means over the pairs (the seeds every pair has)."""
    os = [outcome([r for r in rs if r["seed"] in seeds], row) for rs in results.values()]
    return {c: np.mean([o[c] for o in os], axis=0) for c in os[0]}


def picked_best(rs: list[dict[str, Any]], row: str) -> int:
    """How many results ``row`` serves a candidate of the highest true target accuracy."""
    return sum(r["served"][row] >= r["served"][ORACLE] for r in rs)


def render(
    results: dict[str, list[dict[str, Any]]], args: argparse.Namespace, seconds: float
) -> list[str]:
    """Per pair mean ± std over seeds (refit accuracies) of every algorithm and of the
    default chooser's pick; then every chooser's suite mean, gap closed (± over seeds) and
    gap closed per pair."""
    first = next(iter(results.values()))[0]["candidates"]
    algorithms = [a for a in first if a != "source_only"]
    short = {"self_training": "self-train", "adabn_coral": "adabn+coral",
             "adabn_self_training": "adabn+self-train"}  # fmt: skip
    common = set.intersection(*({r["seed"] for r in rs} for rs in results.values()))
    every = [r for rs in results.values() for r in rs]
    fmt = lambda x: f"{np.mean(x):.3f} ± {np.std(x):.3f}"  # noqa: E731
    pct = lambda x: f"{np.nanmean(x):+.0%} ± {np.nanstd(x):.0%}"  # noqa: E731
    head = (f"| pair | seeds | source-only | {' | '.join(short.get(a, a) for a in algorithms)} "
            f"| selected ({DEFAULT}) | ceiling | gap closed | picked best |")  # fmt: skip
    lines = [
        f"Domain adaptation on the suite's pairs, efficientnet_lite0, default params "
        f"(`algorithm: auto`, `selection: {DEFAULT}`), {args.source} source / {args.target} "
        f"unlabeled target / {args.test} test images per class; target test accuracy of each "
        f"model refit on every source image, mean ± std over seeds; {machine()}, "
        f"{seconds:.0f} s (cached results reused). `python -m bench.domain_adaptation "
        f"--seeds {args.seeds}{f' --first-seed {args.first_seed}' if args.first_seed else ''}`",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for name, rs in results.items():
        o = outcome(rs, DEFAULT)
        chosen = ", ".join(sorted({r["picks"][DEFAULT] for r in rs}))
        lines.append(
            f"| {name} | {len(rs)} | {fmt(o['source-only'])} | "
            + " | ".join(fmt(o[a]) for a in algorithms)
            + f" | {fmt(o['selected'])} ({chosen}) | {fmt(o['ceiling'])} | "
            f"{closed_on_means(o)} | {picked_best(rs, DEFAULT)} of {len(rs)} |"
        )
    b = suite(results, common, DEFAULT)
    lines.append(
        f"| **suite mean** | {len(common)} | {fmt(b['source-only'])} | "
        + " | ".join(fmt(b[a]) for a in algorithms)
        + f" | {fmt(b['selected'])} | {fmt(b['ceiling'])} | {pct(closed(b))} | "
        f"{picked_best(every, DEFAULT)} of {len(every)} |"
    )
    head = ("| chooser | suite-mean accuracy | gap closed | picked best | "
            + " | ".join(results) + " |")  # fmt: skip
    lines += [
        "",
        f"Every chooser on the same results: suite mean over the {len(common)} seeds every "
        "pair has (± over seeds), picked best over every result, gap closed per pair on its "
        "means over its seeds:",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for row in [*CHOOSERS, *(f"always {a}" for a in first), ENSEMBLE, ORACLE]:
        o = suite(results, common, row)
        lines.append(
            f"| {row} | {fmt(o['selected'])} | {pct(closed(o))} | "
            f"{picked_best(every, row)} of {len(every)} | "
            + " | ".join(closed_on_means(outcome(rs, row)) for rs in results.values())
            + " |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", nargs="*", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--source", type=int, default=20, help="labeled source images per class")
    parser.add_argument("--target", type=int, default=20, help="unlabeled target images per class")
    parser.add_argument("--test", type=int, default=15, help="labeled target test images per class")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds from this one on")
    parser.add_argument("--detail", action="store_true", help="every configuration's scores")
    parser.add_argument("--fresh", action="store_true", help="recompute cached results")
    parser.add_argument(
        "--cached-only", action="store_true", help="render the cached results, compute none"
    )
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "dovecote-bench-da"
    )
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    (args.cache / "results").mkdir(exist_ok=True)
    started = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {}
    for name in args.pairs:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            key = f"{name}/{args.source}-{args.target}-{args.test}/{seed}"
            store = args.cache / "results" / f"{key.replace('/', '_')}.json"
            if args.cached_only and not store.exists():
                continue
            if not store.exists() or args.fresh:  # one file a key: runs may go in parallel
                pair = build(PAIRS[name], args.source, args.target, args.test, seed)
                store.write_text(json.dumps(run(pair, seed, args.cache), indent=1))
            r = {**json.loads(store.read_text()), "seed": seed}
            r["picks"], r["served"] = served(r)
            results.setdefault(name, []).append(r)
            print(f"{key}: source-only {r['source_only']:.3f}, selected {r['selected']} "
                  f"{r['selected_accuracy']:.3f}, ceiling {r['ceiling']:.3f} "
                  f"({r['seconds']:.0f} s)", flush=True)  # fmt: skip
            if args.detail:
                print("\n".join(detail(name, seed, r)), flush=True)
    lines = render(results, args, time.perf_counter() - started)
    print("\n".join(lines))
    if not args.no_readme and set(results) == set(PAIRS):
        write_readme_block("domain-adaptation", "Domain adaptation on the suite's pairs", lines)


if __name__ == "__main__":
    main()
