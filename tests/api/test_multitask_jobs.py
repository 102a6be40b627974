"""Label sets and `multitask` jobs through the API: upload with labels, train, predict all."""

from __future__ import annotations

import json

from tests.api.helpers import assert_problem
from tests.conftest import Api
from tests.factories import digit_images
from tests.transfer.test_multitask import digit_labels


def _as_api(labels: dict[str, tuple[str, ...]]) -> str:
    return json.dumps({"parity": labels["parity"][0], "shape": list(labels["shape"])})


def test_label_sets_train_one_model_that_predicts_every_task(api: Api) -> None:
    project = api.project()
    for i, (label, png) in enumerate(digit_images(4, [0, 1, 6, 7])):
        r = api.upload(project["id"], [(f"{i}.png", png)], label=label, labels=_as_api(digit_labels(label)))  # fmt: skip
        assert r.status_code == 201, r.text
    image = r.json()["items"][0]
    assert image["labels"] == {"parity": "odd", "shape": ["large"]}
    r = api.client.patch(
        f"/v1/projects/{project['id']}/images/{image['id']}",
        json={"labels": {"shape": ["large", "stroke"]}},
    )
    assert r.status_code == 200 and r.json()["labels"]["shape"] == ["large", "stroke"], r.text
    job = api.train(project["id"], "multitask", params={"steps": 100})
    model = api.client.get(f"/v1/models/{job['model_id']}").json()
    tasks = model["metrics"]["tasks"]
    assert set(tasks) == {"label", "parity", "shape"} and model["metrics"]["validation"] == "k-fold"
    for name, t in tasks.items():
        key = "micro_f1" if t["multi_label"] else "accuracy"
        print(f"\n{name}: {key} {t[key]:.3f} vs single task {t['baseline'][key]:.3f}")
        assert isinstance(t["negative_transfer"], bool) and t["n_validation"] == 16
    r = api.client.post(
        f"/v1/models/{model['id']}/predict",
        files=[("files", ("d.png", digit_images(1, [6], offset=40)[0][1]))],
        params={"top_k": 2},
    )
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    assert p["label"] in {"0", "1", "6", "7"} and len(p["scores"]) == 2
    assert p["tasks"]["parity"]["label"] in {"even", "odd"}
    assert set(p["tasks"]["shape"]["labels"]) <= {"large", "loop", "small", "stroke"}
    assert p["tasks"]["shape"]["label"] is None and len(p["tasks"]["shape"]["scores"]) == 2


def test_bad_label_sets_are_typed_422s(api: Api) -> None:
    project = api.project()
    png = digit_images(1, [0])[0][1]
    for bad in ('{"parity": ', '["yes"]', '{"parity": 3}', '{"label": "x"}', '{"a/b": "x"}'):
        assert_problem(api.upload(project["id"], [("a.png", png)], labels=bad), 422, "invalid_labels")  # fmt: skip
    assert api.upload(project["id"], [("a.png", png)], labels='{"parity": "even"}').status_code == 201  # fmt: skip
    r = api.upload(project["id"], [("b.png", digit_images(1, [2])[0][1])], labels='{"parity": ["even"]}')  # fmt: skip
    assert_problem(r, 422, "invalid_labels")
    for params, code in (({}, "project_has_no_labels"), ({"tasks": ["colour"]}, "project_has_no_labels")):  # fmt: skip
        r = api.client.post(f"/v1/projects/{project['id']}/jobs", json={"method": "multitask", "params": params})  # fmt: skip
        assert_problem(r, 422, code)
    api.upload_labeled(project["id"], digit_images(3, [0, 1]))
    r = api.client.post(
        f"/v1/projects/{project['id']}/jobs",
        json={"method": "multitask", "params": {"tasks": ["colour"]}},
    )
    assert_problem(r, 422, "unknown_label_set")
    r = api.client.post(f"/v1/projects/{project['id']}/jobs", json={"method": "multitask"})
    assert_problem(r, 422, "label_set_too_small")  # one image labeled in `parity`
    assert api.queued == []


def test_label_sets_are_listed_with_counts_and_deleted_without_their_images(api: Api) -> None:
    project = api.project()
    pid = project["id"]
    for i, (label, png) in enumerate(digit_images(2, [0, 1, 7])):
        r = api.upload(pid, [(f"{i}.png", png)], label=label, labels=_as_api(digit_labels(label)))  # fmt: skip
        assert r.status_code == 201, r.text
    listed = api.client.get(f"/v1/projects/{pid}/label-sets").json()
    want = {
        "parity": {"multi_label": False, "labels": {"even": 2, "odd": 4}, "image_count": 6},
        "shape": {"multi_label": True, "labels": {"large": 2, "loop": 2, "small": 4}, "image_count": 6},
    }  # fmt: skip
    assert {s.pop("name"): s for s in listed} == want
    assert api.client.get(f"/v1/projects/{pid}").json()["label_sets"] == [
        {"name": name, **s} for name, s in want.items()
    ]

    assert api.client.delete(f"/v1/projects/{pid}/label-sets/shape").status_code == 204
    assert [s["name"] for s in api.client.get(f"/v1/projects/{pid}/label-sets").json()] == [
        "parity"
    ]
    images = api.client.get(f"/v1/projects/{pid}/images").json()["items"]
    assert len(images) == 6 and all(set(i["labels"]) == {"parity"} for i in images)
    assert_problem(api.client.delete(f"/v1/projects/{pid}/label-sets/shape"), 404, "not_found")
    r = api.client.post(
        f"/v1/projects/{pid}/jobs", json={"method": "multitask", "params": {"tasks": ["shape"]}}
    )
    assert_problem(r, 422, "unknown_label_set")
    # a re-created set starts empty and takes either kind again
    r = api.upload(pid, [("x.png", digit_images(1, [3])[0][1])], labels='{"shape": "round"}')
    assert r.status_code == 201, r.text
