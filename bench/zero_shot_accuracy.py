"""Zero-shot accuracy on real labeled images, per method.

    python -m bench.zero_shot_accuracy [--per-class 40] [--cache DIR]

Data (all real, all from installed packages):

- ``photos``: scikit-image's chelsea (cat), coffee, rocket and astronaut, 8 random crops
  and flips each (4 classes, chance 25%); "without astronaut" (3 classes, chance 33%)
  is the subset whose every name covers ImageNet classes, where ``imagenet_sum`` applies.
- ``silhouettes``: Animal-MNIST (``pip install --no-deps animal-mnist``; its own loader
  imports TensorFlow, so the bundled arrays are read here through a NumPy-only unpickler):
  28x28 silhouettes of bear, bird, cat, cow, dog, elephant, giraffe, horse, sheep, zebra
  (10 classes, chance 10%), ``--per-class`` images each; "without giraffe" (9 classes)
  would be the subset ``imagenet_sum`` applies to, but "cow" covers no ImageNet class either
  (the ox is cattle, not a cow, in WordNet), so it answers n/a there too.
- ``silhouettes, unseen split``: cat, cow and horse are held out as unseen (names and
  attributes only, their images only in the ``test`` split); the 7 seen classes have
  ``--per-class`` training images and as many test images each. DAP gets the attribute
  table below; the generalized model the class names.

Every figure is measured on images the model never trained on; ``zero_shot`` trains on
none at all.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.resources
import io
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from app.transfer import TrainingData, get_method
from app.transfer.data import ClassInfo

ANIMALS = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
UNSEEN = {"cat", "cow", "horse"}
#: ConSE as it was before WordNet: ImageNet lemmas, top 10, no hierarchy, no calibration,
#: the ImageNet classifier's own posterior
PLAIN_CONSE = {
    "mapping": "conse", "wordnet": False, "imagenet_text": "lemmas", "top_t": 10,
    "calibration": 0.0, "imagenet_temperature": 1.0,
}  # fmt: skip
#: the zero_shot defaults before calibration and the ImageNet temperature
WORDNET_BEFORE = {"top_t": 20, "calibration": 0.0, "imagenet_temperature": 1.0}
#: A small hand-written attribute table (common knowledge, AwA-style), one row per animal.
ATTRIBUTES: dict[str, dict[str, float]] = {
    name: dict(zip(
        ["four_legs", "wings", "stripes", "long_neck", "trunk", "hooves", "horns", "woolly",
         "big", "domestic", "pointy_ears", "mane", "long_tail"],
        row, strict=True,
    ))
    for name, row in {
        "bear":     [1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],
        "bird":     [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        "cat":      [1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1],
        "cow":      [1, 0, 0, 0, 0, 1, 1, 0, 1, 1, 0, 0, 1],
        "dog":      [1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1],
        "elephant": [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0],
        "giraffe":  [1, 0, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 1],
        "horse":    [1, 0, 0, 0, 0, 1, 0, 0, 1, 1, 0, 1, 1],
        "sheep":    [1, 0, 0, 0, 0, 1, 1, 1, 0, 1, 0, 0, 0],
        "zebra":    [1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 1],
    }.items()
}  # fmt: skip


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain NumPy arrays and nothing else."""

    ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}")
        return super().find_class(module.replace("numpy.core.", "numpy._core."), name)


def silhouettes(per_class: int, offset: int = 0) -> tuple[list[np.ndarray], list[str]]:
    root = importlib.resources.files("animal_mnist") / "data" / "Animal_MNIST"
    arrays = []
    for name in ("animal_data_version_3.gz", "animal_label_version_3.gz"):
        with gzip.open(io.BytesIO((root / name).read_bytes())) as f:
            arrays.append(_ArraysOnly(f).load())
    X, y = arrays
    images, labels = [], []
    for c, name in enumerate(ANIMALS):
        for i in np.flatnonzero(y == c)[offset : offset + per_class]:
            images.append(np.stack([X[i]] * 3, axis=-1))
            labels.append(name)
    return images, labels


def photo_crops(per_photo: int = 8, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    from skimage import data

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for photo, label in (
        ("chelsea", "cat"), ("coffee", "coffee"), ("rocket", "rocket"), ("astronaut", "astronaut"),
    ):  # fmt: skip
        base = getattr(data, photo)()
        h, w = base.shape[:2]
        for _ in range(per_photo):
            s = rng.uniform(0.6, 1.0)
            ch, cw = int(h * s), int(w * s)
            y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            crop = base[y0 : y0 + ch, x0 : x0 + cw]
            images.append(np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop))
            labels.append(label)
    return images, labels


