"""Console pages over HTTP: the forms reach the same services as the API, errors come back
on the form, and the train form is built from each method's schema."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from app.console import schema_form
from app.console.routes.jobs import eta_seconds
from app.db.base import utcnow
from app.db.models import Job
from app.db.session import session_scope
from app.errors import InvalidParams
from app.transfer.methods import list_methods
from tests.api.helpers import digit
from tests.conftest import API_KEY, Api
from tests.console.helpers import console_client, csrf, sign_in


@pytest.fixture
def browser(api: Api) -> TestClient:
    client = console_client(api)
    sign_in(client, API_KEY)
    return client


def test_create_a_project_with_described_and_negative_classes(
    api: Api, browser: TestClient
) -> None:
    r = browser.post(
        "/console/projects",
        data={
            "csrf_token": csrf(browser), "name": " terrace ",
            "classes": "pigeon: a grey pigeon\n\ncrow",
            "negative_classes": "empty: an empty terrace",
        },
    )  # fmt: skip
    assert r.status_code == 303
    project_id = r.headers["location"].rsplit("/", 1)[1]
    body = api.client.get(f"/v1/projects/{project_id}").json()
    assert body["name"] == "terrace"
    assert {(c["name"], c["description"], c["negative"]) for c in body["classes"]} == {
        ("pigeon", "a grey pigeon", False), ("crow", "", False), ("empty", "an empty terrace", True),
    }  # fmt: skip
    page = browser.get(r.headers["location"])
    assert "a grey pigeon" in page.text and "negative" in page.text


def test_a_refused_project_comes_back_on_the_form(api: Api, browser: TestClient) -> None:
    token = csrf(browser)
    r = browser.post(
        "/console/projects", data={"csrf_token": token, "name": "t", "classes": "Pigeon\npigeon"}
    )
    assert r.status_code == 422 and "only by case or spaces" in r.text
    assert "Pigeon\npigeon</textarea>" in r.text  # what was typed is kept
    r = browser.post("/console/projects", data={"csrf_token": token, "name": "  "})
    assert r.status_code == 422 and "name" in r.text
    assert api.client.get("/v1/projects").json()["items"] == []


def test_upload_relabel_delete_filter_and_page(api: Api, browser: TestClient) -> None:
    project = api.project("digits")
    base = f"/console/projects/{project['id']}"
    token = csrf(browser, base)
    files = [("files", (f"{i}.png", digit(i % 2, i))) for i in range(52)]
    files.append(("files", ("broken.png", b"\x89PNG nope")))
    r = browser.post(
        f"{base}/images", data={"csrf_token": token, "label": "1", "split": "train"}, files=files
    )
    assert r.status_code == 200
    assert "Upload: 52 stored, 0 duplicates skipped, 1 rejected" in r.text
    assert "broken.png" in r.text and "image_undecodable" in r.text
    images = api.client.get(f"/v1/projects/{project['id']}/images?limit=100").json()["items"]
    assert len(images) == 52 and {i["label"] for i in images} == {"1"}
    assert {i["split"] for i in images} == {"train"}

    # Paginated: 48 a page, then the rest.
    page = browser.get(base)
    assert page.text.count("/thumbnail") == 48 + 1  # the class card's, and the grid's
    next_page = re.search(r'href="([^"]*cursor=[^"]+)">Next page', page.text)
    assert next_page
    rest = browser.get(next_page.group(1).replace("&amp;", "&"))
    assert rest.text.count('class="tile"') == 4 and "First page" in rest.text

    # Relabel, back to the filtered page; delete.
    first, second = images[0]["id"], images[1]["id"]
    back = f"{base}?label=1&split=train"
    r = browser.post(
        f"{base}/images/{first}", data={"csrf_token": token, "label": "0", "back": back}
    )
    assert r.status_code == 303 and r.headers["location"] == back
    assert api.client.get(f"/v1/projects/{project['id']}/images/{first}").json()["label"] == "0"
    assert browser.get(f"{base}?label=0").text.count('class="tile"') == 1
    assert browser.get(f"{base}?label=1&split=test").text.count('class="tile"') == 0
    r = browser.post(f"{base}/images/{second}/delete", data={"csrf_token": token})
    assert r.status_code == 303
    assert api.client.get(f"/v1/projects/{project['id']}/images/{second}").status_code == 404
    r = browser.post(f"{base}/images/{first}", data={"csrf_token": token, "label": "a/b"})
    assert r.status_code == 422 and "slashes" in r.text


@pytest.mark.parametrize("method", [m.name for m in list_methods()])
def test_the_train_form_has_an_input_for_every_param(
    api: Api, browser: TestClient, method: str
) -> None:
    project = api.project("p")
    page = browser.get(f"/console/projects/{project['id']}/train?method={method}")
    assert page.status_code == 200
    impl = next(m for m in list_methods() if m.name == method)
    for name in impl.Params.model_json_schema().get("properties", {}):
        assert f'name="param.{name}"' in page.text, name
        assert f'for="p-{name}"' in page.text, name


def test_start_a_job_from_the_form_refuse_bad_params_and_cancel(
    api: Api, browser: TestClient
) -> None:
    project = api.project("digits", classes=["0", "1"])
    api.upload_labeled(project["id"], [(str(i % 2), digit(i % 2, i)) for i in range(10)])
    base = f"/console/projects/{project['id']}"
    token = csrf(browser, f"{base}/train")
    r = browser.post(
        f"{base}/jobs",
        data={"csrf_token": token, "method": "linear_probe", "param.max_iter": "5"},
    )
    assert r.status_code == 422 and "max_iter" in r.text
    assert 'value="5"' in r.text
    assert api.queued == []

    r = browser.post(
        f"{base}/jobs",
        data={
            "csrf_token": token, "method": "linear_probe", "param.max_iter": "50",
            "param.Cs": "0.5, 2", "promote": "never",
        },
    )  # fmt: skip
    assert r.status_code == 303
    job_id = r.headers["location"].rsplit("/", 1)[1]
    job = api.client.get(f"/v1/jobs/{job_id}").json()
    assert job["params"]["max_iter"] == 50 and job["params"]["Cs"] == [0.5, 2.0]
    assert job["promote"] == "never" and api.queued == [job_id]
    state = browser.get(f"/console/jobs/{job_id}/status").json()
    assert state["status"] == "queued" and state["terminal"] is False
    assert "Cancel the job" in browser.get(f"/console/jobs/{job_id}").text

    r = browser.post(f"/console/jobs/{job_id}/cancel", data={"csrf_token": token})
    assert r.status_code == 303
    assert api.client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    state = browser.get(f"/console/jobs/{job_id}/status").json()
    assert state["terminal"] is True and state["eta_seconds"] is None
    r = browser.post(f"/console/jobs/{job_id}/cancel", data={"csrf_token": token})
    assert r.status_code == 409 and "only queued or running jobs cancel" in r.text


def test_eta_from_the_last_epoch_or_from_progress() -> None:
    now = utcnow()
    job = Job(status="running", progress=0.25, started_at=now - timedelta(seconds=30), history=[])
    assert eta_seconds(job, now) == pytest.approx(90.0)
    job.started_at = job.started_at.replace(tzinfo=None)  # as SQLite hands it back
    assert eta_seconds(job, now) == pytest.approx(90.0)
    job.history = [{"epoch": 1, "eta_seconds": 12.5}]
    assert eta_seconds(job, now) == 12.5
    job.status = "succeeded"
    assert eta_seconds(job, now) is None


def test_schema_form_round_trip() -> None:
    schema = {
        "properties": {
            "mode": {"enum": ["a", "b"], "default": "a", "type": "string", "title": "Mode"},
            "k": {"type": "integer", "minimum": 1, "maximum": 9, "default": 3},
            "lr": {"type": "number", "exclusiveMinimum": 0, "default": 0.1},
            "augment": {"type": "boolean", "default": True},
            "grid": {"type": "array", "items": {"type": "number"}},
            "student": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "trainable": {"anyOf": [{"enum": ["head"], "type": "string"}, {"type": "array"}]},
        },
        "required": ["trainable"],
    }
    fields = {f.name: f for f in schema_form.fields_of(schema)}
    assert {n: f.kind for n, f in fields.items()} == {
        "mode": "enum", "k": "integer", "lr": "number", "augment": "boolean", "grid": "list",
        "student": "string", "trainable": "json",
    }  # fmt: skip
    assert fields["k"].minimum == 1 and fields["lr"].minimum == 0
    assert fields["trainable"].required and fields["mode"].options == ["a", "b"]
    form = {
        "param.mode": ["b"], "param.k": ["4"], "param.lr": [""], "param.augment": ["false"],
        "param.grid": ["0.1, 1,10"], "param.student": [""], "param.trainable": ['["head"]'],
    }  # fmt: skip
    assert schema_form.params_from_form(list(fields.values()), form) == {
        "mode": "b", "k": 4, "augment": False, "grid": [0.1, 1.0, 10.0], "trainable": ["head"],
    }  # fmt: skip
    form["param.augment"] = ["false", "true"]  # the checkbox ticked
    assert schema_form.params_from_form(list(fields.values()), form)["augment"] is True
    with pytest.raises(InvalidParams, match="k: 'four' is not an integer"):
        schema_form.params_from_form(list(fields.values()), {"param.k": ["four"]})
    with pytest.raises(InvalidParams, match="not valid JSON"):
        schema_form.params_from_form(list(fields.values()), {"param.trainable": ["[head"]})


def test_a_running_job_shows_its_epochs_and_eta(api: Api, browser: TestClient) -> None:
    project = api.project("p")
    history = [
        {"epoch": 1, "train_loss": 0.9, "val_accuracy": 0.5, "seconds": 2.0, "eta_seconds": 8.0},
        {"epoch": 2, "train_loss": 0.6, "val_accuracy": 0.75, "seconds": 2.0, "eta_seconds": 6.0},
    ]
    with session_scope(api.settings.resolved_database_url) as db:
        job = Job(
            project_id=project["id"], method="finetune", backbone="efficientnet_lite0",
            params={}, status="running", stage="epoch 2/5", progress=0.4, history=history,
            started_at=utcnow(), heartbeat_at=utcnow(),
        )  # fmt: skip
        db.add(job)
        db.commit()
        job_id = job.id
    page = browser.get(f"/console/jobs/{job_id}")
    assert page.status_code == 200
    assert '<th scope="col">val_accuracy</th>' in page.text and "<td>0.75</td>" in page.text
    assert "epoch 2/5" in page.text and "6 s" in page.text  # the last epoch's ETA
    assert '<noscript><meta http-equiv="refresh"' in page.text  # follows without the script
    state = browser.get(f"/console/jobs/{job_id}/status").json()
    assert state["history"] == history and state["eta_seconds"] == 6.0
    assert state["stage"] == "epoch 2/5" and state["terminal"] is False
