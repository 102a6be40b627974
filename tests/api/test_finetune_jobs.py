"""Finetune and auto jobs through the API, run by the real worker code."""

from __future__ import annotations

import threading
import time

import pytest

from tests.api.helpers import assert_problem
from tests.conftest import Api
from tests.factories import digit_images
from worker.runner import run_job


def test_finetune_job_records_history_and_baseline(api: Api) -> None:
    project = api.project()
    api.upload_labeled(project["id"], digit_images(5, [0, 1, 2]))
    job = api.train(project["id"], "finetune", params={"trainable": "head", "epochs": 2})
    # epoch 0: the starting point (the probe head on the frozen backbone), measured only
    assert [r["epoch"] for r in job["history"]] == [0, 1, 2]
    assert {"train_loss", "val_accuracy", "seconds", "eta_seconds"} <= set(job["history"][1])
    model = api.client.get(f"/v1/models/{job['model_id']}").json()
    assert model["method"] == "finetune"
    assert model["metrics"]["baseline"]["name"] == "linear_probe"
    assert isinstance(model["metrics"]["negative_transfer"], bool)
    assert model["metrics"]["selected"] in ("probe", "finetuned")
    assert (model["metrics"]["wise_alpha"] == 0) == (model["metrics"]["selected"] == "probe")


def test_bad_finetune_params_are_refused_at_creation(api: Api) -> None:
    project = api.project()
    api.upload_labeled(project["id"], digit_images(3, [0, 1]))
    for params in ({"epochs": 0}, {"trainable": "some"}, {"lr": -1}, {"nope": 1}):
        r = api.client.post(
            f"/v1/projects/{project['id']}/jobs", json={"method": "finetune", "params": params}
        )
        assert r.status_code == 422 and r.json()["code"] == "invalid_params", (params, r.text)


def test_cancel_mid_training_ends_cancelled_without_a_model(api: Api) -> None:
    project = api.project()
    api.upload_labeled(project["id"], digit_images(6, [0, 1, 2]))
    r = api.client.post(
        f"/v1/projects/{project['id']}/jobs",
        json={"method": "finetune", "params": {"trainable": "all", "epochs": 200, "batch_size": 4}},
    )
    job_id = r.json()["id"]
    api.queued.clear()
    outcome: list[str] = []
    runner = threading.Thread(target=lambda: outcome.append(run_job(job_id, settings=api.settings)))
    runner.start()
    deadline = time.monotonic() + 120
    while not api.client.get(f"/v1/jobs/{job_id}").json()["stage"].startswith("epoch"):
        assert time.monotonic() < deadline and runner.is_alive()
        time.sleep(0.05)
    assert api.client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    runner.join(timeout=60)
    assert outcome == ["cancelled"]
    job = api.client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["model_id"] is None
    assert job["history"] == [] or job["history"][-1]["epoch"] < 200
    assert api.client.get(f"/v1/projects/{project['id']}/models").json()["items"] == []


def test_auto_job_reports_candidates(api: Api) -> None:
    project = api.project()
    api.upload_labeled(project["id"], digit_images(4, [0, 1, 2]))
    job = api.train(project["id"], "auto", params={"candidates": ["linear_probe", "knn"]})
    model = api.client.get(f"/v1/models/{job['model_id']}").json()
    assert model["method"] == "auto"
    assert job["params"]["backbones"] is None  # the default: the job's and mobilenetv2_100
    on_mobilenet = {"linear_probe@mobilenetv2_100", "knn@mobilenetv2_100"}
    assert set(model["metrics"]["candidates"]) == {"linear_probe", "knn", *on_mobilenet}
    assert model["metrics"]["selected"] in model["metrics"]["candidates"]
    assert model["backbone"] == model["metrics"]["selected_backbone"]


def test_bad_selection_and_l2sp_params_are_refused_at_creation(api: Api) -> None:
    project = api.project()
    api.upload_labeled(project["id"], digit_images(3, [0, 1]))
    url = f"/v1/projects/{project['id']}/jobs"
    bad = (
        {"selection": "leave-one-out"},
        {"folds": 1},
        {"folds": 11},
        {"l2sp": {"alpha": 0}},
        {"l2sp": {"alpha": -1}},
        {"l2sp": {"beta": -0.5}},
        {"l2sp": {"alpha": 0.1, "gamma": 1}},
        {"l2sp": 0.1},
    )
    for params in bad:
        r = api.client.post(url, json={"method": "finetune", "params": params})
        assert r.status_code == 422 and r.json()["code"] == "invalid_params", (params, r.text)
        assert any(e["loc"][0] in ("selection", "folds", "l2sp") for e in r.json()["errors"])
    r = api.client.post(
        url, json={"method": "auto", "params": {"params": {"finetune": {"l2sp": {"alpha": -1}}}}}
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_params", r.text
    assert api.client.get(f"/v1/projects/{project['id']}/jobs").json()["items"] == []
    good = {"selection": "k-fold", "folds": 2, "l2sp": {"alpha": 0.1, "beta": 0.01}}
    r = api.client.post(url, json={"method": "finetune", "params": good})
    assert r.status_code == 202, r.text
    assert r.json()["params"]["l2sp"] == {"alpha": 0.1, "beta": 0.01}


def test_auto_job_chooses_the_backbone_and_predictions_use_it(api: Api) -> None:
    """The job names the backbone it started from; the model, the one ``auto`` chose, and
    /predict serves it: the test images predicted over HTTP score what the model reports."""
    classes = [3, 5, 8, 9]
    project = api.project()
    api.upload_labeled(project["id"], digit_images(6, classes))
    test = digit_images(5, classes, offset=6)
    api.upload_labeled(project["id"], test, split="test")
    params = {"candidates": ["linear_probe"], "backbones": ["mobilenetv2_100"]}
    job = api.train(project["id"], "auto", params=params)
    assert job["backbone"] == "efficientnet_lite0"
    model = api.client.get(f"/v1/models/{job['model_id']}").json()
    m = model["metrics"]
    assert set(m["candidates"]) == {"linear_probe", "linear_probe@mobilenetv2_100"}
    assert model["backbone"] == m["selected_backbone"] == m["candidates"][m["selected"]]["backbone"]
    files = [("files", (f"{label}-{i}.png", png)) for i, (label, png) in enumerate(test)]
    r = api.client.post(f"/v1/models/{model['id']}/predict", files=files)
    assert r.status_code == 200, r.text
    served = [
        p["label"] == label for p, (label, _) in zip(r.json()["predictions"], test, strict=True)
    ]
    assert m["validation"] == "test-split" and m["n_validation"] == len(test)
    assert sum(served) / len(test) == pytest.approx(m["accuracy"])


@pytest.mark.parametrize(
    ("backbones", "code"),
    [(["no_such_net"], "invalid_params"), (["convnext_tiny"], "backbone_unavailable")],
)
def test_auto_backbones_without_weights_are_refused_at_creation(
    api: Api, backbones: list[str], code: str
) -> None:
    project = api.project()
    api.upload_labeled(project["id"], digit_images(4, [0, 1]))
    r = api.client.post(
        f"/v1/projects/{project['id']}/jobs",
        json={"method": "auto", "params": {"candidates": ["knn"], "backbones": backbones}},
    )
    assert_problem(r, 422, code)
    assert api.client.get(f"/v1/projects/{project['id']}/jobs").json()["items"] == []
