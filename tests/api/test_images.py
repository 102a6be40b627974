"""Images: multipart and zip upload, dedupe, listing, one image, content; hostile input."""

from __future__ import annotations

import asyncio
import hashlib
import io
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.api.helpers import (
    animated_gif,
    assert_problem,
    blob_files,
    image_blobs,
    image_count,
    jpeg,
    png,
    png_claiming,
    rgb,
)
from tests.conftest import API_KEY, Api, make_settings, migrate
from tests.factories import encode, make_zip

IMAGE_FIELDS = {
    "id", "filename", "label", "domain", "split", "width", "height", "sha256", "created_at",
}  # fmt: skip


def low_limits_api(tmp_path: Path, **limits: object) -> Api:
    settings = make_settings(tmp_path, **limits)
    migrate(settings)
    return Api(settings)


def all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def assert_nothing_stored(api: Api, project_id: str, count: int, blobs: set[str]) -> None:
    assert image_count(api, project_id) == count
    assert len(api.client.get(f"/v1/projects/{project_id}/images").json()["items"]) == count
    assert blob_files(api.settings) == blobs
    # no temporary or partial files left behind either
    root = api.settings.data_dir / "blobs"
    assert not [p for p in root.rglob("*.part")] if root.exists() else True


# --- formats ----------------------------------------------------------------------------


def _formats() -> list[tuple[str, bytes, str, str]]:
    pic = rgb(3, (20, 30))
    return [
        ("a.png", encode(pic, "PNG"), "PNG", "image/png"),
        ("b.jpg", encode(pic, "JPEG", quality=90), "JPEG", "image/jpeg"),
        ("c.webp", encode(pic, "WEBP"), "WEBP", "image/webp"),
        ("d.bmp", encode(pic, "BMP"), "BMP", "image/bmp"),
        ("e.gif", animated_gif((20, 30)), "GIF", "image/gif"),
    ]


@pytest.mark.parametrize("name,data,fmt,media", _formats(), ids=lambda v: str(v)[:6])
def test_upload_each_format_with_label(
    api: Api, name: str, data: bytes, fmt: str, media: str
) -> None:
    p = api.project()
    r = api.upload(p["id"], [(name, data)], label="pigeon")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] == 1
    assert body["duplicates"] == 0
    assert body["rejected"] == []
    (img,) = body["items"]
    assert img.keys() >= IMAGE_FIELDS
    assert img["filename"] == name
    assert img["label"] == "pigeon"
    assert img["domain"] == "target"
    assert img["split"] == "auto"
    assert (img["width"], img["height"]) == (30, 20)
    assert img["sha256"] == hashlib.sha256(data).hexdigest()

    content = api.client.get(f"/v1/projects/{p['id']}/images/{img['id']}/content")
    assert content.status_code == 200
    assert content.content == data
    assert content.headers["content-type"] == media
    assert api.client.get(f"/v1/projects/{p['id']}/images/{img['id']}").json() == img
    assert image_blobs(api.settings, p["id"]) == {f"images/{p['id']}/{img['sha256']}"}


def test_gif_first_frame_is_what_is_seen(api: Api) -> None:
    from app.transfer.preprocess import decode_image

    data = animated_gif()
    first = np.asarray(decode_image(data, max_pixels=10**6))
    with Image.open(io.BytesIO(data)) as im:
        assert getattr(im, "n_frames", 1) == 3
        expected = np.asarray(im.convert("RGB"))
    assert np.array_equal(first, expected)
    p = api.project()
    assert api.upload(p["id"], [("anim.gif", data)]).status_code == 201


def test_upload_several_files_at_once(api: Api) -> None:
    p = api.project()
    r = api.upload(p["id"], [("1.png", png(1)), ("2.jpg", jpeg(2)), ("3.png", png(3))])
    assert r.status_code == 201, r.text
    assert r.json()["created"] == 3
    assert {i["label"] for i in r.json()["items"]} == {None}
    assert image_count(api, p["id"]) == 3
    assert len(image_blobs(api.settings, p["id"])) == 3


def test_upload_domain_and_split(api: Api) -> None:
    p = api.project()
    r = api.upload(p["id"], [("s.png", png(1))], label="a", domain="source", split="test")
    assert r.status_code == 201, r.text
    (img,) = r.json()["items"]
    assert (img["domain"], img["split"]) == ("source", "test")


