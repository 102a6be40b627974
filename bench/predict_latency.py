"""Latency p50/p95 of predicting one 640x480 JPEG: in-process and over HTTP.

(a) in-process: a linear probe trained in-process (``TrainingData.from_arrays`` +
    ``get_method("linear_probe").fit``), served by ``Predictor.predict`` with
    ``read = trained.to_files().__getitem__``;
(b) HTTP: the same kind of model trained through a real ``dovecote serve`` (API + worker,
    SQLite), then ``POST /v1/models/{id}/predict`` with the JPEG in multipart ``files``,
    one keep-alive connection.

The first call (which loads and prepares the backbone) is reported apart, then a few
warm-up calls, then ``--requests`` timed calls, cycling through different photos.

    python -m bench.predict_latency [--requests 100] [--skip-http]
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from bench._common import PHOTOS, client, dovecote_serve, machine, percentile, photo_jpegs

WARMUP = 5


def _training_images(per_class: int = 8) -> tuple[list[np.ndarray], list[str]]:
    """Four classes of real photos at 160x120, varied crops: enough for a linear probe."""
    names = PHOTOS[:4]
    jpegs = photo_jpegs(len(names) * per_class, size=(160, 120), seed=1, names=names)
    images = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in jpegs]
    return images, [names[i % len(names)] for i in range(len(jpegs))]


def measure(call: Callable[[bytes], object], jpegs: list[bytes], n: int) -> dict[str, float]:
    """First-call seconds, then p50/p95/mean milliseconds of ``n`` calls after warm-up."""
    t = time.perf_counter()
    call(jpegs[0])
    first = time.perf_counter() - t
    for i in range(WARMUP):
        call(jpegs[i % len(jpegs)])
    ms = []
    for i in range(n):
        t = time.perf_counter()
        call(jpegs[i % len(jpegs)])
        ms.append((time.perf_counter() - t) * 1000)
    return {
        "first_s": first,
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "mean": float(np.mean(ms)),
    }


def in_process(jpegs: list[bytes], n: int) -> dict[str, float]:
    from app.transfer import Predictor, TrainingData, get_method

    images, labels = _training_images()
    trained = get_method("linear_probe").fit(TrainingData.from_arrays(images, labels))
    read = trained.to_files().__getitem__
    predictor = Predictor()
    return measure(lambda b: predictor.predict("bench", read, [b]), jpegs, n)


def served_probe(http, name: str) -> str:  # type: ignore[no-untyped-def]
    """Train a ``linear_probe`` on the four photo classes through a served API (``http``, a
    :func:`bench._common.client`); returns the model id."""
    from tests.factories import encode, make_zip

    images, labels = _training_images()
    archive = make_zip(
        {
            f"{label}/{i}.png": encode(img)
            for i, (img, label) in enumerate(zip(images, labels, strict=True))
        }
    )
    project = http.post("/v1/projects", json={"name": name}).json()["id"]
    r = http.post(f"/v1/projects/{project}/images", files=[("files", ("t.zip", archive))])
    assert r.status_code == 201, r.text
    job_id = http.post(f"/v1/projects/{project}/jobs", json={"method": "linear_probe"}).json()["id"]
    while (job := http.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
        time.sleep(0.1)
    assert job["status"] == "succeeded", job
    return str(job["model_id"])


def over_http(jpegs: list[bytes], n: int) -> dict[str, float]:
    with dovecote_serve() as server, client(server) as http:
        url = f"/v1/models/{served_probe(http, 'bench-predict')}/predict"

        def call(jpeg: bytes) -> None:
            r = http.post(url, files=[("files", ("photo.jpg", jpeg, "image/jpeg"))])
            assert r.status_code == 200, r.text

        return measure(call, jpegs, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()
    jpegs = photo_jpegs(16)
    print(
        f"# predict latency: one 640x480 JPEG per call, efficientnet_lite0 + linear probe; {machine()}"
    )
    rows = {"in-process": in_process(jpegs, args.requests)}
    if not args.skip_http:
        rows["http"] = over_http(jpegs, args.requests)
    print(f"{'path':<11} {'p50 ms':>7} {'p95 ms':>7} {'mean ms':>8} {'first call s':>13}")
    for name, r in rows.items():
        print(
            f"{name:<11} {r['p50']:>7.1f} {r['p95']:>7.1f} {r['mean']:>8.1f} {r['first_s']:>13.2f}"
        )


if __name__ == "__main__":
    main()
