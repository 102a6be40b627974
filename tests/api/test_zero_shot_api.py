"""Zero-shot over HTTP: a project of class names only -> job -> model -> predict; "none of
the above" (reject_below) and negative classes on every model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.helpers import assert_problem, blob_files, digit
from tests.conftest import Api, make_settings, migrate
from tests.factories import digit_images, encode, photo


def files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", item) for item in items]


PROBES = [(f"{name}.png", encode(photo(name))) for name in ("chelsea", "coffee", "rocket")]


@pytest.fixture(scope="module")
def names_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, str, dict]]:
    """A project that declares three classes and holds no image, with its zero-shot model."""
    settings = make_settings(tmp_path_factory.mktemp("zero-shot"))
    migrate(settings)
    api = Api(settings)
    with api.client:
        project = api.project(
            "terrace",
            classes=["cat", {"name": "coffee", "description": "a cup of hot coffee"}, "rocket"],
        )
        job = api.train(project["id"], "zero_shot")
        yield api, project["id"], job


def test_names_only_project_gets_a_model_that_predicts(names_only: tuple[Api, str, dict]) -> None:
    api, pid, job = names_only
    model = api.client.get(f"/v1/models/{job['model_id']}").json()
    assert model["method"] == "zero_shot" and model["classes"] == ["cat", "coffee", "rocket"]
    m = model["metrics"]
    assert m["validation"] == "none" and m["accuracy"] is None and m["n_validation"] == 0
    r = api.client.post(f"/v1/projects/{pid}/predict", files=files(*PROBES))
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert [p["label"] for p in predictions] == ["cat", "coffee", "rocket"]
    assert all(p["negative"] is False for p in predictions)


def test_reject_below_answers_none_of_the_above(names_only: tuple[Api, str, dict]) -> None:
    api, _, job = names_only
    url = f"/v1/models/{job['model_id']}/predict"
    r = api.client.post(url, params={"reject_below": 1.0}, files=files(*PROBES))
    assert r.status_code == 200, r.text
    for p in r.json()["predictions"]:
        assert p["label"] is None and p["negative"] is False
        assert len(p["scores"]) == 3 and p["score"] == p["scores"][0]["score"] < 1.0
    r = api.client.post(url, params={"reject_below": 0.0}, files=files(*PROBES))
    assert [p["label"] for p in r.json()["predictions"]] == ["cat", "coffee", "rocket"]
    # no labeled images, so no threshold was chosen at training
    r = api.client.post(url, params={"reject_below": "default"}, files=files(*PROBES))
    assert_problem(r, 422, "no_reject_default")
    for bad in (1.5, -0.1, "sometimes"):
        r = api.client.post(url, params={"reject_below": bad}, files=files(*PROBES))
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")


def test_zero_shot_needs_two_classes(api: Api) -> None:
    pid = api.project("lonely", classes=["pigeon"])["id"]
    r = api.client.post(f"/v1/projects/{pid}/jobs", json={"method": "zero_shot"})
    assert_problem(r, 422, "too_few_classes")
    assert api.queued == []


def test_negative_class_and_the_models_own_threshold(api: Api) -> None:
    pid = api.project("digits", classes=[{"name": "0", "negative": True}])["id"]
    api.upload_labeled(pid, digit_images(6, [0, 1, 2]))
    classes = {c["name"]: c for c in api.client.get(f"/v1/projects/{pid}").json()["classes"]}
    assert classes["0"]["negative"] is True and classes["1"]["negative"] is False
    job = api.train(pid, "linear_probe")
    threshold = api.client.get(f"/v1/models/{job['model_id']}").json()["metrics"]["reject_below"]
    assert 0 < threshold < 1  # chosen on the k-fold predictions
    probes = [(f"{c}.png", digit(c, 30)) for c in (0, 1, 2)]
    r = api.client.post(f"/v1/projects/{pid}/predict", files=files(*probes))
    predictions = r.json()["predictions"]
    assert all(p["negative"] is (p["label"] == "0") for p in predictions)
    assert predictions[0]["label"] == "0" and predictions[0]["negative"] is True
    r = api.client.post(
        f"/v1/projects/{pid}/predict", params={"reject_below": "default"}, files=files(*probes)
    )
    assert r.status_code == 200, r.text
    for p in r.json()["predictions"]:
        assert (p["label"] is None) == (p["score"] < threshold)
    # the flag is the project's: unmarking it changes what predictions say
    r = api.client.patch(
        f"/v1/projects/{pid}", json={"classes": [{"name": "0", "negative": False}]}
    )
    assert r.status_code == 200, r.text
    r = api.client.post(f"/v1/projects/{pid}/predict", files=files(probes[0]))
    (again,) = r.json()["predictions"]
    assert again["label"] == "0" and again["negative"] is False


def test_zero_shot_models_store_the_imagenet_parts_once(names_only: tuple[Api, str, dict]) -> None:
    """A second zero-shot model adds only its own small head to the blob store; deleting a
    model keeps the shared tensors the others still read."""
    api, pid, first = names_only
    before = blob_files(api.settings)
    shared = {b for b in before if b.startswith("shared-tensors/")}
    assert shared  # the backbone's ImageNet classifier, ImageNet's text vectors
    second = api.train(pid, "zero_shot")
    added = blob_files(api.settings) - before
    assert added and all(b.startswith(f"models/{pid}/{second['model_id']}/") for b in added)
    root = api.settings.data_dir / "blobs"
    assert sum((root / b).stat().st_size for b in added) < 64 * 1024
    assert api.client.delete(f"/v1/models/{second['model_id']}").status_code == 204
    assert shared <= blob_files(api.settings)
    r = api.client.post(f"/v1/models/{first['model_id']}/predict", files=files(*PROBES))
    assert [p["label"] for p in r.json()["predictions"]] == ["cat", "coffee", "rocket"]
