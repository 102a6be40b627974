"""Exported files agree with the service's /predict on real images (within 1e-4)."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from app.transfer.preprocess import Preprocessing, load_for_model
from tests.conftest import Api
from tests.factories import digit_images, encode, photo

TOLERANCE = 1e-4


def real_images() -> list[tuple[str, bytes]]:
    digits = [(f"{label}.png", data) for label, data in digit_images(1, [0, 1, 2], offset=50)]
    photos = [
        ("chelsea.jpg", encode(photo("chelsea"), "JPEG")),
        ("coffee.png", encode(photo("coffee"))),
    ]
    return digits + photos


def served_probabilities(api: Api, model_id: str, classes: list[str]) -> np.ndarray:
    r = api.client.post(
        f"/v1/models/{model_id}/predict",
        params={"top_k": len(classes)},
        files=[("files", (name, data)) for name, data in real_images()],
    )
    assert r.status_code == 200, r.text
    rows = []
    for p in r.json()["predictions"]:
        scores = {s["label"]: s["score"] for s in p["scores"]}
        rows.append([scores[c] for c in classes])
    return np.array(rows)


def inputs(meta: dict) -> np.ndarray:
    cfg = Preprocessing.from_dict(meta["preprocessing"])
    return torch.stack([load_for_model(d, cfg, max_pixels=10**8) for _, d in real_images()]).numpy()


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("linear_probe", {}),
        ("knn", {}),
        ("finetune", {"trainable": "last_n_blocks", "n": 1, "epochs": 1, "probe_candidate": False}),
        ("zero_shot", {}),  # a head over the backbone's own ImageNet classifier
    ],
)
def test_onnx_and_torchscript_agree_with_predict(api: Api, method: str, params: dict) -> None:
    project = api.project()
    api.upload_labeled(project["id"], digit_images(5, [0, 1, 2]))
    model = api.client.get(
        f"/v1/models/{api.train(project['id'], method, params=params)['model_id']}"
    ).json()
    served = served_probabilities(api, model["id"], model["classes"])

    r = api.client.get(f"/v1/models/{model['id']}/export", params={"format": "onnx"})
    assert r.status_code == 200 and r.headers["content-disposition"].endswith('.onnx"')
    proto = onnx.load_from_string(r.content)
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["dovecote"])
    assert meta["classes"] == model["classes"]
    session = ort.InferenceSession(r.content, providers=["CPUExecutionProvider"])
    onnx_probs = session.run(["probabilities"], {"input": inputs(meta)})[0]
    assert np.abs(onnx_probs - served).max() < TOLERANCE

    r = api.client.get(f"/v1/models/{model['id']}/export", params={"format": "torchscript"})
    assert r.status_code == 200
    extra = {"dovecote.json": ""}
    scripted = torch.jit.load(io.BytesIO(r.content), _extra_files=extra)
    meta = json.loads(extra["dovecote.json"])
    assert meta["classes"] == model["classes"]
    with torch.inference_mode():
        ts_probs = scripted(torch.from_numpy(inputs(meta))).numpy()
    assert np.abs(ts_probs - served).max() < TOLERANCE


def test_export_rejects_unknown_format_and_other_tenants(api: Api) -> None:
    project = api.project()
    api.upload_labeled(project["id"], digit_images(3, [0, 1]))
    model_id = api.train(project["id"], "knn")["model_id"]
    r = api.client.get(f"/v1/models/{model_id}/export", params={"format": "pickle"})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    from app.db.session import session_scope
    from app.services.tenants import create_key

    with session_scope(api.settings.resolved_database_url) as db:
        other = create_key(db=db, tenant_name="other")
    r = api.client.get(
        f"/v1/models/{model_id}/export", headers={"Authorization": f"Bearer {other}"}
    )
    assert r.status_code == 404
