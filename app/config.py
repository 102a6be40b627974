"""Every knob of Dovecote, read from the environment with the ``DOVECOTE_`` prefix.

One class, one place: the API, the worker and the CLI all read their settings here.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, get_args

from cryptography.fernet import Fernet
from pydantic import (
    BeforeValidator,
    Field,
    NonNegativeFloat,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: The queues a training job can be sent to (:mod:`app.queue`): ``train`` for jobs on frozen
#: features, ``gpu`` for jobs that train through a backbone when GPU workers exist.
QueueName = Literal["train", "gpu"]


def _comma_list(value: object) -> object:
    """``"gpu,train"`` (the environment's form) as ``["gpu", "train"]``; empty: unset."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()] or None
    return value


#: Queue names from the environment as a comma-separated list: ``DOVECOTE_WORKER_QUEUES=gpu,train``.
QueueList = Annotated[list[QueueName] | None, NoDecode, BeforeValidator(_comma_list)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DOVECOTE_", env_file=".env", extra="ignore", frozen=True
    )

    env: Literal["development", "production"] = Field(
        "development", description="`production` refuses unsafe defaults (no API key, dev key)."
    )
    data_dir: Path = Field(
        Path("./data"), description="Root of everything embedded: SQLite files, blobs, caches."
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default `sqlite:///<data_dir>/dovecote.sqlite`."
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker; default kombu's `sqla+sqlite:///<data_dir>/broker.sqlite`.",
    )
    broker_poll_seconds: float = Field(
        0.1,
        gt=0,
        description="How often a worker polls the embedded SQL broker for a new job (kombu's "
        "default is 1 s); Redis delivers at once and ignores it.",
    )
    gpu_queue: bool = Field(
        False,
        description="GPU workers consume the `gpu` queue: jobs that train through a backbone "
        "(finetune, distill, pretrain, DANN with blocks, auto with finetune) go there, the "
        "others to `train`. Off: every job goes to `train`. Set it where jobs are created "
        "(the API) and, for the default of `worker_queues`, in the workers.",
    )
    worker_queues: QueueList = Field(
        None,
        description="Queues a worker consumes, comma-separated (`train`, `gpu`; `dovecote "
        "worker --queues` overrides it); default: every queue jobs are sent to (`train`, "
        "and `gpu` with `gpu_queue`).",
    )
    shared_cache_dir: Path | None = Field(
        default_factory=lambda: (
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dovecote"
        ),
        description="Caches shared by every data directory of this installation (ImageNet's "
        "class-name embeddings for zero-shot); default `$XDG_CACHE_HOME/dovecote` or "
        "`~/.cache/dovecote`. Unwritable: the data directory's cache is used.",
    )
    storage_url: str | None = Field(
        None, description="Blob store; default `file://<data_dir>/blobs`."
    )
    api_key: str | None = Field(
        None, description="Admin key of the tenant `default` (accepted as a Bearer token)."
    )
    max_upload_bytes: int = Field(
        200 * 1024 * 1024, description="Largest request body accepted (413 while reading past it)."
    )
    max_image_pixels: int = Field(
        50_000_000, description="Images claiming more pixels are refused (decompression bombs)."
    )
    max_pixels_per_request: int = Field(
        400_000_000,
        description="Pixels one upload or predict request may decode in all (about 33 "
        "12-megapixel photos); the files past it are rejected, to send again.",
    )
    max_zip_members: int = Field(10_000, description="Most members one zip upload may hold.")
    max_zip_uncompressed_bytes: int = Field(
        1024 * 1024 * 1024, description="Most bytes one zip upload may expand to."
    )
    weights_dir: Path | None = Field(
        None, description="Folder of explicit backbone weights (`<name>.safetensors`), tried first."
    )
    allow_hub: bool = Field(
        False, description="Allow downloading backbone weights from the Hugging Face hub."
    )
    torch_threads: int = Field(
        0, description="Threads torch may use in the worker and predictor (0: all cores)."
    )
    feature_batch_size: int = Field(
        32, description="Images per forward pass of feature extraction."
    )
    job_heartbeat_seconds: float = Field(10.0, description="How often a running job heartbeats.")
    job_stale_after_seconds: float = Field(
        120.0, description="A running job silent this long is treated as orphaned by the sweep."
    )
    job_max_attempts: int = Field(
        2, description="Runs a job may start before the sweep fails it instead of requeueing."
    )
    job_max_minutes: float = Field(
        180.0,
        description="Wall-clock limit of one job run (training, every method included, or batch "
        "prediction); past it the job fails with `job_timed_out`.",
    )
    sweep_interval_seconds: float = Field(30.0, description="How often a worker runs the sweep.")
    predictor_max_backbones: int = Field(4, description="Backbones kept in the predictor cache.")
    predictor_max_heads: int = Field(1024, description="Model heads kept in the predictor cache.")
    predict_max_files: int = Field(
        64, ge=1, description="Files one predict request may carry; more is `413 too_many_files`."
    )
    predict_batch_size: int = Field(
        8, ge=1, description="Images decoded and run through the backbone at once by predict."
    )
    inference_max_images: int = Field(
        16,
        ge=0,
        description="Images in inference at once in one API process, over all requests (0: "
        "no limit); the others wait, tenants taking turns. Bounds the API's memory under "
        "concurrent predicts.",
    )
    malloc_mmap_threshold: int = Field(
        1024 * 1024,
        ge=0,
        description="glibc malloc's mmap threshold in the API process, in bytes: blocks from "
        "this size up are mapped, and go back to the system when freed (0: glibc's default, "
        "which rises to the largest block freed so far, up to 32 MiB, and then keeps them).",
    )
    malloc_arena_max: int = Field(
        2,
        ge=0,
        description="glibc malloc arenas in the API process (0: glibc's default, 8 per core); "
        "each keeps its own freed memory.",
    )
    prewarm: bool = Field(
        True,
        description="Load the default backbone and build its inference session when a "
        "process starts, and in the API also compile a predict's SQL statements and build its "
        "routes (`/readyz` answers 503 until then); off, the first use pays for it.",
    )
    tenant_max_active_jobs: int = Field(
        4, description="Queued plus running jobs a tenant may have (0: no limit); more is a 429."
    )
    tenant_max_projects: int = Field(100, description="Projects a tenant may have (0: no limit).")
    tenant_max_images: int = Field(
        100_000, description="Images a tenant may store over all its projects (0: no limit)."
    )
    tenant_max_stored_bytes: int = Field(
        10 * 1024**3, description="Image bytes a tenant may store (0: no limit)."
    )
    tenant_max_stored_predictions: int = Field(
        100_000,
        ge=0,
        description="Stored predictions a tenant may keep (0: no limit); past it a predict is "
        "answered and not stored.",
    )
    tenant_max_models: int = Field(
        1000,
        ge=0,
        description="Models a tenant may keep over all its projects, counting the ones its "
        "queued or running training jobs will make (0: no limit); one more training job is a "
        "403.",
    )
    max_aliases_per_project: int = Field(
        50,
        ge=0,
        description="Aliases besides `production` one project may have (0: no limit); one more "
        "is a 403.",
    )
    max_webhooks_per_project: int = Field(
        10, ge=0, description="Webhooks one project may have (0: no limit); more is a 403."
    )
    max_tenant_webhooks: int = Field(
        10,
        ge=0,
        description="Tenant-wide webhooks (every project's events) a tenant may have "
        "(0: no limit); more is a 403.",
    )
    tenant_rate_limit: float = Field(
        0.0, description="Requests per second per API key, a token bucket (0: off)."
    )
    tenant_rate_burst: int = Field(
        20, description="Token-bucket capacity: requests a key may send at once before waiting."
    )
    tenant_max_concurrent_predicts: int = Field(
        4,
        ge=0,
        description="Predict requests one tenant may have in progress at once in one API "
        "process; more is `429 too_many_concurrent_predicts` (0: no limit).",
    )
    webhook_allow_private: bool = Field(
        False,
        description="Let webhooks reach private, loopback, link-local and other non-public "
        "addresses (refused by default, at registration and again at each send, against "
        "server-side request forgery). Only for trusted networks and tests.",
    )
    webhook_retry_seconds: tuple[NonNegativeFloat, ...] = Field(
        (10.0, 60.0, 300.0, 1800.0),
        description="Seconds between a webhook delivery's failed attempt and the next, as a "
        "JSON list: its length plus one is the number of attempts (default 5: 10 s, 1 min, "
        "5 min, 30 min).",
    )
    webhook_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Seconds one webhook attempt may take in all: the host's lookup, "
        "connecting, sending and the whole answer.",
    )
    webhook_concurrency: int = Field(
        8,
        ge=1,
        le=100,
        description="Webhook attempts a worker makes at once (tenants take turns in each "
        "batch), so a slow receiver holds up one slot, not every delivery.",
    )
    webhook_delivery_retention_days: float = Field(
        30.0, gt=0, description="Finished webhook deliveries older than this are deleted."
    )
    webhook_poll_seconds: float = Field(
        1.0, gt=0, description="How often a worker looks for due webhook deliveries."
    )
    drift_threshold: float = Field(
        0.05,
        gt=0,
        description="Drift score (MMD² between a window's images and the model's training "
        "images, `GET /v1/models/{id}/monitoring`) at or above which the window says "
        "`drift: true`; chosen in `python -m bench.drift`.",
    )
    drift_pixel_threshold: float = Field(
        0.12,
        gt=0,
        description="Second drift score (MMD² between the windows' and the training images' "
        "pixel signatures: grey-level histogram, colour means and spreads) at or above which "
        "a window says `drift: true` too; chosen in `python -m bench.drift`.",
    )
    drift_min_images: int = Field(
        20,
        ge=2,
        description="Distinct images a monitoring window needs for a drift score (fewer: "
        "`drift_score: null`, too noisy to say).",
    )
    drift_check_seconds: float = Field(
        3600.0,
        ge=0,
        description="How often each worker computes the drift of the day windows of models "
        "with stored predictions of the last two days, sending `model.drift` for newly "
        "flagged ones (0: only when `GET /v1/models/{id}/monitoring` is called).",
    )
    audit_inline_max_images: int = Field(
        1000,
        ge=0,
        description="Projects with up to this many images are audited in the request of "
        "`GET /v1/projects/{id}/audit`; larger ones by a job on the worker (`202`).",
    )
    metrics_cache_seconds: float = Field(
        60.0,
        ge=0,
        description="`/metrics` counts the stored predictions at most this often per API "
        "process (a scan of their table); scrapes in between get the last count.",
    )
    metrics_key: str | None = Field(
        None, description="When set, `/metrics` needs `Authorization: Bearer <this key>`."
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Fernet key(s) that seal secrets stored in the database (webhook signing "
        "secrets), comma-separated: the first seals, all unseal (`dovecote secrets new-key` "
        "prints one). Unset: `<data dir>/secret.key`, made on first use. Every API and worker "
        "process needs the same key.",
    )

    @field_validator("secret_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("secret_key")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for key in value.get_secret_value().split(","):
                try:
                    Fernet(key.strip())  # its own check: 32 bytes of URL-safe base64
                except ValueError:
                    raise ValueError(
                        "DOVECOTE_SECRET_KEY: each comma-separated key must be a Fernet key "
                        "(32 bytes, URL-safe base64; `dovecote secrets new-key` prints one)"
                    ) from None
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.env == "production" and self.api_key in (None, "", "dev-key"):
            raise ValueError("DOVECOTE_API_KEY must be set to a real secret in production")
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'dovecote.sqlite'}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir.resolve() / 'broker.sqlite'}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{self.data_dir.resolve() / 'blobs'}"

    @property
    def consumed_queues(self) -> list[str]:
        """The queues a worker with these settings consumes (see ``worker_queues``)."""
        if self.worker_queues:
            return list(dict.fromkeys(self.worker_queues))
        return [q for q in get_args(QueueName) if q != "gpu" or self.gpu_queue]

    @property
    def feature_cache_dir(self) -> Path:
        return self.data_dir.resolve() / "feature-cache"


@lru_cache
def get_settings() -> Settings:
    return Settings()
