"""First and second job of a fresh ``dovecote serve``: how long, and how long it stays silent.

A fresh server (API + one worker, SQLite, empty data directory: nothing cached on disk),
then four jobs in a row, each on its own new project of 3 classes x 8 digit images:
``linear_probe`` (the worker's first job: it loads the backbone), ``linear_probe`` again
(a second project), ``zero_shot`` (the first: it embeds ImageNet's class names) and
``zero_shot`` again. ``GET /v1/jobs/{id}`` is polled every 50 ms; "silent" is the longest
stretch during which neither ``progress`` nor ``stage`` changed.

    python -m bench.first_jobs
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from bench._common import client, dovecote_serve, machine
from tests.factories import digit_images, make_zip


def job_timeline(http: Any, project_id: str, method: str) -> dict[str, Any]:
    r = http.post(f"/v1/projects/{project_id}/jobs", json={"method": method})
    assert r.status_code == 202, r.text
    job_id, t0 = r.json()["id"], time.perf_counter()
    changes: list[tuple[float, float, str]] = []
    while True:
        job = http.get(f"/v1/jobs/{job_id}").json()
        now = time.perf_counter() - t0
        if not changes or changes[-1][1:] != (job["progress"], job["stage"]):
            changes.append((now, job["progress"], job["stage"]))
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.05)
    assert job["status"] == "succeeded", job
    times = [t for t, _, _ in changes] + [now]
    gaps = [(b - a, changes[i]) for i, (a, b) in enumerate(itertools.pairwise(times))]
    silent, (_, progress, stage) = max(gaps, key=lambda g: g[0])
    return {"total": now, "silent": silent, "at": f"{progress:.2f} {stage}", "stages": len(changes)}


def main() -> None:
    print(f"# first vs second job on a fresh dovecote serve; {machine()}")
    with dovecote_serve() as server, client(server) as http:
        print(f"server ready in {server.started_s:.1f} s (spawn -> /readyz)")
        print(f"{'job':<24} {'total s':>8} {'silent s':>9}  {'longest silence at':<40} stages")
        for i, (name, method) in enumerate(
            [("linear_probe (first)", "linear_probe"), ("linear_probe (second)", "linear_probe"),
             ("zero_shot (first)", "zero_shot"), ("zero_shot (second)", "zero_shot")]
        ):  # fmt: skip
            project = http.post("/v1/projects", json={"name": f"bench-{i}"}).json()["id"]
            archive = make_zip(
                {f"{label}/{j}.png": data for j, (label, data) in
                 enumerate(digit_images(8, [0, 1, 2], offset=8 * i))}
            )  # fmt: skip
            r = http.post(f"/v1/projects/{project}/images", files=[("files", ("d.zip", archive))])
            assert r.status_code == 201, r.text
            t = job_timeline(http, project, method)
            print(f"{name:<24} {t['total']:>8.1f} {t['silent']:>9.1f}  {t['at']:<40} {t['stages']}")


if __name__ == "__main__":
    main()
