from __future__ import annotations

from tests.conftest import Api


def test_metrics_counts_jobs_and_models_without_a_key(api: Api) -> None:
    from tests.factories import digit_images

    project = api.project()
    api.upload_labeled(project["id"], digit_images(3, [0, 1]))
    api.train(project["id"], "knn")
    r = api.client.get("/metrics", headers={"Authorization": ""})
    assert r.status_code == 200
    assert 'dovecote_jobs{status="succeeded"} 1' in r.text
    assert "dovecote_models 1" in r.text and "dovecote_projects 1" in r.text


def test_readyz_reports_an_unmigrated_database(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.api.main import create_app
    from tests.conftest import make_settings

    client = TestClient(create_app(make_settings(tmp_path)))
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "unavailable"


def test_catalogue_lists_methods_and_backbones(api: Api) -> None:
    methods = {m["name"]: m for m in api.client.get("/v1/methods").json()}
    assert {"linear_probe", "knn"} <= set(methods)
    assert "k" in methods["knn"]["params_schema"]["properties"]
    backbones = {b["name"]: b for b in api.client.get("/v1/backbones").json()}
    assert backbones["efficientnet_lite0"]["available"] is True
    assert backbones["efficientnet_lite0"]["weights_source"] == "package"
    assert backbones["convnext_tiny"]["available"] is False
