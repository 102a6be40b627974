"""A real worker process audits a large project by a job (served by the same GET once
done, and recorded by the next model), and checks drift on its schedule: shifted
predictions send one `model.drift`, without anybody calling the monitoring route."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from tests.conftest import make_settings, migrate
from tests.factories import digit_images, encode
from tests.integration.test_worker import WorkerProcess, client_for, upload, wait_for
from tests.receiver import receiver

pytestmark = pytest.mark.integration


def _inverted(data: bytes) -> bytes:
    return encode(255 - np.asarray(Image.open(io.BytesIO(data)).convert("L")))


@pytest.fixture(params=["sqlite", "postgres+redis"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Projects over 10 images audited by a job; a receiver on 127.0.0.1."""
    urls = request.getfixturevalue("postgres_redis") if request.param != "sqlite" else {}
    s = make_settings(tmp_path, audit_inline_max_images=10, webhook_allow_private=True, **urls)
    migrate(s)
    return s


def test_worker_runs_the_audit_job_and_the_drift_check(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"AUDIT_INLINE_MAX_IMAGES": "10", "DRIFT_CHECK_SECONDS": "1",
           "WEBHOOK_ALLOW_PRIVATE": "true", "WEBHOOK_POLL_SECONDS": "0.2", "PREWARM": "false"}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(f"DOVECOTE_{name}", value)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        with client_for(settings) as client, receiver() as hook:
            project = client.post(
                "/v1/projects", json={"name": "watched", "store_predictions": True}
            ).json()
            pid = project["id"]
            r = client.post(
                f"/v1/projects/{pid}/webhooks", json={"url": hook.url, "events": ["model.drift"]}
            )
            assert r.status_code == 201, r.text
            upload(client, pid, digit_images(8, classes=range(5)), split="auto")

            r = client.get(f"/v1/projects/{pid}/audit")
            assert r.status_code == 202, r.text
            pending = r.json()
            deadline = time.monotonic() + 240
            while (r := client.get(f"/v1/projects/{pid}/audit")).status_code == 202:
                assert r.json()["status"] in ("queued", "running"), r.json()
                assert time.monotonic() < deadline, r.json()
                time.sleep(0.5)
            assert r.status_code == 200, r.text
            audit = r.json()
            assert audit["digest"] == pending["digest"] and audit["image_count"] == 40
            assert audit["summary"]["leakage"] == 0

            job_id = client.post(f"/v1/projects/{pid}/jobs", json={"method": "knn"}).json()["id"]
            job = wait_for(client, job_id, {"succeeded", "failed", "cancelled"})
            assert job["status"] == "succeeded", job
            metrics = client.get(f"/v1/models/{job['model_id']}").json()["metrics"]
            assert metrics["audit"] == {k: audit[k] for k in ("digest", "backbone", "summary")}

            held_out = [png for _, png in digit_images(5, classes=range(5), offset=20)]
            r = client.post(
                f"/v1/projects/{pid}/predict",
                files=[("files", (f"{i}.png", _inverted(b))) for i, b in enumerate(held_out)],
            )
            assert r.status_code == 200, r.text
            [got] = hook.wait_for(1, timeout=60)
            body = json.loads(got.body)
            assert body["event"] == "model.drift"
            assert body["data"]["model"]["id"] == job["model_id"]
            assert body["data"]["window"]["kind"] == "day"
            assert body["data"]["drift_score"] >= body["data"]["drift_threshold"]
            time.sleep(3)  # more checks ran: still the one alert
            assert len(hook.received) == 1
    finally:
        worker.stop()