def test_upload_without_files_is_422(api: Api) -> None:
    p = api.project()
    r = api.client.post(f"/v1/projects/{p['id']}/images", data={"label": "a"})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert image_count(api, p["id"]) == 0


# --- zip archives -----------------------------------------------------------------------


def test_zip_folder_per_label_and_root_members_take_the_label_field(api: Api) -> None:
    p = api.project()
    archive = make_zip(
        {
            "pigeon/001.png": png(1),
            "pigeon/002.jpg": jpeg(2),
            "dove/001.png": png(3),
            "dataset/train/crow/x.png": png(4),  # nested: only the immediate parent counts
            "root.png": png(5),
            "empty-dir/": b"",
            "__MACOSX/pigeon/._001.png": b"\x00\x05\x16\x07junk",
            ".DS_Store": b"junk",
        }
    )
    r = api.upload(p["id"], [("birds.zip", archive)], label="unsorted")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] == 5
    assert body["rejected"] == []
    labels = sorted((i["filename"], i["label"]) for i in body["items"])
    assert labels == [
        ("001.png", "dove"),
        ("001.png", "pigeon"),
        ("002.jpg", "pigeon"),
        ("root.png", "unsorted"),
        ("x.png", "crow"),
    ]
    got = api.client.get(f"/v1/projects/{p['id']}").json()
    assert {c["name"]: c["image_count"] for c in got["classes"]} == {
        "crow": 1, "dove": 1, "pigeon": 2, "unsorted": 1,
    }  # fmt: skip


def test_zip_root_members_without_label_field_are_unlabeled(api: Api) -> None:
    p = api.project()
    r = api.upload(p["id"], [("a.zip", make_zip({"x.png": png(1), "cat/y.png": png(2)}))])
    assert r.status_code == 201, r.text
    assert sorted((i["filename"], i["label"]) for i in r.json()["items"]) == [
        ("x.png", None),
        ("y.png", "cat"),
    ]


def test_zip_and_plain_files_in_one_request(api: Api) -> None:
    p = api.project()
    r = api.upload(
        p["id"],
        [("a.zip", make_zip({"cat/1.png": png(1)})), ("loose.png", png(2))],
        label="dog",
    )
    assert r.status_code == 201, r.text
    assert sorted((i["filename"], i["label"]) for i in r.json()["items"]) == [
        ("1.png", "cat"),
        ("loose.png", "dog"),
    ]


def test_zip_member_paths_never_become_paths(api: Api, tmp_path: Path) -> None:
    p = api.project()
    outside_before = all_files(tmp_path.parent)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../../evil/x.png", png(1))
        zf.writestr("/abs/pigeon/x.png", png(2))
        zf.writestr("..\\..\\win\\z.png", png(3))
        zf.writestr("../root.png", png(4))
    r = api.upload(p["id"], [("evil.zip", buf.getvalue())], label="fallback")
    assert r.status_code == 201, r.text
    items = r.json()["items"]
    assert len(items) == 4
    for item in items:
        assert "/" not in item["filename"] and "\\" not in item["filename"]
        assert item["label"] is None or ("/" not in item["label"] and ".." not in item["label"])
    assert sorted((i["filename"], i["label"]) for i in items) == [
        ("root.png", "fallback"),
        ("x.png", "evil"),
        ("x.png", "pigeon"),
        ("z.png", "win"),
    ]
    # Nothing was written anywhere but the blob store, under content hashes.
    assert all_files(tmp_path.parent) - outside_before <= all_files(api.settings.data_dir)
    assert not (tmp_path.parent / "evil").exists()
    assert not Path("/abs").exists()
    stored = image_blobs(api.settings, p["id"])
    assert stored == {f"images/{p['id']}/{i['sha256']}" for i in items}


def test_zip_with_some_bad_members_is_207(api: Api) -> None:
    p = api.project()
    archive = make_zip(
        {"pigeon/ok.png": png(1), "pigeon/notes.txt": b"hello", "pigeon/bad.png": b"\x89PNG.."}
    )
    r = api.upload(p["id"], [("mix.zip", archive)])
    assert r.status_code == 207, r.text
    body = r.json()
    assert body["created"] == 1
    assert {x["code"] for x in body["rejected"]} == {"image_undecodable"}
    # each rejection names the member, with its folder, inside the archive
    assert sorted(x["filename"] for x in body["rejected"]) == [
        "mix.zip:pigeon/bad.png",
        "mix.zip:pigeon/notes.txt",
    ]
    assert image_count(api, p["id"]) == 1


