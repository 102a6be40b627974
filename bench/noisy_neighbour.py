"""One tenant's predicts while another floods the API: what ``DOVECOTE_TENANT_MAX_CONCURRENT_PREDICTS``
buys the quiet tenant.

For each limit in ``--limits`` (0: none), a real ``dovecote serve`` with that setting; two
tenants, each with its own API key and linear probe. The quiet tenant sends ``--quiet``
one-photo predicts one after the other, first alone, then while the noisy tenant's
``--threads`` clients send ``--files``-photo predicts back to back (a client told ``429``
waits its ``Retry-After``, as the protocol asks). Printed: the quiet tenant's latency alone
and under the flood, and what the noisy tenant got through.

    python -m bench.noisy_neighbour [--limits 0,4] [--threads 48] [--files 16]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import httpx

from bench._common import dovecote_serve, machine, percentile, photo_jpegs
from bench.predict_latency import served_probe


def _tenant_key(server: Any, name: str) -> str:
    """A new API key of tenant ``name``, made by the admin command on the server's data."""
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "create", "--tenant", name,
         "--data-dir", str(server.data_dir)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def _as(server: Any, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=300
    )


def _flood(
    headers: Any, server: Any, url: str, files: list[Any], stop: threading.Event,
    got: list[int],
) -> None:  # fmt: skip
    """One noisy client: predicts back to back, waiting out each ``429``'s Retry-After."""
    with httpx.Client(base_url=server.url, headers=headers, timeout=300) as http:
        while not stop.is_set():
            r = http.post(url, files=files)
            got.append(r.status_code)  # list.append: thread-safe
            if r.status_code == 429:
                stop.wait(float(r.headers.get("Retry-After", "1")))


def _quiet(http: httpx.Client, url: str, photo: bytes, n: int) -> list[float]:
    latencies = []
    for i in range(n):
        t = time.perf_counter()
        r = http.post(url, files=[("files", (f"q{i}.jpg", photo, "image/jpeg"))])
        assert r.status_code == 200, r.text[:300]
        latencies.append((time.perf_counter() - t) * 1000)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limits", default="0,4", help="values of the setting, in order")
    parser.add_argument("--threads", type=int, default=48, help="the noisy tenant's clients")
    parser.add_argument("--files", type=int, default=16, help="photos per noisy request")
    parser.add_argument("--quiet", type=int, default=20, help="the quiet tenant's predicts")
    args = parser.parse_args()
    jpegs = photo_jpegs(args.files + 1, seed=5)
    noisy_files = [("files", (f"{i}.jpg", j, "image/jpeg")) for i, j in enumerate(jpegs[1:])]
    print(f"# noisy neighbour: {args.threads} noisy clients x {args.files} photos/request, "
          f"{args.quiet} quiet one-photo predicts; {machine()}")  # fmt: skip
    print(f"{'limit':>5} {'quiet alone p50/p95 ms':>23} {'quiet in flood p50/p95/max ms':>30} "
          f"{'noisy img/s':>11}  noisy answers")  # fmt: skip
    for limit in (int(v) for v in args.limits.split(",")):
        os.environ["DOVECOTE_TENANT_MAX_CONCURRENT_PREDICTS"] = str(limit)
        with dovecote_serve(f"noisy-{limit}.log") as server:
            quiet, noisy = (_as(server, _tenant_key(server, name)) for name in ("quiet", "noisy"))
            with quiet, noisy:
                quiet_url = f"/v1/models/{served_probe(quiet, 'quiet')}/predict"
                noisy_url = f"/v1/models/{served_probe(noisy, 'noisy')}/predict"
                _quiet(quiet, quiet_url, jpegs[0], 3)  # loads its head
                alone = _quiet(quiet, quiet_url, jpegs[0], args.quiet)
                assert noisy.post(noisy_url, files=noisy_files).status_code == 200  # its head
                stop, got = threading.Event(), []
                started = time.perf_counter()
                threads = [
                    threading.Thread(
                        target=_flood,
                        args=(noisy.headers, server, noisy_url, noisy_files, stop, got),
                    )
                    for _ in range(args.threads)
                ]
                for t in threads:
                    t.start()
                time.sleep(3)  # the flood is on
                flooded = _quiet(quiet, quiet_url, jpegs[0], args.quiet)
                answers = Counter(got)
                elapsed = time.perf_counter() - started
                stop.set()
                for t in threads:
                    t.join()
        noisy_rate = answers[200] * args.files / elapsed
        print(f"{limit:>5} {percentile(alone, 50):>11.0f} / {percentile(alone, 95):<9.0f} "
              f"{percentile(flooded, 50):>12.0f} / {percentile(flooded, 95):.0f} / "
              f"{max(flooded):<9.0f} {noisy_rate:>9.1f}  {dict(sorted(answers.items()))}")  # fmt: skip


if __name__ == "__main__":
    main()
