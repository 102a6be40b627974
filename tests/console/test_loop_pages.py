"""Console pages of models, quick test, "label next" and the audit, over HTTP: what they
show, that their POSTs act through the same services as /v1 (and need the CSRF token),
and that another tenant's ids are a 404."""

from __future__ import annotations

import io
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.console.figures import DARK_FROM, blend, confusion_cells, heatmap_overlay
from app.db.models import Model, Project
from app.db.session import session_scope
from app.services import predict as predict_service
from tests.api.helpers import digit, new_key, png
from tests.conftest import API_KEY, Api, make_settings, migrate
from tests.console.helpers import console_client, csrf, sign_in
from tests.factories import digit_images


def trained(api: Api, store: bool = True) -> tuple[str, str]:
    """A project of three digit classes with one model (production); its id and the model's."""
    pid = api.project("digits", store_predictions=store)["id"]
    api.upload_labeled(pid, digit_images(6, [0, 1, 2]))
    return pid, api.train(pid)["model_id"]


@pytest.fixture
def console(api: Api) -> TestClient:
    client = console_client(api)
    assert sign_in(client, API_KEY).status_code == 303
    return client


def production(api: Api, pid: str) -> str | None:
    return api.client.get(f"/v1/projects/{pid}").json()["default_model_id"]


def test_confusion_cells_colour_by_row_share_with_readable_text() -> None:
    cells = confusion_cells([[8, 2], [0, 0]])
    assert [c.count for c in cells[0]] == [8, 2] and cells[0][0].diagonal
    assert cells[0][0].share == pytest.approx(0.8) and cells[1][0].share == 0.0
    assert cells[0][0].color == "#ffffff" and cells[0][1].color == "#000000"
    assert blend(0) == "#f7fbff" and blend(1) == "#08306b"
    assert blend(DARK_FROM - 0.01) != blend(DARK_FROM)


def test_heatmap_overlay_is_transparent_where_the_model_does_not_look() -> None:
    grey = np.zeros((4, 6), np.uint8)
    grey[1, 2] = 255
    buf = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buf, format="PNG")
    rgba = np.asarray(Image.open(io.BytesIO(heatmap_overlay(buf.getvalue()))))
    assert rgba.shape == (4, 6, 4)
    assert rgba[0, 0, 3] == 0 and rgba[1, 2, 3] > 150 and tuple(rgba[1, 2, :3]) == (255, 0, 0)


def test_models_pages_show_versions_baseline_matrix_and_export(
    api: Api, console: TestClient
) -> None:
    pid, mid = trained(api)
    page = console.get(f"/console/projects/{pid}/models")
    assert page.status_code == 200, page.text
    assert f'href="/console/models/{mid}">v1</a>' in page.text
    assert "majority_class" in page.text  # the baseline beside the accuracy
    assert "promoted" in page.text and "the project had no production model" in page.text

    page = console.get(f"/console/models/{mid}")
    assert page.status_code == 200, page.text
    matrix = api.client.get(f"/v1/models/{mid}").json()["metrics"]["confusion_matrix"]
    cells = re.findall(r'<td style="background: (#[0-9a-f]{6}); color: #[0-9a-f]{6}"', page.text)
    assert len(cells) == len(matrix["labels"]) ** 2
    assert "Per class" in page.text and "Precision" in page.text
    assert f"/console/models/{mid}/export?format=onnx" in page.text
    assert f"/console/models/{mid}/export?format=torchscript" in page.text

    r = console.get(f"/console/models/{mid}/export", params={"format": "onnx"})
    assert r.status_code == 200, r.text[:300]
    assert r.headers["content-disposition"] == f'attachment; filename="{mid}.onnx"'
    import onnx

    meta = {p.key: p.value for p in onnx.load_from_string(r.content).metadata_props}
    assert '"classes": ["0", "1", "2"]' in meta["dovecote"]

    # A model flagged negative_transfer says so, on the list and on its page.
    assert "negative transfer" not in console.get(f"/console/projects/{pid}/models").text.lower()
    with session_scope(api.settings.resolved_database_url) as db:
        model = db.get(Model, mid)
        model.metrics = {**model.metrics, "negative_transfer": True}
    assert "negative transfer" in console.get(f"/console/projects/{pid}/models").text
    assert "Negative transfer:" in console.get(f"/console/models/{mid}").text