def test_zip_that_is_not_a_zip(api: Api) -> None:
    p = api.project()
    r = api.upload(p["id"], [("fake.zip", b"PK\x03\x04 this is not really a zip")])
    assert_problem(r, 422, "archive_invalid")
    assert_nothing_stored(api, p["id"], 0, set())


def test_zip_with_too_many_members(tmp_path: Path) -> None:
    api = low_limits_api(tmp_path, max_zip_members=3)
    with api.client:
        p = api.project()
        archive = make_zip({f"a/{i}.png": png(i) for i in range(4)})
        r = api.upload(p["id"], [("many.zip", archive)])
        assert_problem(r, 422, "archive_too_large")
        assert_nothing_stored(api, p["id"], 0, set())
        # at the limit it is fine
        archive = make_zip({f"a/{i}.png": png(i) for i in range(3)})
        assert api.upload(p["id"], [("ok.zip", archive)]).status_code == 201


def test_zip_expanding_past_the_limit(tmp_path: Path) -> None:
    api = low_limits_api(tmp_path, max_zip_uncompressed_bytes=100_000)
    with api.client:
        p = api.project()
        archive = make_zip({"a/ok.png": png(1), "a/bomb.bmp": b"\x00" * 1_000_000})
        assert len(archive) < 10_000  # it compresses well: a zip bomb in miniature
        r = api.upload(p["id"], [("bomb.zip", archive)])
        assert_problem(r, 422, "archive_too_large")
        assert_nothing_stored(api, p["id"], 0, set())


def _lie_about_sizes(archive: bytes, member: str, size: int) -> bytes:
    """Patch both the local header and the central directory to declare ``size`` bytes."""
    data = bytearray(archive)
    name = member.encode()
    local = data.find(b"PK\x03\x04" + b"\x00" * 0)  # first local header
    while local != -1:
        n = struct.unpack_from("<H", data, local + 26)[0]
        if bytes(data[local + 30 : local + 30 + n]) == name:
            struct.pack_into("<I", data, local + 22, size)
        local = data.find(b"PK\x03\x04", local + 4)
    central = data.find(b"PK\x01\x02")
    while central != -1:
        n = struct.unpack_from("<H", data, central + 28)[0]
        if bytes(data[central + 46 : central + 46 + n]) == name:
            struct.pack_into("<I", data, central + 24, size)
        central = data.find(b"PK\x01\x02", central + 4)
    return bytes(data)


def test_zip_member_larger_than_its_header_says(tmp_path: Path) -> None:
    api = low_limits_api(tmp_path, max_zip_uncompressed_bytes=100_000)
    with api.client:
        p = api.project()
        archive = _lie_about_sizes(
            make_zip({"a/bomb.bmp": b"\x00" * 1_000_000}), "a/bomb.bmp", 1_000
        )
        assert zipfile.ZipFile(io.BytesIO(archive)).getinfo("a/bomb.bmp").file_size == 1_000
        r = api.upload(p["id"], [("liar.zip", archive)])
        assert r.status_code == 422, r.text
        assert r.json()["code"] in ("archive_too_large", "archive_invalid")
        assert r.headers["content-type"].startswith("application/problem+json")
        assert_nothing_stored(api, p["id"], 0, set())


# --- dedupe and partial success -----------------------------------------------------------


def test_identical_bytes_are_stored_once_per_project(api: Api) -> None:
    p = api.project()
    data = png(1)
    first = api.upload(p["id"], [("a.png", data)], label="x")
    assert first.status_code == 201
    again = api.upload(p["id"], [("b.png", data), ("c.png", data), ("d.png", png(2))])
    assert again.status_code == 201, again.text
    body = again.json()
    assert (body["created"], body["duplicates"]) == (1, 2)
    assert [i["filename"] for i in body["items"]] == ["d.png"]
    assert image_count(api, p["id"]) == 2
    assert len(image_blobs(api.settings, p["id"])) == 2

    # Another project stores its own copy.
    q = api.project("other")
    r = api.upload(q["id"], [("a.png", data)])
    assert r.status_code == 201 and r.json()["created"] == 1
    assert len(image_blobs(api.settings, q["id"])) == 1


