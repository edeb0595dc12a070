"""The native jobs API: submit, read, list, page results, cancel."""

from __future__ import annotations

import json
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from api.context import Context
from api.deps import ContextDep, SessionDep, TenantDep, cached_read, run_read
from api.jsonbody import CheckedJsonRoute
from api.openapi import non_json
from api.schemas import JobList, JobPublic, JobRetried, ResultPage, answers
from genq import service
from genq.intake import JobCreate
from genq.intake.jsontext import INT_LIMIT
from genq.producer import retry_job
from genq.store import JobInfo, JobStatus, ResultRow, cancel_job, get_job
from genq.store.db import Reader
from genq.store.shares import standings
from genq.store.views import finished_prefix, list_jobs

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=CheckedJsonRoute)

MAX_PAGE = 1000


@router.post(
    "",
    status_code=202,
    response_model=None,
    responses={202: {"model": JobPublic, "description": "Accepted"}},
)
def create(body: JobCreate, tenant: TenantDep, context: ContextDep) -> dict[str, Any]:
    """Submit a job: its requests in the body, or an uploaded file's lines (``input_file_id``).
    ``params`` are every request's defaults; a request's own ``params`` override them."""
    job_id = service.submit(
        context.sessions, context.publisher, context.settings, tenant=tenant, body=body
    )
    with context.sessions.begin() as session:
        return service.job_public(get_job(session, tenant=tenant, job_id=job_id))


@router.get("", response_model=None, responses=answers(JobList))
def index(
    session: SessionDep,
    tenant: TenantDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    jobs = list_jobs(session, tenant=tenant, after=after, limit=limit + 1)
    data = [service.job_public(j) for j in jobs[:limit]]
    return {
        "object": "list",
        "data": data,
        "has_more": len(jobs) > limit,
        "last_id": data[-1]["id"] if data else None,
    }


@router.get("/{job_id}", response_model=None, responses=answers(JobPublic))
async def read(job_id: str, tenant: TenantDep, context: ContextDep) -> dict[str, Any]:
    # Clients poll this route: async, with run_read, it costs no trip through the thread pool,
    # and many clients polling one job share a read (GENQ_JOB_CACHE_SECONDS).
    query = partial(get_job, tenant=tenant, job_id=job_id)
    job = await cached_read(
        context, context.jobs, (tenant, job_id), query, keep=service.job_is_ahead
    )
    public = service.job_public(job)
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        where = partial(
            standings,
            model=job.model,
            window=context.settings.claim_window,
            default_weight=context.settings.tenant_weight,
        )
        found = (await cached_read(context, context.standings, job.model, where)).get(job.id)
        public["queue"] = found.public() if found is not None else None
    return public


@router.get(
    "/{job_id}/results",
    response_model=None,
    responses=non_json(
        "application/jsonl", "With format=jsonl: every finished result", model=ResultPage
    ),
)
async def results(
    job_id: str,
    tenant: TenantDep,
    context: ContextDep,
    after: Annotated[int, Query(ge=-1, lt=INT_LIMIT)] = -1,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    format: Literal["json", "jsonl"] = "json",
) -> Response:
    """``json``: a page of finished results in input order after position ``after`` (up to the
    first one still running); ``next`` is the cursor for the next page. ``jsonl``: every
    finished result, streamed in input order."""
    # Clients poll this route too: async, its reads on a bare connection (run_read).
    if format == "jsonl":
        job = await run_read(context, partial(get_job, tenant=tenant, job_id=job_id))
        rows_of = service.all_results(context.sessions, job_id=job_id, total=job.total)
        lines = service.jsonl_lines(rows_of, job_params=job.params)
        return StreamingResponse(lines, media_type="application/jsonl")
    # Clients that poll the same page at the same time share one read of it, and its JSON.
    body = await context.shared.share(
        ("results", tenant, job_id, after, limit),
        partial(_results_page, context, tenant=tenant, job_id=job_id, after=after, limit=limit),
    )
    return Response(body, media_type="application/json")


async def _results_page(
    context: Context, *, tenant: str, job_id: str, after: int, limit: int
) -> bytes:
    page = partial(_page, tenant=tenant, job_id=job_id, after=after, limit=limit)
    job, rows = await run_read(context, page, on_loop=False)
    nxt = rows[-1].idx if rows else after
    more = not job.status.is_terminal or len(rows) == limit
    # Rendered here: FastAPI would walk a returned dict with jsonable_encoder first, which
    # costs more than reading the page.
    return json.dumps(
        {
            "object": "list",
            "job_status": str(job.status),
            "data": [service.result_public(r, job_params=job.params) for r in rows],
            "next": nxt,
            "has_more": more and (len(rows) == limit or nxt + 1 < job.total),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


def _page(
    reader: Reader, *, tenant: str, job_id: str, after: int, limit: int
) -> tuple[JobInfo, list[ResultRow]]:
    """The job (checking the tenant), then its finished results after ``after``. Read in this
    order, a later statement can only find the job further on, never behind the first."""
    job = get_job(reader, tenant=tenant, job_id=job_id)
    return job, finished_prefix(reader, job_id=job_id, after_idx=after, limit=limit)


@router.post("/{job_id}/cancel", response_model=None, responses=answers(JobPublic))
def cancel(job_id: str, tenant: TenantDep, context: ContextDep) -> dict[str, Any]:
    with context.sessions.begin() as session:
        job = cancel_job(session, tenant=tenant, job_id=job_id)
    # Committed: polls through this process see it now, and a poll that read before the
    # commit cannot put its older job back.
    context.jobs.put_unless((tenant, job_id), job, service.job_is_ahead)
    return service.job_public(job)


@router.post("/{job_id}/retry", response_model=None, responses=answers(JobRetried))
def retry(job_id: str, tenant: TenantDep, context: ContextDep) -> dict[str, Any]:
    """Queue a completed job's failed requests again, with fresh attempts; every success is
    kept. ``requeued`` says how many went back (lines refused at intake stay failed); 409 for
    a job not completed, or one an OpenAI batch stands for."""
    job, count = retry_job(
        context.sessions, context.publisher, tenant=tenant, job_id=job_id, settings=context.settings
    )
    context.jobs.put_unless((tenant, job_id), job, service.job_is_ahead)
    return {**service.job_public(job), "requeued": count}
