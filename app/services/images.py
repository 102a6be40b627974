"""Image ingest: files and zip archives in, deduplicated, validated images stored.

Every file is fully decoded once before anything is written; blobs go to storage first
and rows are committed in one transaction, and blobs written by a request whose commit
fails are removed again, so an upload never leaves half a record.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.models import Image, Project, StoredPrediction
from app.errors import (
    ArchiveInvalid,
    ArchiveTooLarge,
    Conflict,
    DovecoteError,
    InvalidInput,
    NotFound,
)
from app.services import label_sets, projects, quotas
from app.services.pagination import paginate
from app.storage import BlobStore
from app.transfer.data import DOMAINS, SPLITS
from app.transfer.preprocess import PixelBudget, check_image, decode_image


@dataclass
class Rejection:
    filename: str
    error: DovecoteError

    def as_dict(self) -> dict[str, str]:
        return {"filename": self.filename, "code": self.error.code, "detail": self.error.detail}


@dataclass
class IngestResult:
    created: list[Image] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True)
class Candidate:
    filename: str
    data: bytes
    label: str | None
    source: str | None = None  # where it came from, for rejections: "archive.zip:dir/x.png"


def blob_key(project_id: str, sha256: str) -> str:
    return f"images/{project_id}/{sha256}"


def _is_zip(filename: str, data: bytes) -> bool:
    return filename.lower().endswith(".zip") or data[:4] == b"PK\x03\x04"


def _member_label(name: str, default: str | None) -> str | None:
    """The label of a zip member: its parent folder's name, never a path."""
    parent = posixpath.basename(posixpath.dirname(name.replace("\\", "/").rstrip("/")))
    return default if parent in ("", ".", "..") else parent


