"""Small real images for tests: scikit-learn digits, scikit-image photos, encoded on the fly."""

from __future__ import annotations

import io
import zipfile
from functools import lru_cache

import numpy as np
from PIL import Image


def encode(array: np.ndarray, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


def digit_images(
    per_class: int, classes: range | list[int] = range(10), offset: int = 0
) -> list[tuple[str, bytes]]:
    """``(label, png)`` pairs: digits upscaled 8x8 -> 32x32, ``per_class`` of each class."""
    images, target = _digits()
    out = []
    for c in classes:
        idx = np.flatnonzero(target == c)[offset : offset + per_class]
        for i in idx:
            pixels = np.kron((images[i] * 255 / 16).astype(np.uint8), np.ones((4, 4), np.uint8))
            out.append((str(c), encode(pixels)))
    return out


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def photo(name: str = "chelsea") -> np.ndarray:
    from skimage import data

    return getattr(data, name)()
