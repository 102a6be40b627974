"""``dovecote.client`` against a real served instance."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from dovecote.client import Client, InvalidInput, NotFound, Unauthorized
from tests.client.conftest import Served

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
