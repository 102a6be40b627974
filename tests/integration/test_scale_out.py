"""Scale-out on the real components: two API processes and two workers on PostgreSQL, a
Redis of the test's own and an S3 bucket (moto's server), 40 jobs from two tenants; one
worker is killed with SIGKILL mid-job and Redis is restarted (its queue lost) mid-run.
Every job must end exactly once, no model be written twice and nothing stay running."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.db.session import session_scope
from app.services import tenants
from tests.conftest import fresh_postgres_redis, migrate
from tests.factories import digit_images
from tests.integration.processes import Process

pytestmark = pytest.mark.integration

JOBS_PER_TENANT = 20
TERMINAL = {"succeeded", "failed", "cancelled"}
BUCKET = "dovecote-scale"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server(port: int, log: Path) -> Process:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = Process(args, dict(os.environ), log)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server
        except OSError:
            time.sleep(0.05)
    raise AssertionError("redis-server did not start")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict]:
    if not shutil.which("redis-server"):
        if os.environ.get("CI"):
            pytest.fail("redis-server is required in CI")
        pytest.skip("redis-server is not installed")
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    with ExitStack() as stack:
        s3_port = free_port()
        s3 = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
        s3.start()
        stack.callback(s3.stop)
        aws = {
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        }  # fmt: skip
        boto3.client("s3", **{"endpoint_url": aws["AWS_ENDPOINT_URL"], "region_name": "us-east-1",
                              "aws_access_key_id": "test", "aws_secret_access_key": "test"}
                     ).create_bucket(Bucket=BUCKET)  # fmt: skip
        redis_port = free_port()
        redis = {"server": redis_server(redis_port, tmp_path / "redis.log"), "port": redis_port}
        stack.callback(lambda: redis["server"].stop())
        database_url = stack.enter_context(fresh_postgres_redis())["database_url"]
        settings = Settings(
            data_dir=tmp_path, database_url=database_url,
            broker_url=f"redis://127.0.0.1:{redis_port}/0",
        )  # fmt: skip
        migrate(settings)
        env = {
            **os.environ, **aws,
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "DOVECOTE_DATA_DIR": str(tmp_path),
            "DOVECOTE_DATABASE_URL": database_url,
            "DOVECOTE_BROKER_URL": settings.resolved_broker_url,
            "DOVECOTE_STORAGE_URL": f"s3://{BUCKET}/scale",
            "DOVECOTE_TENANT_MAX_ACTIVE_JOBS": "0",
            "DOVECOTE_JOB_HEARTBEAT_SECONDS": "0.5",
            "DOVECOTE_JOB_STALE_AFTER_SECONDS": "4",
            "DOVECOTE_SWEEP_INTERVAL_SECONDS": "1",
            "DOVECOTE_FEATURE_BATCH_SIZE": "8",
            "DOVECOTE_TORCH_THREADS": "1",
        }  # fmt: skip
        processes: list[Process] = []
        stack.callback(lambda: [p.stop() for p in processes])
        apis = []
        for i in range(2):
            port = free_port()
            processes.append(Process(
                [sys.executable, "-m", "app.cli", "serve", "--no-worker", "--host", "127.0.0.1",
                 "--port", str(port)], env, tmp_path / f"api-{i}.log",
            ))  # fmt: skip
            apis.append(f"http://127.0.0.1:{port}")
        workers = [
            Process([sys.executable, "-m", "app.cli", "worker"], env, tmp_path / f"worker-{i}.log")
            for i in range(2)
        ]
        processes.extend(workers)
        for url in apis:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "api-0.log").read_text()[-2000:]
                time.sleep(0.2)
        with session_scope(database_url) as db:
            keys = {t: tenants.create_key(db=db, tenant_name=t) for t in ("alpha", "beta")}
        yield {
            "apis": apis, "workers": workers, "keys": keys, "redis": redis,
            "logs": tmp_path, "database_url": database_url,
        }  # fmt: skip


def _client(base: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_jobs_end_exactly_once_through_a_killed_worker_and_a_redis_restart(cluster: dict) -> None:
    started = time.monotonic()
    clients = {
        t: [_client(url, key) for url in cluster["apis"]] for t, key in cluster["keys"].items()
    }
    projects: dict[str, str] = {}
    jobs: dict[str, str] = {}  # job id -> tenant
    for tenant, (first, _) in clients.items():
        project = first.post("/v1/projects", json={"name": f"digits-{tenant}"}).json()
        projects[tenant] = project["id"]
        for label in ("0", "1"):
            files = [("files", (f"{label}-{i}.png", d))
                     for i, (lb, d) in enumerate(digit_images(4, [0, 1])) if lb == label]  # fmt: skip
            r = first.post(f"/v1/projects/{project['id']}/images", files=files,
                           data={"label": label})  # fmt: skip
            assert r.status_code == 201, r.text
    for n in range(JOBS_PER_TENANT):
        for tenant, pair in clients.items():
            r = pair[n % 2].post(f"/v1/projects/{projects[tenant]}/jobs", json={"method": "knn"})
            assert r.status_code == 202, r.text
            jobs[r.json()["id"]] = tenant

    def statuses() -> dict[str, dict]:
        out = {}
        for job_id, tenant in jobs.items():
            out[job_id] = clients[tenant][0].get(f"/v1/jobs/{job_id}").json()
        return out

    # SIGKILL the first worker while it runs a job.
    victim = cluster["workers"][0]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(j["status"] == "running" and j["progress"] > 0 for j in statuses().values()):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("no job started")
    victim.kill()
    killed_at = time.monotonic() - started

    # Restart Redis (no persistence: every queued message is lost) once a few jobs are done.
    while sum(j["status"] in TERMINAL for j in statuses().values()) < 5:
        assert time.monotonic() < deadline + 120, "jobs stopped finishing"
        time.sleep(0.2)
    redis = cluster["redis"]
    redis["server"].kill()
    redis["server"] = redis_server(redis["port"], cluster["logs"] / "redis-2.log")
    restarted_at = time.monotonic() - started

    deadline = time.monotonic() + 400
    while True:
        final = statuses()
        if all(j["status"] in TERMINAL for j in final.values()):
            break
        assert time.monotonic() < deadline, {
            s: sum(j["status"] == s for j in final.values()) for s in ("queued", "running")
        }
        time.sleep(0.5)
    elapsed = time.monotonic() - started

    failed = [j for j in final.values() if j["status"] != "succeeded"]
    assert all(j["status"] == "failed" and j["error"]["code"] == "worker_lost" for j in failed), (
        failed
    )
    models: list[dict] = []
    for tenant, (first, _) in clients.items():
        page = first.get(f"/v1/projects/{projects[tenant]}/models", params={"limit": 500}).json()
        models.extend(page["items"])
    succeeded = {j["id"] for j in final.values() if j["status"] == "succeeded"}
    assert sorted(m["job_id"] for m in models) == sorted(succeeded)  # one model per success
    assert {j["model_id"] for j in final.values() if j["status"] == "succeeded"} == {
        m["id"] for m in models
    }
    retried = sum(j["attempts"] > 1 for j in final.values())
    print(
        f"\nscale-out: {len(jobs)} jobs, {len(succeeded)} succeeded, {len(failed)} failed "
        f"(worker_lost), {retried} retried; worker SIGKILLed at {killed_at:.1f} s, Redis "
        f"restarted at {restarted_at:.1f} s, all ended at {elapsed:.1f} s"
    )
