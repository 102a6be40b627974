"""Prediction with a stored model through the process-wide :class:`Predictor`."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import allocator
from app.config import Settings
from app.db.models import Model, Project, ProjectClass
from app.db.session import get_sessionmaker
from app.errors import (
    DecodeBudgetExceeded,
    ImageTooLarge,
    ImageUndecodable,
    InvalidInput,
    TooManyFiles,
)
from app.services import aliases
from app.services.images import Rejection
from app.services.models import artifact_reader
from app.storage import BlobStore
from app.transfer.backbones import DEFAULT_BACKBONE
from app.transfer.export import FORMATS as EXPORT_FORMATS
from app.transfer.export import ExportFormat
from app.transfer.features import graph_dir_in
from app.transfer.localize import DEFAULT_THRESHOLD, Localization
from app.transfer.predictor import Prediction, Predictor, budget_key
from app.transfer.preprocess import PixelBudget, image_size

MAX_TOP_K = 100
__all__ = [
    "DEFAULT_THRESHOLD",
    "EXPORT_FORMATS",
    "ExportFormat",
    "PredictResult",
    "Prediction",
    "check_file_count",
    "check_options",
    "default_model",
    "evict",
    "export",
    "export_file",
    "localize",
    "negative_classes",
    "predict",
    "predict_files",
    "prewarm",
    "turns_of",
    "warm_reads",
]


@contextmanager
def turns_of(tenant_id: str) -> Iterator[None]:
    """Inference within the block waits for ``tenant_id``'s turn in the predictor's
    ``ImageBudget``: tenants take turns. A context variable: it holds in this thread or
    task, and in what that runs through Starlette's thread pool (a sync route)."""
    token = budget_key.set(tenant_id)
    try:
        yield
    finally:
        budget_key.reset(token)


@lru_cache(maxsize=1)
def get_predictor(settings: Settings) -> Predictor:
    return Predictor(
        max_backbones=settings.predictor_max_backbones,
        max_heads=settings.predictor_max_heads,
        weights_dir=settings.weights_dir,
        allow_hub=settings.allow_hub,
        max_pixels=settings.max_image_pixels,
        batch_size=settings.predict_batch_size,
        max_images_in_flight=settings.inference_max_images,
        graph_dir=graph_dir_in(settings.feature_cache_dir),
        on_idle=allocator.release,
    )


def prewarm(*, settings: Settings) -> None:
    """Load the default backbone into the predictor and build its inference session."""
    get_predictor(settings).prewarm(DEFAULT_BACKBONE)


def warm_reads(*, settings: Settings) -> None:
    """Run once the reads a predict makes (the model and its project by id, the project's
    negative classes; the API key's tenant is read by ``app.api.main.knock_predict_routes``)
    for an id no row has, in a transaction rolled back: SQLAlchemy configures its mappers
    and compiles and caches each statement here, not in the first request. Nothing is
    found and nothing is written."""
    missing = ""  # ids are never empty
    with get_sessionmaker(settings.resolved_database_url)() as db:
        db.get(Model, missing)
        db.get(Project, missing)
        negative_classes(db=db, model=Model(project_id=missing, classes=[]))
        db.rollback()


def check_file_count(*, settings: Settings, count: int) -> None:
    """Refuse a request with more files than ``DOVECOTE_PREDICT_MAX_FILES``, before any is read."""
    limit = settings.predict_max_files
    if count > limit:
        raise TooManyFiles(
            f"{count} files in one request; at most {limit} are allowed "
            f"(DOVECOTE_PREDICT_MAX_FILES). Split them over several requests.",
            limit=limit,
            files=count,
        )


def default_model(*, db: Session, project: Project) -> Model:
    """The model of the project's ``production`` alias (:func:`aliases.resolve_for_predict`)."""
    return aliases.resolve_for_predict(db=db, project=project, name=aliases.PRODUCTION)


@dataclass
class PredictResult:
    """Predictions of the readable files, and the rest, by their index in the request."""

    predicted: list[tuple[int, Prediction]] = field(default_factory=list)
    failed: list[tuple[int, Rejection]] = field(default_factory=list)

    @property
    def rejected(self) -> list[Rejection]:
        """The files that are not readable images, each with its problem."""
        return [r for _, r in self.failed]


def check_options(*, top_k: int, reject_below: float | Literal["default"] | None) -> None:
    """Refuse a ``top_k`` or ``reject_below`` predict does not take."""
    if not 1 <= top_k <= MAX_TOP_K:
        raise InvalidInput(f"top_k must be between 1 and {MAX_TOP_K}.", field="top_k")
    if isinstance(reject_below, float | int) and not 0 <= reject_below <= 1:
        raise InvalidInput("reject_below must be between 0 and 1.", field="reject_below")