def unzip(
    filename: str, data: bytes, default_label: str | None, settings: Settings
) -> Iterator[Candidate | Rejection]:
    """The files of zip ``filename``, one at a time: a :class:`Candidate` per readable member
    (labeled by its folder, else ``default_label``), a :class:`Rejection` per unreadable one;
    one Rejection alone when the archive is unreadable or past the limits
    (``DOVECOTE_MAX_ZIP_MEMBERS``, ``DOVECOTE_MAX_ZIP_UNCOMPRESSED_BYTES``)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [i for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        yield Rejection(filename, ArchiveInvalid(f"{filename!r} is not a readable zip: {exc}."))
        return
    if len(members) > settings.max_zip_members:
        yield Rejection(
            filename,
            ArchiveTooLarge(
                f"{filename!r} holds {len(members)} files; the limit is {settings.max_zip_members}."
            ),
        )
        return
    declared = sum(i.file_size for i in members)
    if declared > settings.max_zip_uncompressed_bytes:
        yield Rejection(
            filename,
            ArchiveTooLarge(
                f"{filename!r} expands to {declared} bytes; the limit is "
                f"{settings.max_zip_uncompressed_bytes}."
            ),
        )
        return
    for info in members:
        base = posixpath.basename(info.filename.replace("\\", "/"))
        if not base or base.startswith(".") or info.filename.startswith("__MACOSX/"):
            continue
        shown = f"{filename}:{info.filename}"
        if info.flag_bits & 0x1:
            yield Rejection(shown, ArchiveInvalid(
                f"{shown!r} is encrypted (password-protected); zip the images without a password."
            ))  # fmt: skip
            continue
        try:
            with archive.open(info) as member:
                # Never trust the declared size: read at most one byte past it.
                content = member.read(info.file_size + 1)
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError) as exc:
            yield Rejection(shown, ArchiveInvalid(f"Cannot read {shown!r}: {exc}."))
            continue
        if len(content) > info.file_size:
            yield Rejection(shown, ArchiveTooLarge(f"{shown!r} is larger than its header says."))
            continue
        yield Candidate(base, content, _member_label(info.filename, default_label), shown)


def stored_filename(name: str) -> str:
    """The name as stored: control characters (NUL included) dropped, 255 characters at most."""
    return "".join(ch for ch in name if ch.isprintable())[:255] or "upload"


def _check_choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise InvalidInput(f"{what} must be one of {list(allowed)}, not {value!r}.", field=what)
    return value


def ingest(
    *,
    db: Session,
    store: BlobStore,
    settings: Settings,
    project: Project,
    files: list[tuple[str, bytes]],
    label: str | None,
    domain: str,
    split: str,
    labels: str | None = None,
) -> IngestResult:
    """``labels``: label sets for every file of the request (see :mod:`.label_sets`)."""
    _check_choice(domain, DOMAINS, "domain")
    _check_choice(split, SPLITS, "split")
    extra_labels = label_sets.parse(labels)
    default_label = projects.clean_label(label) if label else None
    result = IngestResult()
    candidates: list[Candidate] = []
    for filename, data in files:
        if _is_zip(filename, data):
            for item in unzip(filename, data, default_label, settings):
                (result.rejected if isinstance(item, Rejection) else candidates).append(item)  # type: ignore[arg-type]
        else:
            candidates.append(Candidate(filename, data, default_label))

    existing = set(db.scalars(select(Image.sha256).where(Image.project_id == project.id)))
    written: list[str] = []
    rows: list[Image] = []
    known = projects.class_names_by_key(project)
    budget = PixelBudget(settings.max_pixels_per_request)
    for cand in candidates:
        # Cheap checks first: a duplicate (by sha256) is never decoded again.
        sha = hashlib.sha256(cand.data).hexdigest()
        try:
            item_label = projects.clean_label(cand.label) if cand.label is not None else None
            if item_label is not None:
                projects.refuse_similar(known, item_label)
            if sha in existing:
                result.duplicates += 1
                continue
            info = check_image(
                cand.data, filename=cand.filename, max_pixels=settings.max_image_pixels,
                budget=budget,
            )  # fmt: skip
        except DovecoteError as exc:
            result.rejected.append(Rejection(cand.source or cand.filename, exc))
            continue
        existing.add(sha)
        key = blob_key(project.id, sha)
        if not store.exists(key):
            store.put(key, cand.data)
            written.append(key)
        rows.append(
            Image(
                project_id=project.id,
                filename=stored_filename(cand.filename),
                label=item_label,
                domain=domain,
                split=split,
                format=info.format,
                width=info.width,
                height=info.height,
                size_bytes=len(cand.data),
                sha256=sha,
            )
        )
    try:
        quotas.check_new_images(
            db=db,
            settings=settings,
            tenant_id=project.tenant_id,
            count=len(rows),
            size_bytes=sum(r.size_bytes for r in rows),
        )
        projects.ensure_classes(db=db, project=project, names={r.label for r in rows if r.label})
        db.add_all(rows)
        label_sets.apply(db=db, project=project, images=rows, labels=extra_labels)
        db.commit()
    except IntegrityError:
        db.rollback()
        for key in written:
            store.delete(key)
        raise Conflict("Another upload of the same images ran at the same time; retry.") from None
    except BaseException:
        db.rollback()
        for key in written:
            store.delete(key)
        raise
    result.created = rows
    return result


def get(*, db: Session, project: Project, image_id: str) -> Image:
    image = db.get(Image, image_id)
    if image is None or image.project_id != project.id:
        raise NotFound(f"No image {image_id!r} in this project.", resource="image")
    return image


def list_(
    *,
    db: Session,
    project: Project,
    limit: int,
    cursor: str | None,
    label: str | None = None,
    domain: str | None = None,
    split: str | None = None,
    unlabeled: bool | None = None,
) -> tuple[list[Image], str | None]:
    stmt = select(Image).where(Image.project_id == project.id)
    if label is not None:
        stmt = stmt.where(Image.label == label)
    if domain is not None:
        stmt = stmt.where(Image.domain == domain)
    if split is not None:
        stmt = stmt.where(Image.split == split)
    if unlabeled is True:
        stmt = stmt.where(Image.label.is_(None))
    elif unlabeled is False:
        stmt = stmt.where(Image.label.is_not(None))
    return paginate(db, stmt, Image.id, limit=limit, cursor=cursor)


def update(*, db: Session, project: Project, image: Image, changes: dict[str, Any]) -> Image:
    if "label" in changes:
        image.label = projects.clean_label(changes["label"]) if changes["label"] else None
        if image.label:
            projects.refuse_similar(projects.class_names_by_key(project), image.label)
            projects.ensure_classes(db=db, project=project, names={image.label})
    if changes.get("split") is not None:
        image.split = _check_choice(changes["split"], SPLITS, "split")
    if changes.get("domain") is not None:
        image.domain = _check_choice(changes["domain"], DOMAINS, "domain")
    if changes.get("labels") is not None:
        parsed = label_sets.parse(changes["labels"])
        label_sets.apply(db=db, project=project, images=[image], labels=parsed)
    db.commit()
    return image


def delete(*, db: Session, store: BlobStore, image: Image) -> None:
    """The row, then its blob unless a stored prediction of the project still names it."""
    project_id, sha = image.project_id, image.sha256
    db.delete(image)
    db.commit()
    kept = db.scalar(
        select(StoredPrediction.id)
        .where(StoredPrediction.project_id == project_id, StoredPrediction.sha256 == sha)
        .limit(1)
    )
    if kept is None:
        store.delete(blob_key(project_id, sha))


def content(*, store: BlobStore, image: Image) -> bytes:
    return store.get(blob_key(image.project_id, image.sha256))


THUMBNAIL_SIZE = 160


def thumbnail(
    *, store: BlobStore, settings: Settings, image: Image, size: int = THUMBNAIL_SIZE
) -> bytes:
    """The image as a JPEG at most ``size`` pixels on its longer side (the console's grids),
    decoded as training decodes it (EXIF orientation, transparency on white)."""
    return thumbnail_of(content(store=store, image=image), settings=settings, size=size)


def thumbnail_of(data: bytes, *, settings: Settings, size: int = THUMBNAIL_SIZE) -> bytes:
    """:func:`thumbnail` of image bytes (a stored prediction's, say)."""
    picture = decode_image(data, max_pixels=settings.max_image_pixels, draft_size=size)
    picture.thumbnail((size, size))
    buf = io.BytesIO()
    picture.save(buf, format="JPEG", quality=85)
    return buf.getvalue()
