"""Decode budget: CPU seconds one upload request costs when its few kilobytes claim huge images.

Uploads (in process, through the real app and SQLite) a zip of ten identical lossless
7000x7000 WebP files (a couple of KB each), then a zip of ten distinct ones, and prints the
CPU seconds and the answer of each. Duplicates are skipped by sha256 before decoding, and a
request decodes at most ``DOVECOTE_MAX_PIXELS_PER_REQUEST`` pixels (default 400 M).

    python -m bench.decode_budget
"""

from __future__ import annotations

import io
import tempfile
import time
import zipfile
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from app.api.main import create_app
from app.cli import alembic_config
from app.config import Settings

SIDE = 7000


def webp(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (SIDE, SIDE), colour).save(buf, format="WEBP", lossless=True)
    return buf.getvalue()


def archive(files: list[bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, data in enumerate(files):
            zf.writestr(f"pigeon/{i}.webp", data)
    return buf.getvalue()


def main() -> None:
    from alembic import command

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), api_key="bench")
        command.upgrade(alembic_config(settings.resolved_database_url), "head")
        with TestClient(create_app(settings, enqueue=lambda *_: None)) as client:
            client.headers["Authorization"] = "Bearer bench"
            cases = {
                "10 identical": archive([webp((90, 90, 90))] * 10),
                "10 distinct": archive([webp((i, 2 * i, 3 * i)) for i in range(10)]),
            }
            print(f"{'zip of 7000x7000 WebP':<24}{'bytes':>8}{'CPU s':>8}  answer")
            for name, data in cases.items():
                project = client.post("/v1/projects", json={"name": name}).json()
                start = time.process_time()
                r = client.post(
                    f"/v1/projects/{project['id']}/images",
                    files=[("files", ("set.zip", data))],
                )
                cpu = time.process_time() - start
                body = r.json()
                answer = (
                    f"{r.status_code} created={body.get('created')} "
                    f"duplicates={body.get('duplicates')} "
                    f"rejected={[x['code'] for x in body.get('rejected', [])]}"
                )
                print(f"{name:<24}{len(data):>8}{cpu:>8.2f}  {answer}")


if __name__ == "__main__":
    main()
