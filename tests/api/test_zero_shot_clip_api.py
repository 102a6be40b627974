"""The open_clip backend over HTTP: names-only project -> zero_shot job on a CLIP backbone
-> model -> predict. Random weights (see tests/transfer/test_clip.py): a wiring test, no
accuracy is claimed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.helpers import assert_problem
from tests.conftest import Api, make_settings, migrate
from tests.factories import encode, photo
from tests.transfer.test_clip import NAME, random_clip


@pytest.fixture
def clip_api(tmp_path: Path) -> Iterator[Api]:
    with random_clip(tmp_path / "weights") as weights_dir:
        settings = make_settings(tmp_path, weights_dir=weights_dir)
        migrate(settings)
        api = Api(settings)
        with api.client:
            yield api


def test_clip_zero_shot_job_model_predict(clip_api: Api) -> None:
    api = clip_api
    pid = api.project("terrace", classes=["cat", "coffee", "rocket"])["id"]
    job = api.train(pid, "zero_shot", backbone=NAME)
    model = api.client.get(f"/v1/models/{job['model_id']}").json()
    assert model["backbone"] == NAME and model["classes"] == ["cat", "coffee", "rocket"]
    assert model["metrics"]["backend"] == "clip" and model["metrics"]["validation"] == "none"
    probes = [("files", (f"{n}.png", encode(photo(n)))) for n in ("chelsea", "rocket")]
    r = api.client.post(f"/v1/models/{job['model_id']}/predict", files=probes)
    assert r.status_code == 200, r.text
    for p in r.json()["predictions"]:
        assert {s["label"] for s in p["scores"]} == {"cat", "coffee", "rocket"}
        assert abs(sum(s["score"] for s in p["scores"]) - 1) < 1e-5
        assert p["label"] == p["scores"][0]["label"]


def test_clip_backend_is_refused_where_it_cannot_run(clip_api: Api) -> None:
    api = clip_api
    pid = api.project("terrace", classes=["cat", "coffee"])["id"]
    jobs = f"/v1/projects/{pid}/jobs"
    r = api.client.post(jobs, json={"method": "zero_shot", "backbone": "clip_vit_b32"})
    assert_problem(r, 422, "backbone_unavailable")  # no weights file, no hub
    r = api.client.post(jobs, json={"method": "zero_shot", "params": {"backend": "clip"}})
    assert_problem(r, 422, "invalid_params")  # efficientnet_lite0 is no CLIP model
    body = {"method": "zero_shot", "backbone": NAME, "params": {"backend": "conse"}}
    assert_problem(api.client.post(jobs, json=body), 422, "backbone_has_no_classifier")
    assert api.queued == []
