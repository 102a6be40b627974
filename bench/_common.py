"""What the benchmarks share: real photos as JPEG bytes, timing, a ``dovecote serve`` process."""

from __future__ import annotations

import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

#: scikit-image photos bundled with the package (no download).
PHOTOS = (
    "chelsea", "coffee", "astronaut", "rocket",
    "hubble_deep_field", "immunohistochemistry", "retina", "camera",
)  # fmt: skip
API_KEY = "bench-key"
ROOT = Path(__file__).resolve().parent.parent


def photo_jpegs(
    n: int = 64,
    size: tuple[int, int] = (640, 480),
    seed: int = 0,
    names: tuple[str, ...] = PHOTOS,
) -> list[bytes]:
    """``n`` distinct JPEGs of ``size``: image ``i`` is photo ``names[i % len(names)]``,
    cropped, flipped, brightened and compressed a little differently (unique bytes)."""
    from skimage import data

    rng = np.random.default_rng(seed)
    bases = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in names]
    out = []
    for i in range(n):
        img = bases[i % len(bases)]
        w, h = img.size
        f = rng.uniform(0.8, 1.0)
        cw, ch = int(w * f), int(h * f)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = img.crop((x0, y0, x0 + cw, y0 + ch)).resize(size, Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.85, 1.15))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(85, 96)))
        out.append(buf.getvalue())
    return out


def write_readme_block(name: str, title: str, lines: list[str]) -> None:
    """Put ``lines`` into ``bench/README.md`` between the ``<!-- name:begin/end -->``
    markers, or, the first time, under a new section ``title`` at its end."""
    readme = ROOT / "bench" / "README.md"
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = readme.read_text()
    block = "\n".join([begin, *lines, end])
    if begin in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + f"\n\n## {title}\n\n" + block + "\n"
    readme.write_text(text)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    import torch

    return (
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    started_s: float  # spawn -> /readyz answers


@contextmanager
def dovecote_serve(log_name: str = "serve.log", data_dir: Path | None = None) -> Iterator[Server]:
    """A real ``dovecote serve`` (API + one worker, SQLite DB and broker) in a temp dir,
    or in ``data_dir`` (kept: a second serve on it is a restart).

    Runs in its own process group so the worker it spawns is terminated with it.
    """
    import httpx

    exe = Path(sys.executable).with_name("dovecote")
    # `python -m app.cli` where the package is not installed (a checkout on PYTHONPATH)
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "app.cli"]
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="dovecote-bench-") as tmp:
        data_dir = data_dir or Path(tmp)
        env = {**os.environ, "DOVECOTE_API_KEY": API_KEY}
        log = open(data_dir / log_name, "wb")  # noqa: SIM115 - closed below
        started = time.perf_counter()
        proc = subprocess.Popen(
            [*command, "serve", "--data-dir", str(data_dir), "--port", str(port)],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"dovecote serve exited: {_tail(data_dir / log_name)}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dovecote serve not ready: {_tail(data_dir / log_name)}")
                time.sleep(0.1)
            yield Server(url, data_dir, proc, time.perf_counter() - started)
        finally:
            _stop(proc)
            log.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_bytes()[-n:].decode(errors="replace")


def client(server: Server):  # type: ignore[no-untyped-def]
    import httpx

    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=300
    )
