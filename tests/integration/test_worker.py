"""A real Celery worker process against real brokers and databases.

Backends: the embedded default (SQLite database + kombu's SQLite broker) and production's
(PostgreSQL + Redis on 127.0.0.1). The API runs in-process and enqueues by task name.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.config import Settings
from app.db.models import Job
from app.db.session import session_scope
from tests.conftest import API_KEY, make_settings, migrate
from tests.factories import digit_images, make_zip
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
    """``dovecote worker``; ``args`` added to its command line, ``env`` to its environment."""

    def __init__(
        self, settings: Settings, log: Path, args: Sequence[str] = (), **env_vars: str
    ) -> None:
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
                **env_vars,
            }
        )
        super().__init__(
            [sys.executable, "-m", "app.cli", "worker", "--loglevel", "INFO", *args], env, log
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


def wait_for(
    client: TestClient,
    job_id: str,
    until: set[str],
    timeout: float = 240.0,
    resource: str = "jobs",
) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/{resource}/{job_id}").json()
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

        # The same images as a batch prediction, run by the worker: predict's answers.
        names = [f"{i:02d}-{label}.png" for i, (label, _) in enumerate(held_out)]
        archive = make_zip(dict(zip(names, [d for _, d in held_out], strict=True)))
        r = client.post(
            f"/v1/models/{job['model_id']}/batch-predictions",
            files=[("files", ("held_out.zip", archive))],
        )
        assert r.status_code == 202, r.text
        batch = wait_for(
            client, r.json()["id"], {"succeeded", "failed"}, resource="batch-predictions"
        )
        assert batch["status"] == "succeeded", (
            batch,
            (tmp_path / "worker.log").read_text()[-3000:],
        )
        assert batch["counts"]["predicted"] == len(held_out)
        rows = client.get(batch["results"]["jsonl"]).text.splitlines()
        assert [json.loads(row)["filename"] for row in rows] == names
        assert [json.loads(row)["label"] for row in rows] == predicted


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
        # enough images that extraction (25 batches, a progress report each) outlasts the
        # cancel's round trip: with 12 per class a prewarmed worker finished the whole job
        # before it (CI, 2026-12-02)
        upload(client, project["id"], digit_images(40), split="auto")
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


def test_backbone_training_goes_to_the_gpu_queue_and_a_train_worker_never_takes_it(
    backend: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """Two APIs on one database: without GPU workers (``gpu_queue`` off) a finetune job goes
    to ``train`` and a worker consuming ``train`` runs it; with them, it goes to ``gpu`` and
    that worker leaves it queued (through the sweep's resends) while it runs a later
    frozen-feature job, until a worker consuming ``gpu`` starts and runs it."""
    workers.append(WorkerProcess(backend, tmp_path / "train.log", ["--queues", "train"]))
    finetune = {"method": "finetune", "params": {"epochs": 1, "n": 1}}
    gpu_settings = backend.model_copy(update={"gpu_queue": True})
    with client_for(backend) as cpu_api, client_for(gpu_settings) as gpu_api:
        project = cpu_api.post("/v1/projects", json={"name": "queues"}).json()
        upload(cpu_api, project["id"], digit_images(4, [0, 1, 2]), split="auto")
        jobs = f"/v1/projects/{project['id']}/jobs"
        on_train = cpu_api.post(jobs, json=finetune).json()
        on_gpu = gpu_api.post(jobs, json=finetune).json()
        probe = gpu_api.post(jobs, json={"method": "knn"}).json()
        assert (on_train["queue"], on_gpu["queue"], probe["queue"]) == ("train", "gpu", "train")

        for job in (on_train, probe):
            done = wait_for(cpu_api, job["id"], {"succeeded", "failed"})
            assert done["status"] == "succeeded", (
                done,
                (tmp_path / "train.log").read_text()[-3000:],
            )
        # past the stale age, the sweep resends the gpu job's message (to `gpu`, unconsumed)
        time.sleep(backend.job_stale_after_seconds + 2 * backend.sweep_interval_seconds)
        with session_scope(backend.resolved_database_url) as db:
            row = db.get(Job, on_gpu["id"])
            assert row is not None and row.enqueued_at is not None
            assert row.enqueued_at - row.created_at > timedelta(seconds=1)  # resent
        waiting = cpu_api.get(f"/v1/jobs/{on_gpu['id']}").json()
        assert (waiting["status"], waiting["attempts"]) == ("queued", 0), waiting

        workers.append(WorkerProcess(backend, tmp_path / "gpu.log", DOVECOTE_WORKER_QUEUES="gpu"))
        done = wait_for(cpu_api, on_gpu["id"], {"succeeded", "failed"})
        assert done["status"] == "succeeded", (done, (tmp_path / "gpu.log").read_text()[-3000:])
        assert done["attempts"] == 1
        gpu_log, train_log = ((tmp_path / f"{q}.log").read_text() for q in ("gpu", "train"))
        assert f"running job {on_gpu['id']} (finetune, queue gpu)" in gpu_log
        assert f"running job {on_train['id']} (finetune, queue train)" in train_log
        assert f"running job {on_gpu['id']}" not in train_log
