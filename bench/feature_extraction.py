"""Images/s of Dovecote's feature extraction against a plain timm eager loop.

Both read the same 64 real 640x480 JPEGs (scikit-image photos, varied) and produce the
pre-logits features of efficientnet_lite0 with the same weights:

* dovecote: ``extract_features`` (cache off) on ``prepare_backbone(load_backbone(...))``;
* plain: the timm model as built, NCHW, ``model.eval()`` + ``torch.no_grad()``,
  ``forward_features`` + ``forward_head(pre_logits=True)``, each image decoded by
  ``PIL.Image.open(...).convert("RGB")`` and the standard timm eval transform.

Each is warmed up, then timed in alternating rounds (the figure is the median round, the
best in brackets). Also prints the start-up cost of ``prepare_backbone``, where the time
goes (decode / forward alone), and the largest difference between Dovecote's features and
the plain eager model's on the same preprocessed real images.

    python -m bench.feature_extraction [--rounds 5] [--batch-sizes 1 16]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from app.transfer.backbones import load_backbone
from app.transfer.data import Sample
from app.transfer.features import embed_tensors, extract_features, prepare_backbone
from app.transfer.preprocess import load_for_model
from bench._common import machine, median, photo_jpegs

MAX_PIXELS = 50_000_000


def _rate(fn: Callable[[], object], n_images: int, rounds: int) -> tuple[float, float]:
    """(median, best) images/s of ``fn`` over ``rounds`` calls."""
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return n_images / median(times), n_images / min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()

    jpegs = photo_jpegs(args.images)
    print(f"# feature extraction: {len(jpegs)} JPEGs 640x480, efficientnet_lite0; {machine()}")

    t = time.perf_counter()
    backbone = load_backbone("efficientnet_lite0")
    t_load = time.perf_counter() - t
    t = time.perf_counter()
    prepare_backbone(backbone)
    t_prepare = time.perf_counter() - t
    print(f"start-up: load_backbone {t_load:.2f} s, prepare_backbone {t_prepare:.2f} s")

    # The plain loop: a separate timm model with the same weights, untouched by Dovecote.
    import timm.data

    plain = load_backbone("efficientnet_lite0").model.eval()
    plain_tf = timm.data.create_transform(**timm.data.resolve_data_config({}, model=plain))

    def plain_forward(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return plain.forward_head(plain.forward_features(x), pre_logits=True).numpy()  # type: ignore[operator]

    def plain_loop(bs: int) -> np.ndarray:
        out = []
        for i in range(0, len(jpegs), bs):
            imgs = [Image.open(io.BytesIO(b)).convert("RGB") for b in jpegs[i : i + bs]]
            out.append(plain_forward(torch.stack([plain_tf(im) for im in imgs])))
        return np.concatenate(out)

    samples = [Sample(key=hashlib.sha256(b).hexdigest()) for b in jpegs]
    by_key = {s.key: b for s, b in zip(samples, jpegs, strict=True)}

    def dovecote(bs: int) -> np.ndarray:
        return extract_features(
            samples, backbone=backbone, load_bytes=lambda s: by_key[s.key],
            max_pixels=MAX_PIXELS, batch_size=bs, cache_dir=None,
        )  # fmt: skip

    # Equivalence: Dovecote's forward against the plain eager model, same real inputs.
    cfg = backbone.preprocessing
    x_all = torch.stack([load_for_model(b, cfg, max_pixels=MAX_PIXELS) for b in jpegs])
    diff = np.abs(embed_tensors(backbone, x_all) - plain_forward(x_all)).max()
    print(f"max |dovecote - plain eager| on the same {len(jpegs)} real images: {diff:.2e}")

    print(f"{'batch':>5}  {'plain img/s':>15}  {'dovecote img/s':>15}  {'ratio':>5}")
    for bs in args.batch_sizes:
        plain_loop(bs), dovecote(bs)  # warm-up
        p_times, d_times = [], []
        for _ in range(args.rounds):  # alternate, so both see the same machine load
            p_times.append(_rate(lambda bs=bs: plain_loop(bs), len(jpegs), 1)[0])
            d_times.append(_rate(lambda bs=bs: dovecote(bs), len(jpegs), 1)[0])
        p, d = median(p_times), median(d_times)
        print(
            f"{bs:>5}  {p:>7.1f} ({max(p_times):>5.1f})  {d:>7.1f} ({max(d_times):>5.1f})"
            f"  {d / p:>5.2f}"
        )

    # Where the time goes (batch 16): decoding alone, the forward pass alone.
    x16 = x_all[:16].contiguous()
    dec_plain = _rate(
        lambda: [plain_tf(Image.open(io.BytesIO(b)).convert("RGB")) for b in jpegs],
        len(jpegs), args.rounds,
    )[0]  # fmt: skip
    dec_dove = _rate(
        lambda: [load_for_model(b, cfg, max_pixels=MAX_PIXELS) for b in jpegs],
        len(jpegs), args.rounds,
    )[0]  # fmt: skip
    fwd_plain = _rate(lambda: plain_forward(x16), 16, args.rounds)[0]
    fwd_dove = _rate(lambda: embed_tensors(backbone, x16), 16, args.rounds)[0]
    print(f"decode+preprocess only: plain {dec_plain:.0f} img/s, dovecote {dec_dove:.0f} img/s")
    print(f"forward only (batch 16): plain {fwd_plain:.1f} img/s, dovecote {fwd_dove:.1f} img/s")


if __name__ == "__main__":
    main()
