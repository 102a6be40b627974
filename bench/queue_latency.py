"""Job start latency: seconds from ``POST /v1/projects/{id}/jobs`` to the job's ``running``.

A real ``dovecote serve`` (API + one worker) on the broker ``DOVECOTE_BROKER_URL`` says
(default: the embedded SQLite broker; ``--redis`` uses ``redis://127.0.0.1:6379/0``). One
project of 3 classes x 8 digit images; a first ``linear_probe`` job warms the worker (it
loads the backbone), then ``--jobs`` more run one after another, each polled every 10 ms
until it leaves ``queued``. What it measures is the broker's delivery (the embedded one
polls its table every ``DOVECOTE_BROKER_POLL_SECONDS``) plus the worker's claim.

    python -m bench.queue_latency [--jobs 10] [--redis]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from bench._common import client, dovecote_serve, machine, median, percentile
from tests.factories import digit_images, make_zip


def start_latency(http: Any, project_id: str) -> tuple[float, float]:
    """``(POST -> running, POST -> done)`` of one ``linear_probe`` job, in seconds."""
    t0 = time.perf_counter()
    r = http.post(f"/v1/projects/{project_id}/jobs", json={"method": "linear_probe"})
    assert r.status_code == 202, r.text
    job_id, started = r.json()["id"], None
    while True:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if started is None and job["status"] != "queued":
            started = time.perf_counter() - t0
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.01)
    assert job["status"] == "succeeded", job
    return started or 0.0, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10, help="timed jobs after the warm-up")
    parser.add_argument("--redis", action="store_true", help="broker redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    if args.redis:
        os.environ["DOVECOTE_BROKER_URL"] = "redis://127.0.0.1:6379/0"
    broker = os.environ.get("DOVECOTE_BROKER_URL", "sqla+sqlite (embedded)")
    poll = os.environ.get("DOVECOTE_BROKER_POLL_SECONDS", "default of the code")
    print(f"# job start latency; broker {broker}, poll {poll}; {machine()}")
    with dovecote_serve("queue-latency.log") as server, client(server) as http:
        project = http.post("/v1/projects", json={"name": "bench-queue"}).json()["id"]
        archive = make_zip(
            {f"{label}/{j}.png": data for j, (label, data) in
             enumerate(digit_images(8, [0, 1, 2]))}
        )  # fmt: skip
        r = http.post(f"/v1/projects/{project}/images", files=[("files", ("d.zip", archive))])
        assert r.status_code == 201, r.text
        start_latency(http, project)  # warm-up: the worker loads the backbone
        starts, totals = [], []
        for _ in range(args.jobs):
            started, total = start_latency(http, project)
            starts.append(started)
            totals.append(total)
    print(
        f"{args.jobs} jobs: POST -> running median {median(starts):.3f} s "
        f"(p90 {percentile(starts, 90):.3f}, max {max(starts):.3f}); "
        f"POST -> succeeded median {median(totals):.3f} s"
    )


if __name__ == "__main__":
    main()