def test_only_duplicates_is_not_an_error(api: Api) -> None:
    p = api.project()
    data = png(1)
    api.upload(p["id"], [("a.png", data)])
    r = api.upload(p["id"], [("a.png", data)])
    assert r.status_code in (200, 201), r.text
    assert (r.json()["created"], r.json()["duplicates"]) == (0, 1)
    assert image_count(api, p["id"]) == 1


def test_some_bad_files_answer_207_per_item(api: Api) -> None:
    p = api.project()
    r = api.upload(
        p["id"],
        [("good.png", png(1)), ("notes.txt", b"just text"), ("also-good.jpg", jpeg(2))],
        label="pigeon",
    )
    assert r.status_code == 207, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["created"] == 2
    assert body["duplicates"] == 0
    assert body["rejected"] == [
        {
            "filename": "notes.txt",
            "code": "image_undecodable",
            "detail": body["rejected"][0]["detail"],
        }
    ]
    assert body["rejected"][0]["detail"]
    assert sorted(i["filename"] for i in body["items"]) == ["also-good.jpg", "good.png"]
    assert image_count(api, p["id"]) == 2


def test_all_bad_files_is_one_problem_and_nothing_stored(api: Api) -> None:
    p = api.project()
    api.upload(p["id"], [("keep.png", png(9))])
    blobs = blob_files(api.settings)
    r = api.upload(p["id"], [("a.txt", b"text"), ("b.png", b"\x89PNG\r\n\x1a\n garbage")])
    body = assert_problem(r, 422, "image_undecodable")
    assert [x["filename"] for x in body["rejected"]] == ["a.txt", "b.png"]
    assert_nothing_stored(api, p["id"], 1, blobs)


# --- hostile single files -------------------------------------------------------------------


