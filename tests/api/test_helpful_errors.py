"""Errors that say what to do: content type, similar labels, zero-shot backbones, formats."""

from __future__ import annotations

from tests.api.helpers import assert_problem, digit
from tests.conftest import Api


def test_a_json_body_without_content_type_says_to_send_it(api: Api) -> None:
    r = api.client.post(
        "/v1/projects",
        content=b'{"name": "terrace"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},  # curl -d's default
    )
    body = assert_problem(r, 422, "validation_error")
    assert "Content-Type: application/json" in body["detail"]
    r = api.client.post("/v1/projects", json={"nmae": "terrace"})  # JSON, but wrong
    assert "Content-Type" not in assert_problem(r, 422, "validation_error")["detail"]


def test_upload_of_a_non_image_names_it_and_lists_the_formats(api: Api) -> None:
    pid = api.project()["id"]
    body = assert_problem(api.upload(pid, [("notes.txt", b"hello")]), 422, "image_undecodable")
    assert "JPEG, PNG, WebP, BMP or GIF" in body["detail"]
    assert body["rejected"][0]["filename"] == "notes.txt"


def test_a_label_differing_only_by_case_or_spaces_is_refused(api: Api) -> None:
    pid = api.project(classes=["wood pigeon"])["id"]
    r = api.upload(pid, [("a.png", digit(0))], label="Wood Pigeon")
    body = assert_problem(r, 422, "similar_class_exists")
    assert body["rejected"][0]["filename"] == "a.png"
    assert "'wood pigeon'" in body["detail"]
    r = api.upload(pid, [("a.png", digit(0)), ("b.png", digit(1))], label="wood pigeon")
    assert r.status_code == 201, r.text
    image = r.json()["items"][0]["id"]
    r = api.client.patch(f"/v1/projects/{pid}/images/{image}", json={"label": "woodpigeon"})
    assert assert_problem(r, 422, "similar_class_exists")["similar_to"] == "wood pigeon"
    r = api.client.patch(f"/v1/projects/{pid}", json={"classes": ["WOOD PIGEON"]})
    assert_problem(r, 422, "similar_class_exists")
    r = api.client.post("/v1/projects", json={"name": "x", "classes": ["cat", "Cat"]})
    assert_problem(r, 422, "similar_class_exists")
    # a class whose images are all deleted stays, shown with no image
    for item in api.client.get(f"/v1/projects/{pid}/images").json()["items"]:
        api.client.delete(f"/v1/projects/{pid}/images/{item['id']}")
    classes = api.client.get(f"/v1/projects/{pid}").json()["classes"]
    assert classes == [
        {"name": "wood pigeon", "description": "", "attributes": {}, "negative": False,
         "image_count": 0}
    ]  # fmt: skip


def test_zero_shot_on_a_backbone_without_imagenet_classifier_is_refused_at_creation(
    api: Api,
) -> None:
    pid = api.project(classes=["cat", "rocket"])["id"]
    api.upload(pid, [("a.png", digit(0)), ("b.png", digit(1))], label="cat")
    api.upload(pid, [("c.png", digit(2)), ("d.png", digit(3))], label="rocket")
    for method in ("zero_shot", "zero_shot_generalized"):
        r = api.client.post(
            f"/v1/projects/{pid}/jobs", json={"method": method, "backbone": "mobilenetv2_100"}
        )
        body = assert_problem(r, 422, "backbone_has_no_classifier")
        assert "efficientnet_lite" in body["detail"]
    assert api.queued == []
