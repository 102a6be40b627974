"""A fresh ``dovecote serve``: seconds to ``/readyz``, then its first job and first predict
against a second of each (warm).

Empty data directory (nothing cached on disk). Once ``/readyz`` answers 200: two
``linear_probe`` jobs in a row on two new projects of 3 classes x 8 digit images (POST to
succeeded, polled every 20 ms), then predicts of one 640x480 JPEG with the first model:
the first one, then the median of ``--predicts`` more. With ``DOVECOTE_PREWARM`` on (the
default) the API and the worker load the default backbone before ``/readyz`` says ready.

Then a restart: the server is stopped and a new ``dovecote serve`` starts on the same data
directory (the model on disk, no job running); once ``/readyz`` answers, the first predict
of that model in the new API process, then the median of ``--predicts`` more. This is the
first predict a user meets after a deploy; the one above runs right after a job, while
the worker may still be busy on the same cores.

    python -m bench.cold_start [--predicts 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import client, dovecote_serve, machine, median, photo_jpegs
from tests.factories import digit_images, make_zip


def job_seconds(http: Any, name: str, offset: int) -> tuple[float, str]:
    project = http.post("/v1/projects", json={"name": name}).json()["id"]
    archive = make_zip(
        {f"{label}/{j}.png": data for j, (label, data) in
         enumerate(digit_images(8, [0, 1, 2], offset=offset))}
    )  # fmt: skip
    r = http.post(f"/v1/projects/{project}/images", files=[("files", ("d.zip", archive))])
    assert r.status_code == 201, r.text
    t0 = time.perf_counter()
    r = http.post(f"/v1/projects/{project}/jobs", json={"method": "linear_probe"})
    assert r.status_code == 202, r.text
    while (job := http.get(f"/v1/jobs/{r.json()['id']}").json())["status"] in (
        "queued",
        "running",
    ):
        time.sleep(0.02)
    assert job["status"] == "succeeded", job
    return time.perf_counter() - t0, job["model_id"]


def predict_ms(http: Any, model: str, jpeg: bytes) -> float:
    """Milliseconds for one predict of ``jpeg`` with ``model`` over HTTP."""
    t = time.perf_counter()
    r = http.post(f"/v1/models/{model}/predict", files=[("files", ("p.jpg", jpeg, "image/jpeg"))])
    assert r.status_code == 200, r.text[:300]
    return (time.perf_counter() - t) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--predicts", type=int, default=10, help="warm predicts after the first")
    args = parser.parse_args()
    [jpeg] = photo_jpegs(1, seed=5)
    print(f"# cold start of dovecote serve; {machine()}")
    with tempfile.TemporaryDirectory(prefix="dovecote-cold-") as tmp:
        with dovecote_serve("cold-start.log", Path(tmp)) as server, client(server) as http:
            first_job, model = job_seconds(http, "bench-cold-1", 0)
            second_job, _ = job_seconds(http, "bench-cold-2", 8)
            first_predict = predict_ms(http, model, jpeg)
            warm_predict = median([predict_ms(http, model, jpeg) for _ in range(args.predicts)])
        with dovecote_serve("restart.log", Path(tmp)) as again, client(again) as http:
            restart_first = predict_ms(http, model, jpeg)
            restart_warm = median([predict_ms(http, model, jpeg) for _ in range(args.predicts)])
    print(f"spawn -> /readyz            {server.started_s:8.2f} s")
    print(f"first job (POST -> done)   {first_job:8.2f} s")
    print(
        f"second job                 {second_job:8.2f} s   first/second {first_job / second_job:.2f}"
    )
    print(f"first predict              {first_predict:8.0f} ms   (right after the jobs)")
    print(f"warm predict (median)      {warm_predict:8.0f} ms")
    print(f"restart: spawn -> /readyz  {again.started_s:8.2f} s")
    print(f"restart: first predict     {restart_first:8.0f} ms")
    print(f"restart: warm (median)     {restart_warm:8.0f} ms")


if __name__ == "__main__":
    main()