def _truncated_jpeg() -> bytes:
    data = jpeg(5, (64, 64))
    return data[: len(data) // 2]


def _gif_named_jpg() -> bytes:
    return animated_gif()


def _svg() -> bytes:
    return b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'


def _tiff() -> bytes:
    return encode(rgb(1), "TIFF")


@pytest.mark.parametrize(
    "filename,data,code",
    [
        ("notes.txt", b"hello, I am not an image", "image_undecodable"),
        ("notes.png", b"hello, I am not an image", "image_undecodable"),
        ("empty.png", b"", "image_undecodable"),
        ("cut.jpg", _truncated_jpeg(), "image_undecodable"),
        ("anim.jpg", _gif_named_jpg(), "image_undecodable"),
        ("drawing.svg", _svg(), "image_undecodable"),
        ("scan.tiff", _tiff(), "image_undecodable"),
        ("bomb.png", png_claiming(20000, 20000), "image_too_large"),
    ],
    ids=["text", "text-as-png", "empty", "truncated-jpeg", "gif-as-jpg", "svg", "tiff", "bomb"],
)
def test_bad_file_is_typed_problem_and_nothing_is_written(
    api: Api, filename: str, data: bytes, code: str
) -> None:
    p = api.project()
    api.upload(p["id"], [("keep.png", png(9))], label="a")
    blobs = blob_files(api.settings)
    r = api.upload(p["id"], [(filename, data)], label="pigeon")
    problem = assert_problem(r, 422, code)
    assert problem["detail"]
    assert_nothing_stored(api, p["id"], 1, blobs)
    # no half-created class either
    classes = api.client.get(f"/v1/projects/{p['id']}").json()["classes"]
    assert [c["name"] for c in classes] == ["a"]


def test_real_decompression_bomb_png(api: Api) -> None:
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG", optimize=True)
    data = buf.getvalue()
    assert len(data) < 200_000
    p = api.project()
    r = api.upload(p["id"], [("bomb.png", data)])
    body = assert_problem(r, 422, "image_too_large")
    assert "20000" in body["detail"]
    assert_nothing_stored(api, p["id"], 0, set())


def test_bomb_inside_a_zip_is_rejected_per_member(api: Api) -> None:
    p = api.project()
    archive = make_zip({"a/bomb.png": png_claiming(20000, 20000), "a/fine.png": png(1)})
    r = api.upload(p["id"], [("z.zip", archive)])
    assert r.status_code == 207, r.text
    assert [x["code"] for x in r.json()["rejected"]] == ["image_too_large"]
    assert image_count(api, p["id"]) == 1


def test_pixel_limit_is_configurable(tmp_path: Path) -> None:
    api = low_limits_api(tmp_path, max_image_pixels=30 * 30)
    with api.client:
        p = api.project()
        assert_problem(api.upload(p["id"], [("big.png", png(1, (31, 30)))]), 422, "image_too_large")
        assert api.upload(p["id"], [("ok.png", png(1, (30, 30)))]).status_code == 201


@pytest.mark.parametrize(
    "form",
    [{"split": "validation"}, {"split": "TEST"}, {"domain": "elsewhere"}, {"domain": "TARGET"}],
)
def test_bad_split_or_domain_is_422(api: Api, form: dict[str, str]) -> None:
    p = api.project()
    r = api.upload(p["id"], [("a.png", png(1))], **form)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert_nothing_stored(api, p["id"], 0, set())


@pytest.mark.parametrize("label", ["a/b", "..\\x", "   ", "x" * 101, "bad\x07bell"])
def test_invalid_label_is_422(api: Api, label: str) -> None:
    p = api.project()
    r = api.upload(p["id"], [("a.png", png(1))], label=label)
    assert_problem(r, 422, "invalid_label")
    assert_nothing_stored(api, p["id"], 0, set())
    assert api.client.get(f"/v1/projects/{p['id']}").json()["classes"] == []


def test_upload_to_unknown_project_is_404(api: Api) -> None:
    r = api.upload("prj_nope", [("a.png", png(1))])
    assert_problem(r, 404, "not_found")
    assert blob_files(api.settings) == set()


# --- request size -----------------------------------------------------------------------------

LIMIT = 50_000


def _multipart(
    data: bytes, filename: str = "big.bmp", boundary: str = "dovecote-test-boundary"
) -> tuple[bytes, str]:
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="files"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_upload_over_limit_with_content_length_is_413(tmp_path: Path) -> None:
    api = low_limits_api(tmp_path, max_upload_bytes=LIMIT)
    with api.client:
        p = api.project()
        big = encode(rgb(1, (150, 150)), "BMP")  # ~67 KB
        assert len(big) > LIMIT
        r = api.upload(p["id"], [("big.bmp", big)])
        assert "content-length" in {k.lower() for k in r.request.headers}
        problem = assert_problem(r, 413, "upload_too_large")
        assert problem["detail"]
        assert_nothing_stored(api, p["id"], 0, set())
        # a small upload still works
        assert api.upload(p["id"], [("small.png", png(1))]).status_code == 201


def test_upload_over_limit_chunked_without_content_length_is_413(tmp_path: Path) -> None:
    api = low_limits_api(tmp_path, max_upload_bytes=LIMIT)
    with api.client:
        p = api.project()
        body, content_type = _multipart(encode(rgb(1, (150, 150)), "BMP"))

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(body), 4096):
                yield body[i : i + 4096]

        r = api.client.post(
            f"/v1/projects/{p['id']}/images",
            content=chunks(),
            headers={"content-type": content_type},
        )
        assert "content-length" not in {k.lower() for k in r.request.headers}
        assert r.request.headers.get("transfer-encoding") == "chunked"
        assert_problem(r, 413, "upload_too_large")
        assert_nothing_stored(api, p["id"], 0, set())

        # under the limit, the same chunked way works
        small, content_type = _multipart(png(2), "small.png")
        r = api.client.post(
            f"/v1/projects/{p['id']}/images",
            content=iter([small[:100], small[100:]]),
            headers={"content-type": content_type},
        )
        assert r.status_code == 201, r.text


def test_body_limit_stops_reading_a_chunked_body_early(tmp_path: Path) -> None:
    """At the ASGI level: the app is cut off once the limit is passed, not after the body."""
    api = low_limits_api(tmp_path, max_upload_bytes=LIMIT)
    with api.client:
        pid = api.project()["id"]
    app = api.client.app
    body, content_type = _multipart(b"\x00" * (LIMIT * 20))
    chunk = 1024
    parts = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    sent = 0
    messages: list[dict] = []

    async def receive() -> dict:
        nonlocal sent
        if sent < len(parts):
            sent += 1
            return {"type": "http.request", "body": parts[sent - 1], "more_body": sent < len(parts)}
        await asyncio.sleep(3600)  # pragma: no cover - the client never disconnects
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        messages.append(message)

    path = f"/v1/projects/{pid}/images"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {API_KEY}".encode()),
            (b"content-type", content_type.encode()),
            (b"transfer-encoding", b"chunked"),
        ],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
        "state": {},
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=30))
    starts = [m for m in messages if m["type"] == "http.response.start"]
    assert len(starts) == 1
    assert starts[0]["status"] == 413
    assert (b"content-type", b"application/problem+json") in starts[0]["headers"]
    payload = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    assert b'"upload_too_large"' in payload
    # The body was cut off just past the limit, never read to its end.
    assert sent * chunk <= LIMIT + 2 * chunk
    assert sent < len(parts)
    with api.client:
        assert_nothing_stored(api, pid, 0, set())


