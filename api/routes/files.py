"""OpenAI-compatible files: upload a batch input, list, read a file's record or its content,
delete."""

from __future__ import annotations

from functools import partial
from itertools import chain
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import Response, StreamingResponse

from api.deps import ContextDep, SessionDep, TenantDep
from api.openapi import non_json
from genq.intake import check_upload
from genq.openai_batches import file_object, file_public
from genq.store.files import PART_BYTES, create_file, delete_file, list_files, read_parts

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post("")
def upload(
    session: SessionDep,
    tenant: TenantDep,
    file: Annotated[UploadFile, File()],
    purpose: Annotated[str, Form()],
    context: ContextDep,
) -> dict[str, Any]:
    # The upload is spooled to disk as it arrives; it is stored a part at a time from there.
    first = file.file.read(PART_BYTES)
    filename = check_upload(purpose=purpose, filename=file.filename, content=first)
    rest = iter(partial(file.file.read, PART_BYTES), b"")
    info = create_file(
        session, tenant=tenant, purpose=purpose, filename=filename, content=chain([first], rest)
    )
    days = context.settings.retention_days
    return file_public(session, tenant=tenant, file_id=info.id, retention_days=days)


@router.get("")
def index(
    session: SessionDep,
    tenant: TenantDep,
    context: ContextDep,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    """The caller's files, newest first unless ``order=asc``; ``after`` is the last id of the
    previous page (as OpenAI's client pages)."""
    infos, more = list_files(
        session,
        tenant=tenant,
        purpose=purpose,
        after=after,
        limit=limit,
        newest_first=order == "desc",
    )
    data = [file_object(info, context.settings.retention_days) for info in infos]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }


@router.delete("/{file_id}")
def remove(file_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    delete_file(session, tenant=tenant, file_id=file_id)
    return {"id": file_id, "object": "file", "deleted": True}


@router.get("/{file_id}")
def read(
    file_id: str, session: SessionDep, tenant: TenantDep, context: ContextDep
) -> dict[str, Any]:
    days = context.settings.retention_days
    return file_public(session, tenant=tenant, file_id=file_id, retention_days=days)


@router.get(
    "/{file_id}/content", responses=non_json("application/octet-stream", "The file's bytes")
)
def content(file_id: str, tenant: TenantDep, context: ContextDep) -> Response:
    parts = read_parts(context.sessions, tenant=tenant, file_id=file_id)
    return StreamingResponse(parts, media_type="application/octet-stream")
