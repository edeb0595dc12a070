"""OpenAI-compatible files: upload a batch input, read a file's record or its content."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from api.deps import ContextDep, SessionDep, TenantDep
from api.openapi import non_json
from genq.intake import check_upload
from genq.openai_batches import file_public
from genq.store.files import create_file, file_content

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post("")
def upload(
    session: SessionDep,
    tenant: TenantDep,
    file: Annotated[UploadFile, File()],
    purpose: Annotated[str, Form()],
    context: ContextDep,
) -> dict[str, Any]:
    content = file.file.read()
    filename = check_upload(purpose=purpose, filename=file.filename, content=content)
    info = create_file(session, tenant=tenant, purpose=purpose, filename=filename, content=content)
    days = context.settings.retention_days
    return file_public(session, tenant=tenant, file_id=info.id, retention_days=days)


@router.get("/{file_id}")
def read(
    file_id: str, session: SessionDep, tenant: TenantDep, context: ContextDep
) -> dict[str, Any]:
    days = context.settings.retention_days
    return file_public(session, tenant=tenant, file_id=file_id, retention_days=days)


@router.get(
    "/{file_id}/content", responses=non_json("application/octet-stream", "The file's bytes")
)
def content(file_id: str, session: SessionDep, tenant: TenantDep) -> Response:
    data = file_content(session, tenant=tenant, file_id=file_id)
    return Response(data, media_type="application/octet-stream")