# --- listing and one image ----------------------------------------------------------------------


@pytest.fixture
def mixed(api: Api) -> tuple[str, dict[str, str]]:
    """A project with labeled/unlabeled, train/test/auto, target/source images."""
    p = api.project()
    pid = p["id"]
    ids: dict[str, str] = {}

    def up(name: str, seed: int, **form: str) -> None:
        r = api.upload(pid, [(name, png(seed))], **form)
        assert r.status_code == 201, r.text
        ids[name] = r.json()["items"][0]["id"]

    up("p-train.png", 1, label="pigeon", split="train")
    up("p-test.png", 2, label="pigeon", split="test")
    up("d-auto.png", 3, label="dove")
    up("d-source.png", 4, label="dove", domain="source")
    up("u-1.png", 5)
    up("u-2.png", 6, domain="source")
    return pid, ids


def _names(api: Api, pid: str, **params: object) -> list[str]:
    r = api.client.get(f"/v1/projects/{pid}/images", params=params)
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"] is None
    return sorted(i["filename"] for i in r.json()["items"])


def test_list_filters(api: Api, mixed: tuple[str, dict[str, str]]) -> None:
    pid, _ = mixed
    assert len(_names(api, pid)) == 6
    assert _names(api, pid, label="pigeon") == ["p-test.png", "p-train.png"]
    assert _names(api, pid, label="dove", domain="target") == ["d-auto.png"]
    assert _names(api, pid, split="test") == ["p-test.png"]
    assert _names(api, pid, split="train") == ["p-train.png"]
    assert _names(api, pid, domain="source") == ["d-source.png", "u-2.png"]
    assert _names(api, pid, unlabeled="true") == ["u-1.png", "u-2.png"]
    assert _names(api, pid, unlabeled="true", domain="target") == ["u-1.png"]
    assert _names(api, pid, unlabeled="false") == [
        "d-auto.png", "d-source.png", "p-test.png", "p-train.png",
    ]  # fmt: skip
    assert _names(api, pid, label="nobody") == []


@pytest.mark.parametrize(
    "params", [{"split": "val"}, {"domain": "x"}, {"unlabeled": "maybe"}, {"limit": 0}]
)
def test_list_rejects_bad_filters(
    api: Api, mixed: tuple[str, dict[str, str]], params: dict
) -> None:
    pid, _ = mixed
    r = api.client.get(f"/v1/projects/{pid}/images", params=params)
    assert_problem(r, 422, "validation_error")


