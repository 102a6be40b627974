"""Training jobs, models, publishing and prediction, with the real worker code in-process."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.api.helpers import (
    animated_gif,
    assert_problem,
    blob_files,
    digit,
    image_blobs,
    jpeg,
    png,
)
from tests.conftest import Api, make_settings, migrate
from tests.factories import digit_images
from worker.runner import run_job

CLASSES = [0, 1, 2]
JOB_FIELDS = {
    "id", "project_id", "method", "backbone", "params", "status", "progress", "stage",
    "error", "model_id", "created_at", "started_at", "finished_at",
}  # fmt: skip
MODEL_FIELDS = {
    "id", "project_id", "job_id", "method", "backbone", "classes", "metrics", "created_at",
}  # fmt: skip
METRIC_FIELDS = {
    "accuracy", "macro_f1", "per_class", "confusion_matrix", "validation", "n_train",
    "n_validation", "baseline",
}  # fmt: skip


def labeled_project(api: Api, per_class: int = 6, classes: list[int] = CLASSES) -> str:
    pid = api.project("digits")["id"]
    api.upload_labeled(pid, digit_images(per_class, classes))
    return pid


def files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", item) for item in items]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, str, dict]]:
    """One project of 3 digit classes with one linear-probe model, for read-only tests."""
    settings = make_settings(tmp_path_factory.mktemp("trained"))
    migrate(settings)
    api = Api(settings)
    with api.client:
        pid = labeled_project(api)
        job = api.train(pid)
        yield api, pid, job


# --- refused up front -----------------------------------------------------------------------


def assert_no_job(api: Api, pid: str) -> None:
    assert api.queued == []
    assert api.client.get(f"/v1/projects/{pid}/jobs").json()["items"] == []


def test_no_labels_at_all(api: Api) -> None:
    pid = api.project()["id"]
    api.upload(pid, [("a.png", png(1)), ("b.png", png(2))])  # unlabeled
    r = api.client.post(f"/v1/projects/{pid}/jobs", json={"method": "linear_probe"})
    assert_problem(r, 422, "project_has_no_labels")
    assert_no_job(api, pid)


def test_one_labeled_class_is_project_has_no_labels(api: Api) -> None:
    pid = labeled_project(api, per_class=4, classes=[0])
    api.upload(pid, [("u.png", digit(1))])  # unlabeled images do not make a class
    r = api.client.post(f"/v1/projects/{pid}/jobs", json={"method": "linear_probe"})
    body = assert_problem(r, 422, "project_has_no_labels")
    assert body["class_counts"] == {"0": 4}
    assert_no_job(api, pid)


def test_test_split_and_source_images_do_not_count_for_training(api: Api) -> None:
    pid = labeled_project(api, per_class=4, classes=[0])
    api.upload_labeled(pid, digit_images(4, [1]), split="test")
    r = api.client.post(f"/v1/projects/{pid}/jobs", json={})  # linear_probe is the default
    assert_problem(r, 422, "project_has_no_labels")
    api.upload(pid, [(f"s{i}.png", digit(2, i)) for i in range(4)], label="2", domain="source")
    r = api.client.post(f"/v1/projects/{pid}/jobs", json={})
    assert_problem(r, 422, "project_has_no_labels")
    assert_no_job(api, pid)


def test_class_with_one_image_is_class_too_small(api: Api) -> None:
    pid = labeled_project(api, per_class=4, classes=[0, 1])
    api.upload(pid, [("lonely.png", digit(2))], label="2")
    r = api.client.post(f"/v1/projects/{pid}/jobs", json={"method": "knn"})
    body = assert_problem(r, 422, "class_too_small")
    assert "2" in body["detail"]
    assert_no_job(api, pid)


@pytest.mark.parametrize(
    "body,code",
    [
        ({"method": "magic"}, "unknown_method"),
        ({"method": ""}, "unknown_method"),
        ({"method": "linear_probe", "params": {"learning_rate": 1}}, "invalid_params"),
        ({"method": "knn", "params": {"k": 0}}, "invalid_params"),
        ({"method": "knn", "params": {"mode": "forest"}}, "invalid_params"),
        ({"method": "linear_probe", "backbone": "convnext_tiny"}, "backbone_unavailable"),
        ({"method": "linear_probe", "backbone": "resnet9000"}, "backbone_unavailable"),
        ({"method": "linear_probe", "extra": 1}, "validation_error"),
        ({"method": "linear_probe", "params": [1, 2]}, "validation_error"),
    ],
)
def test_invalid_job_is_refused_before_queueing(api: Api, body: dict, code: str) -> None:
    pid = labeled_project(api, per_class=3, classes=[0, 1])
    r = api.client.post(f"/v1/projects/{pid}/jobs", json=body)
    problem = assert_problem(r, 422, code)
    if code == "invalid_params":
        assert problem["errors"]
    assert_no_job(api, pid)


def test_job_on_unknown_project_is_404(api: Api) -> None:
    r = api.client.post("/v1/projects/prj_nope/jobs", json={"method": "linear_probe"})
    assert_problem(r, 404, "not_found")
    assert api.queued == []


# --- the job lifecycle ----------------------------------------------------------------------


def test_job_lifecycle_to_a_model(api: Api) -> None:
    pid = labeled_project(api)
    r = api.client.post(f"/v1/projects/{pid}/jobs", json={"method": "linear_probe"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job.keys() >= JOB_FIELDS
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["project_id"] == pid
    assert job["method"] == "linear_probe"
    assert job["backbone"]  # the default backbone, resolved
    assert job["progress"] == 0
    assert job["model_id"] is None and job["error"] is None
    assert job["started_at"] is None and job["finished_at"] is None
    assert api.queued == [job["id"]]
    assert api.client.get(r.headers["location"]).json()["status"] == "queued"
    listed = api.client.get(f"/v1/projects/{pid}/jobs").json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]

    assert api.run_queued() == ["succeeded"]

    done = api.client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done
    assert done["progress"] == 1.0
    assert done["error"] is None
    assert isinstance(done["model_id"], str) and done["model_id"]
    started = datetime.fromisoformat(done["started_at"].replace("Z", "+00:00"))
    finished = datetime.fromisoformat(done["finished_at"].replace("Z", "+00:00"))
    assert started <= finished

    model = api.client.get(f"/v1/models/{done['model_id']}").json()
    assert model["job_id"] == job["id"]
    assert model["project_id"] == pid
    assert model["backbone"] == job["backbone"]
    # The first successful model becomes the project's default.
    assert api.client.get(f"/v1/projects/{pid}").json()["default_model_id"] == model["id"]

    # Running the task again (a redelivery) changes nothing.
    api.queued.append(job["id"])
    api.run_queued()
    again = api.client.get(f"/v1/jobs/{job['id']}").json()
    assert (again["status"], again["model_id"]) == ("succeeded", done["model_id"])
    assert len(api.client.get(f"/v1/projects/{pid}/models").json()["items"]) == 1


def test_model_metrics_with_k_fold(trained: tuple[Api, str, dict]) -> None:
    api, _, job = trained
    model = api.client.get(f"/v1/models/{job['model_id']}").json()
    assert model.keys() >= MODEL_FIELDS
    assert model["method"] == "linear_probe"
    assert model["classes"] == ["0", "1", "2"]
    m = model["metrics"]
    assert m.keys() >= METRIC_FIELDS
    assert m["validation"] == "k-fold"
    assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["macro_f1"] <= 1.0
    assert m["n_train"] == 18
    assert m["n_validation"] == 18  # every image is predicted once by a model that never saw it
    assert set(m["per_class"]) == {"0", "1", "2"}
    for stats in m["per_class"].values():
        assert {"precision", "recall", "f1", "support"} <= stats.keys()
        assert stats["support"] == 6
    cm = m["confusion_matrix"]
    assert cm["labels"] == ["0", "1", "2"]
    assert len(cm["matrix"]) == 3 and all(len(row) == 3 for row in cm["matrix"])
    assert sum(map(sum, cm["matrix"])) == m["n_validation"]
    correct = sum(cm["matrix"][i][i] for i in range(3))
    assert math.isclose(m["accuracy"], correct / m["n_validation"], abs_tol=1e-6)
    baseline = m["baseline"]
    assert {"accuracy", "macro_f1"} <= baseline.keys()
    # digits are easy: the probe beats always-the-majority-class
    assert m["accuracy"] > baseline["accuracy"]


def test_model_metrics_with_a_test_split(api: Api) -> None:
    pid = labeled_project(api, per_class=4, classes=[0, 1])
    test = digit_images(2, [0, 1], offset=10)
    api.upload_labeled(pid, test, split="test")
    job = api.train(pid)
    m = api.client.get(f"/v1/models/{job['model_id']}").json()["metrics"]
    assert m["validation"] == "test-split"
    assert m["n_validation"] == 4
    assert m["n_train"] == 8
    assert sum(s["support"] for s in m["per_class"].values()) == 4
    assert "baseline" in m


def test_lists_of_models_and_jobs(trained: tuple[Api, str, dict]) -> None:
    api, pid, job = trained
    models = api.client.get(f"/v1/projects/{pid}/models").json()
    assert [m["id"] for m in models["items"]] == [job["model_id"]]
    assert models["next_cursor"] is None
    jobs = api.client.get(f"/v1/projects/{pid}/jobs", params={"limit": 1}).json()
    assert [j["id"] for j in jobs["items"]] == [job["id"]]


def test_knn_prototype_trains(api: Api) -> None:
    pid = labeled_project(api, per_class=4)
    job = api.train(pid, method="knn", params={"mode": "prototype"})
    assert job["params"]["mode"] == "prototype"
    model = api.client.get(f"/v1/models/{job['model_id']}").json()
    assert model["method"] == "knn"
    assert model["metrics"]["validation"] == "k-fold"
    r = api.client.post(f"/v1/models/{model['id']}/predict", files=files(("d.png", digit(1, 20))))
    assert r.status_code == 200, r.text
    scores = [s["score"] for s in r.json()["predictions"][0]["scores"]]
    assert sum(scores) <= 1 + 1e-5


# --- cancellation ---------------------------------------------------------------------------


def test_cancel_queued_job(api: Api) -> None:
    pid = labeled_project(api, per_class=3)
    job = api.client.post(f"/v1/projects/{pid}/jobs", json={"method": "linear_probe"}).json()
    r = api.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "cancelled"
    assert r.json()["finished_at"] is not None
    assert api.client.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"

    assert_problem(api.client.post(f"/v1/jobs/{job['id']}/cancel"), 409, "job_not_cancellable")

    # Its task still arrives later: it must never produce a model.
    assert api.queued == [job["id"]]
    api.run_queued()
    after = api.client.get(f"/v1/jobs/{job['id']}").json()
    assert after["status"] == "cancelled"
    assert after["model_id"] is None
    assert api.client.get(f"/v1/projects/{pid}/models").json()["items"] == []
    assert api.client.get(f"/v1/projects/{pid}").json()["default_model_id"] is None
    assert not [b for b in blob_files(api.settings) if b.startswith("models/")]


def test_cancel_finished_job_is_409(trained: tuple[Api, str, dict]) -> None:
    api, _, job = trained
    assert_problem(api.client.post(f"/v1/jobs/{job['id']}/cancel"), 409, "job_not_cancellable")
    assert api.client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_unknown_job_is_404(api: Api, method: str) -> None:
    url = "/v1/jobs/job_nope" + ("/cancel" if method == "POST" else "")
    assert_problem(api.client.request(method, url), 404, "not_found")


# --- prediction -----------------------------------------------------------------------------


def assert_predictions(body: dict, model_id: str, names: list[str], k: int) -> None:
    assert body["model_id"] == model_id
    assert [p["filename"] for p in body["predictions"]] == names
    for p in body["predictions"]:
        scores = [s["score"] for s in p["scores"]]
        assert len(scores) == k
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert sum(scores) <= 1 + 1e-5
        assert p["label"] == p["scores"][0]["label"]
        assert p["score"] == p["scores"][0]["score"]
        assert {s["label"] for s in p["scores"]} <= {"0", "1", "2"}
        assert len({s["label"] for s in p["scores"]}) == k


def test_predict_with_model_and_project(trained: tuple[Api, str, dict]) -> None:
    api, pid, job = trained
    mid = job["model_id"]
    probes = [(f"probe-{c}.png", digit(c, 30)) for c in CLASSES]

    r = api.client.post(f"/v1/models/{mid}/predict", files=files(*probes))
    assert r.status_code == 200, r.text
    by_model = r.json()
    assert_predictions(by_model, mid, [n for n, _ in probes], k=3)  # top_k 5 > 3 classes
    # all three classes together: the probabilities sum to 1
    for p in by_model["predictions"]:
        assert math.isclose(sum(s["score"] for s in p["scores"]), 1.0, abs_tol=1e-4)
    # digits are easy: most probes are recognised
    hits = sum(
        p["label"] == n.split("-")[1][0]
        for p, (n, _) in zip(by_model["predictions"], probes, strict=True)
    )
    assert hits >= 2

    r = api.client.post(f"/v1/projects/{pid}/predict", params={"top_k": 2}, files=files(*probes))
    assert r.status_code == 200, r.text
    by_project = r.json()
    assert_predictions(by_project, mid, [n for n, _ in probes], k=2)
    for a, b in zip(by_model["predictions"], by_project["predictions"], strict=True):
        assert a["label"] == b["label"]
        assert math.isclose(a["score"], b["score"], rel_tol=1e-4)

    r = api.client.post(f"/v1/models/{mid}/predict?top_k=1", files=files(probes[0]))
    assert_predictions(r.json(), mid, [probes[0][0]], k=1)


def test_predict_accepts_other_formats(trained: tuple[Api, str, dict]) -> None:
    api, _, job = trained
    r = api.client.post(
        f"/v1/models/{job['model_id']}/predict",
        files=files(("a.jpg", jpeg(1)), ("b.gif", animated_gif())),
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 2


@pytest.mark.parametrize("top_k", [0, -1, 101, "all"])
def test_predict_bad_top_k_is_422(trained: tuple[Api, str, dict], top_k: object) -> None:
    api, _, job = trained
    r = api.client.post(
        f"/v1/models/{job['model_id']}/predict",
        params={"top_k": top_k},
        files=files(("a.png", digit(0))),
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "name,data,code",
    [
        ("notes.txt", b"not an image", "image_undecodable"),
        ("cut.jpg", jpeg(1, (64, 64))[:300], "image_undecodable"),
        ("bomb.png", None, "image_too_large"),
    ],
)
def test_predict_answers_per_file_around_a_non_image(
    trained: tuple[Api, str, dict], name: str, data: bytes | None, code: str
) -> None:
    """One bad file among several: 207, the others predicted, the bad one rejected by name;
    only bad files: the 422 problem, naming the file."""
    from tests.api.helpers import png_claiming

    api, pid, job = trained
    data = data if data is not None else png_claiming(20000, 20000)
    for url in (f"/v1/models/{job['model_id']}/predict", f"/v1/projects/{pid}/predict"):
        r = api.client.post(
            url, files=files(("ok.png", digit(0)), (name, data), ("two.png", digit(1)))
        )
        assert r.status_code == 207, r.text
        body = r.json()
        assert [p["filename"] for p in body["predictions"]] == ["ok.png", "two.png"]
        assert body["predictions"][0]["label"] == "0"
        [rejected] = body["rejected"]
        assert rejected["filename"] == name and rejected["code"] == code
        problem = assert_problem(api.client.post(url, files=files((name, data))), 422, code)
        assert problem["filename"] == name and name in problem["detail"]


def test_predict_runs_in_chunks_and_caps_the_files(trained: tuple[Api, str, dict]) -> None:
    """Chunks of DOVECOTE_PREDICT_BATCH_SIZE answer as one pass would, a bad file rejected
    within its chunk; more than DOVECOTE_PREDICT_MAX_FILES files is 413 too_many_files."""
    api, pid, job = trained
    mid = job["model_id"]
    probes = [(f"p{i}.png", digit(i % 3, 30 + i)) for i in range(5)]
    whole = api.client.post(f"/v1/models/{mid}/predict", files=files(*probes)).json()
    small = Api(make_settings(api.settings.data_dir, predict_batch_size=2, predict_max_files=6))
    with small.client:
        mixed = [*probes[:3], ("notes.txt", b"not an image"), *probes[3:]]
        r = small.client.post(f"/v1/models/{mid}/predict", files=files(*mixed))
        assert r.status_code == 207, r.text
        body = r.json()
        assert [p["filename"] for p in body["predictions"]] == [n for n, _ in probes]
        assert [x["filename"] for x in body["rejected"]] == ["notes.txt"]
        for a, b in zip(whole["predictions"], body["predictions"], strict=True):
            assert a["label"] == b["label"]
            assert math.isclose(a["score"], b["score"], rel_tol=1e-3)
        for url in (f"/v1/models/{mid}/predict", f"/v1/projects/{pid}/predict"):
            r = small.client.post(url, files=files(*mixed, ("extra.png", digit(0))))
            problem = assert_problem(r, 413, "too_many_files")
            assert problem["limit"] == 6 and "6" in problem["detail"]
            assert "DOVECOTE_PREDICT_MAX_FILES" in problem["detail"]


def test_predict_without_files_is_422(trained: tuple[Api, str, dict]) -> None:
    api, _, job = trained
    r = api.client.post(f"/v1/models/{job['model_id']}/predict")
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


def test_predict_on_project_without_model_is_409(api: Api) -> None:
    pid = labeled_project(api, per_class=2, classes=[0, 1])
    r = api.client.post(f"/v1/projects/{pid}/predict", files=files(("a.png", digit(0))))
    assert_problem(r, 409, "project_has_no_model")


@pytest.mark.parametrize("method", ["GET", "DELETE", "PREDICT"])
def test_unknown_model_is_404(api: Api, method: str) -> None:
    if method == "PREDICT":
        r = api.client.post("/v1/models/mdl_nope/predict", files=files(("a.png", digit(0))))
    else:
        r = api.client.request(method, "/v1/models/mdl_nope")
    assert_problem(r, 404, "not_found")


# --- publishing and deleting ----------------------------------------------------------------


def test_default_model(api: Api) -> None:
    pid = labeled_project(api, per_class=4)
    first = api.train(pid)["model_id"]
    second = api.train(pid, method="knn")["model_id"]
    # A later model does not replace the default by itself.
    assert api.client.get(f"/v1/projects/{pid}").json()["default_model_id"] == first

    r = api.client.post(f"/v1/projects/{pid}/default-model", json={"model_id": second})
    assert r.status_code == 200, r.text
    assert r.json()["default_model_id"] == second
    assert r.json()["id"] == pid
    r = api.client.post(f"/v1/projects/{pid}/predict", files=files(("a.png", digit(0, 40))))
    assert r.status_code == 200 and r.json()["model_id"] == second

    other = labeled_project(api, per_class=3, classes=[0, 1])
    foreign = api.train(other)["model_id"]
    r = api.client.post(f"/v1/projects/{pid}/default-model", json={"model_id": foreign})
    assert_problem(r, 422, "invalid_input")
    r = api.client.post(f"/v1/projects/{pid}/default-model", json={"model_id": "mdl_nope"})
    assert_problem(r, 422, "invalid_input")
    r = api.client.post(f"/v1/projects/{pid}/default-model", json={})
    assert_problem(r, 422, "validation_error")
    assert api.client.get(f"/v1/projects/{pid}").json()["default_model_id"] == second
    assert api.client.get(f"/v1/projects/{other}").json()["default_model_id"] == foreign


def _artifacts(api: Api, pid: str, mid: str) -> set[str]:
    return {b for b in blob_files(api.settings) if b.startswith(f"models/{pid}/{mid}/")}


def test_delete_model(api: Api) -> None:
    pid = labeled_project(api, per_class=4)
    first = api.train(pid)["model_id"]
    second = api.train(pid, method="knn")["model_id"]
    assert _artifacts(api, pid, first) and _artifacts(api, pid, second)

    # Deleting a model that is not the default keeps the default.
    assert api.client.delete(f"/v1/models/{second}").status_code == 204
    assert_problem(api.client.get(f"/v1/models/{second}"), 404, "not_found")
    assert _artifacts(api, pid, second) == set()
    assert api.client.get(f"/v1/projects/{pid}").json()["default_model_id"] == first

    # Deleting the default model leaves the project without a model.
    r = api.client.delete(f"/v1/models/{first}")
    assert r.status_code == 204 and r.content == b""
    assert_problem(api.client.get(f"/v1/models/{first}"), 404, "not_found")
    assert_problem(api.client.delete(f"/v1/models/{first}"), 404, "not_found")
    r = api.client.post(f"/v1/models/{first}/predict", files=files(("a.png", digit(0, 40))))
    assert_problem(r, 404, "not_found")
    assert _artifacts(api, pid, first) == set()
    assert api.client.get(f"/v1/projects/{pid}").json()["default_model_id"] is None
    assert api.client.get(f"/v1/projects/{pid}/models").json()["items"] == []
    r = api.client.post(f"/v1/projects/{pid}/predict", files=files(("a.png", digit(0, 40))))
    assert_problem(r, 409, "project_has_no_model")
    # The job that made it is still there, and says which model it made.
    jobs = api.client.get(f"/v1/projects/{pid}/jobs").json()["items"]
    assert {j["status"] for j in jobs} == {"succeeded"}

    # A new model becomes the default again.
    third = api.train(pid)["model_id"]
    assert api.client.get(f"/v1/projects/{pid}").json()["default_model_id"] == third


def test_feature_cache_lives_in_the_data_dir(trained: tuple[Api, str, dict]) -> None:
    api, _, _ = trained
    assert Path(api.settings.feature_cache_dir).is_relative_to(api.settings.data_dir.resolve())


def test_job_of_a_deleted_project_never_runs(api: Api) -> None:
    pid = labeled_project(api, per_class=3, classes=[0, 1])
    job = api.client.post(f"/v1/projects/{pid}/jobs", json={"method": "knn"}).json()
    assert api.client.delete(f"/v1/projects/{pid}").status_code == 204
    assert api.run_queued() == ["missing"]
    assert_problem(api.client.get(f"/v1/jobs/{job['id']}"), 404, "not_found")
    assert blob_files(api.settings) == set()


def test_queue_down_is_503_and_the_job_is_failed(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from app.api.main import create_app
    from tests.conftest import API_KEY

    settings = make_settings(tmp_path)
    migrate(settings)

    def broken(job_id: str, queue: str) -> None:
        raise ConnectionError("broker unreachable")

    with TestClient(create_app(settings, enqueue=broken)) as client:
        client.headers["Authorization"] = f"Bearer {API_KEY}"
        pid = client.post("/v1/projects", json={"name": "p"}).json()["id"]
        for label in ("0", "1"):
            r = client.post(
                f"/v1/projects/{pid}/images",
                files=[("files", (f"{label}-{i}.png", digit(int(label), i))) for i in range(2)],
                data={"label": label},
            )
            assert r.status_code == 201, r.text
        r = client.post(f"/v1/projects/{pid}/jobs", json={"method": "knn"})
        assert_problem(r, 503, "queue_unavailable")
        (job,) = client.get(f"/v1/projects/{pid}/jobs").json()["items"]
        assert job["status"] == "failed"
        assert job["error"]["code"] == "queue_unavailable"


# --- the job's inputs changed or cannot be read when the worker runs it ----------------------


def queued_job(api: Api, pid: str) -> str:
    r = api.client.post(f"/v1/projects/{pid}/jobs", json={"method": "knn"})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def assert_failed_at_once(api: Api, job_id: str, code: str, statuses: list[str]) -> dict:
    """The run ended the job itself (no sweep, no heartbeat timeout): failed, with ``code``."""
    assert statuses == ["failed"]
    job = api.client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["stage"] == "failed", job
    assert job["error"]["code"] == code, job["error"]
    assert job["finished_at"] is not None
    assert str(api.settings.data_dir.resolve()) not in str(job["error"])
    return dict(job["error"])


def test_images_deleted_after_the_job_was_created_fail_it_with_their_code(api: Api) -> None:
    pid = labeled_project(api, per_class=3, classes=[0, 1])
    job_id = queued_job(api, pid)
    for image in api.client.get(f"/v1/projects/{pid}/images?limit=100").json()["items"]:
        r = api.client.delete(f"/v1/projects/{pid}/images/{image['id']}")
        assert r.status_code == 204, r.text
    assert_failed_at_once(api, job_id, "project_has_no_labels", api.run_queued())


def test_image_blobs_lost_after_the_job_was_created_fail_it_as_image_missing(
    api: Api,
) -> None:
    pid = labeled_project(api, per_class=3, classes=[0, 1])
    job_id = queued_job(api, pid)
    blobs = image_blobs(api.settings, pid)
    assert blobs
    for blob in blobs:  # the rows stay: the store lost the bytes
        (api.settings.data_dir.resolve() / "blobs" / blob).unlink()
    error = assert_failed_at_once(api, job_id, "image_missing", api.run_queued())
    assert error["status"] == 409
    assert f"images/{pid}/{error['sha256']}" in blobs


def test_a_worker_that_cannot_prepare_the_inputs_fails_the_job_at_once(api: Api) -> None:
    """Setup (reading the job's data) fails before training: the job does not stay
    ``running`` until the sweep calls it ``worker_lost``; its error names no server detail."""
    pid = labeled_project(api, per_class=3, classes=[0, 1])
    job_id = queued_job(api, pid)
    misconfigured = api.settings.model_copy(update={"storage_url": "ftp://blobs.internal/x"})
    statuses = [run_job(queued, settings=misconfigured) for queued in api.queued]
    api.queued.clear()
    error = assert_failed_at_once(api, job_id, "job_setup_failed", statuses)
    assert job_id in error["detail"]
    assert "ftp" not in str(error) and "blobs.internal" not in str(error)
