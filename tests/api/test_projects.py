"""Projects: create, read, list (paginated), update, delete."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.api.helpers import assert_problem, blob_files, image_blobs, png
from tests.conftest import Api
from tests.factories import digit_images

PROJECT_FIELDS = {
    "id", "name", "description", "classes", "image_count", "default_model_id", "created_at",
}  # fmt: skip


def test_create_with_string_and_object_classes(api: Api) -> None:
    r = api.client.post(
        "/v1/projects",
        json={
            "name": "Birds of the city",
            "description": "pigeons and doves",
            "classes": [
                "pigeon",
                {
                    "name": "dove",
                    "description": "a white pigeon",
                    "attributes": {"white": 1.0, "grey": 0.0},
                },
                {"name": "crow"},
            ],
        },
    )
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith("application/json")
    p = r.json()
    assert p.keys() >= PROJECT_FIELDS
    assert isinstance(p["id"], str) and p["id"]
    assert p["name"] == "Birds of the city"
    assert p["description"] == "pigeons and doves"
    assert p["image_count"] == 0
    assert p["default_model_id"] is None
    created = datetime.fromisoformat(p["created_at"].replace("Z", "+00:00"))
    assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0
    classes = {c["name"]: c for c in p["classes"]}
    assert set(classes) == {"pigeon", "dove", "crow"}
    assert classes["dove"] == {
        "name": "dove",
        "description": "a white pigeon",
        "attributes": {"white": 1.0, "grey": 0.0},
        "negative": False,
        "image_count": 0,
    }
    assert classes["pigeon"] == {
        "name": "pigeon", "description": "", "attributes": {}, "negative": False,
        "image_count": 0,
    }  # fmt: skip
    assert api.client.get(f"/v1/projects/{p['id']}").json() == p


def test_create_minimal(api: Api) -> None:
    p = api.project("just a name")
    assert p["description"] == ""
    assert p["classes"] == []


def test_get_counts_images_per_class(api: Api) -> None:
    p = api.project(classes=["0", "1", "empty"])
    api.upload_labeled(p["id"], digit_images(2, [0, 1]))
    api.upload(p["id"], [("u.png", png(7))])  # unlabeled
    got = api.client.get(f"/v1/projects/{p['id']}").json()
    assert got["image_count"] == 5
    assert {c["name"]: c["image_count"] for c in got["classes"]} == {"0": 2, "1": 2, "empty": 0}


def test_classes_are_created_implicitly_by_labels(api: Api) -> None:
    p = api.project()
    r = api.upload(p["id"], [("a.png", png(1))], label="pigeon")
    assert r.status_code == 201, r.text
    got = api.client.get(f"/v1/projects/{p['id']}").json()
    assert [(c["name"], c["image_count"]) for c in got["classes"]] == [("pigeon", 1)]


def test_list_paginates_without_duplicates_or_omissions(api: Api) -> None:
    ids = [api.project(f"p{i}")["id"] for i in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, object] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        r = api.client.get("/v1/projects", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"items", "next_cursor"}
        assert len(body["items"]) <= 3
        seen += [p["id"] for p in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert pages < 10
    assert pages == 3
    assert len(seen) == len(set(seen)) == 7
    assert set(seen) == set(ids)


def test_list_page_size_exactly_filled_has_no_dangling_cursor(api: Api) -> None:
    for i in range(4):
        api.project(f"p{i}")
    first = api.client.get("/v1/projects", params={"limit": 2}).json()
    second = api.client.get(
        "/v1/projects", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert len(first["items"]) == len(second["items"]) == 2
    if second["next_cursor"] is not None:  # a cursor past the end must give an empty page
        third = api.client.get("/v1/projects", params={"cursor": second["next_cursor"]}).json()
        assert third == {"items": [], "next_cursor": None}
    everything = api.client.get("/v1/projects").json()
    assert everything["next_cursor"] is None
    assert len(everything["items"]) == 4


@pytest.mark.parametrize("limit", [0, -1, 501, "many"])
def test_list_rejects_bad_limit(api: Api, limit: object) -> None:
    assert_problem(api.client.get("/v1/projects", params={"limit": limit}), 422, "validation_error")


def test_list_default_limit_is_50(api: Api) -> None:
    for i in range(51):
        r = api.client.post("/v1/projects", json={"name": f"p{i}"})
        assert r.status_code == 201
    body = api.client.get("/v1/projects").json()
    assert len(body["items"]) == 50
    assert body["next_cursor"] is not None
    rest = api.client.get("/v1/projects", params={"cursor": body["next_cursor"]}).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None


def test_patch_updates_fields_and_classes(api: Api) -> None:
    p = api.project("old", description="d", classes=["a", {"name": "b", "description": "bee"}])
    r = api.client.patch(
        f"/v1/projects/{p['id']}",
        json={
            "name": "new",
            "classes": [
                {"name": "b", "attributes": {"stripes": 1.0}},
                "c",
            ],
        },
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["name"] == "new"
    assert got["description"] == "d"  # not sent: unchanged
    classes = {c["name"]: c for c in got["classes"]}
    assert set(classes) == {"a", "b", "c"}
    assert classes["b"]["description"] == "bee"  # kept
    assert classes["b"]["attributes"] == {"stripes": 1.0}
    assert api.client.get(f"/v1/projects/{p['id']}").json() == got

    r = api.client.patch(f"/v1/projects/{p['id']}", json={"description": "fresh"})
    assert r.status_code == 200
    assert r.json()["description"] == "fresh"
    assert r.json()["name"] == "new"


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": None},
        {"description": None},
        {"unknown": 1},
        {"classes": "a,b"},
        {"classes": [{"name": "x", "attributes": {"a": "high"}}]},
    ],
)
def test_patch_rejects_invalid_body(api: Api, body: dict) -> None:
    p = api.project("keep")
    r = api.client.patch(f"/v1/projects/{p['id']}", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert api.client.get(f"/v1/projects/{p['id']}").json() == p


def test_patch_invalid_class_name_changes_nothing(api: Api) -> None:
    p = api.project("keep", classes=["a"])
    r = api.client.patch(f"/v1/projects/{p['id']}", json={"name": "x", "classes": ["ok", "a/b"]})
    assert_problem(r, 422, "invalid_label")
    assert api.client.get(f"/v1/projects/{p['id']}").json() == p


def test_delete_removes_images_models_jobs_and_blobs(api: Api) -> None:
    keep = api.project("other")
    api.upload(keep["id"], [("k.png", png(99))], label="k")
    keep_blobs = blob_files(api.settings)

    p = api.project()
    pid = p["id"]
    api.upload_labeled(pid, digit_images(3, [0, 1]))
    job = api.train(pid)
    image_ids = [i["id"] for i in api.client.get(f"/v1/projects/{pid}/images").json()["items"]]
    assert len(image_ids) == 6
    assert len(image_blobs(api.settings, pid)) == 6
    assert any(b.startswith(f"models/{pid}/") for b in blob_files(api.settings))

    r = api.client.delete(f"/v1/projects/{pid}")
    assert r.status_code == 204
    assert r.content == b""

    assert_problem(api.client.get(f"/v1/projects/{pid}"), 404, "not_found")
    assert_problem(api.client.get(f"/v1/projects/{pid}/images"), 404, "not_found")
    for iid in image_ids:
        assert_problem(api.client.get(f"/v1/projects/{pid}/images/{iid}"), 404, "not_found")
    assert_problem(api.client.get(f"/v1/models/{job['model_id']}"), 404, "not_found")
    assert_problem(api.client.get(f"/v1/jobs/{job['id']}"), 404, "not_found")
    assert [x["id"] for x in api.client.get("/v1/projects").json()["items"]] == [keep["id"]]
    # Blobs of the deleted project are gone; the other project's are untouched.
    assert blob_files(api.settings) == keep_blobs
    assert not (api.settings.data_dir / "blobs" / "images" / pid).exists()
    assert not (api.settings.data_dir / "blobs" / "models" / pid).exists()
    assert api.client.get(f"/v1/projects/{keep['id']}").json()["image_count"] == 1


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_unknown_project_is_404(api: Api, method: str) -> None:
    kwargs = {"json": {"name": "x"}} if method == "PATCH" else {}
    r = api.client.request(method, "/v1/projects/prj_doesnotexist", **kwargs)
    assert_problem(r, 404, "not_found")


def test_deleting_twice_is_404(api: Api) -> None:
    p = api.project()
    assert api.client.delete(f"/v1/projects/{p['id']}").status_code == 204
    assert_problem(api.client.delete(f"/v1/projects/{p['id']}"), 404, "not_found")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": 5},
        {"name": "x" * 201},
        {"name": "x", "classes": "pigeon"},
        {"name": "x", "classes": [{"description": "no name"}]},
        {"name": "x", "classes": [{"name": "a", "attributes": {"w": "heavy"}}]},
        {"name": "x", "classes": [{"name": "a", "colour": "red"}]},
        {"name": "x", "extra": True},
        [],
    ],
)
def test_create_rejects_invalid_body(api: Api, body: object) -> None:
    r = api.client.post("/v1/projects", json=body)
    problem = assert_problem(r, 422, "validation_error")
    assert problem["errors"]
    assert api.client.get("/v1/projects").json()["items"] == []


def test_create_rejects_non_json(api: Api) -> None:
    r = api.client.post("/v1/projects", content=b"name=x", headers={"content-type": "text/plain"})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    r = api.client.post(
        "/v1/projects", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert api.client.get("/v1/projects").json()["items"] == []


@pytest.mark.parametrize("name", ["a/b", "a\\b", "   ", "tab\there", "x" * 101])
def test_create_rejects_invalid_class_name(api: Api, name: str) -> None:
    r = api.client.post("/v1/projects", json={"name": "p", "classes": [name]})
    assert r.status_code == 422, r.text
    assert r.json()["code"] in ("invalid_label", "validation_error")
    assert api.client.get("/v1/projects").json()["items"] == []


def test_class_names_are_normalised(api: Api) -> None:
    p = api.project(classes=["  pigeon  ", "pigeon"])
    assert [c["name"] for c in p["classes"]] == ["pigeon"]
