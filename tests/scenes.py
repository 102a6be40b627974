"""Real objects pasted at known positions into real photos: ground truth for localization.

The object is the cat of scikit-image's ``chelsea`` photo (a random crop of it, 64-128
px, mirrored at random) - the pigeon of these tests; the background a random crop of
another scikit-image photo. Train and test scenes use disjoint photos, so a box is never learned from the
background it is tested on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from app.transfer.localize import Box
from tests.factories import encode

TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "immunohistochemistry", "brick", "camera")
TEST_PHOTOS = ("hubble_deep_field", "retina", "gravel", "coins", "grass", "moon")
SIZE = (256, 192)  # (width, height): not square, so normalisation is exercised


@dataclass(frozen=True)
class Scene:
    png: bytes
    label: str  # "cat" | "empty"
    box: Box | None  # where the cat is (normalised), None for "empty"


def _photo(name: str) -> np.ndarray:
    from skimage import data

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


def _cat(rng: np.random.Generator, side: int) -> np.ndarray:
    photo = _photo("chelsea")  # 300 x 451, the cat fills most of it
    h = int(rng.integers(200, 300))
    w = min(photo.shape[1], round(h * rng.uniform(0.9, 1.3)))
    top, left = rng.integers(photo.shape[0] - h + 1), rng.integers(photo.shape[1] - w + 1)
    crop = photo[top : top + h, left : left + w][:, :: 1 if rng.random() < 0.5 else -1]
    size = (side, round(side * h / w))  # (width, height)
    return np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR), np.float32)


def scenes(n: int, *, split: str, seed: int) -> list[Scene]:
    """``n`` scenes, half with the cat ("cat") and half without ("empty")."""
    rng = np.random.default_rng(seed)
    photos = TRAIN_PHOTOS if split == "train" else TEST_PHOTOS
    width, height = SIZE
    out = []
    for i in range(n):
        canvas = _background(rng, photos)
        if i % 2:
            out.append(Scene(encode(canvas.astype(np.uint8)), "empty", None))
            continue
        cat = _cat(rng, int(rng.integers(64, 129)))
        h, w = min(cat.shape[0], height), cat.shape[1]
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        canvas[top : top + h, left : left + w] = cat[:h]
        box = Box(left=left / width, top=top / height, width=w / width, height=h / height)
        out.append(Scene(encode(canvas.astype(np.uint8)), "cat", box))
    return out
