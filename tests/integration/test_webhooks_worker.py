"""A real worker process sends a job's webhook from its delivery thread, signed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.services.webhooks import signature
from tests.conftest import make_settings, migrate
from tests.factories import digit_images
from tests.integration.test_worker import WorkerProcess, client_for, upload, wait_for
from tests.receiver import receiver

pytestmark = pytest.mark.integration


def delivered(client: TestClient, webhook_id: str) -> list[dict]:
    return client.get(f"/v1/webhooks/{webhook_id}/deliveries").json()["items"]


def test_worker_delivers_one_signed_webhook_per_job_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"WEBHOOK_ALLOW_PRIVATE": "true", "WEBHOOK_POLL_SECONDS": "0.2",
                        "PREWARM": "false"}.items():  # fmt: skip
        monkeypatch.setenv(f"DOVECOTE_{name}", value)
    settings = make_settings(tmp_path, webhook_allow_private=True)
    migrate(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        with client_for(settings) as client, receiver() as hook:
            project = client.post("/v1/projects", json={"name": "hooked"}).json()
            r = client.post(f"/v1/projects/{project['id']}/webhooks", json={"url": hook.url})
            assert r.status_code == 201, r.text
            webhook = r.json()
            upload(client, project["id"], digit_images(6), split="auto")
            job_id = client.post(
                f"/v1/projects/{project['id']}/jobs", json={"method": "knn"}
            ).json()["id"]
            job = wait_for(client, job_id, {"succeeded", "failed", "cancelled"})
            assert job["status"] == "succeeded", job
            [got] = hook.wait_for(1, timeout=30)
            body = json.loads(got.body)
            assert body["data"]["job"]["id"] == job_id
            assert body["data"]["job"]["model_id"] == job["model_id"]
            assert got.headers["Dovecote-Signature"] == signature(webhook["secret"], got.body)
            # The receiver has the body before the worker records the answer: wait for it.
            deadline = time.monotonic() + 30
            while (deliveries := delivered(client, webhook["id"]))[0]["status"] == "pending":
                assert time.monotonic() < deadline, deliveries
                time.sleep(0.1)
            assert [(d["status"], d["attempts"]) for d in deliveries] == [("succeeded", 1)]
            assert len(hook.received) == 1
    finally:
        worker.stop()
