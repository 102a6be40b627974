"""Real objects pasted at known positions into real photos: ground truth for localization.

Objects are tight crops of photos shipped with scikit-image and scikit-learn (the cat of
``chelsea``, the cup of ``coffee``, the rocket on its pad, the astronaut, the motorcycle of
the stereo pair, the dahlia of ``flower.jpg``), each pasted as a random sub-window of its
box (80-100 % of each side), mirrored at random, with brightness, contrast and saturation
jittered by up to 25 %, so no test instance is a training instance's pixels; the
motorcycle of training scenes is the left view of the stereo pair, that of test scenes the
right one (another viewpoint). Backgrounds are random crops of other photos, disjoint
between ``split="train"`` and any other split, so a box is never learned from the
background it is tested on. An object's size ``side`` is the square root of its box's share
of the image area (``side=1/3``: a box of a ninth of the image).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageEnhance

from app.transfer.localize import Box
from tests.factories import encode

SIZE = (256, 192)  # (width, height): not square, so normalisation is exercised

#: Object class -> (photo, box ``(left, top, right, bottom)`` in its pixels), per split.
TRAIN_OBJECTS = {
    "cat": ("chelsea", (0, 0, 451, 300)),
    "cup": ("coffee", (60, 10, 480, 385)),
    "rocket": ("rocket", (150, 100, 480, 427)),
    "astronaut": ("astronaut", (40, 10, 400, 512)),
    "motorcycle": ("motorcycle_left", (70, 80, 690, 455)),
    "flower": ("flower.jpg", (150, 60, 450, 370)),
}
TEST_OBJECTS = {**TRAIN_OBJECTS, "motorcycle": ("motorcycle_right", (25, 95, 640, 455))}
TRAIN_BACKGROUNDS = ("camera", "brick", "grass", "coins", "immunohistochemistry", "cell")
TEST_BACKGROUNDS = ("china.jpg", "hubble_deep_field", "retina", "gravel", "moon", "text")

#: The easy setting of the first benchmark: the cat alone, "cat" vs "empty".
CAT_BACKGROUNDS = {
    "train": ("astronaut", "coffee", "rocket", "immunohistochemistry", "brick", "camera"),
    "test": ("hubble_deep_field", "retina", "gravel", "coins", "grass", "moon"),
}


@dataclass(frozen=True)
class Scene:
    png: bytes
    label: str  # an object class, or "empty"
    box: Box | None  # where the object is (normalised), None for "empty"


@lru_cache(maxsize=32)
def _photo(name: str) -> np.ndarray:
    """A scikit-image ``data`` photo (``motorcycle_left`` / ``_right``: the views of its
    stereo pair), or a scikit-learn sample image (``name.jpg``), RGB."""
    from skimage import data

    if name.endswith(".jpg"):
        from sklearn.datasets import load_sample_image

        image = load_sample_image(name)
    elif name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        image = left if name == "motorcycle_left" else right
    else:
        image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.asarray(image[..., :3], dtype=np.uint8)


def _background(rng: np.random.Generator, photos: tuple[str, ...]) -> np.ndarray:
    photo = _photo(photos[rng.integers(len(photos))])
    width, height = SIZE
    scale = rng.uniform(1.0, 2.0)
    h, w = min(photo.shape[0], round(height * scale)), min(photo.shape[1], round(width * scale))
    top, left = rng.integers(photo.shape[0] - h + 1), rng.integers(photo.shape[1] - w + 1)
    crop = Image.fromarray(photo[top : top + h, left : left + w])
    return np.asarray(crop.resize(SIZE, Image.Resampling.BILINEAR), dtype=np.float32)


def _object(
    rng: np.random.Generator, photo: str, box: tuple[int, int, int, int], side: float
) -> np.ndarray:
    """A jittered crop of ``box`` in ``photo``, resized to cover ``side**2`` of the canvas
    (less where it would not fit)."""
    left, top, right, bottom = box
    w = round((right - left) * rng.uniform(0.8, 1.0))
    h = round((bottom - top) * rng.uniform(0.8, 1.0))
    x, y = left + rng.integers(right - left - w + 1), top + rng.integers(bottom - top - h + 1)
    crop = Image.fromarray(_photo(photo)[y : y + h, x : x + w][:, :: rng.choice([1, -1])])
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        crop = enhance(crop).enhance(rng.uniform(0.75, 1.25))
    width, height = SIZE
    scale = min(side * np.sqrt(width * height / (w * h)), width / w, height / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(crop.resize(size, Image.Resampling.BILINEAR), np.float32)


def object_scenes(
    n: int,
    *,
    split: str,
    seed: int,
    sides: tuple[float, float] = (0.1, 0.5),
    objects: tuple[str, ...] = tuple(TRAIN_OBJECTS),
    backgrounds: tuple[str, ...] | None = None,
    empty: bool = True,
) -> list[Scene]:
    """``n`` scenes cycling through ``objects`` (and "empty" ones when ``empty``), each
    object at a uniform position and a ``side`` drawn uniformly from ``sides``."""
    rng = np.random.default_rng(seed)
    catalogue = TRAIN_OBJECTS if split == "train" else TEST_OBJECTS
    if backgrounds is None:
        backgrounds = TRAIN_BACKGROUNDS if split == "train" else TEST_BACKGROUNDS
    labels = [*objects, "empty"] if empty else list(objects)
    width, height = SIZE
    out = []
    for i in range(n):
        canvas = _background(rng, backgrounds)
        label = labels[i % len(labels)]
        if label == "empty":
            out.append(Scene(encode(canvas.astype(np.uint8)), label, None))
            continue
        thing = _object(rng, *catalogue[label], float(rng.uniform(*sides)))
        h, w = thing.shape[:2]
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        canvas[top : top + h, left : left + w] = thing
        box = Box(left=left / width, top=top / height, width=w / width, height=h / height)
        out.append(Scene(encode(canvas.astype(np.uint8)), label, box))
    return out


def scenes(n: int, *, split: str, seed: int) -> list[Scene]:
    """The easy setting: ``n`` scenes, half with the cat ("cat") at 25-50 % of the image
    side, half "empty"."""
    return object_scenes(
        n, split=split, seed=seed, sides=(0.25, 0.5), objects=("cat",),
        backgrounds=CAT_BACKGROUNDS["train" if split == "train" else "test"],
    )  # fmt: skip
