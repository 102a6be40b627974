"""`/predict?localize=true`: boxes (and heat-maps) for the predicted class over HTTP."""

from __future__ import annotations

import base64
import io

from PIL import Image

from app.transfer.localize import Box
from tests.api.helpers import assert_problem
from tests.conftest import Api
from tests.scenes import scenes


def test_predict_localizes_the_predicted_class(api: Api) -> None:
    project = api.project(classes=["cat", {"name": "empty", "negative": True}])
    api.upload_labeled(project["id"], [(s.label, s.png) for s in scenes(24, split="train", seed=0)])
    job = api.train(project["id"], "linear_probe")
    cats = [s for s in scenes(8, split="test", seed=1) if s.label == "cat"][:3]
    files = [("files", (f"cat{i}.png", s.png)) for i, s in enumerate(cats)]

    plain = api.client.post(f"/v1/projects/{project['id']}/predict", files=files)
    assert plain.status_code == 200, plain.text
    assert all(p["box"] is None and p["heatmap_png"] is None for p in plain.json()["predictions"])

    r = api.client.post(
        f"/v1/models/{job['model_id']}/predict?localize=true&heatmap=true", files=files
    )
    assert r.status_code == 200, r.text
    ious = []
    for p, scene in zip(r.json()["predictions"], cats, strict=True):
        assert p["label"] == "cat", p
        box = Box(**p["box"])
        assert box.left >= 0 and box.top >= 0 and box.width > 0 and box.height > 0
        assert box.left + box.width <= 1 + 1e-9 and box.top + box.height <= 1 + 1e-9
        ious.append(box.iou(scene.box))  # type: ignore[arg-type]
        heat = Image.open(io.BytesIO(base64.b64decode(p["heatmap_png"])))
        assert heat.mode == "L" and heat.size == (224, 224)
    print("IoU of the API's boxes:", [round(i, 3) for i in ious])
    assert min(ious) > 0.2, ious

    empty = next(s for s in scenes(8, split="test", seed=1) if s.label == "empty")
    r = api.client.post(
        f"/v1/projects/{project['id']}/predict?localize=true",
        files=[("files", ("empty.png", empty.png))],
    )
    (p,) = r.json()["predictions"]
    assert p["label"] == "empty" and p["negative"] is True
    assert p["box"] is None  # nothing to point the water pistol at


def test_localize_threshold_out_of_range_is_a_422(api: Api) -> None:
    project = api.project()
    api.upload_labeled(project["id"], [(s.label, s.png) for s in scenes(8, split="train", seed=2)])
    api.train(project["id"], "knn")
    r = api.client.post(
        f"/v1/projects/{project['id']}/predict?localize=true&localize_threshold=1.5",
        files=[("files", ("x.png", scenes(1, split="test", seed=3)[0].png))],
    )
    body = assert_problem(r, 422, "validation_error")
    assert "localize_threshold" in str(body)
