"""Model versions, aliases, promotion, history and rollback, with the real worker code."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.helpers import assert_problem, client_with_key, digit, new_key
from tests.conftest import Api
from tests.factories import digit_images


def files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", item) for item in items]


def project_with(api: Api, classes: list[int], per_class: int = 4) -> str:
    pid = api.project("digits")["id"]
    api.upload_labeled(pid, digit_images(per_class, classes))
    return pid


def predict(api: Api, pid: str, **params: str) -> dict:
    r = api.client.post(
        f"/v1/projects/{pid}/predict", params=params, files=files(("a.png", digit(2, 40)))
    )
    assert r.status_code == 200, r.text
    return r.json()


def production(api: Api, pid: str) -> dict:
    r = api.client.get(f"/v1/projects/{pid}/aliases/production")
    assert r.status_code == 200, r.text
    return r.json()


def history(api: Api, pid: str, name: str = "production") -> list[dict]:
    r = api.client.get(f"/v1/projects/{pid}/aliases/{name}/history")
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_retrain_after_a_new_class_is_promoted_and_deleting_it_goes_back(api: Api) -> None:
    pid = project_with(api, [0, 1])
    first = api.train(pid)
    assert first["promotion"]["promoted"] is True
    assert first["promotion"]["reason"] == "the project had no production model"
    v1 = api.client.get(f"/v1/models/{first['model_id']}").json()
    assert (v1["version"], v1["aliases"]) == (1, ["production"])

    # A new class makes production stale; the retrained model beats its baseline: promoted.
    api.upload_labeled(pid, digit_images(4, [2]))
    second = api.train(pid)
    assert second["promote"] == "auto"
    promotion = second["promotion"]
    assert promotion["promoted"] is True, promotion
    assert "stale" in promotion["reason"] and "'2'" in promotion["reason"], promotion
    assert (promotion["previous_model_id"], promotion["previous_version"]) == (v1["id"], 1)
    v2 = api.client.get(f"/v1/models/{second['model_id']}").json()
    assert (v2["version"], v2["aliases"], v2["promotion"]) == (2, ["production"], promotion)
    assert api.client.get(f"/v1/models/{v1['id']}").json()["aliases"] == []

    answer = predict(api, pid)
    assert (answer["model_id"], answer["version"], answer["alias"]) == (v2["id"], 2, "production")
    project = api.client.get(f"/v1/projects/{pid}").json()
    assert (project["default_model_id"], project["default_model_version"]) == (v2["id"], 2)

    # Deleting the production model moves production back to the one before it.
    assert api.client.delete(f"/v1/models/{v2['id']}").status_code == 204
    assert production(api, pid) == {"name": "production", "model_id": v1["id"], "version": 1}
    answer = predict(api, pid)
    assert (answer["model_id"], answer["version"]) == (v1["id"], 1)
    events = history(api, pid)
    assert [(e["action"], e["from_version"], e["to_version"]) for e in events] == [
        ("promotion", None, 1), ("promotion", 1, 2), ("model-deleted", 2, 1),
    ]  # fmt: skip
    assert events[1]["actor"] == f"job {second['id']} (promote: auto)"
    assert "admin key" in events[2]["actor"] and events[2]["tenant_id"]

    # Versions are never reused: the next model is v3.
    third = api.train(pid, promote="never")
    assert api.client.get(f"/v1/models/{third['model_id']}").json()["version"] == 3

    # Nothing left to go back to: production is cleared; the 409 says how to set one.
    assert api.client.delete(f"/v1/models/{v1['id']}").status_code == 204
    assert production(api, pid)["model_id"] is None
    r = api.client.post(f"/v1/projects/{pid}/predict", files=files(("a.png", digit(0))))
    body = assert_problem(r, 409, "project_has_no_model")
    assert f"PUT /v1/projects/{pid}/aliases/production" in body["detail"]
    assert third["model_id"] in body["detail"] and "v3" in body["detail"]
    assert body["models"] == [third["model_id"]]


def test_promote_never_keeps_the_old_model_and_always_moves_it(api: Api) -> None:
    pid = project_with(api, [0, 1])
    first = api.train(pid, method="knn")["model_id"]
    api.upload_labeled(pid, digit_images(4, [2]))
    kept = api.train(pid, method="knn", promote="never")
    assert kept["promotion"] == {
        "promoted": False, "policy": "never", "reason": "promote: never; production stays v1",
        "alias": "production", "previous_model_id": first, "previous_version": 1,
    }  # fmt: skip
    assert predict(api, pid)["model_id"] == first

    # auto with an up-to-date production (the same data as the last model): not promoted.
    same = api.train(pid, method="knn")
    assert same["promotion"]["promoted"] is True  # production v1 is stale (no class '2')
    again = api.train(pid, method="knn")
    assert again["promotion"]["promoted"] is False
    assert "up to date" in again["promotion"]["reason"]
    assert predict(api, pid)["model_id"] == same["model_id"]

    moved = api.train(pid, method="knn", promote="always")
    assert moved["promotion"]["promoted"] is True
    assert moved["promotion"]["reason"] == "promote: always"
    assert predict(api, pid)["model_id"] == moved["model_id"]

    # More labeled images make production stale too.
    api.upload_labeled(pid, digit_images(2, [0, 1, 2], offset=10))
    more = api.train(pid, method="knn")
    assert more["promotion"]["promoted"] is True
    assert "labeled images" in more["promotion"]["reason"], more["promotion"]

    r = api.client.post(f"/v1/projects/{pid}/jobs", json={"method": "knn", "promote": "maybe"})
    assert_problem(r, 422, "validation_error")


def test_aliases_put_get_delete_history_rollback(api: Api, acme: TestClient) -> None:
    pid = project_with(api, [0, 1])
    v1 = api.train(pid, method="knn")["model_id"]
    job2 = api.train(pid, method="knn")
    v2 = job2["model_id"]
    assert job2["promotion"]["promoted"] is False  # same data: production v1 is up to date
    base = f"/v1/projects/{pid}/aliases"

    r = api.client.put(f"{base}/staging", json={"model_id": v2})
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "staging", "model_id": v2, "version": 2}
    assert api.client.get(f"{base}/staging").json() == r.json()
    assert api.client.get(base).json() == [
        {"name": "production", "model_id": v1, "version": 1},
        {"name": "staging", "model_id": v2, "version": 2},
    ]
    answer = predict(api, pid, alias="staging")
    assert (answer["model_id"], answer["version"], answer["alias"]) == (v2, 2, "staging")
    answer = predict(api, pid)
    assert (answer["model_id"], answer["version"], answer["alias"]) == (v1, 1, "production")
    r = api.client.post(f"/v1/models/{v2}/predict", files=files(("a.png", digit(0))))
    assert (r.json()["model_id"], r.json()["version"], r.json()["alias"]) == (v2, 2, None)
    models = api.client.get(f"/v1/projects/{pid}/models").json()["items"]
    assert [(m["version"], m["aliases"]) for m in models] == [(1, ["production"]), (2, ["staging"])]

    # Who moved it: the API key (its id), of which tenant.
    key = new_key(api.settings, "default")
    with client_with_key(api, key) as keyed:
        r = keyed.put(f"{base}/production", json={"model_id": v2})
        assert r.status_code == 200, r.text
    assert predict(api, pid)["model_id"] == v2
    put = history(api, pid)[-1]
    assert (put["action"], put["from_model_id"], put["to_model_id"]) == ("put", v1, v2)
    assert put["api_key_id"] and put["api_key_id"] in put["actor"] and key[:10] in put["actor"]
    assert put["created_at"].endswith("Z")

    # Rollback in one call; then nothing earlier is left.
    r = api.client.post(f"{base}/production/rollback")
    assert r.status_code == 200 and r.json() == {"name": "production", "model_id": v1, "version": 1}
    assert predict(api, pid)["model_id"] == v1
    assert history(api, pid)[-1]["action"] == "rollback"
    assert_problem(api.client.post(f"{base}/production/rollback"), 409, "nothing_to_roll_back")

    # POST .../default-model moves production too, and is recorded.
    r = api.client.post(f"/v1/projects/{pid}/default-model", json={"model_id": v2})
    assert r.status_code == 200 and r.json()["default_model_version"] == 2
    assert production(api, pid)["model_id"] == v2
    assert history(api, pid)[-1]["action"] == "default-model"
    assert api.client.post(f"{base}/production/rollback").json()["model_id"] == v1

    # DELETE: the alias is gone (its history stays); production is left empty.
    assert api.client.delete(f"{base}/staging").status_code == 204
    assert_problem(api.client.get(f"{base}/staging"), 404, "alias_not_found")
    r = api.client.post(
        f"/v1/projects/{pid}/predict", params={"alias": "staging"}, files=files(("a", digit(0)))
    )
    assert_problem(r, 404, "alias_not_found")
    assert [e["action"] for e in history(api, pid, "staging")] == ["put", "delete"]
    assert_problem(api.client.delete(f"{base}/staging"), 404, "alias_not_found")
    assert api.client.delete(f"{base}/production").status_code == 204
    r = api.client.post(f"/v1/projects/{pid}/predict", files=files(("a.png", digit(0))))
    body = assert_problem(r, 409, "project_has_no_model")
    assert f"PUT /v1/projects/{pid}/aliases/production" in body["detail"]
    assert set(body["models"]) == {v1, v2}
    # A rollback undoes a DELETE, also of an alias that is gone.
    assert api.client.post(f"{base}/production/rollback").json()["model_id"] == v1
    assert api.client.post(f"{base}/staging/rollback").json()["model_id"] == v2
    assert predict(api, pid, alias="staging")["model_id"] == v2
    assert api.client.delete(f"{base}/staging").status_code == 204
    assert_problem(api.client.post(f"{base}/never-set/rollback"), 409, "nothing_to_roll_back")

    # Paginated history.
    page = api.client.get(f"{base}/production/history", params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = api.client.get(
        f"{base}/production/history", params={"cursor": page["next_cursor"]}
    ).json()
    assert [e["id"] for e in page["items"] + rest["items"]] == [e["id"] for e in history(api, pid)]

    # Bad names, unknown and foreign models.
    body = assert_problem(
        api.client.put(f"{base}/Not%20OK", json={"model_id": v1}), 422, "invalid_alias_name"
    )
    assert "lowercase" in body["detail"]
    assert_problem(
        api.client.put(f"{base}/staging", json={"model_id": "mdl_nope"}),
        422,
        "model_not_in_project",
    )
    assert_problem(api.client.put(f"{base}/staging", json={}), 422, "validation_error")

    # Another tenant sees nothing of it.
    for method, url, kwargs in [
        ("GET", base, {}),
        ("GET", f"{base}/production", {}),
        ("PUT", f"{base}/staging", {"json": {"model_id": v1}}),
        ("DELETE", f"{base}/production", {}),
        ("GET", f"{base}/production/history", {}),
        ("POST", f"{base}/production/rollback", {}),
    ]:
        assert_problem(acme.request(method, url, **kwargs), 404, "not_found")
    own = acme.post("/v1/projects", json={"name": "mine"}).json()["id"]
    r = acme.put(f"/v1/projects/{own}/aliases/production", json={"model_id": v1})
    assert_problem(r, 422, "model_not_in_project")
    assert acme.get(f"/v1/projects/{own}/aliases").json() == [
        {"name": "production", "model_id": None, "version": None}
    ]
    r = acme.post(f"/v1/projects/{own}/predict", files=files(("a.png", digit(0))))
    body = assert_problem(r, 409, "project_has_no_model")
    assert "no trained model yet" in body["detail"]
