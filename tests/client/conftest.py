"""A real served instance (``dovecote serve``: API + worker, SQLite, one data directory)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.factories import digit_images

KEY = "client-test-key"


@dataclass(frozen=True)
class Served:
    url: str
    key: str
    data_dir: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("served")
    port = _free_port()
    log = data_dir / "serve.log"
    env = {
        **os.environ,
        "DOVECOTE_API_KEY": KEY,
        "DOVECOTE_FEATURE_BATCH_SIZE": "8",
        "DOVECOTE_TORCH_THREADS": "1",
        "DOVECOTE_WEBHOOK_ALLOW_PRIVATE": "true",  # the webhook test's receiver is local
        "DOVECOTE_WEBHOOK_POLL_SECONDS": "0.2",
    }
    env.pop("DOVECOTE_DATABASE_URL", None)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--data-dir", str(data_dir),
             "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log.read_text()
            time.sleep(0.25)
        else:
            pytest.fail("dovecote serve did not become ready:\n" + log.read_text())
        yield Served(url, KEY, data_dir, log)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/<digit>/<n>.png``: 6 images of each of 3 digit classes, one folder per label."""
    root = tmp_path_factory.mktemp("photos")
    for i, (label, data) in enumerate(digit_images(6, [0, 1, 2])):
        (root / label).mkdir(exist_ok=True)
        (root / label / f"{i}.png").write_bytes(data)
    return root


@pytest.fixture(scope="module")
def new_photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Held-out digits (0 and 1) and a text file, to predict."""
    root = tmp_path_factory.mktemp("new")
    paths = []
    for label, data in digit_images(1, [0, 1], offset=20):
        path = root / f"new-{label}.png"
        path.write_bytes(data)
        paths.append(path)
    (root / "notes.txt").write_text("not an image")
    return [*paths, root / "notes.txt"]