def test_aliases_set_promote_and_roll_back_like_the_api(api: Api, console: TestClient) -> None:
    pid, v1 = trained(api)
    v2 = api.train(pid, promote="never")["model_id"]
    assert production(api, pid) == v1
    token = csrf(console, f"/console/models/{v2}")

    r = console.post(f"/console/projects/{pid}/aliases", data={"name": "staging", "model_id": v2})
    assert r.status_code == 403  # no CSRF token: nothing moves
    assert api.client.get(f"/v1/projects/{pid}/aliases/staging").status_code == 404

    r = console.post(
        f"/console/projects/{pid}/aliases",
        data={"name": "staging", "model_id": v2, "csrf_token": token},
    )
    assert (r.status_code, r.headers["location"]) == (303, f"/console/models/{v2}")
    assert api.client.get(f"/v1/projects/{pid}/aliases/staging").json()["version"] == 2

    r = console.post(
        f"/console/projects/{pid}/aliases",
        data={"name": "production", "model_id": v2, "csrf_token": token},
    )
    assert r.status_code == 303 and production(api, pid) == v2
    history = api.client.get(f"/v1/projects/{pid}/aliases/production/history").json()["items"]
    assert history[-1]["to_version"] == 2 and "admin key" in history[-1]["actor"]

    back = f"/console/projects/{pid}/models"
    r = console.post(
        f"/console/projects/{pid}/aliases/production/rollback",
        data={"back": back, "csrf_token": token},
    )
    assert (r.status_code, r.headers["location"]) == (303, back)
    assert production(api, pid) == v1
    page = console.get(back)
    assert "rollback, v2 → v1" in page.text

    # Refusals are error pages with the service's status, never a 500.
    r = console.post(
        f"/console/projects/{pid}/aliases",
        data={"name": "Not A Name", "model_id": v2, "csrf_token": token},
    )
    assert r.status_code == 422 and "not a valid name" in r.text
    r = console.post(
        f"/console/projects/{pid}/aliases/staging/rollback", data={"csrf_token": token}
    )
    assert r.status_code == 409 and "no earlier model" in r.text


def test_quick_test_shows_label_scores_heatmap_and_box(api: Api, console: TestClient) -> None:
    pid, _ = trained(api)
    page = console.get(f"/console/projects/{pid}/test")
    assert page.status_code == 200 and 'name="photo"' in page.text
    token = csrf(console, f"/console/projects/{pid}/test")

    photo = digit(2, 40)
    r = console.post(
        f"/console/projects/{pid}/test",
        files={"photo": ("two.png", photo)},
        data={"alias": "production", "csrf_token": token},
    )
    assert r.status_code == 200, r.text
    api_answer = api.client.post(
        f"/v1/projects/{pid}/predict", params={"heatmap": "true"}, files={"files": ("a.png", photo)}
    ).json()["predictions"][0]
    assert f'<h2 id="answer-h">{api_answer["label"]}' in r.text
    assert r.text.count('<tr><th scope="row">') >= 3  # every class scored
    assert "data:image/png;base64," in r.text and "data-heatmap" in r.text
    box = api_answer["box"]
    assert f'x="{box["left"] * 100}"' in r.text and f'width="{box["width"] * 100}"' in r.text
    # Stored like the API's answer (the project keeps its predictions).
    stored = api.client.get(f"/v1/projects/{pid}/predictions").json()["items"]
    assert [p["filename"] for p in stored] == ["two.png", "a.png"]

    # With the model's own "none of the above" threshold, as /predict?reject_below=default.
    noise = png(3, (64, 64))
    r = console.post(
        f"/console/projects/{pid}/test",
        files={"photo": ("noise.png", noise)},
        data={"alias": "production", "reject": "true", "csrf_token": token},
    )
    assert r.status_code == 200
    expected = api.client.post(
        f"/v1/projects/{pid}/predict",
        params={"reject_below": "default"},
        files={"files": ("noise.png", noise)},
    ).json()["predictions"][0]["label"]
    heading = re.search(r'<h2 id="answer-h">([^<\n]+)', r.text)
    assert heading is not None
    assert heading.group(1).strip() == (expected or "None of the above")

    r = console.post(
        f"/console/projects/{pid}/test",
        files={"photo": ("broken.png", b"not an image")},
        data={"csrf_token": token},
    )
    assert r.status_code == 422 and "Refused:" in r.text and "broken.png" in r.text
    r = console.post(
        f"/console/projects/{pid}/test",
        files={"photo": ("two.png", photo)},
        data={"alias": "nope", "csrf_token": token},
    )
    assert r.status_code == 404 and "no alias" in r.text


