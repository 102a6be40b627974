"""``dovecote serve`` as a real process: its worker ends with it, however it is stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie (read from /proc, no psutil)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _wait(condition, timeout: float, what: str, log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout}s; serve log:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "DOVECOTE_API_KEY": "serve-test-key", "DOVECOTE_TORCH_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("DOVECOTE_DATABASE_URL", None)
    env.pop("DOVECOTE_BROKER_URL", None)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--data-dir", str(tmp_path / "data"),
             "--port", str(port)],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield proc, f"http://127.0.0.1:{port}", log
    finally:  # whatever the test left behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _worker_of(proc: subprocess.Popen[bytes], log: Path) -> int:
    workers: list[int] = []

    def spawned() -> bool:
        workers[:] = _children(proc.pid)
        return bool(workers)

    _wait(spawned, 120, "serve spawned no worker", log)
    [worker] = workers
    return worker


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("when", ["ready", "starting"])
def test_sigterm_stops_the_worker_too(
    serve: tuple[subprocess.Popen[bytes], str, Path], when: str
) -> None:
    """SIGTERM to the server process alone (not its group), once it answers or while it
    starts: the server exits and its worker is gone within seconds, not left with parent 1."""
    proc, url, log = serve
    worker = _worker_of(proc, log)
    if when == "ready":
        _wait(lambda: _ready(url), 120, "serve did not become ready", log)
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    _wait(lambda: not _alive(worker), 10, f"worker {worker} outlived the server", log)


def test_sigkilled_server_takes_its_worker_along(
    serve: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    """Even SIGKILL, which runs no code in the server, does not orphan the worker."""
    proc, url, log = serve
    worker = _worker_of(proc, log)
    _wait(lambda: _ready(url), 120, "serve did not become ready", log)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    _wait(lambda: not _alive(worker), 15, f"worker {worker} outlived the server", log)


def test_ready_means_the_worker_is_up_and_both_share_one_inference_graph(
    serve: tuple[subprocess.Popen[bytes], str, Path], tmp_path: Path
) -> None:
    """/readyz says ready only once the prewarmed API's worker has connected (and warmed);
    API and worker built their sessions from one cached graph; a dead worker is not ready."""
    proc, url, log = serve
    worker = _worker_of(proc, log)
    _wait(lambda: _ready(url), 120, "serve did not become ready", log)
    ready_file = tmp_path / "data" / f"worker-{proc.pid}.ready"
    assert ready_file.read_text() == str(worker)
    graphs = list((tmp_path / "data" / "feature-cache" / "onnx").glob("*.onnx"))
    assert len(graphs) == 1, graphs
    os.kill(worker, signal.SIGKILL)
    _wait(lambda: not _ready(url), 10, "serve stayed ready without its worker", log)
    r = httpx.get(f"{url}/readyz", timeout=5)
    assert r.status_code == 503 and "worker" in r.json()["detail"]
