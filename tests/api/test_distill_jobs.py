"""`distill` jobs through the API: the teacher is a model of the project, checked at creation."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.helpers import assert_problem
from tests.conftest import Api
from tests.factories import digit_images


def test_distill_job_trains_a_student_from_a_project_model(api: Api) -> None:
    project = api.project()
    api.upload_labeled(project["id"], digit_images(6, [0, 1, 2]))
    api.upload(
        project["id"],
        [(f"u{i}.png", png) for i, (_, png) in enumerate(digit_images(2, [0, 1, 2], offset=30))],
    )
    teacher = api.train(project["id"], "linear_probe", backbone="efficientnet_lite1")
    job = api.train(
        project["id"], "distill",
        params={"teacher_model_id": teacher["model_id"], "epochs": 2, "trainable": "head"},
    )  # fmt: skip
    model = api.client.get(f"/v1/models/{job['model_id']}").json()
    assert model["method"] == "distill" and model["backbone"] == "mobilenetv2_100"
    assert job["backbone"] == "mobilenetv2_100"  # the job names the student it trains
    m = model["metrics"]
    assert m["teacher"]["model_ids"] == [teacher["model_id"]] and m["n_unlabeled"] == 6
    assert m["validation"] == "holdout" and m["teacher"]["saw_validation"] is True
    assert m["student"]["parameters"] < m["teacher"]["parameters"]
    assert [r["epoch"] for r in job["history"]][:1] == [1]
    r = api.client.post(
        f"/v1/models/{model['id']}/predict",
        files=[("files", ("d.png", digit_images(1, [2], offset=50)[0][1]))],
    )
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] in {"0", "1", "2"}


def test_a_teacher_outside_the_project_is_refused_at_creation(api: Api, acme: TestClient) -> None:
    project = api.project()
    api.upload_labeled(project["id"], digit_images(3, [0, 1]))
    theirs = acme.post("/v1/projects", json={"name": "theirs"}).json()
    for label in ("0", "1"):
        acme.post(
            f"/v1/projects/{theirs['id']}/images",
            files=[
                ("files", (f"{i}.png", png))
                for i, (_, png) in enumerate(digit_images(3, [int(label)]))
            ],
            data={"label": label},
        )
    assert acme.post(f"/v1/projects/{theirs['id']}/jobs", json={"method": "knn"}).status_code == 202
    sibling = api.project("sibling")
    api.upload_labeled(sibling["id"], digit_images(3, [0, 1]))
    sibling_model = api.train(sibling["id"], "knn")["model_id"]  # also runs acme's job
    acme_model = acme.get(f"/v1/projects/{theirs['id']}/models").json()["items"][0]["id"]
    for teacher_id in ("mdl_doesnotexist", acme_model, sibling_model, [sibling_model]):
        r = api.client.post(
            f"/v1/projects/{project['id']}/jobs",
            json={"method": "distill", "params": {"teacher_model_id": teacher_id}},
        )
        assert_problem(r, 422, "teacher_not_in_project")
    r = api.client.post(
        f"/v1/projects/{project['id']}/jobs", json={"method": "distill", "params": {}}
    )
    assert_problem(r, 422, "invalid_params")
    assert api.queued == []