def test_quick_test_holds_one_of_the_tenants_predict_slots(
    api: Api, console: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console's quick test and the API's predicts share the tenant's count
    (``DOVECOTE_TENANT_MAX_CONCURRENT_PREDICTS``): a tenant cannot go round it through
    the console."""
    pid, _ = trained(api, store=False)
    slots = api.client.app.state.predict_slots
    with session_scope(api.settings.resolved_database_url) as db:
        tenant_id = db.get(Project, pid).tenant_id
    token = csrf(console, f"/console/projects/{pid}/test")

    def quick_test() -> httpx.Response:
        return console.post(
            f"/console/projects/{pid}/test",
            files={"photo": ("two.png", digit(2, 41))},
            data={"csrf_token": token},
        )

    for _ in range(slots.limit):  # the tenant's predicts in progress elsewhere
        assert slots.enter(tenant_id)
    r = quick_test()
    assert r.status_code == 429 and "DOVECOTE_TENANT_MAX_CONCURRENT_PREDICTS" in r.text
    slots.leave(tenant_id)

    free_while_predicting: list[bool] = []
    real = predict_service.predict

    def spy(**kwargs: object) -> object:
        free_while_predicting.append(slots.enter(tenant_id))
        return real(**kwargs)

    monkeypatch.setattr(predict_service, "predict", spy)
    assert quick_test().status_code == 200
    assert free_while_predicting == [False]  # the quick test held the last slot
    assert slots.enter(tenant_id)  # and gave it back
    for _ in range(slots.limit):
        slots.leave(tenant_id)


def test_label_next_confirms_and_corrects_suggestions_then_retrains(
    api: Api, console: TestClient
) -> None:
    pid, _ = trained(api)
    assert api.upload(pid, [("u0.png", digit(0, 50)), ("u1.png", digit(1, 50))]).status_code == 201
    api.client.post(f"/v1/projects/{pid}/predict", files={"files": ("p2.png", digit(2, 51))})
    page = console.get(f"/console/projects/{pid}/next")
    assert page.status_code == 200, page.text
    assert page.text.count("data-label-card") == 3
    assert 'aria-keyshortcuts="1"' in page.text and "<kbd>3</kbd> 2" in page.text
    token = csrf(console, f"/console/projects/{pid}/next")
    (prediction,) = api.client.get(f"/v1/projects/{pid}/predictions").json()["items"]
    url = f"/console/predictions/{prediction['id']}/feedback"
    assert f'action="{url}"' in page.text
    thumb = console.get(f"/console/predictions/{prediction['id']}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"

    assert console.post(url, data={"label": "2"}).status_code == 403
    r = console.post(url, data={"label": "2", "csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == f"/console/projects/{pid}/next"
    after = api.client.get(f"/v1/predictions/{prediction['id']}").json()
    expected = "confirmed" if prediction["label"] == "2" else "corrected"
    assert (after["feedback"], after["feedback_label"]) == (expected, "2")
    image = api.client.get(f"/v1/projects/{pid}/images/{after['image_id']}").json()
    assert image["label"] == "2"
    r = console.post(url, data={"label": "", "csrf_token": token})
    assert r.status_code == 422

    # Image suggestions post to the image's relabel route.
    unlabeled = api.client.get(f"/v1/projects/{pid}/images", params={"unlabeled": True}).json()
    for item in unlabeled["items"]:
        assert f'action="/console/projects/{pid}/images/{item["id"]}"' in page.text

    r = console.post(f"/console/projects/{pid}/retrain", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"].startswith("/console/jobs/job_")
    api.run_queued()
    job = api.client.get(f"/v1/jobs/{r.headers['location'].rsplit('/', 1)[1]}").json()
    assert (job["status"], job["method"]) == ("succeeded", "linear_probe")
    # One more labeled image than v1 saw: production was stale, so the retrain was weighed.
    assert job["promotion"]["previous_version"] == 1


def test_label_next_without_a_model_and_filters_of_stored_predictions(
    api: Api, console: TestClient
) -> None:
    pid = api.project("empty")["id"]
    page = console.get(f"/console/projects/{pid}/next")
    assert page.status_code == 200 and "no trained model yet" in page.text
    assert "does not keep its predictions" in page.text
    token = csrf(console, f"/console/projects/{pid}/next")
    r = console.post(f"/console/projects/{pid}/retrain", data={"csrf_token": token})
    assert r.status_code == 409
    assert console.get(f"/console/projects/{pid}/next", params={"below": 2}).status_code == 422
    # Every POST of these pages needs the session's CSRF token (checked before anything else).
    for url in (
        f"/console/projects/{pid}/retrain",
        f"/console/projects/{pid}/test",
        f"/console/projects/{pid}/aliases",
        f"/console/projects/{pid}/aliases/production/rollback",
        "/console/predictions/prd_x/feedback",
    ):
        r = console.post(url, data={"label": "0", "name": "x", "model_id": "mdl_x"})
        assert r.status_code == 403 and "CSRF" in r.text, url


def test_audit_page_offers_one_click_fixes(api: Api, console: TestClient) -> None:
    pid = api.project("audited")["id"]
    items = digit_images(8, [0, 1, 2], smooth=True)
    items[3] = ("2", items[3][1])  # a "0" labeled 2
    api.upload_labeled(pid, items)
    one = np.asarray(Image.open(io.BytesIO(items[10][1])).convert("L")).copy()
    one[0, 0] ^= 1
    buf = io.BytesIO()
    Image.fromarray(one).save(buf, format="PNG")
    assert (
        api.upload(pid, [("again.png", buf.getvalue())], label="1", split="test").status_code == 201
    )

    page = console.get(f"/console/projects/{pid}/audit")
    assert page.status_code == 200, page.text
    report = api.client.get(f"/v1/projects/{pid}/audit").json()
    (leak,) = [f for f in report["findings"] if f["kind"] == "leakage"]
    kept, dropped = leak["image_ids"]
    delete = f'action="/console/projects/{pid}/images/{dropped}/delete"'
    assert delete in page.text and f"/images/{kept}/delete" not in page.text
    for f in report["findings"]:
        if f["kind"] == "mislabel":
            assert f"Relabel as {f['suggested_label']}" in page.text
    token = csrf(console, f"/console/projects/{pid}/audit")
    r = console.post(
        f"/console/projects/{pid}/images/{dropped}/delete",
        data={"back": f"/console/projects/{pid}/audit", "csrf_token": token},
    )
    assert (r.status_code, r.headers["location"]) == (303, f"/console/projects/{pid}/audit")
    assert api.client.get(f"/v1/projects/{pid}/images/{dropped}").status_code == 404


def test_audit_page_of_a_large_project_shows_its_job_then_the_findings(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, audit_inline_max_images=4)  # 8 images: a job
    migrate(settings)
    api = Api(settings)
    with api.client:
        pid = api.project("large")["id"]
        api.upload_labeled(pid, digit_images(4, [0, 1]))
        console = console_client(api)
        assert sign_in(console, API_KEY).status_code == 303
        page = console.get(f"/console/projects/{pid}/audit")
        assert page.status_code == 202, page.text
        assert "8 images: the audit is being computed by a job (queued" in page.text
        assert api.run_queued() == ["succeeded"]
        page = console.get(f"/console/projects/{pid}/audit")
        assert page.status_code == 200 and "8 images, on efficientnet_lite0 features" in page.text


def test_another_tenants_ids_are_404_on_every_page(api: Api) -> None:
    pid, mid = trained(api)
    api.client.post(f"/v1/projects/{pid}/predict", files={"files": ("p.png", digit(1, 40))})
    (prediction,) = api.client.get(f"/v1/projects/{pid}/predictions").json()["items"]
    prid = prediction["id"]
    acme = console_client(api)
    assert sign_in(acme, new_key(api.settings, "acme")).status_code == 303
    token = csrf(acme)
    gets = [
        f"/console/projects/{pid}/models",
        f"/console/models/{mid}",
        f"/console/models/{mid}/export?format=onnx",
        f"/console/projects/{pid}/test",
        f"/console/projects/{pid}/next",
        f"/console/projects/{pid}/audit",
        f"/console/predictions/{prid}/thumbnail",
    ]
    for url in gets:
        assert acme.get(url).status_code == 404, url
    posts = [
        (f"/console/projects/{pid}/aliases", {"name": "staging", "model_id": mid}),
        (f"/console/projects/{pid}/aliases/production/rollback", {}),
        (f"/console/projects/{pid}/retrain", {}),
        (f"/console/predictions/{prid}/feedback", {"label": "0"}),
    ]
    for url, data in posts:
        assert acme.post(url, data={**data, "csrf_token": token}).status_code == 404, url
    r = acme.post(
        f"/console/projects/{pid}/test",
        files={"photo": ("p.png", digit(1, 41))},
        data={"csrf_token": token},
    )
    assert r.status_code == 404
    # Nothing moved, nothing was labeled.
    assert api.client.get(f"/v1/predictions/{prid}").json()["feedback"] is None
    assert production(api, pid) == mid
    assert api.client.get(f"/v1/projects/{pid}/aliases/staging").status_code == 404
    assert len(api.client.get(f"/v1/projects/{pid}/jobs").json()["items"]) == 1
