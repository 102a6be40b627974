"""API memory and throughput under sustained concurrent multi-image ``/predict`` load.

A real ``dovecote serve`` trains a linear probe on four photo classes; then, for each
concurrency in ``--concurrency``, that many client threads send requests of ``--files``
distinct 640x480 JPEGs to ``POST /v1/models/{id}/predict`` back to back for ``--seconds``.
The API process's RSS is read from ``/proc`` before, sampled every 100 ms during the load
(its maximum is "peak"), and read again after ``--idle`` seconds without requests
("idle after": what is kept). Throughput is images answered per second; latency is per
request. ``DOVECOTE_INFERENCE_MAX_IMAGES`` and the other settings come from the environment.

    python -m bench.predict_load [--concurrency 8,16] [--files 16] [--seconds 15]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from bench._common import client, dovecote_serve, machine, percentile, photo_jpegs
from bench.predict_latency import served_probe
from bench.predict_memory import rss_mib


def _load(
    server: Any,
    url: str,
    files: Callable[[int], list[Any]],
    k: int,
    stop: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    """One client: requests back to back until ``stop``; ms of each 200, codes of the rest."""
    with client(server) as http:
        n = 0
        while time.monotonic() < stop:
            t = time.perf_counter()
            resp = http.post(url, files=files(k * 7 + n))
            if resp.status_code == 200:
                latencies.append((time.perf_counter() - t) * 1000)  # list.append: thread-safe
            else:
                errors.append(resp.status_code)
            n += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", default="8,16", help="client threads, in order")
    parser.add_argument("--files", type=int, default=16, help="images per request")
    parser.add_argument("--seconds", type=float, default=15.0, help="load per concurrency")
    parser.add_argument("--idle", type=float, default=3.0, help="idle seconds before 'after'")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    jpegs = photo_jpegs(64, seed=3)

    with dovecote_serve("predict-load.log") as server, client(server) as http:
        url = f"/v1/models/{served_probe(http, 'bench-load')}/predict"
        pid = server.process.pid

        def files(offset: int) -> list[tuple[str, tuple[str, bytes, str]]]:
            return [
                ("files", (f"{i}.jpg", jpegs[(offset + i) % len(jpegs)], "image/jpeg"))
                for i in range(args.files)
            ]

        r = http.post(url, files=files(0))  # loads the backbone and the head
        assert r.status_code == 200, r.text[:300]
        settings = {k: v for k, v in os.environ.items() if k.startswith("DOVECOTE_INFER")}
        print(f"# predict load: {args.files} images/request, {args.seconds:.0f} s per level; "
              f"{settings or 'default settings'}; {machine()}")  # fmt: skip
        print(f"{'conc':>4} {'req/s':>6} {'img/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
              f"{'errors':>6} "
              f"{'RSS before':>11} {'peak':>9} {'idle after':>11}")  # fmt: skip
        for level in levels:
            before, _ = rss_mib(pid)
            stop = time.monotonic() + args.seconds
            latencies: list[float] = []
            errors: list[int] = []
            threads = [
                threading.Thread(
                    target=_load, args=(server, url, files, k, stop, latencies, errors)
                )
                for k in range(level)
            ]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            peak = before
            while any(t.is_alive() for t in threads):
                peak = max(peak, rss_mib(pid)[0])
                time.sleep(0.1)
            elapsed = time.perf_counter() - t0
            time.sleep(args.idle)
            after, _ = rss_mib(pid)
            print(f"{level:>4} {len(latencies) / elapsed:>6.1f} "
                  f"{len(latencies) * args.files / elapsed:>7.1f} "
                  f"{percentile(latencies, 50):>8.0f} {percentile(latencies, 95):>8.0f} "
                  f"{percentile(latencies, 99):>8.0f} "
                  f"{len(errors):>6} {before:>7.0f} MiB {peak:>5.0f} MiB {after:>7.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
