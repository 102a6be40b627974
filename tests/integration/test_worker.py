"""A real Celery worker process against real brokers and databases.

Backends: the embedded default (SQLite database + kombu's SQLite broker) and production's
(PostgreSQL + Redis on 127.0.0.1). The API runs in-process and enqueues by task name.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.config import Settings
from tests.conftest import API_KEY, make_settings, migrate
from tests.factories import digit_images
from tests.integration.processes import Process

pytestmark = pytest.mark.integration

FAST_RECOVERY = {
    "job_heartbeat_seconds": 0.5,
    "job_stale_after_seconds": 4.0,
    "sweep_interval_seconds": 1.0,
}


@pytest.fixture(params=["sqlite", "postgres+redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    urls = request.getfixturevalue("postgres_redis") if request.param != "sqlite" else {}
    settings = make_settings(tmp_path, **FAST_RECOVERY, **urls)
    migrate(settings)
    return settings


class WorkerProcess(Process):
    def __init__(self, settings: Settings, log: Path) -> None:
        env = dict(os.environ)
        env.update(
            {
                "DOVECOTE_DATA_DIR": str(settings.data_dir),
                "DOVECOTE_DATABASE_URL": settings.resolved_database_url,
                "DOVECOTE_BROKER_URL": settings.resolved_broker_url,
                "DOVECOTE_JOB_HEARTBEAT_SECONDS": str(settings.job_heartbeat_seconds),
                "DOVECOTE_JOB_STALE_AFTER_SECONDS": str(settings.job_stale_after_seconds),
                "DOVECOTE_SWEEP_INTERVAL_SECONDS": str(settings.sweep_interval_seconds),
                "DOVECOTE_FEATURE_BATCH_SIZE": "8",
            }
        )
        super().__init__(
            [sys.executable, "-m", "app.cli", "worker", "--loglevel", "INFO"], env, log
        )


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.stop()


def client_for(settings: Settings) -> TestClient:
    client = TestClient(create_app(settings))
    client.headers["Authorization"] = f"Bearer {API_KEY}"
    return client


def upload(client: TestClient, project_id: str, items: list[tuple[str, bytes]], split: str) -> None:
    for label in sorted({label for label, _ in items}):
        files = [
            ("files", (f"{label}-{i}.png", d)) for i, (lb, d) in enumerate(items) if lb == label
        ]
        r = client.post(
            f"/v1/projects/{project_id}/images", files=files, data={"label": label, "split": split}
        )
        assert r.status_code == 201, r.text


def wait_for(client: TestClient, job_id: str, until: set[str], timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach {until} in {timeout}s: {job}")


def test_worker_trains_digits_and_predicts_held_out_images(
    backend: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """End to end: real images from a package, a real worker, predictions well above chance."""
    workers.append(WorkerProcess(backend, tmp_path / "worker.log"))
    with client_for(backend) as client:
        project = client.post("/v1/projects", json={"name": "digits"}).json()
        upload(client, project["id"], digit_images(15), split="train")
        upload(client, project["id"], digit_images(3, offset=15), split="test")
        r = client.post(f"/v1/projects/{project['id']}/jobs", json={"method": "linear_probe"})
        assert r.status_code == 202
        job = wait_for(client, r.json()["id"], {"succeeded", "failed"})
        assert job["status"] == "succeeded", (job, (tmp_path / "worker.log").read_text()[-3000:])
        model = client.get(f"/v1/models/{job['model_id']}").json()
        assert model["metrics"]["validation"] == "test-split"
        assert model["metrics"]["accuracy"] > model["metrics"]["baseline"]["accuracy"] + 0.3

        held_out = digit_images(3, offset=40)
        r = client.post(
            f"/v1/projects/{project['id']}/predict",
            files=[("files", (f"{label}.png", data)) for label, data in held_out],
        )
        assert r.status_code == 200, r.text
        predicted = [p["label"] for p in r.json()["predictions"]]
        accuracy = sum(p == label for p, (label, _) in zip(predicted, held_out, strict=True)) / len(
            held_out
        )
        assert accuracy >= 0.5, (accuracy, predicted)  # chance is 0.1


def test_killed_worker_job_ends_succeeded_once_or_failed_clearly(
    backend: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    with client_for(backend) as client:
        project = client.post("/v1/projects", json={"name": "kill"}).json()
        upload(client, project["id"], digit_images(12), split="auto")
        first = WorkerProcess(backend, tmp_path / "worker-1.log")
        workers.append(first)
        job_id = client.post(f"/v1/projects/{project['id']}/jobs", json={"method": "knn"}).json()[
            "id"
        ]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] == "running" and job["progress"] > 0:
                break
            assert job["status"] in ("queued", "running"), job
            time.sleep(0.05)
        else:
            raise AssertionError("the job never started running")
        first.kill()  # mid-job: features are being extracted
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "running"

        workers.append(WorkerProcess(backend, tmp_path / "worker-2.log"))
        job = wait_for(client, job_id, {"succeeded", "failed", "cancelled"})
        models = client.get(f"/v1/projects/{project['id']}/models").json()["items"]
        if job["status"] == "succeeded":
            assert job["attempts"] == 2
            assert [m["id"] for m in models] == [job["model_id"]]
        else:
            assert job["status"] == "failed" and job["error"]["code"] == "worker_lost", job
            assert models == []


def test_cancel_running_job_stops_it(
    backend: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    with client_for(backend) as client:
        project = client.post("/v1/projects", json={"name": "cancel"}).json()
        upload(client, project["id"], digit_images(12), split="auto")
        workers.append(WorkerProcess(backend, tmp_path / "worker.log"))
        job_id = client.post(f"/v1/projects/{project['id']}/jobs", json={"method": "knn"}).json()[
            "id"
        ]
        wait_for(client, job_id, {"running"})
        r = client.post(f"/v1/jobs/{job_id}/cancel")
        assert r.status_code == 202 and r.json()["cancel_requested"] is True
        job = wait_for(client, job_id, {"succeeded", "failed", "cancelled"}, timeout=60)
        assert job["status"] == "cancelled", job
        assert job["model_id"] is None
        assert client.get(f"/v1/projects/{project['id']}/models").json()["items"] == []
