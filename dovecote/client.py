"""A Python client of Dovecote's HTTP API (httpx, synchronous).

    from dovecote.client import Client

    dc = Client("http://127.0.0.1:8000", key="dev-key")   # or $DOVECOTE_URL, $DOVECOTE_API_KEY
    project = dc.create_project("terrace")
    dc.upload(project["id"], "photos/")            # photos/pigeon/*.jpg, photos/empty/*.jpg
    job = dc.wait(dc.train(project["id"], method="linear_probe")["id"])
    model = dc.model(job["model_id"])
    print(model["metrics"]["accuracy"], model["metrics"]["baseline"]["accuracy"])
    for p in dc.predict(project["id"], ["new.jpg"])["predictions"]:
        print(p["filename"], p["label"], p["score"])
    dc.export(job["model_id"], "terrace.onnx")

Every error answer becomes an :class:`ApiError` subclass chosen by its status, carrying the
problem document's ``code``, ``detail`` and the whole ``problem``.
"""

from __future__ import annotations

import io
import os
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".dib", ".gif"}

Json = dict[str, Any]


class ApiError(Exception):
    """An RFC 9457 problem answered by the server (or a job's recorded failure)."""

    def __init__(self, problem: Json, status: int) -> None:
        self.problem = problem
        self.status = status
        self.code: str = problem.get("code", "error")
        self.detail: str = problem.get("detail", "")
        super().__init__(f"{self.code}: {self.detail}" if self.detail else self.code)


class Unauthorized(ApiError):
    """401: no key or a wrong one (`dovecote keys create --tenant NAME` makes keys)."""


class NotFound(ApiError):
    """404: no such resource for this key's tenant."""


class Conflict(ApiError):
    """409: the resource's state forbids it (``job_not_cancellable``, ``project_has_no_model``)."""


class InvalidInput(ApiError):
    """422 (and other 4xx): the request was refused; ``code`` says why."""


class TooLarge(ApiError):
    """413: the request body is over the server's limit."""


class ServerError(ApiError):
    """5xx."""


class JobFailed(ApiError):
    """A job :meth:`Client.wait` watched ended ``failed`` (``problem``: its error)."""

    def __init__(self, job: Json) -> None:
        self.job = job
        super().__init__(job.get("error") or {"code": "training_failed"}, 500)


class JobCancelled(ApiError):
    """A job :meth:`Client.wait` watched ended ``cancelled``."""

    def __init__(self, job: Json) -> None:
        self.job = job
        super().__init__(
            {"code": "job_cancelled", "detail": f"Job {job['id']} was cancelled."}, 409
        )


_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
}


def error_for(response: httpx.Response) -> ApiError:
    """The typed error of a 4xx/5xx answer."""
    try:
        problem = response.json()
    except ValueError:
        problem = {"code": "http_error", "detail": response.text[:500]}
    if not isinstance(problem, dict):
        problem = {"code": "http_error", "detail": str(problem)[:500]}
    status = response.status_code
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else InvalidInput)
    return cls(problem, status)


