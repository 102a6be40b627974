"""Helpers shared by the API tests: problem assertions, blob listings, image bytes."""

from __future__ import annotations

import io
import struct
import zlib

import httpx
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.db.session import session_scope
from app.services import tenants
from tests.conftest import Api
from tests.factories import digit_images, encode

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}


def assert_problem(r: httpx.Response, status: int, code: str) -> dict:
    """``r`` is an RFC 9457 problem document with this status and machine-readable code."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body.keys() >= PROBLEM_FIELDS, body
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["type"].endswith(code)
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def blob_files(settings: Settings) -> set[str]:
    """Every stored blob, as a path relative to the blob root."""
    root = settings.data_dir.resolve() / "blobs"
    if not root.exists():
        return set()
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def image_blobs(settings: Settings, project_id: str) -> set[str]:
    return {b for b in blob_files(settings) if b.startswith(f"images/{project_id}/")}


def image_count(api: Api, project_id: str) -> int:
    r = api.client.get(f"/v1/projects/{project_id}")
    assert r.status_code == 200, r.text
    return r.json()["image_count"]


def new_key(settings: Settings, tenant: str) -> str:
    with session_scope(settings.resolved_database_url) as db:
        return tenants.create_key(db=db, tenant_name=tenant)


def client_with_key(api: Api, key: str | None) -> TestClient:
    client = TestClient(api.client.app)
    if key is not None:
        client.headers["Authorization"] = f"Bearer {key}"
    return client


def project_with_jobs(client: TestClient, methods: list[str]) -> list[dict]:
    """A project of 3 images of 2 digits and one job of each of ``methods``, in order."""
    r = client.post("/v1/projects", json={"name": "digits"})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    for label, data in digit_images(3, [0, 1]):
        files = [("files", (f"{label}.png", data))]
        r = client.post(f"/v1/projects/{pid}/images", files=files, data={"label": label})
        assert r.status_code == 201, r.text
    jobs = []
    for method in methods:
        r = client.post(f"/v1/projects/{pid}/jobs", json={"method": method})
        assert r.status_code == 202, r.text
        jobs.append(r.json())
    return jobs


# --- image bytes ----------------------------------------------------------------------


def rgb(seed: int = 0, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    """A small random RGB picture (height, width) = ``size``; distinct bytes per seed."""
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def png(seed: int = 0, size: tuple[int, int] = (24, 32)) -> bytes:
    return encode(rgb(seed, size), "PNG")


def jpeg(seed: int = 0, size: tuple[int, int] = (24, 32)) -> bytes:
    return encode(rgb(seed, size), "JPEG", quality=90)


def animated_gif(size: tuple[int, int] = (24, 32)) -> bytes:
    frames = [Image.fromarray(rgb(s, size)).convert("P") for s in (1, 2, 3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


def digit(label: int, index: int = 0) -> bytes:
    """One real digit picture (PNG) of class ``label``."""
    return digit_images(1, [label], offset=index)[0][1]


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose IHDR (with a valid CRC) claims ``width`` x ``height`` pixels."""
    data = bytearray(encode(np.zeros((8, 8), np.uint8), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)
