"""API memory and latency of ``/predict`` with 1, 16 and 64 files per request.

A real ``dovecote serve`` (API + worker, SQLite) trains a linear probe on four photo
classes, then, for each request size in turn (1, 16, 64 by default), sends ``--requests``
requests of that many distinct 640x480 JPEGs to ``POST /v1/models/{id}/predict``. Before
and after each size it reads the API process's RSS (``VmRSS``) and its peak (``VmHWM``)
from ``/proc``; latency is per request (p50, p95) and per image.

``--batch-size`` sets ``DOVECOTE_PREDICT_BATCH_SIZE`` (images through the backbone at
once; default 16). ``--batch-size 0`` runs every file of a request in one pass, as before
chunking, to compare (it also lifts ``DOVECOTE_PREDICT_MAX_FILES``).

    python -m bench.predict_memory [--sizes 1,16,64] [--requests 5] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bench._common import client, dovecote_serve, machine, percentile, photo_jpegs
from bench.predict_latency import served_probe


def rss_mib(pid: int) -> tuple[float, float]:
    """``(VmRSS, VmHWM)`` of ``pid`` in MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,16,64", help="files per request, in order")
    parser.add_argument("--requests", type=int, default=5, help="timed requests per size")
    parser.add_argument("--batch-size", type=int, default=16, help="0: one pass (no chunks)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.batch_size > 0:
        os.environ["DOVECOTE_PREDICT_BATCH_SIZE"] = str(args.batch_size)
    else:
        os.environ["DOVECOTE_PREDICT_BATCH_SIZE"] = os.environ["DOVECOTE_PREDICT_MAX_FILES"] = str(
            max(sizes)
        )
    jpegs = photo_jpegs(max(sizes) * 2, seed=3)

    with dovecote_serve("predict-memory.log") as server, client(server) as http:
        url = f"/v1/models/{served_probe(http, 'bench-memory')}/predict"
        api_pid = server.process.pid

        def send(n: int, offset: int) -> float:
            files = [
                ("files", (f"{i}.jpg", jpegs[(offset + i) % len(jpegs)], "image/jpeg"))
                for i in range(n)
            ]
            t = time.perf_counter()
            r = http.post(url, files=files)
            assert r.status_code == 200, r.text[:300]
            return (time.perf_counter() - t) * 1000

        send(1, 0)  # loads the backbone and the head: not part of any size
        batch = args.batch_size or "one pass"
        print(f"# predict memory: batch size {batch}, {args.requests} requests per size; "
              f"{machine()}")  # fmt: skip
        print(f"{'files':>5} {'RSS before':>11} {'RSS after':>10} {'peak after':>11} "
              f"{'p50 ms':>8} {'p95 ms':>8} {'ms/image':>9}")  # fmt: skip
        for n in sizes:
            before, _ = rss_mib(api_pid)
            ms = [send(n, k * n) for k in range(args.requests)]
            after, peak = rss_mib(api_pid)
            print(f"{n:>5} {before:>8.0f} MiB {after:>6.0f} MiB {peak:>7.0f} MiB "
                  f"{percentile(ms, 50):>8.0f} {percentile(ms, 95):>8.0f} "
                  f"{percentile(ms, 50) / n:>9.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
