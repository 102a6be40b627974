"""Fair scheduling: how long tenant B's job waits behind tenant A's queue, one worker.

A real ``dovecote serve`` (API + one worker, SQLite database and broker, no active-job
quota). After one warm-up job (which loads the backbone), tenant A queues ``--jobs`` jobs;
once the first of them runs, tenant B (its own key, ``dovecote keys create``) queues one;
all the same method on the same small digit project. When every job has ended, it prints
how many jobs started before B's (the ideal is 1: the one already running) and B's wait
from creation to start, in seconds and in A's mean job time.

    python -m bench.fair_scheduling [--jobs 8] [--method linear_probe] [--params JSON]

For a before/after, run the same file against an older checkout (``PYTHONPATH`` there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime

from bench._common import client, dovecote_serve, machine


def _project(http, name: str) -> str:  # type: ignore[no-untyped-def]
    from tests.factories import digit_images

    pid = http.post("/v1/projects", json={"name": name}).json()["id"]
    for label in ("0", "1"):
        files = [
            ("files", (f"{label}-{i}.png", data))
            for i, (lb, data) in enumerate(digit_images(4, [0, 1]))
            if lb == label
        ]
        r = http.post(f"/v1/projects/{pid}/images", files=files, data={"label": label})
        assert r.status_code == 201, r.text
    return pid


def _queue(http, pid: str, method: str, params: dict) -> str:  # type: ignore[no-untyped-def]
    r = http.post(f"/v1/projects/{pid}/jobs", json={"method": method, "params": params})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _at(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=8, help="jobs tenant A queues first")
    parser.add_argument("--method", default="linear_probe")
    parser.add_argument("--params", type=json.loads, default={}, help="the method's, as JSON")
    args = parser.parse_args()
    os.environ["DOVECOTE_TENANT_MAX_ACTIVE_JOBS"] = "0"
    with dovecote_serve("fair.log") as server, client(server) as a:
        key_b = subprocess.run(
            [sys.executable, "-m", "app.cli", "keys", "create", "--tenant", "b",
             "--data-dir", str(server.data_dir)],
            capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]  # fmt: skip
        with client(server) as b:
            b.headers["Authorization"] = f"Bearer {key_b}"
            pid_a, pid_b = _project(a, "tenant-a"), _project(b, "tenant-b")
            warm = _queue(a, pid_a, args.method, args.params)  # loads the backbone: not measured
            while a.get(f"/v1/jobs/{warm}").json()["status"] in ("queued", "running"):
                time.sleep(0.2)
            a_jobs = [_queue(a, pid_a, args.method, args.params) for _ in range(args.jobs)]
            while a.get(f"/v1/jobs/{a_jobs[0]}").json()["status"] == "queued":
                time.sleep(0.05)  # B queues while A's first job runs
            b_job = _queue(b, pid_b, args.method, args.params)
            jobs: dict[str, dict] = {}
            deadline = time.monotonic() + 1800
            while len(jobs) < len(a_jobs) + 1:
                assert time.monotonic() < deadline, "jobs did not end in 30 minutes"
                time.sleep(0.5)
                for job_id, http in [*((j, a) for j in a_jobs), (b_job, b)]:
                    job = http.get(f"/v1/jobs/{job_id}").json()
                    if job["status"] in ("succeeded", "failed", "cancelled"):
                        jobs[job_id] = job
    assert all(j["status"] == "succeeded" for j in jobs.values()), jobs
    order = sorted(jobs, key=lambda j: _at(jobs[j]["started_at"]))
    b_wait = _at(jobs[b_job]["started_at"]) - _at(jobs[b_job]["created_at"])
    a_run = [_at(jobs[j]["finished_at"]) - _at(jobs[j]["started_at"]) for j in a_jobs]
    mean_a = sum(a_run) / len(a_run)
    print(f"# fair scheduling: tenant A queues {args.jobs} {args.method} jobs, then tenant B "
          f"one; one worker (dovecote serve); {machine()}")  # fmt: skip
    print(f"{'jobs started before B':>22} {'B wait s':>9} {'B wait / A job':>15} {'A job s':>8}")
    print(f"{order.index(b_job):>22} {b_wait:>9.1f} {b_wait / mean_a:>15.1f} {mean_a:>8.1f}")


if __name__ == "__main__":
    main()
