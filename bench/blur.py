"""How the audit's blur check (``image_quality``) tells blurred images from sharp ones.

Sharpness (:func:`app.transfer.audit.sharpness`, on the grey image at most 256 px) of 60
pool images of each :mod:`bench.suite_data` set and of 24 640×480 photos, against the same
images under a Gaussian blur of radius 1/8 and 1/16 of their size. Printed per set: the
share flagged by the audit's rule (sharpness under ``AuditParams.blur_ratio`` × the set's
median) among the originals (false alarms) and among the blurred images.

    python -m bench.blur
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

from app.transfer.audit import AuditParams, sharpness
from bench._common import photo_jpegs
from bench.suite_data import DATASETS


def _sharp(img: Image.Image) -> float:
    grey = img.convert("L")
    grey.thumbnail((256, 256))
    return sharpness(np.asarray(grey))


def main() -> None:
    ratio = AuditParams().blur_ratio
    sets = {n: [Image.fromarray(d.images[i]) for i in d.pool[:60]]
            for n, d in ((n, DATASETS[n](5)) for n in DATASETS)}  # fmt: skip
    sets["photos-640"] = [Image.open(io.BytesIO(b)) for b in photo_jpegs(24)]
    print(f"flagged under {ratio:g} × the median sharpness")
    print(f"{'set':12s} {'median':>7s} {'originals':>9s} {'blur 1/8':>8s} {'blur 1/16':>9s}")
    for name, imgs in sets.items():
        s = np.array([_sharp(i) for i in imgs])
        below = ratio * np.median(s)
        blurred = [
            np.array([_sharp(i.filter(ImageFilter.GaussianBlur(max(i.size) / k))) for i in imgs])
            for k in (8, 16)
        ]
        print(f"{name:12s} {np.median(s):7.3f} {np.mean(s < below):9.0%} "
              f"{np.mean(blurred[0] < below):8.0%} {np.mean(blurred[1] < below):9.0%}")  # fmt: skip


if __name__ == "__main__":
    main()
