"""The dashboard: server-rendered pages under ``/ui``, every asset served from the package.

A page takes the caller's API key from a bearer header or from the HttpOnly cookie the login
form sets, and shows only that key's tenant. The pages only read; the one form that writes is
the login (and its logout)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from api.deps import ContextDep, get_tenant
from api.ui import pages
from genq.errors import JobNotFound, Unauthorized

UI = Path(__file__).resolve().parents[1] / "ui"
COOKIE = "genq_key"
COOKIE_SECONDS = 7 * 24 * 3600
HEADERS = {
    # Nothing runs and nothing loads from elsewhere: the charts are inline SVG, the style one
    # file of this app.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=UI / "templates")
static = StaticFiles(directory=UI / "static")


def _page(request: Request, name: str, values: dict[str, Any], status: int = 200) -> Response:
    return templates.TemplateResponse(request, name, values, status_code=status, headers=HEADERS)


async def _tenant(request: Request, context: ContextDep) -> str | None:
    """The tenant of the request's bearer key, or else of its cookie; None without a valid one."""
    key = request.cookies.get(COOKIE)
    authorization = request.headers.get("authorization") or (f"Bearer {key}" if key else None)
    if authorization is None:
        return None
    try:
        return await get_tenant(context, authorization)
    except Unauthorized:
        return None


async def _read(context: ContextDep, build: Callable[..., dict[str, Any]], **kw: Any) -> Any:
    def run() -> dict[str, Any]:
        with context.sessions.begin() as session:
            return build(session, **kw)

    return await run_in_threadpool(run)


def _to_login() -> Response:
    return RedirectResponse("/ui/login", status_code=303, headers=HEADERS)


@router.get("/")
@router.get("/dashboard")
async def home() -> Response:
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui", response_class=HTMLResponse)
async def index(request: Request, context: ContextDep, after: str | None = None) -> Response:
    tenant = await _tenant(request, context)
    if tenant is None:
        return _to_login()
    try:
        values = await _read(context, pages.index, tenant=tenant, after=after)
    except JobNotFound:  # a cursor that is not one of the tenant's jobs: start from the top
        return RedirectResponse("/ui", status_code=303, headers=HEADERS)
    return _page(request, "index.html", values)


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
async def job(request: Request, job_id: str, context: ContextDep) -> Response:
    tenant = await _tenant(request, context)
    if tenant is None:
        return _to_login()
    try:
        values = await _read(context, pages.job, tenant=tenant, job_id=job_id)
    except JobNotFound:
        return _page(request, "missing.html", {"tenant": tenant, "job_id": job_id}, 404)
    return _page(request, "job.html", values)


@router.get("/ui/login", response_class=HTMLResponse)
async def login_form(request: Request) -> Response:
    return _page(request, "login.html", {"error": None})


@router.post("/ui/login", response_class=HTMLResponse)
async def login(request: Request, context: ContextDep, key: Annotated[str, Form()]) -> Response:
    try:
        await get_tenant(context, f"Bearer {key.strip()}")
    except Unauthorized:
        return _page(request, "login.html", {"error": "That key is unknown or revoked."}, 401)
    response = RedirectResponse("/ui", status_code=303, headers=HEADERS)
    response.set_cookie(
        COOKIE,
        key.strip(),
        max_age=COOKIE_SECONDS,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/ui/logout")
async def logout() -> Response:
    response = _to_login()
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
    return response
