"""What the dataset audit adds to a training job.

A training job records the audit of its project's images (``metrics.audit``): computed at
the end of the job for a project of up to ``DOVECOTE_AUDIT_INLINE_MAX_IMAGES`` images, read
from the cache when the images did not change since the last audit. This runs real
``linear_probe`` jobs through the worker's code (:func:`worker.runner.run_job`) on a
project of ``n`` MNIST digits (28 px PNGs, 10 classes, the API's upload) in a temporary
data directory, and times the audit step (:func:`app.services.audit.record_in_metrics`)
inside each job:

1. the first job: features extracted, then the audit computed (probe folds, near-duplicate
   search, every image's pixel statistics);
2. a second job on the same images: the audit read from the cache.

    python -m bench.audit_cost [--sizes 200 1000]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from app.api.main import create_app
from app.cli import alembic_config
from app.config import Settings
from bench.suite_data import mnist
from worker import runner

API_KEY = "bench-key"


def _timed(seconds: list[float], fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(**kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(**kwargs)
        finally:
            seconds.append(time.perf_counter() - t)

    return wrapper


def _png(a: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def measure(n: int, root: Path) -> None:
    from alembic import command

    settings = Settings(data_dir=root, api_key=API_KEY, prewarm=False,
                        audit_inline_max_images=max(n, 1), tenant_max_active_jobs=0)  # fmt: skip
    command.upgrade(alembic_config(settings.resolved_database_url), "head")
    queued: list[str] = []
    client = TestClient(create_app(settings, enqueue=lambda job_id, queue: queued.append(job_id)))
    client.headers["Authorization"] = f"Bearer {API_KEY}"
    d = mnist(0)
    picked = np.random.default_rng(0).permutation(len(d.images))[:n]  # every class
    with client:
        pid = client.post("/v1/projects", json={"name": "digits"}).json()["id"]
        for start in range(0, n, 200):
            rows = picked[start : start + 200]
            for label in sorted({str(d.y[i]) for i in rows}):
                files = [("files", (f"{i}.png", _png(d.images[i][:, :, 0])))
                         for i in rows if str(d.y[i]) == label]  # fmt: skip
                r = client.post(f"/v1/projects/{pid}/images", files=files, data={"label": label})
                assert r.status_code in (201, 207), r.text
        audit_seconds: list[float] = []
        original = runner.audit_service.record_in_metrics
        runner.audit_service.record_in_metrics = _timed(audit_seconds, original)  # type: ignore[assignment]
        try:
            for run in ("first job (audit computed)", "second job (audit cached)"):
                r = client.post(f"/v1/projects/{pid}/jobs", json={"method": "linear_probe"})
                assert r.status_code == 202, r.text
                t = time.perf_counter()
                assert [runner.run_job(j, settings=settings) for j in queued] == ["succeeded"]
                total = time.perf_counter() - t
                queued.clear()
                audit = audit_seconds[-1]
                print(f"  n={n:5d}  {run:28s} job {total:7.1f} s, audit {audit:6.2f} s "
                      f"({audit / total:5.1%})", flush=True)  # fmt: skip
        finally:
            runner.audit_service.record_in_metrics = original  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    args = parser.parse_args()
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            measure(n, Path(tmp))


if __name__ == "__main__":
    main()
