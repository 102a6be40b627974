"""``dovecote.client`` against a real served instance."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

import onnx
import pytest

from dovecote.client import Client, InvalidInput, NotFound, Unauthorized
from tests.client.conftest import Served
from tests.factories import digit_images
from tests.receiver import receiver

pytestmark = pytest.mark.integration


def test_client_end_to_end(
    served: Served, photo_folder: Path, new_photos: list[Path], tmp_path: Path
) -> None:
    with Client(served.url, served.key) as dc:
        project = dc.create_project("digits")
        uploaded = dc.upload(project["id"], photo_folder)  # zipped on the fly
        assert uploaded["created"] == 18 and uploaded["rejected"] == []
        assert {c["name"]: c["image_count"] for c in dc.project(project["id"])["classes"]} == {
            "0": 6, "1": 6, "2": 6
        }  # fmt: skip
        seen: list[tuple[str, float, str]] = []
        job = dc.train(project["id"], "knn", params={"k": 3})
        job = dc.wait(
            job["id"], on_update=lambda j: seen.append((j["status"], j["progress"], j["stage"]))
        )
        assert job["status"] == "succeeded" and seen[-1] == ("succeeded", 1.0, "done")
        model = dc.model(job["model_id"])
        assert model["metrics"]["accuracy"] > model["metrics"]["baseline"]["accuracy"]

        result = dc.predict(project["id"], new_photos)  # 207: two predicted, one rejected
        assert [(p["filename"], p["label"]) for p in result["predictions"]] == [
            ("new-0.png", "0"), ("new-1.png", "1")
        ]  # fmt: skip
        assert [(r["filename"], r["code"]) for r in result["rejected"]] == [
            ("notes.txt", "image_undecodable")
        ]
        assert (result["version"], result["alias"]) == (1, "production")

        # Aliases: set, predict with, history, rollback.
        assert dc.set_alias(project["id"], "staging", model["id"])["version"] == 1
        assert dc.predict(project["id"], new_photos[:1], alias="staging")["alias"] == "staging"
        assert [a["name"] for a in dc.aliases(project["id"])] == ["production", "staging"]
        assert [e["action"] for e in dc.alias_history(project["id"], "staging")] == ["put"]
        dc.delete_alias(project["id"], "staging")
        assert dc.rollback(project["id"], "staging")["model_id"] == model["id"]
        path = dc.export(job["model_id"], tmp_path / "digits.onnx")
        assert "dovecote" in {p.key for p in onnx.load(str(path)).metadata_props}


def test_client_errors_are_typed(served: Served) -> None:
    with Client(served.url, "wrong-key") as dc, pytest.raises(Unauthorized) as bad_key:
        dc.projects()
    assert bad_key.value.code == "unauthorized" and "dovecote keys create" in bad_key.value.detail
    with Client(served.url, served.key) as dc:
        with pytest.raises(NotFound):
            dc.project("prj_missing")
        project = dc.create_project("empty")
        with pytest.raises(InvalidInput) as no_method:
            dc.train(project["id"], "magic")
        assert no_method.value.code == "unknown_method" and no_method.value.status == 422


def test_client_webhooks(served: Served, photo_folder: Path) -> None:
    """Register (project and tenant-wide), list, read, a signed delivery of a job's end as
    the worker of ``dovecote serve`` sends it, deliveries, delete; a refused URL is typed."""
    with Client(served.url, served.key) as dc, receiver() as hook:
        project = dc.create_project("hooked")
        mine = dc.create_webhook(hook.url, project_id=project["id"])
        assert mine["secret"].startswith("whsec_") and mine["project_id"] == project["id"]
        everywhere = dc.create_webhook("http://127.0.0.1:9/all", events=["model.drift"])
        assert everywhere["project_id"] is None
        assert [w["id"] for w in dc.webhooks(project["id"])] == [mine["id"]]
        assert {w["id"] for w in dc.webhooks()} >= {mine["id"], everywhere["id"]}
        assert "secret" not in dc.webhook(mine["id"])

        dc.upload(project["id"], photo_folder)
        job = dc.wait(dc.train(project["id"], "knn", params={"k": 3})["id"])
        (received,) = hook.wait_for(1)
        signature = (
            "sha256=" + hmac.new(mine["secret"].encode(), received.body, hashlib.sha256).hexdigest()
        )
        assert received.headers["Dovecote-Signature"] == signature
        deadline = time.monotonic() + 30
        while (delivered := dc.webhook_deliveries(mine["id"]))[0]["status"] == "pending":
            assert time.monotonic() < deadline, delivered
            time.sleep(0.2)
        assert [(d["event"], d["status"]) for d in delivered] == [("job.finished", "succeeded")]
        assert delivered[0]["body"]["data"]["job"]["id"] == job["id"]
        assert dc.webhook_deliveries(everywhere["id"]) == []  # not subscribed to job.finished

        dc.delete_webhook(mine["id"])
        with pytest.raises(NotFound):
            dc.webhook(mine["id"])
        with pytest.raises(InvalidInput) as refused:
            dc.create_webhook("file:///etc/passwd")
        assert refused.value.code == "webhook_url_refused" and refused.value.status == 422


def test_client_after_the_first_model(
    served: Served, photo_folder: Path, new_photos: list[Path], tmp_path: Path
) -> None:
    """Stored predictions → what to label next → feedback and labels → a batch prediction
    of a folder and of the unlabeled pool → the tenant's usage."""
    with Client(served.url, served.key) as dc:
        project = dc.create_project("loop", store_predictions=True)
        pid = project["id"]
        assert project["store_predictions"] is True
        dc.upload(pid, photo_folder)
        model_id = dc.wait(dc.train(pid, "knn", params={"k": 3})["id"])["model_id"]
        answered = dc.predict(pid, new_photos[:2])["predictions"]
        stored = dc.predictions(pid)
        assert {p["id"] for p in stored} == {p["prediction_id"] for p in answered} != {None}
        [(_, data)] = digit_images(1, [2], offset=30)
        (tmp_path / "visitor.png").write_bytes(data)
        [image] = dc.upload(pid, tmp_path / "visitor.png")["items"]  # no label

        next_up = dc.suggestions(pid, n=5)
        assert next_up["pool_size"] == 3
        ids = {(i["prediction_id"], i["image_id"]) for i in next_up["items"]}
        assert {p["id"] for p in stored} | {image["id"]} == {p or i for p, i in ids}
        first, second = stored
        done = dc.feedback(first["id"], label="0")
        assert done["prediction"]["feedback_label"] == "0" and done["image"]["label"] == "0"
        assert dc.feedback(second["id"], correct=True)["prediction"]["feedback"] == "confirmed"
        with pytest.raises(InvalidInput) as both:
            dc.feedback(first["id"], label="0", correct=True)
        assert both.value.code == "invalid_input"
        assert dc.label(pid, image["id"], "2")["label"] == "2"
        assert dc.predictions(pid, feedback=False) == []

        # A folder in the background, then its results in the folder's order.
        job = dc.batch_predict(model_id, photo_folder / "1", top_k=2)
        job = dc.wait(job["id"], get=dc.batch_prediction)
        assert job["counts"]["images"] == 6 and job["counts"]["failed"] == 0
        rows = [json.loads(line) for line in dc.batch_results(job["id"]).splitlines()]
        assert len(rows) == 6 and all(len(r["scores"]) == 2 for r in rows)
        assert dc.batch_results(job["id"], format="csv").startswith("filename,")
        with pytest.raises(InvalidInput) as empty:  # every pool image is labeled now
            dc.batch_predict(model_id)
        assert empty.value.code == "unlabeled_pool_empty"
        assert dc.usage()["stored_predictions"]["used"] == 2
