"""OpenAI-compatible batches: create from an uploaded file, read, list, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import ContextDep, SessionDep, TenantDep
from api.jsonbody import CheckedJsonRoute
from genq import openai_batches
from genq.intake import BatchCreate

router = APIRouter(prefix="/v1/batches", tags=["batches"], route_class=CheckedJsonRoute)


@router.post("")
def create(body: BatchCreate, tenant: TenantDep, context: ContextDep) -> dict[str, Any]:
    batch_id = openai_batches.create_batch(
        context.sessions,
        context.publisher,
        context.settings,
        tenant=tenant,
        input_file_id=body.input_file_id,
        endpoint=body.endpoint,
        completion_window=body.completion_window,
        metadata=body.metadata,
    )
    with context.sessions.begin() as session:
        return openai_batches.read_batch(session, tenant=tenant, batch_id=batch_id)


@router.get("")
def index(
    session: SessionDep,
    tenant: TenantDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    return openai_batches.list_batches(session, tenant=tenant, after=after, limit=limit)


@router.get("/{batch_id}")
def read(batch_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    return openai_batches.read_batch(session, tenant=tenant, batch_id=batch_id)


@router.post("/{batch_id}/cancel")
def cancel(batch_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    return openai_batches.cancel(session, tenant=tenant, batch_id=batch_id)
