"""`pretrain` jobs through the API: the learned backbone becomes the tenant's, and only its."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.helpers import assert_problem
from tests.conftest import Api
from tests.factories import digit_images


def test_a_pretrained_backbone_serves_the_tenants_jobs_and_predictions(
    api: Api, acme: TestClient
) -> None:
    unlabeled = api.project("microscope")
    r = api.upload(unlabeled["id"], [(f"u{i}.png", png) for i, (_, png) in
                                     enumerate(digit_images(4, range(10), offset=20))])  # fmt: skip
    assert r.status_code in (201, 207), r.text
    job = api.train(unlabeled["id"], "pretrain", params={"epochs": 2})
    name = job["model_id"]
    model = api.client.get(f"/v1/models/{name}").json()
    assert model["method"] == "pretrain" and model["metrics"]["n_images"] == 40
    assert [r["epoch"] for r in job["history"]] == [1, 2]

    listed = {b["name"]: b for b in api.client.get("/v1/backbones").json()}
    assert listed[name]["available"] and listed[name]["architecture"] == "resnet10t"
    assert listed[name]["weights_source"] == "tenant"
    assert name not in {b["name"] for b in acme.get("/v1/backbones").json()}

    labeled = api.project("cells")
    api.upload_labeled(labeled["id"], digit_images(5, [0, 1, 2]))
    probe = api.train(labeled["id"], "linear_probe", backbone=name)
    probe_model = api.client.get(f"/v1/models/{probe['model_id']}").json()
    assert probe_model["backbone"] == name
    r = api.client.post(
        f"/v1/models/{probe['model_id']}/predict",
        files=[("files", ("d.png", digit_images(1, [2], offset=50)[0][1]))],
    )
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] in {"0", "1", "2"}
    # ... and methods that train it: finetune moves its last block, served with its own tensors
    tuned = api.train(labeled["id"], "finetune", backbone=name, params={"epochs": 1, "n": 1})
    tuned_model = api.client.get(f"/v1/models/{tuned['model_id']}").json()
    assert tuned_model["backbone"] == name and tuned_model["metrics"]["baseline"]["name"]
    r = api.client.post(
        f"/v1/models/{tuned['model_id']}/predict?localize=true",
        files=[("files", ("d.png", digit_images(1, [2], offset=50)[0][1]))],
    )
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["box"] is not None

    theirs = acme.post("/v1/projects", json={"name": "theirs"}).json()
    for backbone in (name, "mdl_doesnotexist"):
        r = acme.post(
            f"/v1/projects/{theirs['id']}/jobs", json={"method": "knn", "backbone": backbone}
        )
        assert_problem(r, 422, "backbone_unavailable")
    r = acme.post(  # nor as a distillation student
        f"/v1/projects/{theirs['id']}/jobs",
        json={
            "method": "distill",
            "params": {"teacher_model_id": "mdl_x", "student_backbone": name},
        },
    )
    assert_problem(r, 422, "backbone_unavailable")
    assert api.queued == []

    # the learned backbone outlives neither its model nor its project while a model stands on it
    for doomed in (f"/v1/models/{name}", f"/v1/projects/{unlabeled['id']}"):
        r = api.client.delete(doomed)
        assert_problem(r, 409, "backbone_in_use")
        assert r.json()["dependents"] == sorted([probe["model_id"], tuned["model_id"]])
    assert api.client.get(f"/v1/models/{name}").status_code == 200
    assert api.client.delete(f"/v1/projects/{labeled['id']}").status_code == 204
    assert api.client.delete(f"/v1/projects/{unlabeled['id']}").status_code == 204
    assert api.client.get(f"/v1/models/{name}").status_code == 404


def test_pretrain_needs_images_not_labels(api: Api) -> None:
    project = api.project()
    api.upload(project["id"], [("a.png", digit_images(1, [0])[0][1])])
    r = api.client.post(f"/v1/projects/{project['id']}/jobs", json={"method": "pretrain"})
    assert_problem(r, 422, "too_few_images")
