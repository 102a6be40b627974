"""Zero-shot from class names alone on a suite of name-only tasks: plain ConSE against the
WordNet variants, per task and as the mean over tasks; writes the table to
``bench/README.md`` (between the ``zero-shot-suite`` markers).

    python -m bench.zero_shot_suite [--per-class 40] [--cache DIR]

Every task is real images from installed packages, named by their class names only (no
description, no labeled image used for anything but measuring; ``zero_shot`` trains on
none):

- ``silhouettes``: Animal-MNIST (``pip install --no-deps animal-mnist``), 10 animals;
- ``textures``: scikit-image brick / grass / gravel, 48 px crops (:mod:`bench.suite_data`);
- ``shapes``: scikit-image ``random_shapes``: circle / rectangle / triangle / ellipse;
- ``photo-crops``: 48 px crops of six scikit-image photos, named by what they show
  (astronaut, cat, coffee, rocket, motorcycle, galaxy);
- ``digits``: scikit-learn's 8x8 digits named "zero" ... "nine".

Each variant is a ``zero_shot`` params dict run through the method's real ``fit`` (features
cached in ``--cache``); the default is the variant with the best mean over the tasks.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import InvalidParams
from app.transfer import TrainingData, get_method
from bench._common import machine, write_readme_block
from bench.suite_data import photo_crops, shapes, textures, uci_digits
from bench.zero_shot_accuracy import PLAIN_CONSE, WORDNET_BEFORE, silhouettes

#: the suite's photo-crops classes by what each photo shows
PHOTO_NAMES = ["astronaut", "cat", "coffee", "rocket", "motorcycle", "galaxy"]
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

#: more prompt templates than the default three (the ImageNet side's texts get them too)
TEMPLATES_8 = [
    "a photo of a {}.", "a photo of the {}.", "a close-up photo of a {}.", "a drawing of a {}.",
    "a sketch of a {}.", "a black and white photo of a {}.", "a picture of a {}.", "{}",
]  # fmt: skip

#: one knob moved from the defaults at a time: param, its label, values
SWEEPS = [
    ("calibration", "calibration", (0.75, 1.0, 2.0, 2.5, 3.0)),
    ("imagenet_temperature", "ImageNet temperature", (1.0, 1.5, 2.0, 3.0)),
    ("top_t", "top_t", (20, 100)),
    ("temperature", "temperature", (0.03, 0.1)),
    ("hierarchy_weight", "weight", (0.25,)),
]
#: name -> zero_shot params (over the defaults, ``mapping`` conse unless said); the first is
#: the baseline
PLAIN = {k: v for k, v in PLAIN_CONSE.items() if k != "mapping"}
VARIANTS: dict[str, dict[str, Any]] = {
    "plain ConSE": PLAIN,
    "plain ConSE, calibrated": {**PLAIN, "calibration": 1.5},
    "ConSE, ImageNet glosses": {**WORDNET_BEFORE, "wordnet": False, "top_t": 10},
    "ConSE, ImageNet glosses, top_t 20": {**WORDNET_BEFORE, "wordnet": False},
    "WordNet (default before)": WORDNET_BEFORE,
    "WordNet, calibration 1.5": {**WORDNET_BEFORE, "calibration": 1.5},
    "WordNet, ImageNet temperature 2": {**WORDNET_BEFORE, "imagenet_temperature": 2.0},
    "WordNet, top_t 50": {**WORDNET_BEFORE, "top_t": 50},
    "WordNet, top_t 50, ImageNet temperature 2": {
        **WORDNET_BEFORE,
        "top_t": 50,
        "imagenet_temperature": 2.0,
    },
    "WordNet, top_t 50, calibration 1.5": {**WORDNET_BEFORE, "top_t": 50, "calibration": 1.5},
    "calibrated (default)": {},
    "default, no WordNet": {"wordnet": False},
    "default, ImageNet lemmas": {"imagenet_text": "lemmas"},
    **{
        f"default, {label} {value:g}": {param: value}
        for param, label, values in SWEEPS
        for value in values
    },
    "default, 8 templates": {"templates": TEMPLATES_8},
    "imagenet_sum (WordNet cover)": {"mapping": "imagenet_sum"},
}


def tasks(per_class: int) -> dict[str, tuple[list[np.ndarray], list[str]]]:
    """Name-only tasks: images and their class names."""
    out = {"silhouettes": silhouettes(per_class)}
    for build, names in (
        (textures, None), (shapes, None), (photo_crops, PHOTO_NAMES), (uci_digits, DIGIT_NAMES),
    ):  # fmt: skip
        d = build(per_class)
        classes = names or d.classes
        out["digits" if d.name == "uci-digits" else d.name] = (
            [d.images[i] for i in d.test],
            [classes[c] for c in d.y[d.test]],
        )
    return out


def accuracy(data: TrainingData, params: dict[str, Any]) -> float:
    """Accuracy of ``zero_shot`` with ``params`` on every image; NaN where it does not
    apply (``imagenet_sum`` when a name covers no ImageNet class)."""
    impl = get_method("zero_shot")
    try:
        metrics = impl.fit(data, impl.parse_params({"mapping": "conse", **params})).metrics
    except InvalidParams:
        return float("nan")
    return float(metrics["accuracy"])


def held_out(table: dict[str, list[float]], variants: list[str]) -> tuple[float, list[str]]:
    """Leave one task out: for each task, the variant among ``variants`` with the best mean
    over the *other* tasks, measured on that task. Returns the mean of those accuracies (what
    choosing defaults on this suite is worth on a task it was not chosen on) and the picks."""
    n = len(next(iter(table.values())))
    picks = [
        max(variants, key=lambda v: float(np.mean([a for j, a in enumerate(table[v]) if j != k])))
        for k in range(n)
    ]
    return float(np.mean([table[v][k] for k, v in enumerate(picks)])), picks


def _fmt(value: float, spec: str) -> str:
    return "n/a" if np.isnan(value) else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "zs-suite")
    args = parser.parse_args()
    started = time.monotonic()
    suite = {
        name: TrainingData.from_arrays(images, labels, feature_cache_dir=args.cache)  # type: ignore[arg-type]
        for name, (images, labels) in tasks(args.per_class).items()
    }
    table = {}
    for variant, params in VARIANTS.items():
        table[variant] = [accuracy(data, params) for data in suite.values()]
        print(variant, " ".join(f"{a:.3f}" for a in table[variant]), flush=True)
    means = {variant: float(np.mean(accs)) for variant, accs in table.items()}  # NaN: n/a
    base = means["plain ConSE"]
    header = ["variant", "params", *suite, "mean", "vs plain"]
    chance = ", ".join(
        f"{name} {1 / len(set(data.class_counts())):.2f}" for name, data in suite.items()
    )
    lines = [
        f"`python -m bench.zero_shot_suite --per-class {args.per_class}`; {machine()}; "
        f"{time.monotonic() - started:.0f} s. Accuracy on every image of each task "
        f"(no image trains anything). Chance: {chance}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for variant, accs in table.items():
        params = (
            ", ".join(
                f"{k}={f'[{len(v)}]' if isinstance(v, list) else v}"
                for k, v in VARIANTS[variant].items()
            )
            or "defaults"
        )
        figures = [*accs, means[variant]]
        cells = [variant, params, *(_fmt(a, ".3f") for a in figures),
                 _fmt(means[variant] - base, "+.3f")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    best = max((v for v in means if not np.isnan(means[v])), key=means.__getitem__)
    lines += ["", f"Best suite mean: {best} ({means[best]:.3f}, plain ConSE {base:.3f})."]
    applicable = [v for v in table if not np.isnan(means[v])]
    before = [  # the knobs there were before calibration and the ImageNet temperature
        v for v in applicable
        if VARIANTS[v].get("calibration") == 0 and VARIANTS[v].get("imagenet_temperature") == 1
    ]  # fmt: skip
    for label, variants in (
        ("every variant", applicable),
        ("the variants without calibration or ImageNet temperature", before),
    ):
        mean, picks = held_out(table, variants)
        lines.append(
            f"Leave one task out, choosing among {label} ({len(variants)}): {mean:.3f} "
            f"({mean - base:+.3f} over plain ConSE); picks per held-out task: "
            + ", ".join(f"{task}: {pick}" for task, pick in zip(suite, picks, strict=True))
            + "."
        )
    print("\n".join(lines))
    write_readme_block("zero-shot-suite", "Zero-shot from class names: the suite", lines)


if __name__ == "__main__":
    main()
