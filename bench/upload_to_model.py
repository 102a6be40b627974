"""Seconds from uploading 200 labeled images to a ready linear-probe model, over real HTTP.

Starts ``dovecote serve`` (API + one Celery worker, SQLite DB and broker) in a temporary
data directory, then per run: create a project, POST one zip (``label/xxx.png``, 10 digit
classes x 20 images, scikit-learn digits upscaled to 64x64) to ``/images``, POST a
``linear_probe`` job and poll ``GET /v1/jobs/{id}`` every 50 ms until it succeeds.

Runs: ``cold`` (the worker's first job: it loads and prepares the backbone), ``warm``
(a second project with other images: backbone loaded, features not cached) and
``retrain`` (the first project again: every feature comes from the cache). ``plain``: the
script a user would write instead, in this process (imports done): read the zip, load the
same timm network and weights, embed the images in batches of 32, fit scikit-learn's
``LogisticRegression``; each Dovecote run's ratio is against it.

    python -m bench.upload_to_model
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from bench._common import client, dovecote_serve, machine


def digits_zip(per_class: int, offset: int) -> bytes:
    """One zip, folder per label: ``<digit>/<n>.png``, 64x64 grayscale PNGs."""
    from sklearn.datasets import load_digits

    from tests.factories import encode, make_zip

    d = load_digits()
    members = {}
    for c in range(10):
        for i in np.flatnonzero(d.target == c)[offset : offset + per_class]:
            pixels = np.kron((d.images[i] * 255 / 16).astype(np.uint8), np.ones((8, 8), np.uint8))
            members[f"{c}/{i:04d}.png"] = encode(pixels)
    return make_zip(members)


def plain_script(archive: bytes) -> float:
    """Seconds for the plain timm + scikit-learn script on ``archive``."""
    import io
    import zipfile

    import torch
    from PIL import Image
    from sklearn.linear_model import LogisticRegression

    from app.transfer.backbones import DEFAULT_BACKBONE, load_backbone
    from app.transfer.preprocess import eval_transform

    t0 = time.perf_counter()
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        names = [n for n in z.namelist() if n.endswith(".png")]
        images = [Image.open(io.BytesIO(z.read(n))).convert("RGB") for n in names]
    labels = [n.split("/")[0] for n in names]
    backbone = load_backbone(DEFAULT_BACKBONE)
    model = backbone.model.eval()
    transform = eval_transform(backbone.preprocessing)
    feats = []
    with torch.inference_mode():
        for i in range(0, len(images), 32):
            x = torch.stack([transform(im) for im in images[i : i + 32]])
            feats.append(model.forward_head(model.forward_features(x), pre_logits=True))
    LogisticRegression(max_iter=1000).fit(torch.cat(feats).numpy(), labels)
    return time.perf_counter() - t0


def run(http: Any, project_id: str | None, archive: bytes | None, name: str) -> dict[str, Any]:
    """Upload (if ``archive``) then train; timings in seconds and the stages seen."""
    t0 = time.perf_counter()
    if project_id is None:
        r = http.post("/v1/projects", json={"name": name})
        r.raise_for_status()
        project_id = r.json()["id"]
    upload = 0.0
    if archive is not None:
        r = http.post(
            f"/v1/projects/{project_id}/images",
            files=[("files", ("digits.zip", archive, "application/zip"))],
        )
        assert r.status_code == 201, r.text
        upload = time.perf_counter() - t0
    t1 = time.perf_counter()
    r = http.post(f"/v1/projects/{project_id}/jobs", json={"method": "linear_probe"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    stages: dict[str, float] = {}
    while True:
        job = http.get(f"/v1/jobs/{job_id}").json()
        stages.setdefault(job["stage"], time.perf_counter() - t1)
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.05)
    done = time.perf_counter()
    assert job["status"] == "succeeded", job
    return {
        "project_id": project_id,
        "upload": upload,
        "job": done - t1,
        "total": done - t0,
        "stages": stages,
        "accuracy": job.get("model_id") and _accuracy(http, job["model_id"]),
    }


def _accuracy(http: Any, model_id: str) -> float | None:
    metrics = http.get(f"/v1/models/{model_id}").json().get("metrics") or {}
    return metrics.get("accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=20)
    args = parser.parse_args()
    n = 10 * args.per_class
    print(f"# upload -> model: {n} images (zip), linear_probe, dovecote serve; {machine()}")
    first, second = digits_zip(args.per_class, 0), digits_zip(args.per_class, args.per_class)
    with dovecote_serve() as server, client(server) as http:
        print(f"server ready in {server.started_s:.1f} s (spawn -> /readyz)")
        results = {
            "cold": run(http, None, first, "bench-cold"),
            "warm": run(http, None, second, "bench-warm"),
        }
        results["retrain"] = run(http, results["cold"]["project_id"], None, "")
    plain = plain_script(second)
    print(
        f"{'run':<8} {'total s':>8} {'x plain':>8} {'upload s':>9} {'queue+train s':>14}  "
        "accuracy  stages (s after job POST)"
    )
    for name, r in results.items():
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items())
        acc = f"{r['accuracy']:.2f}" if r["accuracy"] is not None else "-"
        print(
            f"{name:<8} {r['total']:>8.2f} {r['total'] / plain:>8.2f} {r['upload']:>9.2f} "
            f"{r['job']:>14.2f}  {acc:>8}  {stages}"
        )
    print(f"{'plain':<8} {plain:>8.2f} {1:>8.2f}  (timm + scikit-learn script, same images)")


if __name__ == "__main__":
    main()