def predict(
    *,
    settings: Settings,
    store: BlobStore,
    model: Model,
    files: list[tuple[str, bytes]],
    top_k: int,
    reject_below: float | Literal["default"] | None = None,
    negative: Collection[str] = (),
) -> PredictResult:
    """Predict every file; an unreadable image is rejected by name, the others still answer
    (:func:`predict_files`), at most ``DOVECOTE_PREDICT_MAX_FILES`` of them. When no file
    is readable, its problem is raised."""
    if not files:
        raise InvalidInput("Send one or more images in the multipart field `files`.", field="files")
    check_file_count(settings=settings, count=len(files))
    check_options(top_k=top_k, reject_below=reject_below)
    result = predict_files(
        settings=settings, store=store, model=model, files=files, top_k=top_k,
        reject_below=reject_below, negative=negative,
    )  # fmt: skip
    if not result.predicted:
        first = result.rejected[0]
        raise type(first.error)(
            f"{first.filename!r}: {first.error.detail}"
            if len(files) == 1
            else f"None of the {len(files)} files is a readable image (first: "
            f"{first.filename!r}: {first.error.detail})",
            filename=first.filename,
            rejected=[r.as_dict() for r in result.rejected],
        )
    return result


def predict_files(
    *,
    settings: Settings,
    store: BlobStore,
    model: Model,
    files: list[tuple[str, bytes]],
    top_k: int,
    reject_below: float | Literal["default"] | None = None,
    negative: Collection[str] = (),
) -> PredictResult:
    """The predictions of one predict request's ``files`` (options already checked).

    Headers are read first (no pixel decoded): files past the request's pixel budget
    (``DOVECOTE_MAX_PIXELS_PER_REQUEST``) are rejected. The others go through the predictor
    ``DOVECOTE_PREDICT_BATCH_SIZE`` at a time (memory flat in their number). A chunk runs in
    one pass; only when it holds an unreadable image are its files predicted one by one to
    tell which."""
    prefix = model.artifact_prefix

    def run(images: list[bytes]) -> list[Prediction]:
        return get_predictor(settings).predict(
            model.id, artifact_reader(store, prefix), images,
            top_k=top_k, reject_below=reject_below, negative=negative,
        )  # fmt: skip

    result = PredictResult()
    budget = PixelBudget(settings.max_pixels_per_request)
    admitted: list[tuple[int, str, bytes]] = []
    for i, (name, data) in enumerate(files):
        try:
            budget.charge(*image_size(data, max_pixels=settings.max_image_pixels))
        except (ImageUndecodable, ImageTooLarge, DecodeBudgetExceeded) as exc:
            result.failed.append((i, Rejection(name, exc)))
        else:
            admitted.append((i, name, data))
    size = settings.predict_batch_size
    for start in range(0, len(admitted), size):
        chunk = admitted[start : start + size]
        try:
            predicted = run([data for _, _, data in chunk])
        except (ImageUndecodable, ImageTooLarge):
            pass
        else:
            result.predicted.extend(zip([i for i, _, _ in chunk], predicted, strict=True))
            continue
        for i, name, data in chunk:
            try:
                result.predicted.append((i, run([data])[0]))
            except (ImageUndecodable, ImageTooLarge) as exc:
                result.failed.append((i, Rejection(name, exc)))
    return result


def negative_classes(*, db: Session, model: Model) -> set[str]:
    """The model's classes that its project marks ``negative`` (as the project says now)."""
    rows = db.scalars(
        select(ProjectClass.name).where(
            ProjectClass.project_id == model.project_id, ProjectClass.negative.is_(True)
        )
    )
    return set(rows) & set(model.classes)


def localize(
    *,
    settings: Settings,
    store: BlobStore,
    model: Model,
    images: list[bytes],
    labels: list[str | None],
    threshold: float = DEFAULT_THRESHOLD,
) -> list[Localization | None]:
    """Where ``labels[i]`` is in ``images[i]``; see :meth:`Predictor.localize`."""
    if not 0 < threshold < 1:
        raise InvalidInput(
            "localize_threshold must be between 0 and 1.", field="localize_threshold"
        )
    prefix = model.artifact_prefix
    return get_predictor(settings).localize(
        model.id, artifact_reader(store, prefix), images, labels, threshold=threshold
    )


def evict(*, settings: Settings, model_id: str) -> None:
    get_predictor(settings).evict(model_id)


def export(*, settings: Settings, store: BlobStore, model: Model, fmt: ExportFormat) -> bytes:
    prefix = model.artifact_prefix
    return get_predictor(settings).export(model.id, artifact_reader(store, prefix), fmt)


def export_file(
    *, settings: Settings, store: BlobStore, model: Model, fmt: ExportFormat
) -> tuple[bytes, str, str]:
    """The model exported as ``fmt``, with its download file name and media type."""
    suffix, media_type = EXPORT_FORMATS[fmt]
    data = export(settings=settings, store=store, model=model, fmt=fmt)
    return data, model.id + suffix, media_type
