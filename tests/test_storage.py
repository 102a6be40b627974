"""The blob stores keep one contract: a local folder, and an S3-compatible bucket over HTTP.

The bucket is served by moto's S3 server (a real HTTP endpoint speaking the S3 API, run in a
thread), reached through boto3 exactly as production reaches AWS S3 or MinIO.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.storage import BlobNotFound, BlobStore, LocalBlobStore, S3BlobStore, open_store
from tests.conftest import Api, make_settings, migrate
from tests.factories import digit_images

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")
BUCKET = "dovecote-test"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
        }.items():  # fmt: skip
            mp.setenv(name, value)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield endpoint
    server.stop()


def s3_keys(prefix: str) -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    request.getfixturevalue("s3_endpoint")
    return open_store(f"s3://{BUCKET}/run-{secrets.token_hex(4)}")


def test_put_get_exists_delete(store: BlobStore) -> None:
    store.put("images/p1/abc", b"\x89PNG bytes")
    assert store.get("images/p1/abc") == b"\x89PNG bytes" and store.exists("images/p1/abc")
    store.put("images/p1/abc", b"replaced")
    assert store.get("images/p1/abc") == b"replaced"
    assert not store.exists("images/p1/missing")
    with pytest.raises(BlobNotFound):
        store.get("images/p1/missing")
    store.delete("images/p1/abc")
    store.delete("images/p1/abc")  # deleting twice is fine
    assert not store.exists("images/p1/abc")


def test_delete_prefix_removes_a_folder_and_nothing_beside_it(store: BlobStore) -> None:
    for key in ("models/p1/m1/model.json", "models/p1/m1/head.safetensors", "models/p1/m2/x",
                "models/p10/m3/x", "models/p1.json"):  # fmt: skip
        store.put(key, key.encode())
    store.delete_prefix("models/p1/")
    assert [store.exists(k) for k in ("models/p1/m1/model.json", "models/p1/m2/x")] == [0, 0]
    assert store.get("models/p10/m3/x") == b"models/p10/m3/x"  # a sibling with the same start
    assert store.get("models/p1.json") == b"models/p1.json"
    store.delete_prefix("models/nothing-here")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "../x", "a//b", "a/./b", "a/"])
def test_keys_that_could_escape_are_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid blob key"):
        store.put(key, b"x")


def test_many_keys_are_deleted_past_one_listing_page(s3_endpoint: str) -> None:
    prefix = f"run-{secrets.token_hex(4)}"
    store = S3BlobStore(BUCKET, prefix)
    for i in range(1005):  # delete_objects takes 1000 keys; the listing pages at 1000
        store.put(f"images/p/{i:04d}", b"")
    store.put("images/q/keep", b"")
    store.delete_prefix("images/p")
    assert s3_keys(prefix) == [f"{prefix}/images/q/keep"]


def test_the_service_runs_on_an_s3_bucket(s3_endpoint: str, tmp_path: Path) -> None:
    """Upload, train, predict, delete — with every blob in the bucket, none on disk."""
    prefix = f"run-{secrets.token_hex(4)}"
    settings = make_settings(tmp_path, storage_url=f"s3://{BUCKET}/{prefix}")
    migrate(settings)
    api = Api(settings)
    project = api.project()
    api.upload_labeled(project["id"], digit_images(4, [0, 1, 2]))
    images = [k for k in s3_keys(prefix) if k.startswith(f"{prefix}/images/{project['id']}/")]
    assert len(images) == 12
    job = api.train(project["id"], "knn")
    assert any("/model.json" in k for k in s3_keys(f"{prefix}/models/{project['id']}/"))
    r = api.client.post(
        f"/v1/models/{job['model_id']}/predict",
        files=[("files", ("d.png", digit_images(1, [1], offset=40)[0][1]))],
    )
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] in {"0", "1", "2"}
    image_id = api.client.get(f"/v1/projects/{project['id']}/images").json()["items"][0]["id"]
    r = api.client.get(f"/v1/projects/{project['id']}/images/{image_id}/content")
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    assert not (tmp_path / "blobs").exists()

    assert api.client.delete(f"/v1/projects/{project['id']}").status_code == 204
    assert s3_keys(prefix) == []


def test_readiness_needs_the_bucket(s3_endpoint: str, tmp_path: Path) -> None:
    for bucket, status in ((BUCKET, 200), ("no-such-bucket", 503)):
        (tmp_path / bucket).mkdir()
        settings = make_settings(tmp_path / bucket, storage_url=f"s3://{bucket}/x")
        migrate(settings)
        r = Api(settings).client.get("/readyz")
        assert r.status_code == status, r.text