def test_list_paginates(api: Api, mixed: tuple[str, dict[str, str]]) -> None:
    pid, ids = mixed
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, object] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        body = api.client.get(f"/v1/projects/{pid}/images", params=params).json()
        seen += [i["id"] for i in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 6
    assert set(seen) == set(ids.values())


def test_patch_image_label_and_split(api: Api, mixed: tuple[str, dict[str, str]]) -> None:
    pid, ids = mixed
    iid = ids["u-1.png"]
    r = api.client.patch(
        f"/v1/projects/{pid}/images/{iid}", json={"label": "crow", "split": "test"}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["label"], r.json()["split"]) == ("crow", "test")
    assert api.client.get(f"/v1/projects/{pid}/images/{iid}").json() == r.json()
    classes = {
        c["name"]: c["image_count"] for c in api.client.get(f"/v1/projects/{pid}").json()["classes"]
    }
    assert classes["crow"] == 1

    # label null unlabels; split alone leaves the label
    r = api.client.patch(f"/v1/projects/{pid}/images/{iid}", json={"label": None})
    assert r.status_code == 200 and r.json()["label"] is None and r.json()["split"] == "test"
    r = api.client.patch(f"/v1/projects/{pid}/images/{iid}", json={"split": "auto"})
    assert r.json()["split"] == "auto" and r.json()["label"] is None


@pytest.mark.parametrize(
    "body,code",
    [
        ({"split": "val"}, "validation_error"),
        ({"domain": "nowhere"}, "validation_error"),
        ({"sha256": "0" * 64}, "validation_error"),
        ({"label": "a/b"}, "invalid_label"),
        ({"label": ""}, None),
    ],
)
def test_patch_image_rejects_invalid(
    api: Api, mixed: tuple[str, dict[str, str]], body: dict, code: str | None
) -> None:
    pid, ids = mixed
    iid = ids["p-train.png"]
    before = api.client.get(f"/v1/projects/{pid}/images/{iid}").json()
    r = api.client.patch(f"/v1/projects/{pid}/images/{iid}", json=body)
    if code is None:  # an empty label: either refused or "unlabeled", never a 500
        assert r.status_code in (200, 422), r.text
        if r.status_code == 200:
            assert r.json()["label"] is None
        return
    assert_problem(r, 422, code)
    assert api.client.get(f"/v1/projects/{pid}/images/{iid}").json() == before


def test_delete_image_removes_row_and_blob(api: Api, mixed: tuple[str, dict[str, str]]) -> None:
    pid, ids = mixed
    iid = ids["p-train.png"]
    img = api.client.get(f"/v1/projects/{pid}/images/{iid}").json()
    key = f"images/{pid}/{img['sha256']}"
    assert key in blob_files(api.settings)
    r = api.client.delete(f"/v1/projects/{pid}/images/{iid}")
    assert r.status_code == 204
    assert key not in blob_files(api.settings)
    assert_problem(api.client.get(f"/v1/projects/{pid}/images/{iid}"), 404, "not_found")
    assert_problem(api.client.get(f"/v1/projects/{pid}/images/{iid}/content"), 404, "not_found")
    assert_problem(api.client.delete(f"/v1/projects/{pid}/images/{iid}"), 404, "not_found")
    assert image_count(api, pid) == 5
    # the same bytes can be uploaded again afterwards
    r = api.upload(pid, [("again.png", png(1))], label="pigeon")
    assert r.status_code == 201 and r.json()["created"] == 1


@pytest.mark.parametrize(
    "method,suffix", [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/content")]
)
def test_unknown_image_is_404(api: Api, method: str, suffix: str) -> None:
    p = api.project()
    kwargs = {"json": {"label": "x"}} if method == "PATCH" else {}
    r = api.client.request(method, f"/v1/projects/{p['id']}/images/img_nope{suffix}", **kwargs)
    assert_problem(r, 404, "not_found")


def test_image_of_another_project_is_404(api: Api) -> None:
    a, b = api.project("a"), api.project("b")
    iid = api.upload(a["id"], [("x.png", png(1))]).json()["items"][0]["id"]
    assert_problem(api.client.get(f"/v1/projects/{b['id']}/images/{iid}"), 404, "not_found")
    assert_problem(api.client.get(f"/v1/projects/{b['id']}/images/{iid}/content"), 404, "not_found")
    assert_problem(api.client.delete(f"/v1/projects/{b['id']}/images/{iid}"), 404, "not_found")
    assert image_count(api, a["id"]) == 1


def test_zip_folder_that_is_not_a_valid_label_is_rejected_per_member(api: Api) -> None:
    p = api.project()
    archive = make_zip({"bad\x01name/x.png": png(1), "good/y.png": png(2)})
    r = api.upload(p["id"], [("z.zip", archive)])
    assert r.status_code == 207, r.text
    body = r.json()
    assert [x["code"] for x in body["rejected"]] == ["invalid_label"]
    assert [(i["filename"], i["label"]) for i in body["items"]] == [("y.png", "good")]
    classes = api.client.get(f"/v1/projects/{p['id']}").json()["classes"]
    assert [c["name"] for c in classes] == ["good"]


def test_a_zip_inside_a_zip_is_not_an_image(api: Api) -> None:
    p = api.project()
    inner = make_zip({"a/x.png": png(1)})
    r = api.upload(p["id"], [("outer.zip", make_zip({"a/inner.zip": inner}))])
    assert_problem(r, 422, "image_undecodable")
    assert_nothing_stored(api, p["id"], 0, set())