def zip_folder(folder: Path) -> io.BytesIO:
    """The images under ``folder`` as an in-memory zip whose paths keep their parent folder:
    the server labels ``pigeon/001.jpg`` as ``pigeon`` (images at the top stay unlabeled or
    take the upload's ``label``). Images are stored, not recompressed."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                zf.write(path, path.relative_to(folder).as_posix())
    buf.seek(0)
    return buf


class Client:
    """One server and one key. ``url`` and ``key`` default to ``$DOVECOTE_URL`` and
    ``$DOVECOTE_API_KEY``; ``transport`` lets tests or proxies plug in their own."""

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        timeout: float = 300.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("DOVECOTE_URL") or DEFAULT_URL).rstrip("/")
        key = key if key is not None else os.environ.get("DOVECOTE_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise error_for(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _pages(self, path: str, **params: Any) -> Iterator[Json]:
        cursor = None
        while True:
            page = self._json("GET", path, params={**params, "limit": 500, "cursor": cursor})
            yield from page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    # --- catalogue ---------------------------------------------------------------------

    def methods(self) -> list[Json]:
        return self._json("GET", "/v1/methods")  # type: ignore[no-any-return]

    def backbones(self) -> list[Json]:
        return self._json("GET", "/v1/backbones")  # type: ignore[no-any-return]

    # --- projects and images -----------------------------------------------------------

    def create_project(
        self,
        name: str,
        *,
        description: str = "",
        classes: Sequence[str | Json] = (),
        store_predictions: bool = False,
    ) -> Json:
        """A new project; ``store_predictions`` keeps every predict's image and answer, for
        :meth:`feedback` and :meth:`suggestions`."""
        body = {
            "name": name,
            "description": description,
            "classes": list(classes),
            "store_predictions": store_predictions,
        }
        return self._json("POST", "/v1/projects", json=body)  # type: ignore[no-any-return]

    def update_project(self, project_id: str, **fields: Any) -> Json:
        """Change ``name``, ``description``, ``store_predictions`` or
        ``prediction_retention_days``."""
        return self._json(  # type: ignore[no-any-return]
            "PATCH", f"/v1/projects/{project_id}", json=fields
        )

    def projects(self) -> list[Json]:
        return list(self._pages("/v1/projects"))

    def project(self, project_id: str) -> Json:
        return self._json("GET", f"/v1/projects/{project_id}")  # type: ignore[no-any-return]

    def delete_project(self, project_id: str) -> None:
        self._request("DELETE", f"/v1/projects/{project_id}")

    def upload(
        self,
        project_id: str,
        *paths: str | Path,
        label: str | None = None,
        split: str | None = None,
        domain: str | None = None,
    ) -> Json:
        """Upload image files and folders in one request; a folder goes as a zip made on the
        fly, its sub-folders naming the labels. Answers the upload result (201 or 207);
        a request where no file could be stored raises its problem."""
        files = []
        for raw in paths:
            path = Path(raw)
            if path.is_dir():
                files.append(
                    ("files", (f"{path.resolve().name or 'images'}.zip", zip_folder(path)))
                )
            else:
                files.append(("files", (path.name, path.read_bytes())))
        form = {k: v for k, v in {"label": label, "split": split, "domain": domain}.items() if v}
        return self._json(  # type: ignore[no-any-return]
            "POST", f"/v1/projects/{project_id}/images", files=files, data=form
        )

    def images(self, project_id: str, **filters: Any) -> list[Json]:
        return list(self._pages(f"/v1/projects/{project_id}/images", **filters))

    def label(self, project_id: str, image_id: str, label: str) -> Json:
        """Give an uploaded image its label (a training image from then on)."""
        return self._json(  # type: ignore[no-any-return]
            "PATCH", f"/v1/projects/{project_id}/images/{image_id}", json={"label": label}
        )

    # --- jobs --------------------------------------------------------------------------

    def train(
        self,
        project_id: str,
        method: str = "linear_probe",
        *,
        backbone: str | None = None,
        params: Json | None = None,
    ) -> Json:
        """Queue a job (202); :meth:`wait` follows it."""
        body: Json = {"method": method, "params": params or {}}
        if backbone:
            body["backbone"] = backbone
        return self._json(  # type: ignore[no-any-return]
            "POST", f"/v1/projects/{project_id}/jobs", json=body
        )

    def job(self, job_id: str) -> Json:
        return self._json("GET", f"/v1/jobs/{job_id}")  # type: ignore[no-any-return]

    def jobs(self, project_id: str) -> list[Json]:
        return list(self._pages(f"/v1/projects/{project_id}/jobs"))

    def cancel(self, job_id: str) -> Json:
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")  # type: ignore[no-any-return]

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_update: Callable[[Json], None] | None = None,
        first_interval: float = 0.25,
        max_interval: float = 5.0,
        get: Callable[[str], Json] | None = None,
    ) -> Json:
        """Poll the job until it ends and answer it (``succeeded``); raise :class:`JobFailed`
        or :class:`JobCancelled` otherwise, ``TimeoutError`` after ``timeout`` seconds.
        ``get`` reads its state (default :meth:`job`; :meth:`batch_prediction` for one).

        The interval starts at ``first_interval`` and grows by half each poll up to
        ``max_interval``; it drops back to the start whenever the job moved (progress or
        stage changed), so a busy job is followed closely and an idle queue is not hammered.
        ``on_update`` sees every polled state (the CLI's progress bar)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        interval, last = first_interval, None
        while True:
            job = (get or self.job)(job_id)
            if on_update is not None:
                on_update(job)
            if job["status"] == "succeeded":
                return job
            if job["status"] == "failed":
                raise JobFailed(job)
            if job["status"] == "cancelled":
                raise JobCancelled(job)
            state = (job["status"], job["progress"], job["stage"])
            interval = first_interval if state != last else min(interval * 1.5, max_interval)
            last = state
            if deadline is not None and time.monotonic() + interval > deadline:
                raise TimeoutError(f"Job {job_id} is still {job['status']} ({job['stage']}).")
            time.sleep(interval)

    # --- models ------------------------------------------------------------------------

    def model(self, model_id: str) -> Json:
        return self._json("GET", f"/v1/models/{model_id}")  # type: ignore[no-any-return]

    def models(self, project_id: str) -> list[Json]:
        return list(self._pages(f"/v1/projects/{project_id}/models"))

    def set_default_model(self, project_id: str, model_id: str) -> Json:
        return self._json(  # type: ignore[no-any-return]
            "POST", f"/v1/projects/{project_id}/default-model", json={"model_id": model_id}
        )

    # --- aliases (production is what the project's predict serves) -------------------

    def aliases(self, project_id: str) -> list[Json]:
        return self._json("GET", f"/v1/projects/{project_id}/aliases")  # type: ignore[no-any-return]

    def set_alias(self, project_id: str, name: str, model_id: str) -> Json:
        return self._json(  # type: ignore[no-any-return]
            "PUT", f"/v1/projects/{project_id}/aliases/{name}", json={"model_id": model_id}
        )

    def delete_alias(self, project_id: str, name: str) -> None:
        self._request("DELETE", f"/v1/projects/{project_id}/aliases/{name}")

    def alias_history(self, project_id: str, name: str = "production") -> list[Json]:
        return list(self._pages(f"/v1/projects/{project_id}/aliases/{name}/history"))

    def rollback(self, project_id: str, name: str = "production") -> Json:
        return self._json(  # type: ignore[no-any-return]
            "POST", f"/v1/projects/{project_id}/aliases/{name}/rollback"
        )

    def predict(
        self,
        project_id: str | None,
        files: Sequence[str | Path],
        *,
        model_id: str | None = None,
        alias: str | None = None,
        top_k: int = 5,
        reject_below: float | str | None = None,
    ) -> Json:
        """Predict with the project's ``production`` model (or its ``alias``, or
        ``model_id``). Files that are not readable images come back in ``rejected`` (the
        server's 207); the rest answer."""
        path = (
            f"/v1/models/{model_id}/predict" if model_id else f"/v1/projects/{project_id}/predict"
        )
        params: Json = {"top_k": top_k}
        if alias is not None:
            params["alias"] = alias
        if reject_below is not None:
            params["reject_below"] = reject_below
        upload = [("files", (Path(f).name, Path(f).read_bytes())) for f in files]
        return self._json("POST", path, files=upload, params=params)  # type: ignore[no-any-return]

    def export(self, model_id: str, path: str | Path, *, format: str = "onnx") -> Path:
        """Write the model as one self-contained ``onnx`` or ``torchscript`` file."""
        response = self._request("GET", f"/v1/models/{model_id}/export", params={"format": format})
        out = Path(path)
        out.write_bytes(response.content)
        return out

    # --- after the first model: stored predictions, feedback, suggestions, batches ------

    def predictions(self, project_id: str, **filters: Any) -> list[Json]:
        """The project's stored predictions, oldest first; ``filters`` as the route's
        (``label``, ``below``, ``rejected``, ``model_id``, ``since``, ``until``,
        ``feedback``)."""
        return list(self._pages(f"/v1/projects/{project_id}/predictions", **filters))

    def feedback(
        self, prediction_id: str, *, label: str | None = None, correct: bool | None = None
    ) -> Json:
        """Say what a stored prediction's image is: ``label``, or ``correct=True`` (the
        model's answer). The image becomes a labeled training image of the project."""
        body = {k: v for k, v in {"label": label, "correct": correct}.items() if v is not None}
        return self._json(  # type: ignore[no-any-return]
            "POST", f"/v1/predictions/{prediction_id}/feedback", json=body
        )

    def suggestions(self, project_id: str, n: int = 20) -> Json:
        """The unlabeled images most worth labeling next, with the model's guess; label
        them with :meth:`label` (``image_id``) or :meth:`feedback` (``prediction_id``)."""
        return self._json(  # type: ignore[no-any-return]
            "GET", f"/v1/projects/{project_id}/suggestions", params={"n": n}
        )

    def batch_predict(
        self,
        model_id: str,
        images: str | Path | None = None,
        *,
        top_k: int = 5,
        reject_below: float | str | None = None,
    ) -> Json:
        """Predict many images in the background (202; :meth:`wait` with
        ``get=dc.batch_prediction`` follows it): ``images`` a .zip or a folder (zipped on
        the fly), or None for the project's unlabeled pool."""
        path = f"/v1/models/{model_id}/batch-predictions"
        options: Json = {"top_k": top_k}
        if reject_below is not None:
            options["reject_below"] = reject_below
        if images is None:
            return self._json(  # type: ignore[no-any-return]
                "POST", path, json={"source": "unlabeled", **options}
            )
        source = Path(images)
        data = zip_folder(source) if source.is_dir() else io.BytesIO(source.read_bytes())
        upload = [("files", (f"{source.resolve().stem or 'images'}.zip", data))]
        form = {k: str(v) for k, v in options.items()}
        return self._json("POST", path, files=upload, data=form)  # type: ignore[no-any-return]

    def batch_prediction(self, batch_prediction_id: str) -> Json:
        return self._json(  # type: ignore[no-any-return]
            "GET", f"/v1/batch-predictions/{batch_prediction_id}"
        )

    def batch_results(self, batch_prediction_id: str, *, format: str = "jsonl") -> str:
        """A succeeded batch prediction's results: JSON lines (one per image, in the
        input's order) or CSV text."""
        response = self._request(
            "GET",
            f"/v1/batch-predictions/{batch_prediction_id}/results",
            params={"format": format},
        )
        return response.text

    def usage(self) -> Json:
        """The tenant's quotas: each one's ``used`` and ``limit``."""
        return self._json("GET", "/v1/usage")  # type: ignore[no-any-return]

    # --- webhooks (signed POSTs when events happen; docs/API.md "Webhooks") --------------

    def create_webhook(
        self,
        url: str,
        *,
        project_id: str | None = None,
        events: Sequence[str] = ("job.finished",),
    ) -> Json:
        """Register ``url`` for ``events`` of one project (or, ``project_id`` None, of every
        project of the tenant). The answer's ``secret`` signs the bodies and is shown only
        here: keep it."""
        path = f"/v1/projects/{project_id}/webhooks" if project_id else "/v1/webhooks"
        body = {"url": url, "events": list(events)}
        return self._json("POST", path, json=body)  # type: ignore[no-any-return]

    def webhooks(self, project_id: str | None = None) -> list[Json]:
        """The project's own webhooks; ``project_id`` None: every webhook of the tenant."""
        return list(
            self._pages(f"/v1/projects/{project_id}/webhooks" if project_id else "/v1/webhooks")
        )

    def webhook(self, webhook_id: str) -> Json:
        return self._json("GET", f"/v1/webhooks/{webhook_id}")  # type: ignore[no-any-return]

    def delete_webhook(self, webhook_id: str) -> None:
        """Delete the webhook and its deliveries (pending ones are not sent)."""
        self._request("DELETE", f"/v1/webhooks/{webhook_id}")

    def webhook_deliveries(self, webhook_id: str) -> list[Json]:
        """The webhook's deliveries, oldest first, with each attempt's outcome."""
        return list(self._pages(f"/v1/webhooks/{webhook_id}/deliveries"))
