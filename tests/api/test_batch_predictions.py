"""Batch predictions: a zip or the unlabeled pool in, a background job on the real worker
code, JSON Lines and CSV out; the same answers as /predict, nothing added to the project."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.db.models import Job
from app.db.session import session_scope
from app.services import batch_predictions as service
from app.services import jobs as jobs_service
from app.services import webhooks
from app.transfer.methods import list_methods
from tests.api.helpers import assert_problem, blob_files, client_with_key, digit, new_key
from tests.conftest import API_KEY, Api, make_settings, migrate
from tests.console.helpers import console_client, sign_in
from tests.factories import digit_images, encode, make_zip, photo

#: Small chunks (3 images; a pixel budget the 451x300 photo fills alone) so a few images make
#: several chunks, each predicted 2 at a time.
SMALL_CHUNKS = {"predict_max_files": 3, "predict_batch_size": 2, "max_pixels_per_request": 136_000}


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Api]:
    settings = make_settings(tmp_path, **SMALL_CHUNKS)
    migrate(settings)
    a = Api(settings)
    with a.client:
        yield a


def trained_model(api: Api, **project: object) -> tuple[str, str]:
    pid = api.project("digits", **project)["id"]
    api.upload_labeled(pid, digit_images(6, [0, 1, 2]))
    return pid, api.train(pid)["model_id"]


def create_zip(api: Api | TestClient, model_id: str, data: bytes, **form: object):
    client = api.client if isinstance(api, Api) else api
    return client.post(
        f"/v1/models/{model_id}/batch-predictions",
        files=[("files", ("batch.zip", data))],
        data={k: str(v) for k, v in form.items()},
    )


def finished(api: Api, created: dict) -> dict:
    assert created["status"] == "queued", created
    api.run_queued()
    r = api.client.get(f"/v1/batch-predictions/{created['id']}")
    assert r.status_code == 200, r.text
    return r.json()


def jsonl(api: Api, job_id: str) -> list[dict]:
    r = api.client.get(f"/v1/batch-predictions/{job_id}/results", params={"format": "jsonl"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert f'filename="{job_id}.jsonl"' in r.headers["content-disposition"]
    return [json.loads(line) for line in r.text.splitlines()]


def csv_rows(api: Api, job_id: str) -> list[dict[str, str]]:
    r = api.client.get(f"/v1/batch-predictions/{job_id}/results", params={"format": "csv"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(r.text)))


def predicted_alone(api: Api, model_id: str, name: str, data: bytes, **params: object) -> dict:
    r = api.client.post(
        f"/v1/models/{model_id}/predict", params=params, files=[("files", (name, data))]
    )
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]


def test_zip_batch_answers_as_predict_in_jsonl_and_csv(small: Api) -> None:
    api = small
    pid, model_id = trained_model(api)
    project_before = api.client.get(f"/v1/projects/{pid}").json()
    images = {
        "zeros/a.png": digit(0, 50),
        "zeros/b.png": digit(0, 51),
        "ones/c.png": digit(1, 50),
        "twos/d.png": digit(2, 50),
        "cat.jpg": encode(photo("chelsea"), "JPEG", quality=90),  # 451x300: a chunk alone
        "e.png": digit(1, 51),
    }
    members = {
        **images,
        "notes/readme.txt": b"not an image",
        ".DS_Store": b"\x00\x01",  # hidden files and macOS folders are skipped, as on upload
        "__MACOSX/zeros/._a.png": b"\x00",
    }
    r = create_zip(api, model_id, make_zip(members), top_k=2)
    assert r.status_code == 202, r.text
    created = r.json()
    assert r.headers["location"] == f"/v1/batch-predictions/{created['id']}"
    assert (created["source"], created["filename"], created["model_id"]) == (
        "zip", "batch.zip", model_id
    )  # fmt: skip
    assert created["model_version"] == 1 and created["top_k"] == 2
    assert created["counts"] == {
        "images": 7, "processed": 0, "predicted": 0, "failed": 0, "rejected": 0
    }  # fmt: skip
    assert created["results"] is None
    r = api.client.get(f"/v1/batch-predictions/{created['id']}/results")
    assert_problem(r, 409, "results_not_ready")

    job = finished(api, created)
    assert (job["status"], job["progress"], job["stage"]) == ("succeeded", 1.0, "done"), job
    assert job["counts"] == {
        "images": 7, "processed": 7, "predicted": 6, "failed": 1, "rejected": 0
    }  # fmt: skip
    path = f"/v1/batch-predictions/{job['id']}/results"
    assert job["results"] == {"jsonl": f"{path}?format=jsonl", "csv": f"{path}?format=csv"}

    rows = jsonl(api, job["id"])
    assert [r["filename"] for r in rows] == [
        n for n in members if n in images or n.endswith(".txt")
    ]
    bad = next(r for r in rows if r["filename"] == "notes/readme.txt")
    assert bad["error"]["code"] == "image_undecodable" and bad["label"] is None
    assert bad["scores"] == [] and bad["rejected"] is False
    for row in rows:
        if row["filename"] not in images:
            continue
        alone = predicted_alone(api, model_id, row["filename"], images[row["filename"]], top_k=2)
        assert row["error"] is None
        assert row["label"] == alone["label"] and row["rejected"] is False
        assert [s["label"] for s in row["scores"]] == [s["label"] for s in alone["scores"]]
        assert row["score"] == pytest.approx(alone["score"], abs=1e-4)
        assert len(row["scores"]) == 2
    assert {r["label"] for r in rows[:2]} == {"0"}  # the model knows its zeros

    table = csv_rows(api, job["id"])
    assert list(table[0]) == [*service.CSV_COLUMNS, "label_1", "score_1", "label_2", "score_2"]
    assert [t["filename"] for t in table] == [r["filename"] for r in rows]
    for t, row in zip(table, rows, strict=True):
        assert t["label"] == (row["label"] or "")
        assert t["sha256"] == row["sha256"]
        if row["error"] is None:
            assert float(t["score"]) == pytest.approx(row["score"])
            assert t["label_1"] == row["scores"][0]["label"] and t["rejected"] == "false"
            assert float(t["score_2"]) == pytest.approx(row["scores"][1]["score"])
        else:
            assert (t["error"], t["label_1"], t["score_1"]) == ("image_undecodable", "", "")

    # Chunks as predict requests: 3 files at most, the photo alone (pixel budget): 4 parts.
    with session_scope(api.settings.resolved_database_url) as db:
        history = db.get(Job, job["id"]).history
    assert [h["processed"] for h in history] == [3, 4, 5, 7]
    # Nothing was added to the project; only the results stay (the input is gone).
    project_after = api.client.get(f"/v1/projects/{pid}").json()
    assert project_after["image_count"] == project_before["image_count"]
    blobs = {b for b in blob_files(api.settings) if b.startswith("batch-predictions/")}
    prefix = service.job_prefix(pid, job["id"])
    assert blobs == {f"{prefix}/results/{i:06d}.jsonl" for i in range(1, 5)}

    # Its own resource: listed by the project, never as a training job, and the other way.
    r = api.client.get(f"/v1/projects/{pid}/batch-predictions")
    assert [b["id"] for b in r.json()["items"]] == [job["id"]]
    training = api.client.get(f"/v1/projects/{pid}/jobs").json()["items"]
    assert [j["method"] for j in training] == ["linear_probe"]
    assert_problem(api.client.get(f"/v1/jobs/{job['id']}"), 404, "not_found")
    assert_problem(api.client.post(f"/v1/jobs/{job['id']}/cancel"), 404, "not_found")
    assert_problem(api.client.get(f"/v1/batch-predictions/{training[0]['id']}"), 404, "not_found")

    # Another tenant sees none of it, and cannot use the model.
    with client_with_key(api, new_key(api.settings, "acme")) as acme:
        for method, url in [
            ("GET", f"/v1/batch-predictions/{job['id']}"),
            ("GET", f"{path}?format=csv"),
            ("POST", f"/v1/batch-predictions/{job['id']}/cancel"),
            ("DELETE", f"/v1/batch-predictions/{job['id']}"),
            ("GET", f"/v1/projects/{pid}/batch-predictions"),
        ]:
            assert_problem(acme.request(method, url), 404, "not_found")
        assert_problem(create_zip(acme, model_id, make_zip(images)), 404, "not_found")
        r = acme.post(f"/v1/models/{model_id}/batch-predictions", json={"source": "unlabeled"})
        assert_problem(r, 404, "not_found")

    # Deleting it deletes its results.
    assert api.client.delete(f"/v1/batch-predictions/{job['id']}").status_code == 204
    assert not any(b.startswith(prefix) for b in blob_files(api.settings))
    assert_problem(api.client.get(path), 404, "not_found")


def test_unlabeled_pool_batch(api: Api) -> None:
    pid, model_id = trained_model(api, store_predictions=True)
    url = f"/v1/models/{model_id}/batch-predictions"
    assert_problem(api.client.post(url, json={"source": "unlabeled"}), 422, "unlabeled_pool_empty")

    unlabeled = {"u0.png": digit(0, 60), "u2.png": digit(2, 60)}
    r = api.upload(pid, list(unlabeled.items()))
    assert r.status_code == 201, r.text
    image_ids = {i["filename"]: i["id"] for i in r.json()["items"]}
    stored = predicted_alone(api, model_id, "p1.png", digit(1, 60))
    unlabeled["p1.png"] = digit(1, 60)
    labeled_before = api.client.get(f"/v1/projects/{pid}/images?unlabeled=false").json()

    r = api.client.post(url, json={"source": "unlabeled", "top_k": 3, "reject_below": "default"})
    assert r.status_code == 202, r.text
    created = r.json()
    assert (created["source"], created["filename"], created["counts"]["images"]) == (
        "unlabeled", None, 3
    )  # fmt: skip
    assert created["reject_below"] == "default"
    job = finished(api, created)
    assert job["status"] == "succeeded", job
    assert job["counts"]["processed"] == 3 and job["counts"]["failed"] == 0

    rows = {r["filename"]: r for r in jsonl(api, job["id"])}
    assert set(rows) == set(unlabeled)  # labeled images are not in the pool
    assert rows["u0.png"]["image_id"] == image_ids["u0.png"]
    assert rows["p1.png"]["prediction_id"] == stored["prediction_id"]
    assert rows["p1.png"]["image_id"] is None
    for name, data in unlabeled.items():
        alone = predicted_alone(api, model_id, name, data, top_k=3, reject_below="default")
        assert rows[name]["label"] == alone["label"]
        assert rows[name]["rejected"] == (alone["label"] is None)
        assert len(rows[name]["scores"]) == 3
    assert job["counts"]["rejected"] == sum(r["rejected"] for r in rows.values())
    # A batch prediction stores no prediction and labels nothing.
    assert api.client.get(f"/v1/projects/{pid}/images?unlabeled=false").json() == labeled_before


def test_bad_requests_are_typed_and_write_nothing(api: Api) -> None:
    _, model_id = trained_model(api)
    blobs_before = blob_files(api.settings)
    url = f"/v1/models/{model_id}/batch-predictions"
    too_many = make_zip({f"{i}.png": b"x" for i in range(api.settings.max_zip_members + 1)})
    cases = [
        (create_zip(api, model_id, b"PK\x03\x04 not a zip"), 422, "archive_invalid"),
        (create_zip(api, model_id, b"plain text"), 422, "archive_invalid"),
        (create_zip(api, model_id, make_zip({})), 422, "archive_invalid"),
        (create_zip(api, model_id, too_many), 422, "archive_too_large"),
        (create_zip(api, model_id, make_zip({"a.txt": b"no", "b.png": b"no"})), 422,
         "image_undecodable"),
        (create_zip(api, model_id, make_zip({"a.png": digit(0)}), top_k=0), 422,
         "validation_error"),
        (create_zip(api, model_id, make_zip({"a.png": digit(0)}), reject_below=2), 422,
         "validation_error"),
        (create_zip(api, model_id, make_zip({"a.png": digit(0)}), colour="red"), 422,
         "validation_error"),
        (api.client.post(url, files=[("file", ("a.zip", make_zip({"a.png": digit(0)})))]), 422,
         "invalid_input"),
        (api.client.post(url, files=[("files", ("a.zip", b"1")), ("files", ("b.zip", b"2"))]),
         422, "invalid_input"),
        (api.client.post(url, json={"source": "zip"}), 422, "validation_error"),
        (api.client.post(url, json={"source": "unlabeled", "top_k": 101}), 422,
         "validation_error"),
        (api.client.post(url, json=["unlabeled"]), 422, "validation_error"),
        (api.client.post(url, content=b"{not json", headers={"content-type": "application/json"}),
         422, "validation_error"),
        (api.client.post(url, content=b"source=unlabeled",
                         headers={"content-type": "text/plain"}), 422, "invalid_input"),
        (create_zip(api, "mdl_nope", make_zip({"a.png": digit(0)})), 404, "not_found"),
    ]  # fmt: skip
    for r, status, code in cases:
        body = assert_problem(r, status, code)
        if code == "image_undecodable":
            assert [x["filename"] for x in body["rejected"]] == ["a.txt", "b.png"]
    assert blob_files(api.settings) == blobs_before
    with session_scope(api.settings.resolved_database_url) as db:
        count = db.scalar(select(func.count()).select_from(Job))
    assert count == 1  # the training job only
    assert api.queued == []


def test_cancel_queued_and_running(small: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    api = small
    pid, model_id = trained_model(api)
    data = make_zip({f"{i}.png": digit(i % 3, 70 + i) for i in range(7)})

    # Queued: ends at once, its input goes, the worker never runs it.
    queued = create_zip(api, model_id, data).json()
    prefix = service.job_prefix(pid, queued["id"])
    assert f"{prefix}/{service.ZIP_INPUT}" in blob_files(api.settings)
    r = api.client.post(f"/v1/batch-predictions/{queued['id']}/cancel")
    assert r.status_code == 202, r.text
    assert (r.json()["status"], r.json()["stage"]) == ("cancelled", "cancelled")
    assert not any(b.startswith(prefix) for b in blob_files(api.settings))
    api.run_queued()
    assert api.client.get(f"/v1/batch-predictions/{queued['id']}").json()["status"] == "cancelled"
    r = api.client.post(f"/v1/batch-predictions/{queued['id']}/cancel")
    assert_problem(r, 409, "job_not_cancellable")

    # Running: stops at the report after its current chunk; no results, no blobs left.
    running = create_zip(api, model_id, data).json()
    original = service._predict_chunk

    def cancel_after_first_chunk(**kwargs: object) -> list[dict]:
        rows = original(**kwargs)  # type: ignore[arg-type]
        r = api.client.post(f"/v1/batch-predictions/{running['id']}/cancel")
        assert r.status_code == 202 and r.json()["cancel_requested"], r.text
        assert r.json()["status"] == "running"
        assert_problem(api.client.delete(f"/v1/batch-predictions/{running['id']}"), 409,
                       "job_not_finished")  # fmt: skip
        return rows

    monkeypatch.setattr(service, "_predict_chunk", cancel_after_first_chunk)
    assert api.run_queued() == ["cancelled"]
    job = api.client.get(f"/v1/batch-predictions/{running['id']}").json()
    assert (job["status"], job["results"]) == ("cancelled", None)
    assert job["counts"]["processed"] == 3 and job["counts"]["images"] == 7
    assert_problem(
        api.client.get(f"/v1/batch-predictions/{running['id']}/results"), 409, "results_not_ready"
    )
    prefix = service.job_prefix(pid, running["id"])
    assert not any(b.startswith(prefix) for b in blob_files(api.settings))


def test_a_deleted_model_fails_its_queued_batch(api: Api) -> None:
    pid, model_id = trained_model(api)
    created = create_zip(api, model_id, make_zip({"a.png": digit(0, 80)})).json()
    assert api.client.delete(f"/v1/models/{model_id}").status_code == 204
    job = finished(api, created)
    assert (job["status"], job["error"]["code"]) == ("failed", "model_deleted"), job
    prefix = service.job_prefix(pid, created["id"])
    assert not any(b.startswith(prefix) for b in blob_files(api.settings))


def test_no_training_method_is_named_like_batch_predictions_or_audits() -> None:
    assert not set(jobs_service.NOT_TRAINING) & {m.name for m in list_methods()}


def test_batch_goes_to_train_reports_its_kind_and_stays_off_the_console(tmp_path: Path) -> None:
    """On the CPU `train` queue even where GPU workers take backbone training; its
    `job.finished` says `kind: batch_prediction` with no promotion; the console's recent
    jobs (training jobs, as /v1) do not list it."""
    settings = make_settings(tmp_path, gpu_queue=True)
    migrate(settings)
    api = Api(settings)
    sent: list[tuple[str, str]] = []
    recorded = api.enqueue

    def enqueue(job_id: str, queue: str) -> None:
        sent.append((job_id, queue))
        recorded(job_id, queue)

    api.client.app.state.enqueue = enqueue
    with api.client:
        pid, model_id = trained_model(api)
        r = create_zip(api, model_id, make_zip({"a.png": digit(0, 50)}))
        assert r.status_code == 202, r.text
        batch_id = r.json()["id"]
        assert sent[-1] == (batch_id, "train")
        job = finished(api, r.json())
        assert job["status"] == "succeeded", job
        with session_scope(settings.resolved_database_url) as db:
            row = db.get(Job, batch_id)
            assert row is not None and row.queue == "train"
            summary = webhooks.job_summary(db, row)["job"]
            assert (summary["kind"], summary["method"], summary["promotion"]) == (
                "batch_prediction", jobs_service.BATCH_PREDICT, None
            )  # fmt: skip
            assert (summary["model_id"], summary["model_version"]) == (model_id, 1)
            training = db.scalars(
                select(Job).where(Job.project_id == pid, Job.id != batch_id)
            ).first()
            assert training is not None
            assert webhooks.job_summary(db, training)["job"]["kind"] == "training"
            training_id = training.id
        browser = console_client(api)
        sign_in(browser, API_KEY)
        page = browser.get(f"/console/projects/{pid}")
        assert page.status_code == 200, page.text
        assert training_id in page.text and batch_id not in page.text
