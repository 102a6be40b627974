"""Domain adaptation through the API: labeled `domain=source` uploads, unlabeled
`domain=target` uploads, a job run by the real worker code, and the model's metrics."""

from __future__ import annotations

from tests.api.helpers import assert_problem
from tests.conftest import Api
from tests.factories import digit_images, mnist_images

CLASSES = [0, 1, 2]


def upload_source(api: Api, project_id: str, per_class: int) -> None:
    for label in CLASSES:
        files = [
            (f"mnist-{label}-{i}.png", png)
            for i, (_, png) in enumerate(mnist_images(per_class, [label]))
        ]
        r = api.upload(project_id, files, label=str(label), domain="source")
        assert r.status_code == 201, r.text


def upload_target(api: Api, project_id: str, per_class: int) -> None:
    files = [
        (f"uci-{i}.png", png)
        for i, (_, png) in enumerate(digit_images(per_class, CLASSES, smooth=True))
    ]
    r = api.upload(project_id, files, domain="target")
    assert r.status_code == 201, r.text
    assert all(item["domain"] == "target" and item["label"] is None for item in r.json()["items"])


def test_domain_adaptation_job_reports_selection_gap_and_baseline(api: Api) -> None:
    project = api.project()
    upload_source(api, project["id"], 6)
    upload_target(api, project["id"], 6)
    for label in CLASSES:  # labeled target test images: reported on, never trained on
        files = [(f"test-{label}-{i}.png", png) for i, (_, png) in
                 enumerate(digit_images(4, [label], offset=6, smooth=True))]  # fmt: skip
        r = api.upload(project["id"], files, label=str(label), domain="target", split="test")
        assert r.status_code == 201, r.text
    job = api.train(
        project["id"], "domain_adaptation",
        params={"algorithm": "coral", "coral_regularization": [0.1, 1.0]},
    )  # fmt: skip
    model = api.client.get(f"/v1/models/{job['model_id']}").json()
    assert model["method"] == "domain_adaptation" and model["classes"] == ["0", "1", "2"]
    m = model["metrics"]
    assert m["selected"] == "coral" and m["selected_config"]["regularization"] in (0.1, 1.0)
    assert m["validation"] == "test-split" and m["n_validation"] == 12 and m["n_train"] == 18
    assert m["n_target_unlabeled"] == 18
    assert set(m["candidates"]) == {"source_only", "coral"}
    assert len(m["candidates"]["coral"]["configs"]) == 2
    assert all("target_accuracy" in c for c in m["candidates"].values())
    assert m["source_only"]["name"] == "source_only" and m["baseline"] == m["source_only"]
    assert set(m["domain_gap"]) == {"measure", "before", "after"}
    assert 0 <= m["reverse_validation"]["selected"] <= 1
    assert isinstance(m["warnings"], list) and isinstance(m["negative_transfer"], bool)
    r = api.client.post(
        f"/v1/projects/{project['id']}/predict",
        files=[("files", ("x.png", digit_images(1, [2], offset=40, smooth=True)[0][1]))],
    )
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] in {"0", "1", "2"}


def test_missing_source_labels_or_target_images_are_422_at_creation(api: Api) -> None:
    def create(project_id: str) -> object:
        return api.client.post(
            f"/v1/projects/{project_id}/jobs", json={"method": "domain_adaptation"}
        )

    only_target = api.project("only-target")
    api.upload_labeled(only_target["id"], digit_images(3, CLASSES))  # labeled, but target
    assert_problem(create(only_target["id"]), 422, "source_has_no_labels")

    only_source = api.project("only-source")
    upload_source(api, only_source["id"], 3)
    assert_problem(create(only_source["id"]), 422, "target_has_no_images")

    upload_target(api, only_source["id"], 2)
    r = api.client.post(
        f"/v1/projects/{only_source['id']}/jobs",
        json={"method": "domain_adaptation", "params": {"algorithm": "magic"}},
    )
    assert_problem(r, 422, "invalid_params")
    assert api.queued == []