def run(name: str, method: str, data: TrainingData, params: dict[str, Any]) -> dict[str, Any]:
    impl = get_method(method)
    started = time.monotonic()
    try:
        m = impl.fit(data, impl.parse_params(params)).metrics
    except Exception as exc:  # a method not applicable to this data: say so in the table
        return {"data": name, "method": method, "params": params, "error": str(exc)[:80]}
    return {
        "data": name,
        "method": method,
        "params": params,
        "accuracy": m["accuracy"],
        "baseline": m["baseline"]["accuracy"],
        "validation": f"{m['validation']} ({m['n_validation']})",
        "mapping": m.get("mapping", ""),
        "unseen": m.get("unseen_accuracy"),
        "seen": m.get("seen_accuracy"),
        "H": m.get("harmonic_mean"),
        "seconds": time.monotonic() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "zs-bench")
    args = parser.parse_args()
    common = {"feature_cache_dir": args.cache}
    rows = []

    images, labels = photo_crops()
    photos = TrainingData.from_arrays(images, labels, **common)  # type: ignore[arg-type]
    for params in (
        {"mapping": "conse"},
        PLAIN_CONSE,
        {"mapping": "conse", **WORDNET_BEFORE},
        {"mapping": "conse", **WORDNET_BEFORE, "calibration": 1.5},
        {"mapping": "conse", "imagenet_temperature": 1.0},
        {"mapping": "imagenet_sum"},
        {"mapping": "auto"},
    ):
        rows.append(run("photos", "zero_shot", photos, params))

    named = [i for i, label in enumerate(labels) if label != "astronaut"]  # not an ImageNet class
    photos3 = TrainingData.from_arrays(
        [images[i] for i in named],
        [labels[i] for i in named],
        **common,  # type: ignore[arg-type]
    )
    for params in ({"mapping": "conse"}, {"mapping": "imagenet_sum"}, {"mapping": "auto"}):
        rows.append(run("photos without astronaut", "zero_shot", photos3, params))

    images, labels = silhouettes(args.per_class)
    sil = TrainingData.from_arrays(images, labels, **common)  # type: ignore[arg-type]
    for params in (
        {"mapping": "conse"},
        PLAIN_CONSE,
        {**PLAIN_CONSE, "imagenet_text": "definitions"},
        {"mapping": "conse", "templates": ["a black and white silhouette of a {}."]},
        {"mapping": "conse", "top_t": 1},
        {"mapping": "imagenet_sum"},
    ):
        rows.append(run("silhouettes", "zero_shot", sil, params))
    named = [i for i, label in enumerate(labels) if label != "giraffe"]  # not an ImageNet class
    sil9 = TrainingData.from_arrays(
        [images[i] for i in named],
        [labels[i] for i in named],
        **common,  # type: ignore[arg-type]
    )
    for params in ({"mapping": "conse"}, {"mapping": "imagenet_sum"}, {"mapping": "auto"}):
        rows.append(run("silhouettes without giraffe", "zero_shot", sil9, params))

    train_x, train_y = silhouettes(args.per_class)
    test_x, test_y = silhouettes(args.per_class, offset=args.per_class)
    keep = [i for i, label in enumerate(train_y) if label not in UNSEEN]
    split = TrainingData.from_arrays(
        [train_x[i] for i in keep] + test_x,
        [train_y[i] for i in keep] + test_y,
        splits=["train"] * len(keep) + ["test"] * len(test_x),
        classes=[ClassInfo(name, attributes=ATTRIBUTES[name]) for name in ANIMALS],
        **common,  # type: ignore[arg-type]
    )
    for method, params in (
        ("zero_shot", {"mapping": "conse"}),
        ("zero_shot_dap", {}),
        ("zero_shot_generalized", {}),
        ("zero_shot_generalized", {"beta": 0.1}),
        ("linear_probe", {}),
    ):
        rows.append(run("silhouettes, unseen split", method, split, params))

    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))

    cols = ["data", "method", "params", "accuracy", "baseline", "seen", "unseen", "H",
            "validation", "mapping", "seconds"]  # fmt: skip
    print(" | ".join(cols))
    for r in rows:
        if "error" in r:
            print(f"{r['data']} | {r['method']} | {r['params']} | n/a: {r['error']}")
        else:
            print(" | ".join(fmt(r.get(c)) for c in cols))


if __name__ == "__main__":
    Image.init()
    main()
