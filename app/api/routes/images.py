from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from fastapi.responses import JSONResponse

from app.api.deps import CursorQuery, LimitQuery, ProjectDep, SessionDep, SettingsDep, StoreDep
from app.api.problems import error_response
from app.api.schemas import ImageOut, ImageUpdate, Page, Rejected, UploadResult
from app.services import images as service

router = APIRouter(prefix="/v1/projects/{project_id}/images", tags=["images"])

_MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp", "GIF": "image/gif"}  # fmt: skip


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UploadResult,
    responses={207: {"model": UploadResult, "description": "Some files were rejected."}},
)
def upload_images(
    project: ProjectDep,
    db: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    files: Annotated[list[UploadFile], File(description="Images or .zip archives.")],
    label: Annotated[str | None, Form()] = None,
    domain: Annotated[Literal["target", "source"], Form()] = "target",
    split: Annotated[Literal["auto", "train", "test"], Form()] = "auto",
    labels: Annotated[
        str | None,
        Form(
            description='Label sets for all files, a JSON object: {"is_pigeon": "yes", "tags": '
            '["bird", "railing"]} (a string: one label; a list: a multi-label set of tags).'
        ),
    ] = None,
) -> JSONResponse:
    payload = [(f.filename or "upload", f.file.read()) for f in files]
    result = service.ingest(
        db=db,
        store=store,
        settings=settings,
        project=project,
        files=payload,
        label=label,
        domain=domain,
        split=split,
        labels=labels,
    )
    if result.rejected and not result.created and not result.duplicates:
        first = result.rejected[0]
        detail = (
            f"{first.filename!r}: {first.error.detail}"
            if len(result.rejected) == 1
            else f"None of the files was stored; {len(result.rejected)} rejected "
            f"(first: {first.filename!r}: {first.error.detail})"
        )
        return error_response(
            type(first.error)(
                detail, **first.error.extra, rejected=[r.as_dict() for r in result.rejected]
            )
        )
    body = UploadResult(
        created=len(result.created),
        duplicates=result.duplicates,
        rejected=[Rejected(**r.as_dict()) for r in result.rejected],
        items=[ImageOut.model_validate(i) for i in result.created],
    )
    code = status.HTTP_207_MULTI_STATUS if result.rejected else status.HTTP_201_CREATED
    return JSONResponse(body.model_dump(mode="json"), status_code=code)


@router.get("")
def list_images(
    project: ProjectDep,
    db: SessionDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    label: str | None = None,
    domain: Annotated[Literal["target", "source"] | None, Query()] = None,
    split: Annotated[Literal["auto", "train", "test"] | None, Query()] = None,
    unlabeled: bool | None = None,
) -> Page[ImageOut]:
    items, next_cursor = service.list_(
        db=db, project=project, limit=limit, cursor=cursor, label=label, domain=domain,
        split=split, unlabeled=unlabeled,
    )  # fmt: skip
    return Page(items=[ImageOut.model_validate(i) for i in items], next_cursor=next_cursor)


@router.get("/{image_id}")
def get_image(image_id: str, project: ProjectDep, db: SessionDep) -> ImageOut:
    return ImageOut.model_validate(service.get(db=db, project=project, image_id=image_id))


@router.patch("/{image_id}")
def update_image(image_id: str, body: ImageUpdate, project: ProjectDep, db: SessionDep) -> ImageOut:
    image = service.get(db=db, project=project, image_id=image_id)
    changes = body.model_dump(exclude_unset=True)
    return ImageOut.model_validate(
        service.update(db=db, project=project, image=image, changes=changes)
    )


@router.delete("/{image_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_image(image_id: str, project: ProjectDep, db: SessionDep, store: StoreDep) -> Response:
    service.delete(db=db, store=store, image=service.get(db=db, project=project, image_id=image_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{image_id}/content", response_class=Response)
def image_content(image_id: str, project: ProjectDep, db: SessionDep, store: StoreDep) -> Response:
    image = service.get(db=db, project=project, image_id=image_id)
    return Response(
        service.content(store=store, image=image),
        media_type=_MEDIA_TYPES.get(image.format, "application/octet-stream"),
        headers={"ETag": f'"{image.sha256}"'},
    )
